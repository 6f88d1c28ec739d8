/* shm — the store behind ngx.shared.DICT (see shm.h).
 *
 * Layout of a region: a header (the lock, the allocator's state, the LRU
 * list), a hash table of 32-bit offsets, then the arena. Every entry is a
 * slot of a power-of-two size class cut from the arena by a bump pointer;
 * a freed slot goes to its class's free list and is reused by an entry of
 * the same class, as nginx's slab allocator reuses its chunks. Offsets,
 * not pointers, link everything, so the region may sit at a different
 * address in each process.
 *
 * The lock is a pthread mutex, process-shared and robust: a worker killed
 * while holding it (SIGKILL, a crash) hands the next locker EOWNERDEAD
 * instead of hanging every worker, as a spinlock would; the entries it was
 * changing may then be half written, so the store is emptied. */
#include "base/shm.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define SHM_MIN_CLASS 6  /* 64-byte slots */
#define SHM_CLASSES 32
#define SHM_EVICT_MAX 30 /* entries evicted for one store, as nginx */

struct shm_entry {
	uint32_t hnext;              /* next in the hash chain */
	uint32_t lru_prev, lru_next; /* towards the head (recent) and the tail */
	uint32_t hash;
	uint32_t vlen;
	uint32_t flags;
	uint64_t expires_ms;         /* CLOCK_MONOTONIC, shared by the processes; 0: never */
	uint16_t klen;
	uint8_t cls;
	uint8_t type;
	unsigned char data[];        /* key, then value */
};

struct shm_header {
	pthread_mutex_t lock;
	size_t size;
	uint32_t nbuckets;
	uint32_t arena;        /* offset of the first slot */
	uint32_t bump;         /* offset of the first byte never cut */
	uint32_t free_list[SHM_CLASSES];
	uint64_t free_bytes;   /* in the free lists */
	uint32_t lru_head, lru_tail;
};

struct shm_zone {
	struct shm_header *h;
};

#define AT(z, off) ((struct shm_entry *)((char *)(z)->h + (off)))
#define OFF(z, e) ((uint32_t)((char *)(e) - (char *)(z)->h))

static uint32_t *shm_buckets(struct shm_zone *z)
{
	return (uint32_t *)(z->h + 1);
}

static uint64_t shm_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t shm_deadline(double ttl)
{
	return ttl > 0 ? shm_now_ms() + (uint64_t)(ttl * 1000 + 0.5) : 0;
}

static bool shm_expired(const struct shm_entry *e, uint64_t now)
{
	return e->expires_ms && e->expires_ms <= now;
}

static uint32_t shm_hash(const char *key, size_t klen)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < klen; i++)
		h = (h ^ (unsigned char)key[i]) * 16777619u;
	return h;
}

static void shm_reset(struct shm_zone *z)
{
	struct shm_header *h = z->h;
	memset(shm_buckets(z), 0, h->nbuckets * sizeof(uint32_t));
	memset(h->free_list, 0, sizeof h->free_list);
	h->free_bytes = 0;
	h->bump = h->arena;
	h->lru_head = h->lru_tail = 0;
}

static void shm_lock(struct shm_zone *z)
{
	int rc = pthread_mutex_lock(&z->h->lock);
	if (rc == EOWNERDEAD) {
		shm_reset(z);
		pthread_mutex_consistent(&z->h->lock);
	} else if (rc != 0) {
		abort(); /* a broken invariant: the mutex was initialised at creation */
	}
}

static void shm_unlock(struct shm_zone *z)
{
	pthread_mutex_unlock(&z->h->lock);
}

struct shm_zone *shm_create(size_t size, char *err, size_t errlen)
{
	if (size < SHM_MIN_SIZE || size > SHM_MAX_SIZE) {
		snprintf(err, errlen, "size must be between %d and %zu bytes", SHM_MIN_SIZE, SHM_MAX_SIZE);
		return NULL;
	}
	struct shm_zone *z = calloc(1, sizeof *z);
	if (!z)
		abort();
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		snprintf(err, errlen, "mmap: %s", strerror(errno));
		free(z);
		return NULL;
	}
	z->h = p;
	z->h->size = size;
	/* About one bucket per 512 bytes: chains stay short for small entries. */
	uint32_t nb = 16;
	while (nb < size / 512)
		nb <<= 1;
	z->h->nbuckets = nb;
	size_t arena = sizeof(struct shm_header) + nb * sizeof(uint32_t);
	z->h->arena = (uint32_t)((arena + 15) & ~(size_t)15);
	pthread_mutexattr_t a;
	pthread_mutexattr_init(&a);
	pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	pthread_mutex_init(&z->h->lock, &a);
	pthread_mutexattr_destroy(&a);
	shm_reset(z);
	return z;
}

