/* smallblock — an allocator for many small blocks of short life, in front
 * of malloc: the Lua heap's (lua_guard.c). Blocks of up to SMALLBLOCK_MAX
 * bytes are kept by size class when freed and handed out again, last freed
 * first; bigger ones go straight to malloc. The event loop's thread only.
 *
 * Lua's collector frees a sweep's worth of objects at a time, then the
 * server allocates them again one message at a time: glibc keeps seven a
 * size in its thread cache and sends the rest through its bins, and taking
 * them back out (_int_malloc sorting and splitting) was about a tenth of
 * the server's own CPU per pipelined message (perf). A class keeps at
 * most SMALLBLOCK_KEEP bytes; what is over goes back to malloc, so memory a
 * hook once blew up to luaMemoryLimit is not held. Under AddressSanitizer
 * nothing is kept (FREELIST_KEEPS), so a use after free is still seen. */
#ifndef LUASMTPD_SMALLBLOCK_H
#define LUASMTPD_SMALLBLOCK_H

#include "base/freelist.h"

#include <stddef.h>

#define SMALLBLOCK_MAX 256
#define SMALLBLOCK_KEEP (128 * 1024)
#define SMALLBLOCK_STEP 16

/* smallblock_classes[i] holds blocks of (i + 1) * SMALLBLOCK_STEP bytes. */
extern struct freelist smallblock_classes[SMALLBLOCK_MAX / SMALLBLOCK_STEP];

/* What smallblock_realloc does not do inline: growing or shrinking a
 * block, a big block, a class with none kept. */
void *smallblock_realloc_slow(void *p, size_t osize, size_t nsize);

/* lua_Alloc's contract: nsize 0 frees p (osize bytes) and returns NULL;
 * otherwise a block of nsize bytes holding the first min(osize, nsize) of
 * p (p NULL: a new block), or NULL with p untouched when out of memory.
 * osize must be the size p was last given for.
 *
 * Inline for its two common cases, a small block taken from its class or
 * given back to it: they are most of the Lua heap's calls (20 a pipelined
 * message), and a call into another file for each cost more than the
 * work (callgrind). */
static inline void *smallblock_realloc(void *p, size_t osize, size_t nsize)
{
	if (nsize == 0 && p && osize <= SMALLBLOCK_MAX) {
		freelist_free(&smallblock_classes[(osize - 1) / SMALLBLOCK_STEP], p);
		return NULL;
	}
	if (!p && nsize - 1 < SMALLBLOCK_MAX) {
		void *q = freelist_take(&smallblock_classes[(nsize - 1) / SMALLBLOCK_STEP]);
		if (q)
			return q;
	}
	return smallblock_realloc_slow(p, osize, nsize);
}

/* Bytes kept for reuse now (tests). */
size_t smallblock_kept(void);

#endif
