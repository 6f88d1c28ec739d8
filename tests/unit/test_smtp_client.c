/*
 * test_smtp_client.c — unit tests for the relay client's parsers
 * (core/proto/smtp_client.c): reply lines (multiline, enhanced codes, the
 * code every line must repeat, malformed and over-long lines), EHLO
 * keywords, and the body writer fed in every split (dot-stuffing, bare LF
 * and CR, the end marker, a message not ending in CRLF).
 */
#include "proto/smtp_client.h"
#include "unit.h"

#include <stdlib.h>

/* Feeds the lines of one reply; returns the last status, fills code,
 * enhanced and the texts joined by '|'. */
static enum smtp_client_status reply(const char *const *lines, struct smtp_client_reply *r,
                                     char *texts, size_t cap)
{
	enum smtp_client_status st = SMTP_CLIENT_BAD;
	*r = (struct smtp_client_reply){0};
	texts[0] = '\0';
	for (size_t i = 0; lines[i]; i++) {
		const char *t;
		size_t tl;
		st = smtp_client_reply_line(r, lines[i], strlen(lines[i]), &t, &tl);
		if (st == SMTP_CLIENT_BAD)
			return st;
		size_t have = strlen(texts);
		snprintf(texts + have, cap - have, "%s%.*s", i ? "|" : "", (int)tl, t);
		if (st == SMTP_CLIENT_DONE && lines[i + 1])
			return SMTP_CLIENT_BAD; /* lines after the last one */
	}
	return st;
}

static void test_reply_single(void)
{
	struct smtp_client_reply r;
	char t[256];
	CHECK_INT(reply((const char *[]){"250 2.1.0 Ok", NULL}, &r, t, sizeof t), SMTP_CLIENT_DONE);
	CHECK_INT(r.code, 250);
	CHECK_STR(r.enhanced, "2.1.0");
	CHECK_STR(t, "Ok");
	CHECK_INT(reply((const char *[]){"354 End data with <CR><LF>.<CR><LF>\r", NULL}, &r, t, sizeof t),
	          SMTP_CLIENT_DONE);
	CHECK_INT(r.code, 354);
	CHECK_STR(r.enhanced, "");
	CHECK_STR(t, "End data with <CR><LF>.<CR><LF>");
	/* a bare code is a whole reply */
	CHECK_INT(reply((const char *[]){"250", NULL}, &r, t, sizeof t), SMTP_CLIENT_DONE);
	CHECK_STR(t, "");
	/* an enhanced code of another class than the reply's is text */
	CHECK_INT(reply((const char *[]){"550 2.1.0 odd", NULL}, &r, t, sizeof t), SMTP_CLIENT_DONE);
	CHECK_STR(r.enhanced, "");
	CHECK_STR(t, "2.1.0 odd");
	CHECK_INT(reply((const char *[]){"452 4.5.3 Too many recipients", NULL}, &r, t, sizeof t),
	          SMTP_CLIENT_DONE);
	CHECK_STR(r.enhanced, "4.5.3");
	CHECK_INT(reply((const char *[]){"550 5.1.1x not a code", NULL}, &r, t, sizeof t), SMTP_CLIENT_DONE);
	CHECK_STR(r.enhanced, "");
}

static void test_reply_multiline(void)
{
	struct smtp_client_reply r;
	char t[256];
	CHECK_INT(reply((const char *[]){"250-mx.example.org", "250-PIPELINING", "250 SIZE 1000", NULL}, &r,
	                t, sizeof t),
	          SMTP_CLIENT_DONE);
	CHECK_INT(r.code, 250);
	CHECK_STR(t, "mx.example.org|PIPELINING|SIZE 1000");
	CHECK_INT(reply((const char *[]){"550-5.7.1 no relay", "550 5.7.1 for you", NULL}, &r, t, sizeof t),
	          SMTP_CLIENT_DONE);
	CHECK_STR(r.enhanced, "5.7.1");
	CHECK_STR(t, "no relay|for you");
	/* one line short: more to come */
	struct smtp_client_reply r2 = {0};
	const char *tx;
	size_t tl;
	CHECK_INT(smtp_client_reply_line(&r2, "250-a", 5, &tx, &tl), SMTP_CLIENT_MORE);
	/* a later line with another code is a broken reply */
	CHECK_INT(smtp_client_reply_line(&r2, "251 b", 5, &tx, &tl), SMTP_CLIENT_BAD);
}