void shm_destroy(struct shm_zone *z)
{
	if (!z)
		return;
	munmap(z->h, z->h->size);
	free(z);
}

size_t shm_capacity(const struct shm_zone *z)
{
	return z->h->size;
}

size_t shm_free_space(struct shm_zone *z)
{
	shm_lock(z);
	size_t n = z->h->size - z->h->bump + z->h->free_bytes;
	shm_unlock(z);
	return n;
}

/* ---- the LRU list and the hash chains ---- */

static void shm_lru_unlink(struct shm_zone *z, struct shm_entry *e)
{
	if (e->lru_prev)
		AT(z, e->lru_prev)->lru_next = e->lru_next;
	else
		z->h->lru_head = e->lru_next;
	if (e->lru_next)
		AT(z, e->lru_next)->lru_prev = e->lru_prev;
	else
		z->h->lru_tail = e->lru_prev;
}

static void shm_lru_push(struct shm_zone *z, struct shm_entry *e)
{
	uint32_t off = OFF(z, e);
	e->lru_prev = 0;
	e->lru_next = z->h->lru_head;
	if (z->h->lru_head)
		AT(z, z->h->lru_head)->lru_prev = off;
	else
		z->h->lru_tail = off;
	z->h->lru_head = off;
}

static struct shm_entry *shm_find(struct shm_zone *z, const char *key, size_t klen, uint32_t hash)
{
	for (uint32_t off = shm_buckets(z)[hash & (z->h->nbuckets - 1)]; off; off = AT(z, off)->hnext) {
		struct shm_entry *e = AT(z, off);
		if (e->hash == hash && e->klen == klen && memcmp(e->data, key, klen) == 0)
			return e;
	}
	return NULL;
}

/* ---- slots ---- */

static size_t shm_class_size(unsigned cls)
{
	return (size_t)1 << cls;
}

static unsigned shm_class_of(size_t need)
{
	unsigned cls = SHM_MIN_CLASS;
	while (shm_class_size(cls) < need)
		cls++;
	return cls;
}

static struct shm_entry *shm_alloc(struct shm_zone *z, unsigned cls)
{
	struct shm_header *h = z->h;
	size_t sz = shm_class_size(cls);
	struct shm_entry *e;
	if (h->free_list[cls]) {
		e = AT(z, h->free_list[cls]);
		h->free_list[cls] = e->hnext;
		h->free_bytes -= sz;
	} else if (h->size - h->bump >= sz) {
		e = AT(z, h->bump);
		h->bump += (uint32_t)sz;
	} else {
		return NULL;
	}
	e->cls = (uint8_t)cls;
	return e;
}

/* Unlinks e from its chain and the LRU list and frees its slot. */
static void shm_remove(struct shm_zone *z, struct shm_entry *e)
{
	uint32_t off = OFF(z, e);
	uint32_t *p = &shm_buckets(z)[e->hash & (z->h->nbuckets - 1)];
	while (*p != off)
		p = &AT(z, *p)->hnext;
	*p = e->hnext;
	shm_lru_unlink(z, e);
	e->hnext = z->h->free_list[e->cls];
	z->h->free_list[e->cls] = off;
	z->h->free_bytes += shm_class_size(e->cls);
}

/* A slot of class cls, evicting from the LRU tail when the region is full
 * (evict: false answers NULL instead). Entries already expired go first,
 * like nginx's ngx_http_lua_shdict_expire. */
static struct shm_entry *shm_alloc_evicting(struct shm_zone *z, unsigned cls, bool evict, bool *forcible)
{
	uint64_t now = shm_now_ms();
	for (int i = 0; i < 2 && z->h->lru_tail && shm_expired(AT(z, z->h->lru_tail), now); i++)
		shm_remove(z, AT(z, z->h->lru_tail));
	struct shm_entry *e = shm_alloc(z, cls);
	for (int i = 0; !e && evict && i < SHM_EVICT_MAX && z->h->lru_tail; i++) {
		struct shm_entry *victim = AT(z, z->h->lru_tail);
		if (!shm_expired(victim, now))
			*forcible = true;
		shm_remove(z, victim);
		e = shm_alloc(z, cls);
	}
	return e;
}

