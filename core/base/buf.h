/* buf — a growable byte buffer with a read offset, so consuming from the
 * front is O(1) and the bytes are moved only when space runs out. */
#ifndef LUASMTPD_BUF_H
#define LUASMTPD_BUF_H

#include <stddef.h>

struct buf {
	char *data;
	size_t off; /* first unconsumed byte */
	size_t len; /* end of valid bytes */
	size_t cap;
};

static inline const char *buf_head(const struct buf *b) { return b->data + b->off; }
static inline size_t buf_used(const struct buf *b) { return b->len - b->off; }

/* Makes room for n more bytes and returns where to write them. */
char *buf_reserve(struct buf *b, size_t n);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_appendf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_consume(struct buf *b, size_t n);
/* Frees the memory of an empty buffer: idle connections hold no buffers. */
void buf_release_if_empty(struct buf *b);
void buf_free(struct buf *b);

#endif
