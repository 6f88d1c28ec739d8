/* libFuzzer target: a message read by GMime into smtp.mime's tree
 * (proto/mime_tree.c). The first byte picks maxText (0 to 1,792 bytes),
 * the rest is the message. The tree must keep its limits: every text
 * valid UTF-8 within maxText, no part deeper than max_depth, no more
 * parts than max_parts; every header field's raw value reads as an
 * address list. */
#include "proto/mime_tree.h"

#include <glib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* UTF-8, where NUL (U+0000, which g_utf8_validate refuses) may occur. */
static bool utf8_ok(const char *s, size_t n)
{
	while (n > 0) {
		const char *nul = memchr(s, 0, n);
		size_t seg = nul ? (size_t)(nul - s) : n;
		if (!g_utf8_validate(s, (gssize)seg, NULL))
			return false;
		seg += nul != NULL;
		s += seg;
		n -= seg;
	}
	return true;
}

static size_t check_part(const struct mime_part *p, const struct mime_limits *lim, unsigned depth)
{
	if (depth > lim->max_depth || !p->type)
		abort();
	if (p->is_text && (!p->text || p->text_len > lim->max_text || !utf8_ok(p->text, p->text_len)))
		abort();
	if (!p->container && p->nparts)
		abort();
	size_t n = 1;
	for (size_t i = 0; i < p->nparts; i++)
		n += check_part(&p->parts[i], lim, depth + 1);
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	mime_tree_init();
	struct mime_limits lim;
	mime_limits_default(&lim);
	lim.max_text = (size_t)(data[0] % 8) * 256;
	lim.max_parts = 200;
	struct mime_msg msg;
	mime_tree_parse_buffer((const char *)data + 1, size - 1, &lim, &msg);
	if (check_part(&msg.root, &lim, 0) > lim.max_parts)
		abort();
	for (size_t i = 0; i < msg.nheaders; i++) {
		size_t n;
		struct mime_address *a = mime_addresses_parse(msg.headers[i].raw, &n);
		for (size_t j = 0; j < n; j++)
			if (!a[j].address)
				abort();
		mime_addresses_free(a, n);
	}
	mime_msg_free(&msg);
	return 0;
}
