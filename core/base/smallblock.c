#include "base/smallblock.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define STEP SMALLBLOCK_STEP
#define CLASSES (SMALLBLOCK_MAX / STEP)
#define CLASS(i) FREELIST_INIT((i) * STEP, SMALLBLOCK_KEEP / ((i) * STEP))

_Static_assert(SMALLBLOCK_MAX % STEP == 0 && CLASSES == 16, "one line below per class");
struct freelist smallblock_classes[CLASSES] = {
	CLASS(1), CLASS(2),  CLASS(3),  CLASS(4),  CLASS(5),  CLASS(6),  CLASS(7),  CLASS(8),
	CLASS(9), CLASS(10), CLASS(11), CLASS(12), CLASS(13), CLASS(14), CLASS(15), CLASS(16),
};

static inline struct freelist *class_of(size_t n)
{
	return &smallblock_classes[(n - 1) / STEP];
}

static void *block_alloc(size_t n)
{
	if (n > SMALLBLOCK_MAX)
		return malloc(n);
	struct freelist *fl = class_of(n);
	void *p = freelist_take(fl);
	return p ? p : malloc(fl->size);
}

static void block_free(void *p, size_t n)
{
	if (n > SMALLBLOCK_MAX)
		free(p);
	else
		freelist_free(class_of(n), p);
}

void *smallblock_realloc_slow(void *p, size_t osize, size_t nsize)
{
	if (!p)
		return nsize ? block_alloc(nsize) : NULL;
	if (nsize == 0) {
		block_free(p, osize);
		return NULL;
	}
	bool osmall = osize <= SMALLBLOCK_MAX, nsmall = nsize <= SMALLBLOCK_MAX;
	if (!osmall && !nsmall)
		return realloc(p, nsize);
	if (osmall && nsmall && class_of(osize) == class_of(nsize))
		return p; /* the block has room already */
	void *q = block_alloc(nsize);
	if (!q)
		return NULL;
	memcpy(q, p, osize < nsize ? osize : nsize);
	block_free(p, osize);
	return q;
}

size_t smallblock_kept(void)
{
	size_t bytes = 0;
	for (size_t i = 0; i < CLASSES; i++)
		bytes += smallblock_classes[i].n * smallblock_classes[i].size;
	return bytes;
}
