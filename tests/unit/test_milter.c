/*
 * test_milter.c — unit tests for the milter packet codec
 * (core/proto/milter.c): each command's bytes as libmilter reads them, a
 * string holding a NUL and an over-long chunk refused, and each reply
 * decoded, with short, unknown and trailing data refused.
 */
#include "proto/milter.h"
#include "unit.h"

#define S(lit) ((struct milter_str){lit, sizeof(lit) - 1})

static void test_encode(void)
{
	char out[256];
	size_t n = milter_encode_optneg(out, sizeof out, 6, 0x1ff, 0x1fffff);
	CHECK_MEM(out, n, "\0\0\0\x0dO\0\0\0\x06\0\0\x01\xff\0\x1f\xff\xff");
	n = milter_encode_connect(out, sizeof out, S("mx.example"), '4', 2525, S("127.0.0.1"));
	CHECK_MEM(out, n, "\0\0\0\x19" "Cmx.example\0" "4\x09\xdd" "127.0.0.1\0");
	n = milter_encode_connect(out, sizeof out, S("x"), 'U', 0, S(""));
	CHECK_MEM(out, n, "\0\0\0\x04" "Cx\0U");
	struct milter_str mail[] = {S("<a@b>"), S("SIZE=10")};
	n = milter_encode_strings(out, sizeof out, MILTER_MAIL, mail, 2);
	CHECK_MEM(out, n, "\0\0\0\x0f" "M<a@b>\0SIZE=10\0");
	n = milter_encode_strings(out, sizeof out, MILTER_EOH, NULL, 0);
	CHECK_MEM(out, n, "\0\0\0\x01N");
	struct milter_str nv[] = {S("j"), S("mx"), S("{daemon_name}"), S("luasmtpd")};
	n = milter_encode_macro(out, sizeof out, MILTER_CONNECT, nv, 2);
	CHECK_MEM(out, n, "\0\0\0\x1e" "DCj\0mx\0{daemon_name}\0luasmtpd\0");
	n = milter_encode_body(out, sizeof out, "a\0b\r\n", 5);
	CHECK_MEM(out, n, "\0\0\0\x06" "Ba\0b\r\n");
}

static void test_encode_refused(void)
{
	char out[256];
	struct milter_str nul[] = {{"a\0b", 3}};
	CHECK_INT(milter_encode_strings(out, sizeof out, MILTER_HELO, nul, 1), 0);
	struct milter_str h[] = {S("Subject"), S("hi")};
	CHECK_INT(milter_encode_strings(out, 10, MILTER_HEADER_CMD, h, 2), 0); /* needs 16 */
	CHECK_INT(milter_encode_strings(out, 16, MILTER_HEADER_CMD, h, 2), 16);
	static char big[MILTER_CHUNK_MAX + 1 + MILTER_HEADER];
	CHECK_INT(milter_encode_body(big, sizeof big, big, MILTER_CHUNK_MAX + 1), 0);
	CHECK_INT(milter_encode_body(big, sizeof big, big, MILTER_CHUNK_MAX), MILTER_CHUNK_MAX + 5);
}

static void test_packet_len(void)
{
	CHECK_INT(milter_packet_len((const unsigned char *)"\0\0\0\x01"), 1);
	CHECK_INT(milter_packet_len((const unsigned char *)"\0\0\0\0"), 0);
	CHECK_INT(milter_packet_len((const unsigned char *)"\0\x10\0\0"), MILTER_PACKET_MAX);
	CHECK_INT(milter_packet_len((const unsigned char *)"\0\x10\0\x01"), 0);
	CHECK_INT(milter_packet_len((const unsigned char *)"\xff\xff\xff\xff"), 0);
}

#define DECODE(r, lit) milter_decode((r), (lit), sizeof(lit) - 1)

