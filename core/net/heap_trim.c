#include "net/heap_trim.h"

#include <malloc.h>
#include <stddef.h>

/* Fewer handshakes at once than this leave no heap worth a trim: one at a
 * time, each reuses what the last one freed (figure (5t) of make bench). */
#define HEAP_TRIM_MIN_PEAK 8
/* Quiet time before the trim, so that a steady load whose handshakes now
 * and then all end at once is not trimmed between two of them. */
#define HEAP_TRIM_DELAY 0.1

static void heap_trim_fire(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct heap_trim *t = (struct heap_trim *)((char *)w - offsetof(struct heap_trim, timer));
	if (t->busy > 0)
		return; /* a new burst: its own end trims */
	malloc_trim(0);
	t->peak = 0;
}

void heap_trim_init(struct heap_trim *t, struct ev_loop *loop)
{
	*t = (struct heap_trim){.loop = loop};
	ev_timer_init(&t->timer, heap_trim_fire, HEAP_TRIM_DELAY, 0.);
}

void heap_trim_enter(struct heap_trim *t)
{
	if (++t->busy > t->peak)
		t->peak = t->busy;
}

void heap_trim_leave(struct heap_trim *t)
{
	if (--t->busy > 0 || t->peak < HEAP_TRIM_MIN_PEAK)
		return;
	ev_timer_stop(t->loop, &t->timer);
	ev_timer_set(&t->timer, HEAP_TRIM_DELAY, 0.);
	ev_timer_start(t->loop, &t->timer);
}
