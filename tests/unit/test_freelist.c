/*
 * test_freelist.c — the allocation pool (core/base/freelist.c) and the
 * buffers that use it: an object given back is the next one taken (last
 * in, first out), no more than depth are kept, calloc zeroes a reused
 * object, and a buffer of a pooled size reuses the bytes of the last one
 * freed while other sizes still work. Under AddressSanitizer nothing is
 * kept (FREELIST_KEEPS is 0), which the cases check instead.
 */
#include "base/buf.h"
#include "base/freelist.h"
#include "unit.h"

#include <stdint.h>
#include <stdlib.h>

static void test_reuse_last_in_first_out(void)
{
	struct freelist fl = FREELIST_INIT(64, 4);
	void *a = freelist_alloc(&fl), *b = freelist_alloc(&fl);
	CHECK(a && b && a != b);
	freelist_free(&fl, a);
	freelist_free(&fl, b);
	CHECK_INT(fl.n, FREELIST_KEEPS ? 2 : 0);
	void *x = freelist_alloc(&fl), *y = freelist_alloc(&fl);
	if (FREELIST_KEEPS) {
		CHECK(x == b);
		CHECK(y == a);
	}
	CHECK_INT(fl.n, 0);
	freelist_free(&fl, NULL); /* nothing to keep */
	CHECK_INT(fl.n, 0);
	freelist_free(&fl, x);
	freelist_free(&fl, y);
	while (fl.n)
		free(freelist_alloc(&fl));
}

/* Given back beyond depth, objects go back to malloc. */
static void test_bounded(void)
{
	struct freelist fl = FREELIST_INIT(32, 2);
	void *o[5];
	for (int i = 0; i < 5; i++)
		o[i] = freelist_alloc(&fl);
	for (int i = 0; i < 5; i++)
		freelist_free(&fl, o[i]);
	CHECK_INT(fl.n, FREELIST_KEEPS ? 2 : 0);
	void *p = freelist_alloc(&fl), *q = freelist_alloc(&fl);
	if (FREELIST_KEEPS) {
		CHECK(p == o[1]);
		CHECK(q == o[0]);
	}
	CHECK_INT(fl.n, 0);
	free(p);
	free(q);
}

static void test_calloc_zeroes_reused(void)
{
	struct freelist fl = FREELIST_INIT(200, 1);
	unsigned char *p = freelist_alloc(&fl);
	memset(p, 0xab, 200);
	freelist_free(&fl, p);
	unsigned char *z = freelist_calloc(&fl);
	if (FREELIST_KEEPS)
		CHECK(z == p);
	int nonzero = 0;
	for (int i = 0; i < 200; i++)
		nonzero += z[i] != 0;
	CHECK_INT(nonzero, 0);
	free(z);
}

/* 4 KiB is a pooled buffer size; 8 KiB is not, and still grows and frees. */
static void test_buffers(void)
{
	struct buf a = {0};
	buf_append(&a, "hello", 5);
	CHECK_INT(a.cap, 4096);
	uintptr_t first = (uintptr_t)a.data;
	buf_free(&a);
	struct buf b = {0};
	buf_append(&b, "world", 5);
	if (FREELIST_KEEPS)
		CHECK((uintptr_t)b.data == first);
	CHECK_MEM(buf_head(&b), buf_used(&b), "world");
	char big[5000];
	memset(big, 'x', sizeof big);
	buf_append(&b, big, sizeof big);
	CHECK_INT(b.cap, 8192);
	CHECK_INT(buf_used(&b), 5005);
	CHECK_MEM(buf_head(&b), 5, "world");
	buf_free(&b);
	CHECK(b.data == NULL);
}

int main(void)
{
	RUN(test_reuse_last_in_first_out);
	RUN(test_bounded);
	RUN(test_calloc_zeroes_reused);
	RUN(test_buffers);
	return unit_summary();
}
