/* libFuzzer target: the milter packet codec (proto/milter.c). The input is
 * read as a milter's reply stream (length-framed packets): every packet
 * decodes or is refused, and what decodes points inside the packet. Then
 * its bytes are sent back as each command's strings: what is written
 * stays within the buffer and its length field matches. */
#include "proto/milter.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void inside(struct milter_str s, const char *pkt, size_t len)
{
	if (s.s && (s.s < pkt || s.s + s.len > pkt + len))
		abort();
}

static void replies(const char *s, size_t len)
{
	while (len >= 4) {
		uint32_t n = milter_packet_len((const unsigned char *)s);
		if (n == 0 || n > len - 4)
			return;
		const char *pkt = s + 4;
		struct milter_reply r;
		if (milter_decode(&r, pkt, n) == 0) {
			inside(r.a, pkt, n);
			inside(r.b, pkt, n);
			for (int i = 0; i < MILTER_STAGES; i++)
				inside(r.symlist[i], pkt, n);
			if (r.code == MILTER_R_REPLYCODE && (r.smtp_code < 400 || r.smtp_code > 599))
				abort();
		}
		s += 4 + n;
		len -= 4 + n;
	}
}

static void check_frame(const char *out, size_t n)
{
	if (n && milter_packet_len((const unsigned char *)out) != n - 4)
		abort();
}

static void commands(const char *s, size_t len)
{
	enum { CAP = 512 };
	char out[CAP];
	size_t half = len / 2;
	struct milter_str two[2] = {{s, half}, {s + half, len - half}};
	bool has_nul = memchr(s, '\0', len) != NULL;
	size_t n = milter_encode_strings(out, CAP, MILTER_HEADER_CMD, two, 2);
	if ((n != 0) != (!has_nul && len + 7 <= CAP))
		abort();
	check_frame(out, n);
	check_frame(out, milter_encode_macro(out, CAP, MILTER_MAIL, two, 1));
	check_frame(out, milter_encode_connect(out, CAP, two[0], '6', (uint16_t)len, two[1]));
	n = milter_encode_body(out, CAP, s, len);
	if ((n != 0) != (len + 5 <= CAP))
		abort();
	check_frame(out, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	replies((const char *)data, size);
	commands((const char *)data, size);
	return 0;
}
