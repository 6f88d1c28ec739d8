#include "base/buf.h"

#include "base/freelist.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Connections take and drop buffers on every read and reply: the common
 * sizes are kept on small free lists instead of going back to malloc each
 * time. */
#define BUF_POOL_DEPTH 16
static struct freelist buf_pools[] = {
	FREELIST_INIT(4096, BUF_POOL_DEPTH),
	FREELIST_INIT(16384, BUF_POOL_DEPTH),
	FREELIST_INIT(65536, BUF_POOL_DEPTH),
};

/* The list for buffers of cap bytes; other sizes get none, one that keeps
 * nothing. */
static struct freelist *buf_pool_for(size_t cap, struct freelist *none)
{
	for (size_t i = 0; i < sizeof buf_pools / sizeof buf_pools[0]; i++)
		if (buf_pools[i].size == cap)
			return &buf_pools[i];
	*none = (struct freelist)FREELIST_INIT(cap, 0);
	return none;
}

static char *buf_alloc(size_t cap)
{
	struct freelist none;
	return freelist_alloc(buf_pool_for(cap, &none));
}

static void buf_dispose(char *d, size_t cap)
{
	/* An empty buffer's first growth (on every read and reply, as they
	 * are given back once consumed) has nothing to give back. */
	if (!d)
		return;
	struct freelist none;
	freelist_free(buf_pool_for(cap, &none), d);
}

/* buf_reserve when the room is not there. */
char *buf_grow(struct buf *b, size_t n)
{
	size_t used = buf_used(b);
	if (b->off > 0 && b->cap - used >= n && b->off >= used) {
		/* Compacting is cheaper than growing once half the buffer is consumed. */
		memmove(b->data, b->data + b->off, used);
		b->off = 0;
		b->len = used;
		return b->data + b->len;
	}
	size_t cap = b->cap ? b->cap : 4096;
	while (cap - used < n)
		cap *= 2;
	char *d = buf_alloc(cap);
	if (used)
		memcpy(d, b->data + b->off, used);
	buf_dispose(b->data, b->cap);
	b->data = d;
	b->off = 0;
	b->len = used;
	b->cap = cap;
	return d + used;
}

void buf_appendf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char tmp[1024];
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof tmp) {
		buf_append(b, tmp, (size_t)n);
		return;
	}
	char *w = buf_reserve(b, (size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(w, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void buf_consume(struct buf *b, size_t n)
{
	b->off += n;
	if (b->off >= b->len)
		b->off = b->len = 0;
}

void buf_release_if_empty(struct buf *b)
{
	if (buf_used(b) == 0 && b->data)
		buf_free(b);
}

void buf_free(struct buf *b)
{
	buf_dispose(b->data, b->cap);
	b->data = NULL;
	b->off = b->len = b->cap = 0;
}