static size_t shm_value_len(const struct shm_value *v)
{
	switch (v->type) {
	case SHM_STRING:
		return v->len;
	case SHM_NUMBER:
		return sizeof(double);
	case SHM_BOOLEAN:
		return 1;
	default:
		return 0;
	}
}

static void shm_write_value(struct shm_entry *e, const struct shm_value *v, uint64_t expires)
{
	unsigned char *p = e->data + e->klen;
	e->type = (uint8_t)v->type;
	e->vlen = (uint32_t)shm_value_len(v);
	e->flags = v->flags;
	e->expires_ms = expires;
	if (v->type == SHM_STRING)
		memcpy(p, v->str, v->len);
	else if (v->type == SHM_NUMBER)
		memcpy(p, &v->num, sizeof v->num);
	else if (v->type == SHM_BOOLEAN)
		*p = v->boolean;
}

/* Stores v under key in a fresh or reused slot; caller holds the lock. */
static enum shm_status shm_store(struct shm_zone *z, const char *key, size_t klen, uint32_t hash,
                                 struct shm_entry *old, const struct shm_value *v, uint64_t expires,
                                 bool evict, bool *forcible)
{
	size_t need = sizeof(struct shm_entry) + klen + shm_value_len(v);
	unsigned cls = shm_class_of(need);
	if (old && old->cls == cls) {
		shm_write_value(old, v, expires);
		shm_lru_unlink(z, old);
		shm_lru_push(z, old);
		return SHM_OK;
	}
	if (old)
		shm_remove(z, old);
	if (shm_class_size(cls) > z->h->size - z->h->arena)
		return SHM_NO_MEMORY;
	struct shm_entry *e = shm_alloc_evicting(z, cls, evict, forcible);
	if (!e)
		return SHM_NO_MEMORY;
	e->hash = hash;
	e->klen = (uint16_t)klen;
	memcpy(e->data, key, klen);
	shm_write_value(e, v, expires);
	uint32_t *b = &shm_buckets(z)[hash & (z->h->nbuckets - 1)];
	e->hnext = *b;
	*b = OFF(z, e);
	shm_lru_push(z, e);
	return SHM_OK;
}

/* ---- the operations ---- */

enum shm_status shm_get(struct shm_zone *z, const char *key, size_t klen, bool stale_ok,
                        struct shm_value *out, bool *stale)
{
	memset(out, 0, sizeof *out);
	shm_lock(z);
	struct shm_entry *e = shm_find(z, key, klen, shm_hash(key, klen));
	bool expired = e && shm_expired(e, shm_now_ms());
	if (!e || (expired && !stale_ok)) {
		shm_unlock(z);
		return SHM_NOT_FOUND;
	}
	if (stale)
		*stale = expired;
	const unsigned char *p = e->data + e->klen;
	out->type = e->type;
	out->flags = e->flags;
	if (e->type == SHM_STRING) {
		char *copy = malloc(e->vlen ? e->vlen : 1);
		if (!copy)
			abort();
		memcpy(copy, p, e->vlen);
		out->str = copy;
		out->len = e->vlen;
	} else if (e->type == SHM_NUMBER) {
		memcpy(&out->num, p, sizeof out->num);
	} else {
		out->boolean = *p;
	}
	if (!expired) {
		shm_lru_unlink(z, e);
		shm_lru_push(z, e);
	}
	shm_unlock(z);
	return SHM_OK;
}

enum shm_status shm_set(struct shm_zone *z, const char *key, size_t klen, const struct shm_value *v,
                        double ttl, enum shm_set_mode mode, bool *forcible)
{
	*forcible = false;
	uint32_t hash = shm_hash(key, klen);
	shm_lock(z);
	struct shm_entry *e = shm_find(z, key, klen, hash);
	bool live = e && !shm_expired(e, shm_now_ms());
	enum shm_status st = SHM_OK;
	if ((mode == SHM_ADD || mode == SHM_SAFE_ADD) && live)
		st = SHM_EXISTS;
	else if (mode == SHM_REPLACE && !live)
		st = SHM_NOT_FOUND;
	else if (v->type == SHM_NIL) {
		if (e)
			shm_remove(z, e);
	} else {
		bool evict = mode != SHM_SAFE_SET && mode != SHM_SAFE_ADD;
		st = shm_store(z, key, klen, hash, e, v, shm_deadline(ttl), evict, forcible);
	}
	shm_unlock(z);
	return st;
}

