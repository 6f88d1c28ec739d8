/*
 * test_auth_throttle.c — the per-address AUTH failure table: the limit,
 * other addresses, the window, max 0 (off), and a flood of addresses that
 * cannot grow it past its fixed size (the newest entries stay).
 */
#include "smtp/auth_throttle.h"
#include "unit.h"

#include <stdio.h>
#include <time.h>

static void test_limit_and_window(void)
{
	const double w = 0.2;
	for (int i = 0; i < 3; i++) {
		CHECK(!auth_throttle_blocked("192.0.2.1", 3, w));
		auth_throttle_failed("192.0.2.1", 3, w);
	}
	CHECK(auth_throttle_blocked("192.0.2.1", 3, w));
	CHECK(!auth_throttle_blocked("192.0.2.10", 3, w));
	CHECK(!auth_throttle_blocked("192.0.2.1", 0, w)); /* off */
	CHECK(!auth_throttle_blocked("192.0.2.1", 4, w)); /* a higher limit */
	nanosleep(&(struct timespec){0, 300 * 1000 * 1000}, NULL);
	CHECK(!auth_throttle_blocked("192.0.2.1", 3, w));
	auth_throttle_failed("192.0.2.1", 3, w); /* a new window: one failure */
	CHECK(!auth_throttle_blocked("192.0.2.1", 2, w));
}

static void test_off_counts_nothing(void)
{
	for (int i = 0; i < 5; i++)
		auth_throttle_failed("198.51.100.1", 0, 600);
	CHECK(!auth_throttle_blocked("198.51.100.1", 1, 600));
}

static void test_flood_of_addresses(void)
{
	char a[64];
	for (unsigned i = 0; i < 50000; i++) {
		snprintf(a, sizeof a, "2001:db8::%x:%x", i >> 16, i & 0xffff);
		auth_throttle_failed(a, 1, 600);
	}
	CHECK(auth_throttle_blocked(a, 1, 600)); /* the newest is kept */
	unsigned kept = 0;
	for (unsigned i = 0; i < 50000; i++) {
		snprintf(a, sizeof a, "2001:db8::%x:%x", i >> 16, i & 0xffff);
		kept += auth_throttle_blocked(a, 1, 600);
	}
	CHECK(kept <= 4096);
	CHECK(kept > 2048);
}

int main(void)
{
	RUN(test_limit_and_window);
	RUN(test_off_counts_nothing);
	RUN(test_flood_of_addresses);
	return unit_summary();
}
