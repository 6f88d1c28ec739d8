/*
 * test_sasl.c — unit tests for strict base64 and SASL PLAIN splitting
 * (security.md 1.4: malformed AUTH input must never decode to something).
 */
#include "proto/smtp_parse.h"
#include "unit.h"

static char b64_out[16384];

static long b64(const char *in)
{
	return smtp_base64_decode(in, strlen(in), b64_out);
}

static void test_base64_good(void)
{
	CHECK_INT(b64("AHVzZXIAcGFzcw=="), 10);
	CHECK_MEM(b64_out, 10, "\0user\0pass");
	CHECK_INT(b64_out[10], 0);
	CHECK_INT(b64("dXNlcg=="), 4);
	CHECK_STR(b64_out, "user");
	CHECK_INT(b64("YQ=="), 1);
	CHECK_STR(b64_out, "a");
	CHECK_INT(b64("YWI="), 2);
	CHECK_STR(b64_out, "ab");
	CHECK_INT(b64("YWJj"), 3);
	CHECK_STR(b64_out, "abc");
	CHECK_INT(b64("+/+/"), 3);
	CHECK_MEM(b64_out, 3, "\xfb\xff\xbf");
	CHECK_INT(b64("AAAA"), 3);
	CHECK_MEM(b64_out, 3, "\0\0\0");
}

static void test_base64_bad(void)
{
	static const char *const bad[] = {
		"",         "=",        "==",       "===",      "====",     "YQ",
		"YQ=",      "YWJjZA",   "YWJjZA=",  "!!!!",     "YW!j",     "-_-_",
		"YQ==YQ==", "Y===",     "YQ=A",     "Y=Q=",     "=YQ=",     "YWJj=",
		" YWJj",    "YWJj ",    "YW Jj",    "YWJj\r\n", "YWJj\n",   "YWJ\t",
		"YWJ\xc3",  "YWJ.",     "*",
	};
	size_t i;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		long n = b64(bad[i]);

		CHECK_INT(n, -1);
		if (n != -1)
			unit_print_bytes("input", bad[i], strlen(bad[i]));
	}
	CHECK_INT(smtp_base64_decode("YW\0j", 4, b64_out), -1);
	CHECK_INT(smtp_base64_decode("YQ==\0", 5, b64_out), -1);
}

static void test_base64_encode(void)
{
	char out[64];
	char data[9000], text[12004];
	size_t i, n;

	CHECK_INT(smtp_base64_encode("", 0, out), 0);
	CHECK_STR(out, "");
	CHECK_INT(smtp_base64_encode("a", 1, out), 4);
	CHECK_STR(out, "YQ==");
	CHECK_INT(smtp_base64_encode("ab", 2, out), 4);
	CHECK_STR(out, "YWI=");
	CHECK_INT(smtp_base64_encode("abc", 3, out), 4);
	CHECK_STR(out, "YWJj");
	CHECK_INT(smtp_base64_encode("\0user\0pass", 10, out), 16);
	CHECK_STR(out, "AHVzZXIAcGFzcw==");
	/* a 12 KB AUTH line's worth survives the round trip */
	for (i = 0; i < sizeof data; i++)
		data[i] = (char)(i * 7 + (i >> 8));
	n = smtp_base64_encode(data, sizeof data, text);
	CHECK_INT(n, 12000);
	CHECK_INT(smtp_base64_decode(text, n, b64_out), sizeof data);
	CHECK(memcmp(b64_out, data, sizeof data) == 0);
	for (i = 0; i <= 5; i++) {
		n = smtp_base64_encode(data, i, text);
		CHECK_INT(n, (i + 2) / 3 * 4);
		CHECK_INT(i == 0 ? 0 : smtp_base64_decode(text, n, b64_out), i);
	}
}

struct plain_case {
	const char *msg;
	size_t len;
	bool ok;
	const char *authzid, *authcid, *password;
};

