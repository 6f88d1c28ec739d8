#include "base/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void buf_oom(void)
{
	fputs("luasmtpd: out of memory\n", stderr);
	abort();
}

/* Connections take and drop buffers on every read and reply: the common
 * sizes are kept on small free lists instead of going back to malloc each
 * time (the event loop's thread only; a process has one loop). */
#define BUF_POOL_DEPTH 16
static struct buf_pool {
	size_t cap;
	unsigned n;
	char *free[BUF_POOL_DEPTH];
} buf_pools[] = {{.cap = 4096}, {.cap = 16384}, {.cap = 65536}};

static struct buf_pool *buf_pool_for(size_t cap)
{
	for (size_t i = 0; i < sizeof buf_pools / sizeof buf_pools[0]; i++)
		if (buf_pools[i].cap == cap)
			return &buf_pools[i];
	return NULL;
}

static char *buf_alloc(size_t cap)
{
	struct buf_pool *p = buf_pool_for(cap);
	char *d = p && p->n ? p->free[--p->n] : malloc(cap);
	if (!d)
		buf_oom();
	return d;
}

static void buf_dispose(char *d, size_t cap)
{
	struct buf_pool *p = d ? buf_pool_for(cap) : NULL;
	if (p && p->n < BUF_POOL_DEPTH)
		p->free[p->n++] = d;
	else
		free(d);
}

char *buf_reserve(struct buf *b, size_t n)
{
	if (b->cap - b->len >= n)
		return b->data + b->len;
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

void buf_append(struct buf *b, const void *p, size_t n)
{
	if (n == 0)
		return;
	memcpy(buf_reserve(b, n), p, n);
	b->len += n;
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