static void test_reply_bad(void)
{
	static const char *const bad[] = {"", "25", "2500 x", "250x", "abc def", "150 x", "650 x",
	                                  "260 x", "25a x", "-250 x", " 250 x", NULL};
	for (size_t i = 0; bad[i]; i++) {
		struct smtp_client_reply r = {0};
		const char *t;
		size_t tl;
		enum smtp_client_status st = smtp_client_reply_line(&r, bad[i], strlen(bad[i]), &t, &tl);
		if (st != SMTP_CLIENT_BAD)
			printf("     \"%s\" parsed as %d\n", bad[i], (int)st);
		CHECK_INT(st, SMTP_CLIENT_BAD);
	}
	struct smtp_client_reply r = {0};
	const char *t;
	size_t tl;
	CHECK_INT(smtp_client_reply_line(&r, "250 a\0b", 7, &t, &tl), SMTP_CLIENT_BAD);
	char *lng = malloc(SMTP_CLIENT_LINE_MAX + 2);
	memset(lng, 'x', SMTP_CLIENT_LINE_MAX + 1);
	memcpy(lng, "250 ", 4);
	CHECK_INT(smtp_client_reply_line(&r, lng, SMTP_CLIENT_LINE_MAX, &t, &tl), SMTP_CLIENT_DONE);
	r = (struct smtp_client_reply){0};
	CHECK_INT(smtp_client_reply_line(&r, lng, SMTP_CLIENT_LINE_MAX + 1, &t, &tl), SMTP_CLIENT_BAD);
	free(lng);
}

static void ehlo(struct smtp_client_ext *e, const char *const *lines)
{
	*e = (struct smtp_client_ext){0};
	for (size_t i = 0; lines[i]; i++)
		smtp_client_ehlo_line(e, lines[i], strlen(lines[i]));
}

static void test_ehlo(void)
{
	struct smtp_client_ext e;
	ehlo(&e, (const char *[]){"PIPELINING", "SIZE 10240000", "8BITMIME", "smtputf8", "DSN", "CHUNKING",
	                          "STARTTLS", "AUTH PLAIN LOGIN", "ENHANCEDSTATUSCODES", "X-UNKNOWN foo", NULL});
	CHECK(e.pipelining && e.eightbitmime && e.smtputf8 && e.dsn && e.chunking && e.starttls);
	CHECK(e.enhancedstatuscodes && !e.binarymime);
	CHECK(e.size);
	CHECK_INT(e.max_size, 10240000);
	CHECK_INT(e.auth, SMTP_AUTH_PLAIN | SMTP_AUTH_LOGIN);
	ehlo(&e, (const char *[]){"AUTH=CRAM-MD5 XOAUTH2", "SIZE", "PIPELININGX", "8BITMIMEish", NULL});
	CHECK_INT(e.auth, SMTP_AUTH_CRAM_MD5 | SMTP_AUTH_XOAUTH2);
	CHECK(e.size);
	CHECK_INT(e.max_size, 0);
	CHECK(!e.pipelining && !e.eightbitmime);
	ehlo(&e, (const char *[]){"SIZE 99999999999999999999999", "", "   ", NULL});
	CHECK(e.max_size == ~0ULL);
}