static const struct plain_case plain_cases[] = {
	{ "\0user\0pass", 10, true, "", "user", "pass" },
	{ "admin\0user\0pass", 15, true, "admin", "user", "pass" },
	{ "user\0\0pass", 10, true, "user", "user", "pass" },
	{ "\0user\0p", 7, true, "", "user", "p" },
	{ "\0user\0pa\x01ss\x7f", 12, true, "", "user", "pa\x01ss\x7f" },
	{ "\0\xc3\xa4\0\xc3\xa4", 6, true, "", "\xc3\xa4", "\xc3\xa4" },
	{ "", 0, false, NULL, NULL, NULL },
	{ "nonul", 5, false, NULL, NULL, NULL },
	{ "user\0pass", 9, false, NULL, NULL, NULL },
	{ "\0\0", 2, false, NULL, NULL, NULL },
	{ "\0\0pass", 6, false, NULL, NULL, NULL },
	{ "\0user\0", 6, false, NULL, NULL, NULL },
	{ "admin\0user\0", 11, false, NULL, NULL, NULL },
	{ "a\0b\0c\0d", 7, false, NULL, NULL, NULL },
	{ "\0user\0pass\0", 11, false, NULL, NULL, NULL },
	{ "\0\0\0", 3, false, NULL, NULL, NULL },
	{ "\0us\x01" "er\0pass", 11, false, NULL, NULL, NULL },
	{ "\0us\rer\0pass", 11, false, NULL, NULL, NULL },
	{ "ad\nmin\0user\0pass", 16, false, NULL, NULL, NULL },
	{ "adm\x7fin\0user\0pass", 16, false, NULL, NULL, NULL },
	{ "us\ter\0\0pass", 10, false, NULL, NULL, NULL },
};

static void test_plain(void)
{
	size_t i;

	for (i = 0; i < sizeof plain_cases / sizeof plain_cases[0]; i++) {
		const struct plain_case *c = &plain_cases[i];
		struct smtp_auth_plain p;
		bool ok = smtp_auth_plain_split(c->msg, c->len, &p);

		CHECK(ok == c->ok);
		if (ok != c->ok)
			unit_print_bytes("message", c->msg, c->len);
		if (!ok || !c->ok)
			continue;
		unit_check_mem(p.authzid, p.authzid_len, c->authzid, strlen(c->authzid), __FILE__,
		               __LINE__, "authzid");
		unit_check_mem(p.authcid, p.authcid_len, c->authcid, strlen(c->authcid), __FILE__,
		               __LINE__, "authcid");
		unit_check_mem(p.password, p.password_len, c->password, strlen(c->password), __FILE__,
		               __LINE__, "password");
	}
}

/* The whole AUTH PLAIN path: base64 first, then the split */
static void test_plain_decoded(void)
{
	struct smtp_auth_plain p;
	long n;

	n = b64("AHVzZXIAcGFzcw==");
	CHECK(n > 0 && smtp_auth_plain_split(b64_out, (size_t)n, &p));
	CHECK_MEM(p.authcid, p.authcid_len, "user");
	CHECK_MEM(p.password, p.password_len, "pass");
	n = b64("bm9udWw="); /* "nonul" */
	CHECK(n > 0 && !smtp_auth_plain_split(b64_out, (size_t)n, &p));
	n = b64("AAA="); /* "\0\0" */
	CHECK(n == 2 && !smtp_auth_plain_split(b64_out, (size_t)n, &p));
	n = b64("YQBiAGMAZA=="); /* "a\0b\0c\0d" */
	CHECK(n == 7 && !smtp_auth_plain_split(b64_out, (size_t)n, &p));
	CHECK_INT(b64("AAAA"), 3); /* "\0\0\0" */
	CHECK(!smtp_auth_plain_split(b64_out, 3, &p));
}

int main(void)
{
	RUN(test_base64_good);
	RUN(test_base64_bad);
	RUN(test_base64_encode);
	RUN(test_plain);
	RUN(test_plain_decoded);
	return unit_summary();
}
