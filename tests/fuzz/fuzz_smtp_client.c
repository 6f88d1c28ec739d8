/* libFuzzer target: the relay client's parsers (proto/smtp_client.c). The
 * input is read as a server's reply lines and EHLO keywords, then as a
 * message body cut in two at a point its first byte picks: the stuffed
 * body must stay within its bound, end with the end marker and hold no
 * end marker before it. */
#include "proto/smtp_client.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void replies(const char *s, size_t len)
{
	struct smtp_client_reply r = {0};
	struct smtp_client_ext e = {0};
	while (len) {
		const char *nl = memchr(s, '\n', len);
		size_t ll = nl ? (size_t)(nl - s) : len;
		const char *t;
		size_t tl;
		enum smtp_client_status st = smtp_client_reply_line(&r, s, ll, &t, &tl);
		if (st != SMTP_CLIENT_BAD && (t < s || t + tl > s + ll))
			abort(); /* the text lies within the line */
		if (st != SMTP_CLIENT_BAD)
			smtp_client_ehlo_line(&e, t, tl);
		if (st != SMTP_CLIENT_MORE)
			r = (struct smtp_client_reply){0};
		s += ll + (nl != NULL);
		len -= ll + (nl != NULL);
	}
}

static void body(const char *s, size_t len, size_t cut, bool dots, bool normalize)
{
	char *out = malloc(SMTP_CLIENT_BODY_OUT(len) * 2 + SMTP_CLIENT_BODY_END);
	struct smtp_client_body b;
	smtp_client_body_init(&b, dots, normalize);
	size_t o1 = smtp_client_body_feed(&b, s, cut, out);
	size_t o2 = smtp_client_body_feed(&b, s + cut, len - cut, out + o1);
	if (o1 > SMTP_CLIENT_BODY_OUT(cut) || o2 > SMTP_CLIENT_BODY_OUT(len - cut))
		abort();
	size_t o = o1 + o2;
	o += smtp_client_body_end(&b, out + o);
	if (dots) {
		if (o < 3 || memcmp(out + o - 3, ".\r\n", 3) != 0)
			abort();
		if (o > 3 && (o < 5 || memcmp(out + o - 5, "\r\n", 2) != 0))
			abort();
		/* no line of a lone dot before the end (normalized: no bare LF either) */
		for (size_t i = 0; i + 3 < o - 3; i++)
			if (out[i] == '\n' && out[i + 1] == '.' && out[i + 2] == '\r' && out[i + 3] == '\n')
				abort();
		if (o > 3 && out[0] == '.' && out[1] == '\r')
			abort();
	}
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	const char *s = (const char *)data + 1;
	size_t len = size - 1;
	replies(s, len);
	size_t cut = len ? data[0] % (len + 1) : 0;
	body(s, len, cut, true, true);
	body(s, len, cut, true, false);
	body(s, len, cut, false, true);
	return 0;
}
