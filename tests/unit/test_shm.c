/*
 * test_shm.c — the shared-memory store behind ngx.shared.DICT: values of
 * each type with flags, add/replace/safe_set answers, incr with init and
 * expiry, LRU eviction when full (and "no memory" for safe_set), flushes,
 * keys; and two processes incrementing one key with an exact final count.
 */
#include "base/shm.h"
#include "unit.h"

#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct shm_zone *zone(size_t size)
{
	char err[128];
	struct shm_zone *z = shm_create(size, err, sizeof err);
	CHECK(z != NULL);
	return z;
}

static void test_types(void)
{
	struct shm_zone *z = zone(64 * 1024);
	bool forcible, stale;
	struct shm_value s = {.type = SHM_STRING, .str = "hello", .len = 5, .flags = 7};
	struct shm_value n = {.type = SHM_NUMBER, .num = 3.5};
	struct shm_value b = {.type = SHM_BOOLEAN, .boolean = true};
	CHECK_INT(shm_set(z, "s", 1, &s, 0, SHM_SET, &forcible), SHM_OK);
	CHECK_INT(shm_set(z, "n", 1, &n, 0, SHM_SET, &forcible), SHM_OK);
	CHECK_INT(shm_set(z, "b", 1, &b, 0, SHM_SET, &forcible), SHM_OK);
	struct shm_value v;
	CHECK_INT(shm_get(z, "s", 1, false, &v, &stale), SHM_OK);
	CHECK_MEM(v.str, v.len, "hello");
	CHECK_INT(v.flags, 7);
	free((char *)v.str);
	CHECK_INT(shm_get(z, "n", 1, false, &v, &stale), SHM_OK);
	CHECK(v.type == SHM_NUMBER && v.num == 3.5);
	CHECK_INT(shm_get(z, "b", 1, false, &v, &stale), SHM_OK);
	CHECK(v.type == SHM_BOOLEAN && v.boolean);
	CHECK_INT(shm_get(z, "x", 1, false, &v, &stale), SHM_NOT_FOUND);
	/* a longer value moves to a bigger slot */
	char big[1000];
	memset(big, 'x', sizeof big);
	struct shm_value l = {.type = SHM_STRING, .str = big, .len = sizeof big};
	CHECK_INT(shm_set(z, "s", 1, &l, 0, SHM_SET, &forcible), SHM_OK);
	CHECK_INT(shm_get(z, "s", 1, false, &v, &stale), SHM_OK);
	CHECK_INT(v.len, sizeof big);
	free((char *)v.str);
	struct shm_value nil = {.type = SHM_NIL};
	CHECK_INT(shm_set(z, "s", 1, &nil, 0, SHM_SET, &forcible), SHM_OK);
	CHECK_INT(shm_get(z, "s", 1, false, &v, &stale), SHM_NOT_FOUND);
	shm_destroy(z);
}

