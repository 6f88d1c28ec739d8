/*
 * test_proxy.c — unit tests for the PROXY protocol header parser
 * (core/proxy_parse.c): v1 text lines (TCP4, TCP6, UNKNOWN), v2 binary
 * headers (PROXY and LOCAL; TCP4, TCP6, UNSPEC; TLVs), truncation at every
 * length, garbage, over-long lines, bad ports and addresses, and the
 * PROXY_HEADER_MAX cap.
 */
#include "proto/proxy_parse.h"
#include "unit.h"

#include <stdint.h>
#include <stdlib.h>

static const unsigned char v2sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                        0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static enum proxy_status parse_str(const char *s, struct proxy_info *pi)
{
	return proxy_parse((const unsigned char *)s, strlen(s), pi);
}

/* Every proper prefix of a complete header is NEED_MORE (the empty one too). */
static void check_prefixes(const unsigned char *h, size_t len, const char *what)
{
	size_t bad = 0;
	struct proxy_info pi;

	for (size_t n = 0; n < len; n++) {
		enum proxy_status st = proxy_parse(h, n, &pi);

		if (st != PROXY_NEED_MORE) {
			if (!bad)
				printf("     %s: prefix of %zu/%zu bytes gives %d, not NEED_MORE\n", what, n,
				       len, (int)st);
			bad++;
		}
	}
	CHECK_INT(bad, 0);
}

/* A v2 header: signature, version/command, family, body length, body. */
static size_t v2(unsigned char *out, unsigned ver_cmd, unsigned fam, const unsigned char *body,
                 size_t blen)
{
	memcpy(out, v2sig, 12);
	out[12] = (unsigned char)ver_cmd;
	out[13] = (unsigned char)fam;
	out[14] = (unsigned char)(blen >> 8);
	out[15] = (unsigned char)(blen & 0xff);
	if (blen)
		memcpy(out + 16, body, blen);
	return 16 + blen;
}

static const unsigned char tcp4_body[12] = {198, 51, 100, 22, 203, 0, 113, 7,
                                            0x8B, 0x3E, /* 35646 */ 0x00, 0x19 /* 25 */};

static unsigned char tcp6_body[36];

