/* shm — a key/value store in one shared memory region, the C side of
 * ngx.shared.DICT: created (mmap MAP_SHARED|MAP_ANONYMOUS) by the master
 * before it forks, so every worker reaches the same entries. Keys are byte
 * strings; values are strings, numbers or booleans with user flags and an
 * optional expiry; the region is bounded and `set` evicts the least
 * recently used entries when full (as nginx does). One process-shared
 * robust mutex guards it. No I/O, no Lua. */
#ifndef LUASMTPD_SHM_H
#define LUASMTPD_SHM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHM_MIN_SIZE 8192
#define SHM_MAX_SIZE ((size_t)1 << 31) /* entries are found by 32-bit offsets */
#define SHM_MAX_KEY 65535

enum shm_type { SHM_NIL = 0, SHM_STRING, SHM_NUMBER, SHM_BOOLEAN };

enum shm_status {
	SHM_OK = 0,
	SHM_NOT_FOUND,  /* "not found" */
	SHM_EXISTS,     /* "exists" (add) */
	SHM_NO_MEMORY,  /* "no memory" */
	SHM_NOT_NUMBER, /* "not a number" (incr) */
};

struct shm_value {
	enum shm_type type;
	const char *str; /* SHM_STRING; from shm_get, a malloc'd copy the caller frees */
	size_t len;
	double num;     /* SHM_NUMBER */
	bool boolean;   /* SHM_BOOLEAN */
	uint32_t flags;
};

/* How a store call treats a full region. */
enum shm_set_mode {
	SHM_SET,      /* set / replace: evict the least recently used entries */
	SHM_SAFE_SET, /* safe_set: SHM_NO_MEMORY instead of evicting */
	SHM_ADD,      /* add: SHM_EXISTS when the key is live, evicts when full */
	SHM_SAFE_ADD,
	SHM_REPLACE,  /* replace: SHM_NOT_FOUND when the key is not live */
};

struct shm_zone;

/* A new region of size bytes (SHM_MIN_SIZE..SHM_MAX_SIZE), empty; NULL and
 * err on failure. */
struct shm_zone *shm_create(size_t size, char *err, size_t errlen);
/* Unmaps it in this process (other processes keep their mapping). */
void shm_destroy(struct shm_zone *z);
size_t shm_capacity(const struct shm_zone *z);
/* Bytes not holding an entry: never used plus freed slots. */
size_t shm_free_space(struct shm_zone *z);

/* The value of key; SHM_NOT_FOUND when absent, or expired unless stale_ok
 * (then *stale says whether it had expired). A string value is copied. */
enum shm_status shm_get(struct shm_zone *z, const char *key, size_t klen, bool stale_ok,
                        struct shm_value *out, bool *stale);
/* Stores v (SHM_NIL deletes) expiring after ttl seconds (0: never).
 * *forcible is set when a live entry was evicted to make room. */
enum shm_status shm_set(struct shm_zone *z, const char *key, size_t klen, const struct shm_value *v,
                        double ttl, enum shm_set_mode mode, bool *forcible);
/* Adds by to the number at key; a missing key starts from *init (NULL:
 * SHM_NOT_FOUND) expiring after init_ttl seconds (0: never). */
enum shm_status shm_incr(struct shm_zone *z, const char *key, size_t klen, double by, const double *init,
                         double init_ttl, double *result, bool *forcible);
/* Remaining seconds (0: no expiry) of a live key. */
enum shm_status shm_ttl(struct shm_zone *z, const char *key, size_t klen, double *ttl);
/* Sets a live key's expiry to ttl seconds from now (0: never). */
enum shm_status shm_expire(struct shm_zone *z, const char *key, size_t klen, double ttl);
/* Marks every entry expired (their memory is reused later). */
void shm_flush_all(struct shm_zone *z);
/* Frees up to max expired entries (0: all); returns how many. */
size_t shm_flush_expired(struct shm_zone *z, size_t max);
/* Calls each(key, klen, ctx) on up to max live keys (0: all), most
 * recently used first, on copies taken under the lock. */
void shm_keys(struct shm_zone *z, size_t max, void (*each)(const char *key, size_t klen, void *ctx),
              void *ctx);

#endif