enum shm_status shm_incr(struct shm_zone *z, const char *key, size_t klen, double by, const double *init,
                         double init_ttl, double *result, bool *forcible)
{
	*forcible = false;
	uint32_t hash = shm_hash(key, klen);
	shm_lock(z);
	struct shm_entry *e = shm_find(z, key, klen, hash);
	enum shm_status st = SHM_OK;
	if (!e || shm_expired(e, shm_now_ms())) {
		if (!init) {
			st = SHM_NOT_FOUND;
		} else {
			struct shm_value v = {.type = SHM_NUMBER, .num = *init + by};
			*result = v.num;
			st = shm_store(z, key, klen, hash, e, &v, shm_deadline(init_ttl), true, forcible);
		}
	} else if (e->type != SHM_NUMBER) {
		st = SHM_NOT_NUMBER;
	} else {
		unsigned char *p = e->data + e->klen;
		double n;
		memcpy(&n, p, sizeof n);
		n += by;
		memcpy(p, &n, sizeof n);
		*result = n;
		shm_lru_unlink(z, e);
		shm_lru_push(z, e);
	}
	shm_unlock(z);
	return st;
}

enum shm_status shm_ttl(struct shm_zone *z, const char *key, size_t klen, double *ttl)
{
	shm_lock(z);
	uint64_t now = shm_now_ms();
	struct shm_entry *e = shm_find(z, key, klen, shm_hash(key, klen));
	enum shm_status st = SHM_NOT_FOUND;
	if (e && !shm_expired(e, now)) {
		*ttl = e->expires_ms ? (double)(e->expires_ms - now) / 1000 : 0;
		st = SHM_OK;
	}
	shm_unlock(z);
	return st;
}

enum shm_status shm_expire(struct shm_zone *z, const char *key, size_t klen, double ttl)
{
	shm_lock(z);
	struct shm_entry *e = shm_find(z, key, klen, shm_hash(key, klen));
	enum shm_status st = SHM_NOT_FOUND;
	if (e && !shm_expired(e, shm_now_ms())) {
		e->expires_ms = shm_deadline(ttl);
		st = SHM_OK;
	}
	shm_unlock(z);
	return st;
}

void shm_flush_all(struct shm_zone *z)
{
	shm_lock(z);
	/* 1 ms after the clock's origin: in the past for every process. */
	for (uint32_t off = z->h->lru_head; off; off = AT(z, off)->lru_next)
		AT(z, off)->expires_ms = 1;
	shm_unlock(z);
}

size_t shm_flush_expired(struct shm_zone *z, size_t max)
{
	size_t n = 0;
	shm_lock(z);
	uint64_t now = shm_now_ms();
	for (uint32_t off = z->h->lru_tail; off && (max == 0 || n < max);) {
		struct shm_entry *e = AT(z, off);
		off = e->lru_prev;
		if (shm_expired(e, now)) {
			shm_remove(z, e);
			n++;
		}
	}
	shm_unlock(z);
	return n;
}

void shm_keys(struct shm_zone *z, size_t max, void (*each)(const char *key, size_t klen, void *ctx),
              void *ctx)
{
	shm_lock(z);
	uint64_t now = shm_now_ms();
	size_t bytes = 0, n = 0;
	for (uint32_t off = z->h->lru_head; off && (max == 0 || n < max); off = AT(z, off)->lru_next) {
		if (!shm_expired(AT(z, off), now)) {
			bytes += sizeof(uint16_t) + AT(z, off)->klen;
			n++;
		}
	}
	/* Copied out, so that each() (which may be Lua, and may fail) never
	 * runs under the lock. */
	unsigned char *copy = malloc(bytes ? bytes : 1), *p = copy;
	if (!copy)
		abort();
	n = 0;
	for (uint32_t off = z->h->lru_head; off && (max == 0 || n < max); off = AT(z, off)->lru_next) {
		struct shm_entry *e = AT(z, off);
		if (shm_expired(e, now))
			continue;
		memcpy(p, &e->klen, sizeof e->klen);
		memcpy(p + sizeof e->klen, e->data, e->klen);
		p += sizeof e->klen + e->klen;
		n++;
	}
	shm_unlock(z);
	for (unsigned char *q = copy; q < p;) {
		uint16_t klen;
		memcpy(&klen, q, sizeof klen);
		each((const char *)q + sizeof klen, klen, ctx);
		q += sizeof klen + klen;
	}
	free(copy);
}