/* The body fed whole and then in every split of two: all the same bytes. */
static void check_body(const char *in, bool dots, bool normalize, const char *want, size_t want_len)
{
	size_t len = strlen(in);
	char *out = malloc(SMTP_CLIENT_BODY_OUT(len) * 2 + SMTP_CLIENT_BODY_END + 4);
	for (size_t cut = 0; cut <= len; cut++) {
		struct smtp_client_body b;
		smtp_client_body_init(&b, dots, normalize);
		size_t o = smtp_client_body_feed(&b, in, cut, out);
		o += smtp_client_body_feed(&b, in + cut, len - cut, out + o);
		o += smtp_client_body_end(&b, out + o);
		if (o != want_len || memcmp(out, want, o) != 0) {
			printf("     split at %zu:\n", cut);
			unit_check_mem(out, o, want, want_len, __FILE__, __LINE__, "body");
			break;
		}
	}
	free(out);
}
#define CHECK_BODY(in, dots, norm, lit) check_body(in, dots, norm, lit, sizeof(lit) - 1)

static void test_body(void)
{
	CHECK_BODY("a\r\nb\r\n", true, true, "a\r\nb\r\n.\r\n");
	CHECK_BODY(".a\r\n..b\r\n.\r\nc.\r\n", true, true, "..a\r\n...b\r\n..\r\nc.\r\n.\r\n");
	CHECK_BODY("no end", true, true, "no end\r\n.\r\n");
	CHECK_BODY("", true, true, ".\r\n");
	CHECK_BODY("bare\nlf\n.x", true, true, "bare\r\nlf\r\n..x\r\n.\r\n");
	CHECK_BODY("cr\rmid\r", true, true, "cr\r\nmid\r\n.\r\n");
	CHECK_BODY("a\r\r\nb", true, true, "a\r\n\r\nb\r\n.\r\n");
	/* not normalized: bytes pass, a dot after any LF is doubled */
	CHECK_BODY("a\n.b\r\n", true, false, "a\n..b\r\n.\r\n");
	CHECK_BODY("a\n", true, false, "a\n\r\n.\r\n");
	CHECK_BODY("a\r", true, false, "a\r\r\n.\r\n");
	/* BDAT: no dots, the end is only the missing CRLF */
	CHECK_BODY(".a\r\n.\r\n", false, true, ".a\r\n.\r\n");
	CHECK_BODY("x\ny", false, true, "x\r\ny\r\n");
	CHECK_BODY("", false, true, "");
}

/* Random bytes: never more than the bound; fed whole (plain runs copied
 * in one piece) the same bytes as fed one at a time; and a result as long
 * as the input, with no CR held before or after, is the input itself. */
static void test_body_bound(void)
{
	srand(18);
	char in[64], out[SMTP_CLIENT_BODY_OUT(64)], one[SMTP_CLIENT_BODY_OUT(64)];
	static const char alphabet[] = "\r\n.aa";
	for (int round = 0; round < 20000; round++) {
		size_t len = (size_t)(rand() % 64);
		for (size_t i = 0; i < len; i++)
			in[i] = alphabet[rand() % 5];
		struct smtp_client_body b, b1;
		smtp_client_body_init(&b, rand() & 1, rand() & 1);
		b1 = b;
		size_t o = smtp_client_body_feed(&b, in, len, out);
		if (o > SMTP_CLIENT_BODY_OUT(len)) {
			CHECK(o <= SMTP_CLIENT_BODY_OUT(len));
			break;
		}
		size_t o1 = 0;
		for (size_t i = 0; i < len; i++)
			o1 += smtp_client_body_feed(&b1, in + i, 1, one + o1);
		if (o != o1 || memcmp(out, one, o) != 0 || memcmp(&b, &b1, sizeof b) != 0) {
			unit_check_mem(out, o, one, o1, __FILE__, __LINE__, "whole vs one byte at a time");
			break;
		}
		if (!b.cr && o == len && memcmp(out, in, len) != 0) {
			unit_check_mem(out, o, in, len, __FILE__, __LINE__, "same length, not the input");
			break;
		}
	}
}

int main(void)
{
	RUN(test_reply_single);
	RUN(test_reply_multiline);
	RUN(test_reply_bad);
	RUN(test_ehlo);
	RUN(test_body);
	RUN(test_body_bound);
	return unit_summary();
}
