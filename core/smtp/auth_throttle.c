#include "smtp/auth_throttle.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define THROTTLE_SLOTS 4096 /* a power of two */
#define THROTTLE_PROBE 8    /* an address lives in one of 8 slots from its hash */

struct throttle_entry {
	char addr[64]; /* "" when free */
	double start;  /* the first failure of the window */
	unsigned failures;
};

static struct throttle_entry table[THROTTLE_SLOTS];

static double throttle_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint32_t throttle_hash(const char *addr)
{
	uint32_t h = 2166136261u;
	for (const char *p = addr; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return h;
}

/* Which slot to give a new address: lowest first. Free, then expired,
 * then the one whose window started first (monotonic times are > 0). */
static double throttle_reuse_rank(const struct throttle_entry *e, double window, double now)
{
	if (!e->addr[0])
		return -2;
	if (now - e->start >= window)
		return -1;
	return e->start;
}

/* addr's entry; else, when create, the best slot of its probe run made
 * addr's, else NULL. */
static struct throttle_entry *throttle_entry(const char *addr, double window, double now, bool create)
{
	uint32_t h = throttle_hash(addr);
	struct throttle_entry *victim = NULL;
	for (unsigned i = 0; i < THROTTLE_PROBE; i++) {
		struct throttle_entry *e = &table[(h + i) & (THROTTLE_SLOTS - 1)];
		if (e->addr[0] && strcmp(e->addr, addr) == 0)
			return e;
		if (!victim || throttle_reuse_rank(e, window, now) < throttle_reuse_rank(victim, window, now))
			victim = e;
	}
	if (!create)
		return NULL;
	snprintf(victim->addr, sizeof victim->addr, "%s", addr);
	victim->start = now;
	victim->failures = 0;
	return victim;
}

bool auth_throttle_blocked(const char *addr, unsigned max, double window)
{
	if (!max)
		return false;
	double now = throttle_now();
	const struct throttle_entry *e = throttle_entry(addr, window, now, false);
	return e && now - e->start < window && e->failures >= max;
}

void auth_throttle_failed(const char *addr, unsigned max, double window)
{
	if (!max)
		return;
	double now = throttle_now();
	struct throttle_entry *e = throttle_entry(addr, window, now, true);
	if (now - e->start >= window) {
		e->start = now;
		e->failures = 0;
	}
	e->failures++;
}
