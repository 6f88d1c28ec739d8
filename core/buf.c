#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void buf_oom(void)
{
	fputs("luasmtpd: out of memory\n", stderr);
	abort();
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
	char *d = malloc(cap);
	if (!d)
		buf_oom();
	if (used)
		memcpy(d, b->data + b->off, used);
	free(b->data);
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
	if (buf_used(b) == 0 && b->data) {
		free(b->data);
		b->data = NULL;
		b->off = b->len = b->cap = 0;
	}
}

void buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->off = b->len = b->cap = 0;
}
