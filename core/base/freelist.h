/* freelist — objects of one size kept for reuse instead of going back to
 * malloc: the one allocation pool of the core (sessions, message bodies,
 * connection buffers). The event loop's thread only; a process has one.
 *
 * glibc serves blocks over 1 KiB from its large bins, after consolidating
 * its fast bins: a fresh session cost a connection about 4,000
 * instructions (callgrind, tests/bench/callgrind.py) that a reuse does not. Under AddressSanitizer nothing is kept, so each
 * object is a fresh allocation and a use after free is still reported. */
#ifndef LUASMTPD_FREELIST_H
#define LUASMTPD_FREELIST_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define FREELIST_KEEPS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FREELIST_KEEPS 0
#endif
#endif
#ifndef FREELIST_KEEPS
#define FREELIST_KEEPS 1
#endif

struct freelist {
	size_t size;    /* of each object, at least a pointer's */
	unsigned depth; /* objects kept at most; the rest are freed */
	unsigned n;     /* objects kept now */
	void *head;     /* the last object given back; its first word links the next */
};

#define FREELIST_INIT(object_size, max_kept) {.size = (object_size), .depth = (max_kept)}

/* A kept object, or NULL when none is: the caller then allocates
 * fl->size bytes itself (and may fail, where freelist_alloc aborts).
 * Inline, as freelist_free: on the Lua heap's path (smallblock.c). */
static inline void *freelist_take(struct freelist *fl)
{
	void *p = fl->head;
	if (p) {
		memcpy(&fl->head, p, sizeof fl->head);
		fl->n--;
	}
	return p;
}

/* An object of fl->size bytes, reused when one is kept; aborts when out
 * of memory. _calloc zeroes it. */
void *freelist_alloc(struct freelist *fl);
void *freelist_calloc(struct freelist *fl);

/* Gives p (from fl, or NULL) back: kept while fewer than depth are. */
static inline void freelist_free(struct freelist *fl, void *p)
{
	if (!p)
		return;
	if (FREELIST_KEEPS && fl->n < fl->depth) {
		memcpy(p, &fl->head, sizeof fl->head);
		fl->head = p;
		fl->n++;
		return;
	}
	free(p);
}

#endif
