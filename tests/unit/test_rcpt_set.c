/*
 * test_rcpt_set.c — the per-transaction recipient set: case-insensitive
 * (ASCII) lookups, indexes kept across growth, clearing, and the same
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
	rcpt_set_clear(&s);
}

int main(void)
{
	RUN(test_basic);
	RUN(test_against_scan);
	return unit_summary();
}