static void init_tcp6_body(void)
{
	/* 2001:db8::1 -> 2001:db8::25, 40000 -> 587 */
	static const unsigned char src[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
	static const unsigned char dst[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x25};
	memcpy(tcp6_body, src, 16);
	memcpy(tcp6_body + 16, dst, 16);
	tcp6_body[32] = 40000 >> 8;
	tcp6_body[33] = 40000 & 0xff;
	tcp6_body[34] = 587 >> 8;
	tcp6_body[35] = 587 & 0xff;
}

/* ---- v1 ------------------------------------------------------------------ */

static void test_v1_tcp4(void)
{
	struct proxy_info pi;
	const char *h = "PROXY TCP4 198.51.100.22 203.0.113.7 35646 25\r\n";

	CHECK_INT(parse_str(h, &pi), PROXY_OK);
	CHECK_INT(pi.version, 1);
	CHECK(!pi.local);
	CHECK_STR(pi.src, "198.51.100.22");
	CHECK_STR(pi.dst, "203.0.113.7");
	CHECK_INT(pi.src_port, 35646);
	CHECK_INT(pi.dst_port, 25);
	CHECK_INT(pi.length, strlen(h));

	/* what follows the header is not part of it */
	const char *more = "PROXY TCP4 10.0.0.1 10.0.0.2 1 65535\r\nEHLO x\r\n";
	CHECK_INT(parse_str(more, &pi), PROXY_OK);
	CHECK_INT(pi.length, strlen("PROXY TCP4 10.0.0.1 10.0.0.2 1 65535\r\n"));
	CHECK_INT(pi.src_port, 1);
	CHECK_INT(pi.dst_port, 65535);

	/* port 0 is a port */
	CHECK_INT(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 0 0\r\n", &pi), PROXY_OK);
	CHECK_INT(pi.src_port, 0);
	CHECK_INT(pi.dst_port, 0);

	/* a TLS ClientHello right behind the line */
	const unsigned char tls[] = "PROXY TCP4 127.0.0.1 127.0.0.1 50000 465\r\n\x16\x03\x01\x02\x00\x01";
	CHECK_INT(proxy_parse(tls, sizeof tls - 1, &pi), PROXY_OK);
	CHECK_INT(pi.length, strlen("PROXY TCP4 127.0.0.1 127.0.0.1 50000 465\r\n"));
}

static void test_v1_tcp6(void)
{
	struct proxy_info pi;
	const char *h = "PROXY TCP6 2001:db8::1 2001:db8::25 40000 587\r\n";

	CHECK_INT(parse_str(h, &pi), PROXY_OK);
	CHECK_INT(pi.version, 1);
	CHECK(!pi.local);
	CHECK_STR(pi.src, "2001:db8::1");
	CHECK_STR(pi.dst, "2001:db8::25");
	CHECK_INT(pi.src_port, 40000);
	CHECK_INT(pi.dst_port, 587);
	CHECK_INT(pi.length, strlen(h));

	/* written back in canonical form */
	CHECK_INT(parse_str("PROXY TCP6 2001:0DB8:0000:0000:0000:0000:0000:0001 ::1 1 2\r\n", &pi),
	          PROXY_OK);
	CHECK_STR(pi.src, "2001:db8::1");
	CHECK_STR(pi.dst, "::1");

	/* the longest possible v1 line (104 bytes) */
	const char *longest = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	                      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	CHECK_INT(strlen(longest), 104);
	CHECK_INT(parse_str(longest, &pi), PROXY_OK);
	CHECK_STR(pi.src, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
	CHECK_INT(pi.length, 104);

	/* IPv4-mapped IPv6 */
	CHECK_INT(parse_str("PROXY TCP6 ::ffff:192.0.2.1 ::1 1234 25\r\n", &pi), PROXY_OK);
	CHECK_STR(pi.src, "::ffff:192.0.2.1");
}

static void test_v1_unknown(void)
{
	struct proxy_info pi;

	CHECK_INT(parse_str("PROXY UNKNOWN\r\n", &pi), PROXY_OK);
	CHECK_INT(pi.version, 1);
	CHECK(pi.local);
	CHECK_INT(pi.length, 15);
	CHECK_STR(pi.src, "");

	/* the receiver ignores whatever follows UNKNOWN on the line */
	const char *h = "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
	CHECK_INT(parse_str(h, &pi), PROXY_OK);
	CHECK(pi.local);
	CHECK_INT(pi.length, strlen(h));

	CHECK_INT(parse_str("PROXY UNKNOWN\r\nEHLO x\r\n", &pi), PROXY_OK);
	CHECK_INT(pi.length, 15);
}

static void test_v1_truncated(void)
{
	static const char *const full[] = {
		"PROXY TCP4 198.51.100.22 203.0.113.7 35646 25\r\n",
		"PROXY TCP6 2001:db8::1 2001:db8::25 40000 587\r\n",
		"PROXY UNKNOWN\r\n",
	};

	for (size_t i = 0; i < sizeof full / sizeof *full; i++) {
		check_prefixes((const unsigned char *)full[i], strlen(full[i]), full[i]);
		struct proxy_info pi;
		CHECK_INT(parse_str(full[i], &pi), PROXY_OK);
	}
}

static void test_v1_bad(void)
{
	static const char *const bad[] = {
		/* garbage and other protocols */
		"EHLO client.example\r\n",
		"GET / HTTP/1.0\r\n",
		"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
		"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
		"PROXY\r\n",
		"PROXY \r\n",
		"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
		"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
		"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8\r\n",
		"PROXY TCP4\r\n",
		"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
		"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
		"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
		"PROXY unknown\r\n",
		/* addresses */
		"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
		"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8.9 1 2\r\n",
		"PROXY TCP4 host.example 5.6.7.8 1 2\r\n",
		"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
		"PROXY TCP4 1.2.3.4 ::1 1 2\r\n",
		"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
		"PROXY TCP6 ::1 5.6.7.8 1 2\r\n",
		"PROXY TCP6 2001:db8:::1 ::1 1 2\r\n",
		"PROXY TCP6 [::1] ::1 1 2\r\n",
		/* ports */
		"PROXY TCP4 1.2.3.4 5.6.7.8 65536 25\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 25 65536\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 -1 25\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 +1 25\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 01 25\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 0x19 25\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1a 25\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 99999999999 25\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 4294967321 25\r\n",
		/* a NUL or a bare CR inside the line */
		"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n",
	};

	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		struct proxy_info pi;
		enum proxy_status st = parse_str(bad[i], &pi);

		CHECK(st == PROXY_BAD);
		if (st != PROXY_BAD)
			unit_print_bytes("header", bad[i], strlen(bad[i]));
	}

	/* a NUL inside an address field (inet_pton would stop at it) */
	struct proxy_info pi;
	static const unsigned char nul[] = "PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n";
	CHECK_INT(proxy_parse(nul, sizeof nul - 1, &pi), PROXY_BAD);

	/* garbage is refused at its first wrong byte, not after a timeout */
	CHECK_INT(parse_str("X", &pi), PROXY_BAD);
	CHECK_INT(parse_str("PROXX", &pi), PROXY_BAD);
	CHECK_INT(parse_str("\r\n\r\nX", &pi), PROXY_BAD);
	CHECK_INT(parse_str("P", &pi), PROXY_NEED_MORE);
	CHECK_INT(parse_str("PROXY", &pi), PROXY_NEED_MORE);
}

static void test_v1_long(void)
{
	struct proxy_info pi;
	char line[2048];

	/* no CRLF within the longest legal line: refused, never NEED_MORE */
	memcpy(line, "PROXY TCP4 ", 11);
	memset(line + 11, 'A', sizeof line - 11);
	CHECK_INT(proxy_parse((const unsigned char *)line, sizeof line, &pi), PROXY_BAD);
	CHECK_INT(proxy_parse((const unsigned char *)line, 108, &pi), PROXY_BAD);
	CHECK_INT(proxy_parse((const unsigned char *)line, 107, &pi), PROXY_NEED_MORE);
	CHECK_INT(proxy_parse((const unsigned char *)line, PROXY_HEADER_MAX, &pi), PROXY_BAD);

	/* a well-formed line padded with spaces past the v1 limit */
	char padded[256];
	int n = snprintf(padded, sizeof padded, "PROXY TCP4 1.2.3.4 5.6.7.8 1 2%*s\r\n", 120, "");
	CHECK_INT(proxy_parse((const unsigned char *)padded, (size_t)n, &pi), PROXY_BAD);

	/* a line ended by a bare LF never becomes a header */
	const char *lf = "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\nEHLO x\n";
	CHECK(parse_str(lf, &pi) != PROXY_OK);
	memset(line, 'x', sizeof line);
	memcpy(line, lf, strlen(lf));
	CHECK_INT(proxy_parse((const unsigned char *)line, 200, &pi), PROXY_BAD);

	/* 1500 bytes without any line end */
	memset(line, 'A', 1500);
	CHECK_INT(proxy_parse((const unsigned char *)line, 1500, &pi), PROXY_BAD);
}

/* ---- v2 ------------------------------------------------------------------ */

static void test_v2_tcp4(void)
{
	unsigned char h[64];
	struct proxy_info pi;
	size_t n = v2(h, 0x21, 0x11, tcp4_body, sizeof tcp4_body);

	CHECK_INT(proxy_parse(h, n, &pi), PROXY_OK);
	CHECK_INT(pi.version, 2);
	CHECK(!pi.local);
	CHECK_STR(pi.src, "198.51.100.22");
	CHECK_STR(pi.dst, "203.0.113.7");
	CHECK_INT(pi.src_port, 35646);
	CHECK_INT(pi.dst_port, 25);
	CHECK_INT(pi.length, 28);
	check_prefixes(h, n, "v2 TCP4");

	/* bytes after the header */
	memcpy(h + n, "EHLO x\r\n", 8);
	CHECK_INT(proxy_parse(h, n + 8, &pi), PROXY_OK);
	CHECK_INT(pi.length, 28);
}

static void test_v2_tcp6(void)
{
	unsigned char h[128];
	struct proxy_info pi;
	size_t n = v2(h, 0x21, 0x21, tcp6_body, sizeof tcp6_body);

	CHECK_INT(proxy_parse(h, n, &pi), PROXY_OK);
	CHECK_INT(pi.version, 2);
	CHECK(!pi.local);
	CHECK_STR(pi.src, "2001:db8::1");
	CHECK_STR(pi.dst, "2001:db8::25");
	CHECK_INT(pi.src_port, 40000);
	CHECK_INT(pi.dst_port, 587);
	CHECK_INT(pi.length, 52);
	check_prefixes(h, n, "v2 TCP6");
}

static void test_v2_local_unspec(void)
{
	unsigned char h[128];
	struct proxy_info pi;

	/* LOCAL (a health check from the proxy): no addresses */
	size_t n = v2(h, 0x20, 0x00, NULL, 0);
	CHECK_INT(proxy_parse(h, n, &pi), PROXY_OK);
	CHECK_INT(pi.version, 2);
	CHECK(pi.local);
	CHECK_INT(pi.length, 16);
	check_prefixes(h, n, "v2 LOCAL");

	/* LOCAL with an address block: still LOCAL, the block is skipped */
	n = v2(h, 0x20, 0x11, tcp4_body, sizeof tcp4_body);
	CHECK_INT(proxy_parse(h, n, &pi), PROXY_OK);
	CHECK(pi.local);
	CHECK_INT(pi.length, 28);

	/* PROXY with UNSPEC family: addresses unknown */
	n = v2(h, 0x21, 0x00, NULL, 0);
	CHECK_INT(proxy_parse(h, n, &pi), PROXY_OK);
	CHECK_INT(pi.version, 2);
	CHECK(pi.local);
	CHECK_INT(pi.length, 16);
}

static void test_v2_tlvs(void)
{
	unsigned char body[12 + 32];
	unsigned char h[16 + sizeof body];
	struct proxy_info pi;

	/* TCP4 addresses followed by TLVs (ALPN, authority): skipped, counted */
	memcpy(body, tcp4_body, 12);
	static const unsigned char tlv[] = {0x01, 0x00, 0x04, 's', 'm', 't', 'p',
	                                    0x02, 0x00, 0x0b, 'm', 'x', '.', 'e', 'x', 'a', 'm', 'p', 'l', 'e', '.'};
	memcpy(body + 12, tlv, sizeof tlv);
	size_t blen = 12 + sizeof tlv;
	size_t n = v2(h, 0x21, 0x11, body, blen);
	CHECK_INT(proxy_parse(h, n, &pi), PROXY_OK);
	CHECK_STR(pi.src, "198.51.100.22");
	CHECK_INT(pi.length, 16 + blen);
	check_prefixes(h, n, "v2 TCP4 + TLVs");
}

static void test_v2_bad(void)
{
	unsigned char h[128];
	struct proxy_info pi;
	size_t n;

	/* version 1 or 3 in the high nibble */
	n = v2(h, 0x11, 0x11, tcp4_body, sizeof tcp4_body);
	CHECK_INT(proxy_parse(h, n, &pi), PROXY_BAD);
	n = v2(h, 0x31, 0x11, tcp4_body, sizeof tcp4_body);
	CHECK_INT(proxy_parse(h, n, &pi), PROXY_BAD);
	/* an unknown command */
	n = v2(h, 0x22, 0x11, tcp4_body, sizeof tcp4_body);
	CHECK_INT(proxy_parse(h, n, &pi), PROXY_BAD);
	n = v2(h, 0x2F, 0x11, tcp4_body, sizeof tcp4_body);
	CHECK_INT(proxy_parse(h, n, &pi), PROXY_BAD);
	/* UDP and UNIX families are not TCP connections */
	n = v2(h, 0x21, 0x12, tcp4_body, sizeof tcp4_body);
	CHECK_INT(proxy_parse(h, n, &pi), PROXY_BAD);
	n = v2(h, 0x21, 0x22, tcp6_body, sizeof tcp6_body);
	CHECK_INT(proxy_parse(h, n, &pi), PROXY_BAD);
	unsigned char unix_body[216] = {0};
	n = v2(h, 0x21, 0x31, unix_body, 100);
	CHECK_INT(proxy_parse(h, n, &pi), PROXY_BAD);
	/* an address block shorter than the family needs */
	n = v2(h, 0x21, 0x11, tcp4_body, 11);
	CHECK_INT(proxy_parse(h, n, &pi), PROXY_BAD);
	n = v2(h, 0x21, 0x11, NULL, 0);
	CHECK_INT(proxy_parse(h, n, &pi), PROXY_BAD);
	n = v2(h, 0x21, 0x21, tcp6_body, 35);
	CHECK_INT(proxy_parse(h, n, &pi), PROXY_BAD);
	n = v2(h, 0x21, 0x21, tcp4_body, 12);
	CHECK_INT(proxy_parse(h, n, &pi), PROXY_BAD);

	/* a signature with one byte wrong is garbage */
	for (int i = 0; i < 12; i++) {
		n = v2(h, 0x21, 0x11, tcp4_body, sizeof tcp4_body);
		h[i] ^= 0x40;
		CHECK_INT(proxy_parse(h, n, &pi), PROXY_BAD);
	}
}

static void test_v2_cap(void)
{
	static unsigned char h[70000];
	struct proxy_info pi;
	size_t body_max = PROXY_HEADER_MAX - 16;
	unsigned char *body = calloc(1, 65535);

	memcpy(body, tcp4_body, 12);
	/* exactly the cap: accepted */
	size_t n = v2(h, 0x21, 0x11, body, body_max);
	CHECK_INT(n, PROXY_HEADER_MAX);
	CHECK_INT(proxy_parse(h, n, &pi), PROXY_OK);
	CHECK_INT(pi.length, PROXY_HEADER_MAX);
	check_prefixes(h, n, "v2 at the cap");

	/* one byte over the cap: refused as soon as the length is known */
	n = v2(h, 0x21, 0x11, body, body_max + 1);
	CHECK_INT(proxy_parse(h, 16, &pi), PROXY_BAD);
	CHECK_INT(proxy_parse(h, PROXY_HEADER_MAX, &pi), PROXY_BAD);
	CHECK_INT(proxy_parse(h, n, &pi), PROXY_BAD);

	/* the largest length field */
	n = v2(h, 0x21, 0x11, body, 65535);
	CHECK_INT(proxy_parse(h, 16, &pi), PROXY_BAD);
	CHECK_INT(proxy_parse(h, n, &pi), PROXY_BAD);
	/* LOCAL does not lift the cap */
	n = v2(h, 0x20, 0x00, body, 2000);
	CHECK_INT(proxy_parse(h, 16, &pi), PROXY_BAD);
	free(body);

	/* before the length is there, a v2 prefix is NEED_MORE */
	for (size_t k = 0; k < 16; k++) {
		CHECK_INT(proxy_parse(h, k, &pi), PROXY_NEED_MORE);
	}
}

/* Every length of every header, cut anywhere, never reads past len: run
 * on heap copies of exactly len bytes so ASan would see it. */
static void test_exact_buffers(void)
{
	const unsigned char *hdrs[4];
	size_t lens[4];
	struct proxy_info pi;
	static const char v1a[] = "PROXY TCP4 198.51.100.22 203.0.113.7 35646 25\r\n";
	static const char v1b[] = "PROXY UNKNOWN\r\n";
	unsigned char v2a[64], v2b[64];

	hdrs[0] = (const unsigned char *)v1a;
	lens[0] = sizeof v1a - 1;
	hdrs[1] = (const unsigned char *)v1b;
	lens[1] = sizeof v1b - 1;
	lens[2] = v2(v2a, 0x21, 0x11, tcp4_body, sizeof tcp4_body);
	hdrs[2] = v2a;
	lens[3] = v2(v2b, 0x21, 0x21, tcp6_body, sizeof tcp6_body);
	hdrs[3] = v2b;
	int wrong = 0;
	for (int k = 0; k < 4; k++) {
		for (size_t n = 0; n <= lens[k]; n++) {
			unsigned char *copy = malloc(n ? n : 1);
			memcpy(copy, hdrs[k], n);
			enum proxy_status st = proxy_parse(copy, n, &pi);
			if (st != (n == lens[k] ? PROXY_OK : PROXY_NEED_MORE))
				wrong++;
			if (st == PROXY_OK && pi.length != lens[k])
				wrong++;
			free(copy);
		}
	}
	CHECK_INT(wrong, 0);
}

int main(void)
{
	init_tcp6_body();
	RUN(test_v1_tcp4);
	RUN(test_v1_tcp6);
	RUN(test_v1_unknown);
	RUN(test_v1_truncated);
	RUN(test_v1_bad);
	RUN(test_v1_long);
	RUN(test_v2_tcp4);
	RUN(test_v2_tcp6);
	RUN(test_v2_local_unspec);
	RUN(test_v2_tlvs);
	RUN(test_v2_bad);
	RUN(test_v2_cap);
	RUN(test_exact_buffers);
	return unit_summary();
}
