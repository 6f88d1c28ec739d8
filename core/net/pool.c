/* pool — idle outbound connections by key, watched while idle (pool.h).
 * A pool is a list of idle entries, newest first: connect takes the newest
 * (its peer has most recently proved alive), a full pool drops its oldest.
 * Keys are few (one per upstream), so pools are found by a linear walk. */
#include "net/pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct pool_entry {
	ev_io io;       /* readable while idle: closed by the peer, or junk */
	ev_timer idle;  /* the idle timeout */
	struct pool_conn pc;
	struct pool *pool;
	struct pool_entry *newer, *older;
};

struct pool {
	char key[POOL_KEY_MAX];
	int count;
	int slots; /* taken: counted connections, open or idle */
	struct pool_entry *newest, *oldest;
	struct pool_waiter *first, *last; /* connects waiting for a slot */
	struct pool *next;
};

static struct pool *pools;

static struct pool *pool_find(const char *key)
{
	for (struct pool *p = pools; p; p = p->next)
		if (strcmp(p->key, key) == 0)
			return p;
	return NULL;
}

static struct pool *pool_find_or_add(const char *key)
{
	struct pool *p = pool_find(key);
	if (p || strlen(key) >= POOL_KEY_MAX || !(p = calloc(1, sizeof *p)))
		return p;
	snprintf(p->key, sizeof p->key, "%s", key);
	p->next = pools;
	pools = p;
	return p;
}

static void pool_wake(struct ev_loop *loop, struct pool *p)
{
	struct pool_waiter *w = p->first;
	if (!w)
		return;
	pool_unwait(w);
	ev_feed_event(loop, &w->wake, EV_TIMER);
}

static void pool_free_slot(struct ev_loop *loop, struct pool *p)
{
	if (p->slots > 0)
		p->slots--;
	pool_wake(loop, p);
}

static void pool_close_conn(const struct pool_conn *pc)
{
	if (pc->ssl)
		SSL_free(pc->ssl); /* no close_notify: the peer sees the close */
	close(pc->fd);
}

/* Takes e out of its pool and frees it; the connection stays open. */
static void pool_unlink(struct ev_loop *loop, struct pool_entry *e)
{
	struct pool *p = e->pool;
	ev_io_stop(loop, &e->io);
	ev_timer_stop(loop, &e->idle);
	if (e->newer)
		e->newer->older = e->older;
	else
		p->newest = e->older;
	if (e->older)
		e->older->newer = e->newer;
	else
		p->oldest = e->newer;
	p->count--;
	free(e);
}

static void pool_drop(struct ev_loop *loop, struct pool_entry *e)
{
	struct pool_conn pc = e->pc;
	struct pool *p = e->pool;
	pool_unlink(loop, e);
	pool_close_conn(&pc);
	if (pc.counted)
		pool_free_slot(loop, p);
}

/* An idle connection has nothing to say: whatever made it readable (the
 * peer's FIN, a reset, unexpected bytes) ends it. */
static void pool_on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)revents;
	pool_drop(loop, (struct pool_entry *)w);
}

static void pool_on_idle(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)revents;
	pool_drop(loop, (struct pool_entry *)((char *)w - offsetof(struct pool_entry, idle)));
}

int pool_put(struct ev_loop *loop, const char *key, const struct pool_conn *pc, double idle,
             int size, char *err, size_t errlen)
{
	if (size < 1)
		size = POOL_DEFAULT_SIZE;
	struct pool *p = NULL;
	struct pool_entry *e = NULL;
	if (strlen(key) >= POOL_KEY_MAX) {
		snprintf(err, errlen, "pool name too long");
		goto fail;
	}
	if (!(p = pool_find_or_add(key)) || !(e = calloc(1, sizeof *e))) {
		snprintf(err, errlen, "no memory");
		goto fail;
	}
	while (p->count >= size)
		pool_drop(loop, p->oldest);
	e->pc = *pc;
	e->pool = p;
	e->older = p->newest;
	if (p->newest)
		p->newest->newer = e;
	else
		p->oldest = e;
	p->newest = e;
	p->count++;
	ev_io_init(&e->io, pool_on_readable, pc->fd, EV_READ);
	ev_io_start(loop, &e->io);
	ev_init(&e->idle, pool_on_idle);
	if (idle > 0) {
		ev_timer_set(&e->idle, idle, 0.);
		ev_timer_start(loop, &e->idle);
	}
	pool_wake(loop, p); /* a connect waiting for a slot takes this one */
	return 0;
fail:
	pool_close_conn(pc);
	if (pc->counted && p)
		pool_free_slot(loop, p);
	return -1;
}

bool pool_get(struct ev_loop *loop, const char *key, struct pool_conn *pc)
{
	struct pool *p = pool_find(key);
	if (!p || !p->newest)
		return false;
	struct pool_entry *e = p->newest;
	*pc = e->pc;
	pc->reused++;
	pool_unlink(loop, e);
	return true;
}

bool pool_reserve(const char *key, int size)
{
	struct pool *p = pool_find_or_add(key);
	if (!p || p->slots >= (size < 1 ? POOL_DEFAULT_SIZE : size))
		return false;
	p->slots++;
	return true;
}

void pool_release(struct ev_loop *loop, const char *key)
{
	struct pool *p = pool_find(key);
	if (p)
		pool_free_slot(loop, p);
}

void pool_kick(struct ev_loop *loop, const char *key)
{
	struct pool *p = pool_find(key);
	if (p)
		pool_wake(loop, p);
}

bool pool_wait(const char *key, struct pool_waiter *w)
{
	struct pool *p = pool_find_or_add(key);
	if (!p)
		return false;
	w->pool = p;
	w->next = NULL;
	if (p->last)
		p->last->next = w;
	else
		p->first = w;
	p->last = w;
	return true;
}

int pool_waiting(const char *key)
{
	struct pool *p = pool_find(key);
	int n = 0;
	for (struct pool_waiter *w = p ? p->first : NULL; w; w = w->next)
		n++;
	return n;
}

void pool_unwait(struct pool_waiter *w)
{
	struct pool *p = w->pool;
	if (!p)
		return;
	struct pool_waiter **pp = &p->first, *prev = NULL;
	while (*pp && *pp != w) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	if (*pp)
		*pp = w->next;
	if (p->last == w)
		p->last = prev;
	w->pool = NULL;
	w->next = NULL;
}

int pool_count(const char *key)
{
	struct pool *p = pool_find(key);
	return p ? p->count : 0;
}

void pool_close_all(struct ev_loop *loop)
{
	while (pools) {
		struct pool *p = pools;
		while (p->first)
			pool_unwait(p->first);
		p->slots = 0;
		while (p->newest)
			pool_drop(loop, p->newest);
		pools = p->next;
		free(p);
	}
}
