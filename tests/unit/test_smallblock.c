/*
 * test_smallblock.c — the Lua heap's allocator (core/base/smallblock.c)
 * under lua_Alloc's contract: contents kept across every kind of resize
 * (within a class, between classes, to and from a malloc'd size), a freed
 * block is the next one given for its class (last in, first out), what is
 * kept stays under SMALLBLOCK_KEEP a class and the rest goes back to
 * malloc. Under AddressSanitizer nothing is kept (FREELIST_KEEPS is 0),
 * which the cases check instead.
 */
#include "base/freelist.h"
#include "base/smallblock.h"
#include "unit.h"

#include <stdint.h>
#include <stdlib.h>

static void fill(unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(seed + i * 7);
}

static int same(const unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != (unsigned char)(seed + i * 7))
			return 0;
	return 1;
}

static void test_resizes_keep_contents(void)
{
	/* from, to: same class, up a class, down a class, small to big, big
	 * to big, big to small, the edges of the classes */
	static const size_t steps[][2] = {
		{1, 16}, {16, 17}, {40, 24}, {100, 256}, {256, 257}, {200, 5000},
		{5000, 9000}, {9000, 300}, {300, 12}, {64, 64},
	};
	for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
		size_t from = steps[i][0], to = steps[i][1];
		unsigned char *p = smallblock_realloc(NULL, 0, from);
		CHECK(p != NULL);
		fill(p, from, (unsigned)i);
		unsigned char *q = smallblock_realloc(p, from, to);
		CHECK(q != NULL);
		CHECK(same(q, from < to ? from : to, (unsigned)i));
		if (from <= SMALLBLOCK_MAX && to <= SMALLBLOCK_MAX && (from - 1) / 16 == (to - 1) / 16)
			CHECK(q == p); /* the class has room: no move */
		fill(q, to, 99); /* the whole new size is writable (ASan checks) */
		CHECK(smallblock_realloc(q, to, 0) == NULL);
	}
	CHECK(smallblock_realloc(NULL, 0, 0) == NULL);
}

static void test_reuse_last_in_first_out(void)
{
	void *a = smallblock_realloc(NULL, 0, 40), *b = smallblock_realloc(NULL, 0, 48);
	size_t kept = smallblock_kept();
	smallblock_realloc(a, 40, 0);
	smallblock_realloc(b, 48, 0); /* 33..48 bytes: one class */
	CHECK_INT(smallblock_kept(), kept + (FREELIST_KEEPS ? 96 : 0));
	void *x = smallblock_realloc(NULL, 0, 33), *y = smallblock_realloc(NULL, 0, 47);
	if (FREELIST_KEEPS) {
		CHECK(x == b);
		CHECK(y == a);
	}
	CHECK_INT(smallblock_kept(), kept);
	smallblock_realloc(x, 33, 0);
	smallblock_realloc(y, 47, 0);
	/* bigger blocks are malloc's, never kept */
	kept = smallblock_kept();
	smallblock_realloc(smallblock_realloc(NULL, 0, SMALLBLOCK_MAX + 1), SMALLBLOCK_MAX + 1, 0);
	CHECK_INT(smallblock_kept(), kept);
}

/* A heap that once held far more than the limit keeps no more than
 * SMALLBLOCK_KEEP bytes a class once it is freed. */
static void test_bounded(void)
{
	enum { N = 3 * SMALLBLOCK_KEEP / 64 };
	void **blocks = malloc(N * sizeof *blocks);
	CHECK(blocks != NULL);
	for (size_t i = 0; i < N; i++)
		blocks[i] = smallblock_realloc(NULL, 0, 64);
	size_t kept = smallblock_kept();
	for (size_t i = 0; i < N; i++)
		smallblock_realloc(blocks[i], 64, 0);
	size_t now = smallblock_kept() - kept;
	if (FREELIST_KEEPS)
		CHECK_INT(now, SMALLBLOCK_KEEP);
	else
		CHECK_INT(now, 0);
	free(blocks);
}

int main(void)
{
	RUN(test_resizes_keep_contents);
	RUN(test_reuse_last_in_first_out);
	RUN(test_bounded);
	return unit_summary();
}