static void test_decode(void)
{
	struct milter_reply r;
	CHECK_INT(DECODE(&r, "c"), 0);
	CHECK_INT(r.code, MILTER_R_CONTINUE);
	CHECK_INT(DECODE(&r, "t"), 0);
	CHECK_INT(DECODE(&r, "hX-Spam\0yes\0"), 0);
	CHECK_MEM(r.a.s, r.a.len, "X-Spam");
	CHECK_MEM(r.b.s, r.b.len, "yes");
	CHECK_INT(DECODE(&r, "i\0\0\0\x01" "DKIM-Signature\0 v=1\0"), 0);
	CHECK_INT(r.index, 1);
	CHECK_MEM(r.a.s, r.a.len, "DKIM-Signature");
	CHECK_MEM(r.b.s, r.b.len, " v=1");
	CHECK_INT(DECODE(&r, "m\0\0\0\x02Subject\0\0"), 0); /* an empty value deletes */
	CHECK_INT(r.b.len, 0);
	CHECK_INT(DECODE(&r, "y550 5.7.1 go away\0"), 0);
	CHECK_INT(r.smtp_code, 550);
	CHECK_MEM(r.a.s, r.a.len, "550 5.7.1 go away");
	CHECK_INT(DECODE(&r, "y451\0"), 0);
	CHECK_INT(DECODE(&r, "+<x@y>\0"), 0);
	CHECK_INT(DECODE(&r, "2<x@y>\0"), 0);
	CHECK_INT(DECODE(&r, "2<x@y>\0NOTIFY=NEVER\0"), 0);
	CHECK_MEM(r.b.s, r.b.len, "NOTIFY=NEVER");
	CHECK_INT(DECODE(&r, "qvirus\0"), 0);
	CHECK_INT(DECODE(&r, "bnew body\0bytes"), 0);
	CHECK_MEM(r.a.s, r.a.len, "new body\0bytes");
	CHECK_INT(DECODE(&r, "l\0\0\0\x05{i}\0"), 0);
	CHECK_INT(r.index, 5);
}

static void test_decode_optneg(void)
{
	struct milter_reply r;
	CHECK_INT(DECODE(&r, "O\0\0\0\x06\0\0\0\x01\0\0\0\x40"), 0);
	CHECK_INT(r.version, 6);
	CHECK_INT(r.actions, MILTER_F_ADDHDRS);
	CHECK_INT(r.protocol, MILTER_P_NOEOH);
	CHECK(r.symlist[0].s == NULL);
	CHECK_INT(DECODE(&r, "O\0\0\0\x06\0\0\0\x01\0\0\0\x40\0\0\0\x02{mail_addr}\0\0\0\0\x05i\0"), 0);
	CHECK_MEM(r.symlist[2].s, r.symlist[2].len, "{mail_addr}");
	CHECK_MEM(r.symlist[5].s, r.symlist[5].len, "i");
	CHECK_INT(DECODE(&r, "O\0\0\0\x06\0\0\0\x01\0\0\0"), -1);
	CHECK_INT(DECODE(&r, "O\0\0\0\x06\0\0\0\x01\0\0\0\x40\0\0\0\x07i\0"), -1);
	CHECK_INT(DECODE(&r, "O\0\0\0\x06\0\0\0\x01\0\0\0\x40\0\0\0\x01i\0\0\0\0\x01j\0"), -1);
	CHECK_INT(DECODE(&r, "O\0\0\0\x06\0\0\0\x01\0\0\0\x40\0\0\0\x01i"), -1);
}

static void test_decode_bad(void)
{
	struct milter_reply r;
	CHECK_INT(milter_decode(&r, "", 0), -1);
	CHECK_INT(DECODE(&r, "Z"), -1);       /* unknown */
	CHECK_INT(DECODE(&r, "cx"), -1);      /* trailing data */
	CHECK_INT(DECODE(&r, "hX-Spam\0"), -1);
	CHECK_INT(DECODE(&r, "hX-Spam\0yes"), -1);
	CHECK_INT(DECODE(&r, "i\0\0\0"), -1);
	CHECK_INT(DECODE(&r, "y250 ok\0"), -1); /* not a refusal */
	CHECK_INT(DECODE(&r, "y55\0"), -1);
	CHECK_INT(DECODE(&r, "y550x\0"), -1);
	CHECK_INT(DECODE(&r, "y550 no"), -1);
	CHECK_INT(DECODE(&r, "+<x@y>"), -1);
	CHECK_INT(DECODE(&r, "l\0\0\0\x07i\0"), -1);
}

int main(void)
{
	RUN(test_encode);
	RUN(test_encode_refused);
	RUN(test_packet_len);
	RUN(test_decode);
	RUN(test_decode_optneg);
	RUN(test_decode_bad);
	return unit_summary();
}