static void test_modes(void)
{
	struct shm_zone *z = zone(64 * 1024);
	bool forcible;
	struct shm_value n = {.type = SHM_NUMBER, .num = 1};
	CHECK_INT(shm_set(z, "k", 1, &n, 0, SHM_REPLACE, &forcible), SHM_NOT_FOUND);
	CHECK_INT(shm_set(z, "k", 1, &n, 0, SHM_ADD, &forcible), SHM_OK);
	CHECK_INT(shm_set(z, "k", 1, &n, 0, SHM_ADD, &forcible), SHM_EXISTS);
	CHECK_INT(shm_set(z, "k", 1, &n, 0, SHM_REPLACE, &forcible), SHM_OK);
	double r;
	CHECK_INT(shm_incr(z, "k", 1, 2, NULL, 0, &r, &forcible), SHM_OK);
	CHECK(r == 3);
	CHECK_INT(shm_incr(z, "new", 3, 1, NULL, 0, &r, &forcible), SHM_NOT_FOUND);
	double init = 10;
	CHECK_INT(shm_incr(z, "new", 3, 1, &init, 0.05, &r, &forcible), SHM_OK);
	CHECK(r == 11);
	double ttl;
	CHECK_INT(shm_ttl(z, "new", 3, &ttl), SHM_OK);
	CHECK(ttl > 0 && ttl <= 0.05);
	CHECK_INT(shm_ttl(z, "k", 1, &ttl), SHM_OK);
	CHECK(ttl == 0);
	struct shm_value s = {.type = SHM_STRING, .str = "a", .len = 1};
	CHECK_INT(shm_set(z, "s", 1, &s, 0, SHM_SET, &forcible), SHM_OK);
	CHECK_INT(shm_incr(z, "s", 1, 1, NULL, 0, &r, &forcible), SHM_NOT_NUMBER);
	usleep(80 * 1000);
	struct shm_value v;
	bool stale;
	CHECK_INT(shm_get(z, "new", 3, false, &v, &stale), SHM_NOT_FOUND);
	CHECK_INT(shm_get(z, "new", 3, true, &v, &stale), SHM_OK);
	CHECK(stale && v.num == 11);
	CHECK_INT(shm_expire(z, "new", 3, 1), SHM_NOT_FOUND);
	CHECK_INT(shm_expire(z, "k", 1, 10), SHM_OK);
	CHECK_INT(shm_ttl(z, "k", 1, &ttl), SHM_OK);
	CHECK(ttl > 9 && ttl <= 10);
	CHECK_INT(shm_flush_expired(z, 0), 1);
	shm_flush_all(z);
	CHECK_INT(shm_get(z, "k", 1, false, &v, &stale), SHM_NOT_FOUND);
	CHECK_INT(shm_flush_expired(z, 1), 1);
	CHECK_INT(shm_flush_expired(z, 0), 1);
	CHECK(shm_free_space(z) > 0 && shm_free_space(z) < shm_capacity(z));
	shm_destroy(z);
}

static void count_key(const char *key, size_t klen, void *ctx)
{
	(*(int *)ctx)++;
}

static void test_eviction(void)
{
	struct shm_zone *z = zone(SHM_MIN_SIZE);
	bool forcible, stale;
	char key[32];
	struct shm_value v = {.type = SHM_STRING, .str = "0123456789", .len = 10};
	int first_forced = -1;
	for (int i = 0; i < 500; i++) {
		snprintf(key, sizeof key, "key%d", i);
		CHECK_INT(shm_set(z, key, strlen(key), &v, 0, SHM_SET, &forcible), SHM_OK);
		if (forcible && first_forced < 0)
			first_forced = i;
	}
	CHECK(first_forced > 10);
	struct shm_value out;
	CHECK_INT(shm_get(z, "key0", 4, false, &out, &stale), SHM_NOT_FOUND); /* the oldest went */
	CHECK_INT(shm_get(z, "key499", 6, false, &out, &stale), SHM_OK);
	free((char *)out.str);
	CHECK_INT(shm_set(z, "more", 4, &v, 0, SHM_SAFE_SET, &forcible), SHM_NO_MEMORY);
	CHECK(!forcible);
	int n = 0;
	shm_keys(z, 0, count_key, &n);
	CHECK(n > 10 && n < 500);
	int m = 0;
	shm_keys(z, 3, count_key, &m);
	CHECK_INT(m, 3);
	shm_destroy(z);
}

/* Two processes, one key: incr under the shared lock loses no update. */
static void test_two_processes(void)
{
	enum { N = 20000 };
	struct shm_zone *z = zone(64 * 1024);
	double init = 0, r;
	bool forcible;
	pid_t pid = fork();
	if (pid == 0) {
		for (int i = 0; i < N; i++)
			shm_incr(z, "count", 5, 1, &init, 0, &r, &forcible);
		_exit(0);
	}
	for (int i = 0; i < N; i++)
		shm_incr(z, "count", 5, 1, &init, 0, &r, &forcible);
	int status;
	CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status));
	struct shm_value v;
	CHECK_INT(shm_get(z, "count", 5, false, &v, NULL), SHM_OK);
	CHECK_INT((long long)v.num, 2 * N);
	shm_destroy(z);
}

int main(void)
{
	RUN(test_types);
	RUN(test_modes);
	RUN(test_eviction);
	RUN(test_two_processes);
	return unit_summary();
}
