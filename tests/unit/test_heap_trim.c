/*
 * test_heap_trim.c — core/net/heap_trim.c on a real libev loop and glibc's
 * own heap: once a burst of at least 8 handshakes in flight has ended and
 * none begins for a moment, the free pages inside the heap go back to the
 * kernel (the process's resident size falls); fewer at once arm nothing;
 * a handshake that begins before the trim puts it off to its own end.
 */
#include "net/heap_trim.h"
#include "unit.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* What a burst of handshakes leaves: blocks freed, with small live ones
 * between them, so that glibc cannot give the heap back from its top. */
#define HOLES 256
#define HOLE_SIZE (32 * 1024)
#define HOLES_KIB (HOLES * HOLE_SIZE / 1024)

static void *live[HOLES];

static void make_holes(void)
{
	void *big[HOLES];
	for (int i = 0; i < HOLES; i++) {
		big[i] = malloc(HOLE_SIZE);
		live[i] = malloc(64);
		if (!big[i] || !live[i])
			abort();
		memset(big[i], 1, HOLE_SIZE); /* resident */
		memset(live[i], 1, 64);
	}
	for (int i = 0; i < HOLES; i++)
		free(big[i]);
}

static void free_live(void)
{
	for (int i = 0; i < HOLES; i++)
		free(live[i]);
}

static long resident_kib(void)
{
	long size = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");
	if (!f || fscanf(f, "%ld %ld", &size, &resident) != 2)
		abort();
	fclose(f);
	return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static void handshakes(struct heap_trim *t, int n)
{
	for (int i = 0; i < n; i++)
		heap_trim_enter(t);
	for (int i = 0; i < n; i++)
		heap_trim_leave(t);
}

static struct ev_loop *new_loop(struct heap_trim *t)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	if (!loop)
		abort();
	heap_trim_init(t, loop);
	return loop;
}

static void test_burst_trimmed(void)
{
	struct heap_trim t;
	struct ev_loop *loop = new_loop(&t);
	make_holes();
	long before = resident_kib();
	handshakes(&t, 8);
	CHECK(ev_is_active(&t.timer));
	ev_run(loop, 0); /* until the trim has run: no other watcher */
	long after = resident_kib();
	CHECK(before - after >= HOLES_KIB / 2);
	if (before - after < HOLES_KIB / 2)
		printf("     resident %ld KiB -> %ld KiB, %d KiB freed\n", before, after, HOLES_KIB);
	CHECK_INT(t.peak, 0);
	free_live();
	ev_loop_destroy(loop);
}

static void test_few_at_once_not_trimmed(void)
{
	struct heap_trim t;
	struct ev_loop *loop = new_loop(&t);
	handshakes(&t, 7);
	CHECK(!ev_is_active(&t.timer));
	CHECK_INT(t.busy, 0);
	CHECK_INT(t.peak, 7);
	ev_loop_destroy(loop);
}

static void test_new_handshake_puts_it_off(void)
{
	struct heap_trim t;
	struct ev_loop *loop = new_loop(&t);
	make_holes();
	handshakes(&t, 8);
	heap_trim_enter(&t); /* before the timer fires */
	long before = resident_kib();
	ev_run(loop, 0);
	CHECK(before - resident_kib() < HOLES_KIB / 2);
	CHECK_INT(t.peak, 8);
	heap_trim_leave(&t);
	CHECK(ev_is_active(&t.timer));
	ev_run(loop, 0);
	CHECK(before - resident_kib() >= HOLES_KIB / 2);
	CHECK_INT(t.peak, 0);
	free_live();
	ev_loop_destroy(loop);
}

int main(void)
{
	RUN(test_burst_trimmed);
	RUN(test_few_at_once_not_trimmed);
	RUN(test_new_handshake_puts_it_off);
	return unit_summary();
}
