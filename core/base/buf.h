/* buf — a growable byte buffer with a read offset, so consuming from the
 * front is O(1) and the bytes are moved only when space runs out. */
#ifndef LUASMTPD_BUF_H
#define LUASMTPD_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

struct buf {
	char *data;
	size_t off; /* first unconsumed byte */
	size_t len; /* end of valid bytes */
	size_t cap;
};

static inline const char *buf_head(const struct buf *b) { return b->data + b->off; }
static inline size_t buf_used(const struct buf *b) { return b->len - b->off; }

char *buf_grow(struct buf *b, size_t n);

/* Makes room for n more bytes and returns where to write them. Inline:
 * every reply and read comes here, and mostly the room is there. */
static inline char *buf_reserve(struct buf *b, size_t n)
{
	return b->cap - b->len >= n ? b->data + b->len : buf_grow(b, n);
}

static inline void buf_append(struct buf *b, const void *p, size_t n)
{
	if (n == 0)
		return;
	memcpy(buf_reserve(b, n), p, n);
	b->len += n;
}

/* Puts n bytes back in front of the head, in the room consumed before it:
 * true; false, and nothing done, when that room is smaller than n. */
static inline bool buf_prepend(struct buf *b, const void *p, size_t n)
{
	if (b->off < n)
		return false;
	if (n) {
		b->off -= n;
		memcpy(b->data + b->off, p, n);
	}
	return true;
}

void buf_appendf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_consume(struct buf *b, size_t n);
/* Frees the memory of an empty buffer: idle connections hold no buffers. */
void buf_release_if_empty(struct buf *b);
void buf_free(struct buf *b);

#endif
