/*
 * test_rcpt_set.c — the per-transaction recipient set: case-insensitive
 * (ASCII) lookups, indexes kept across growth, clearing, the spelling
 * kept per index, and the same
 * answers as the linear strcasecmp scan it replaced.
 */
#include "smtp/rcpt_set.h"
#include "unit.h"

#include <stdio.h>
#include <strings.h>

static void test_basic(void)
{
	struct rcpt_set s = {0};
	CHECK_INT(rcpt_set_find(&s, "a@b", 3), 0);
	rcpt_set_add(&s, "One@Example.COM", 15, 1);
	CHECK_INT(rcpt_set_find(&s, "one@example.com", 15), 1);
	CHECK_INT(rcpt_set_find(&s, "ONE@EXAMPLE.COM", 15), 1);
	CHECK_INT(rcpt_set_find(&s, "one@example.co", 14), 0);
	CHECK_INT(rcpt_set_find(&s, "one@example.comm", 16), 0);
	/* only ASCII folds: UTF-8 bytes compare as they are, as strcasecmp in C did */
	rcpt_set_add(&s, "\xc3\x89t\xc3\xa9@x", 8, 2);
	CHECK_INT(rcpt_set_find(&s, "\xc3\x89T\xc3\xa9@X", 8), 2);
	CHECK_INT(rcpt_set_find(&s, "\xc3\xa9t\xc3\xa9@x", 8), 0);
	rcpt_set_clear(&s);
	CHECK_INT(rcpt_set_find(&s, "one@example.com", 15), 0);
	CHECK_INT((long long)s.count, 0);
	rcpt_set_clear(&s); /* twice is fine */
	/* The next transaction reuses the arrays kept. */
	rcpt_set_add(&s, "Two@x", 5, 1);
	CHECK_INT(rcpt_set_find(&s, "two@X", 5), 1);
	CHECK_INT(rcpt_set_find(&s, "one@example.com", 15), 0);
	CHECK_STR(rcpt_set_spelling(&s, 1), "Two@x");
	CHECK(rcpt_set_spelling(&s, 2) == NULL);
	rcpt_set_free(&s);
	CHECK(s.slots == NULL);
}

/* The spelling kept per index is the last one given, in order of index. */
static void test_spellings(void)
{
	struct rcpt_set s = {0};
	CHECK(rcpt_set_spelling(&s, 1) == NULL);
	rcpt_set_add(&s, "a@x", 3, 1);
	rcpt_set_add(&s, "b@x", 3, 2);
	rcpt_set_respell(&s, rcpt_set_find(&s, "A@X", 3), "A@X", 3);
	CHECK_STR(rcpt_set_spelling(&s, 1), "A@X");
	CHECK_STR(rcpt_set_spelling(&s, 2), "b@x");
	CHECK(rcpt_set_spelling(&s, 3) == NULL);
	for (unsigned i = 3; i <= 100; i++) {
		char a[16];
		int n = snprintf(a, sizeof a, "%u@x", i);
		rcpt_set_add(&s, a, (size_t)n, i);
	}
	CHECK_STR(rcpt_set_spelling(&s, 100), "100@x");
	CHECK_STR(rcpt_set_spelling(&s, 2), "b@x");
	rcpt_set_clear(&s);
	CHECK(rcpt_set_spelling(&s, 1) == NULL);
	rcpt_set_free(&s);
}

/* Thousands of addresses through several growths agree with a scan. */
static void test_against_scan(void)
{
	enum { N = 5000 };
	static char addrs[N][32];
	struct rcpt_set s = {0};
	unsigned n = 0;
	for (unsigned i = 0; i < N; i++) {
		/* every third one repeats an earlier one in another case */
		if (i % 3 == 2)
			snprintf(addrs[i], sizeof addrs[i], "USER%u@EXAMPLE.ORG", i / 2);
		else
			snprintf(addrs[i], sizeof addrs[i], "user%u@example.org", i);
		size_t len = strlen(addrs[i]);
		unsigned scan = 0;
		for (unsigned j = 0; j < i && !scan; j++)
			if (strcasecmp(addrs[j], addrs[i]) == 0)
				scan = j + 1;
		unsigned found = rcpt_set_find(&s, addrs[i], len);
		CHECK_INT(found != 0, scan != 0);
		if (!found)
			rcpt_set_add(&s, addrs[i], len, ++n);
	}
	CHECK_INT((long long)s.count, n);
	CHECK_INT(rcpt_set_find(&s, "user0@example.org", 17), 1);
	CHECK_INT(rcpt_set_find(&s, "user1@example.org", 17), 2);
	rcpt_set_free(&s);
}

int main(void)
{
	RUN(test_basic);
	RUN(test_against_scan);
	RUN(test_spellings);
	return unit_summary();
}
