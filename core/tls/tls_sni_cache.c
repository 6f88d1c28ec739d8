#include "tls/tls_sni_cache.h"

#include <openssl/rand.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct sni_cached {
	struct sni_cached *chain;      /* next in its hash bucket */
	struct sni_cached *newer, *older; /* the recency list */
	uint64_t hash;
	SSL_CTX *ctx; /* a reference of our own */
	char name[];
};

struct tls_sni_cache {
	struct sni_cached **buckets;
	size_t nbuckets; /* a power of two */
	size_t count, max;
	struct sni_cached *newest, *oldest;
	uint64_t seed; /* names come from clients: a seed keeps chains short */
};

static uint64_t sni_hash(const struct tls_sni_cache *cache, const char *name)
{
	uint64_t h = 14695981039346656037ull ^ cache->seed; /* FNV-1a */
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 1099511628211ull;
	return h;
}

static void *sni_calloc(size_t n, size_t size)
{
	void *p = calloc(n, size);
	if (!p)
		abort();
	return p;
}

struct tls_sni_cache *tls_sni_cache_new(size_t max)
{
	struct tls_sni_cache *cache = sni_calloc(1, sizeof *cache);
	cache->max = max;
	cache->nbuckets = 16;
	cache->buckets = sni_calloc(cache->nbuckets, sizeof *cache->buckets);
	if (RAND_bytes((unsigned char *)&cache->seed, sizeof cache->seed) != 1)
		cache->seed = (uint64_t)(uintptr_t)cache;
	return cache;
}

static struct sni_cached **sni_slot(struct tls_sni_cache *cache, uint64_t hash, const char *name)
{
	struct sni_cached **slot = &cache->buckets[hash & (cache->nbuckets - 1)];
	while (*slot && ((*slot)->hash != hash || strcmp((*slot)->name, name) != 0))
		slot = &(*slot)->chain;
	return slot;
}

static void sni_unlink(struct tls_sni_cache *cache, struct sni_cached *e)
{
	*(e->newer ? &e->newer->older : &cache->newest) = e->older;
	*(e->older ? &e->older->newer : &cache->oldest) = e->newer;
	e->newer = e->older = NULL;
}

static void sni_push_newest(struct tls_sni_cache *cache, struct sni_cached *e)
{
	e->older = cache->newest;
	e->newer = NULL;
	*(cache->newest ? &cache->newest->newer : &cache->oldest) = e;
	cache->newest = e;
}

SSL_CTX *tls_sni_cache_get(struct tls_sni_cache *cache, const char *name)
{
	struct sni_cached *e = *sni_slot(cache, sni_hash(cache, name), name);
	if (!e)
		return NULL;
	sni_unlink(cache, e);
	sni_push_newest(cache, e);
	return e->ctx;
}

static void sni_evict_oldest(struct tls_sni_cache *cache)
{
	struct sni_cached *e = cache->oldest;
	struct sni_cached **slot = sni_slot(cache, e->hash, e->name);
	*slot = e->chain;
	sni_unlink(cache, e);
	SSL_CTX_free(e->ctx);
	free(e);
	cache->count--;
}

/* Doubles the buckets once there are more names than buckets. */
static void sni_grow(struct tls_sni_cache *cache)
{
	size_t n = cache->nbuckets * 2;
	struct sni_cached **b = sni_calloc(n, sizeof *b);
	for (size_t i = 0; i < cache->nbuckets; i++) {
		struct sni_cached *e = cache->buckets[i], *next;
		for (; e; e = next) {
			next = e->chain;
			e->chain = b[e->hash & (n - 1)];
			b[e->hash & (n - 1)] = e;
		}
	}
	free(cache->buckets);
	cache->buckets = b;
	cache->nbuckets = n;
}

void tls_sni_cache_put(struct tls_sni_cache *cache, const char *name, SSL_CTX *ctx)
{
	uint64_t hash = sni_hash(cache, name);
	struct sni_cached **slot = sni_slot(cache, hash, name);
	SSL_CTX_up_ref(ctx);
	if (*slot) { /* two handshakes asked for it at once: keep the latest answer */
		SSL_CTX_free((*slot)->ctx);
		(*slot)->ctx = ctx;
		return;
	}
	if (cache->max && cache->count >= cache->max)
		sni_evict_oldest(cache);
	if (cache->count >= cache->nbuckets)
		sni_grow(cache);
	size_t len = strlen(name);
	struct sni_cached *e = sni_calloc(1, sizeof *e + len + 1);
	memcpy(e->name, name, len + 1);
	e->hash = hash;
	e->ctx = ctx;
	slot = sni_slot(cache, hash, name); /* eviction or growth moved things */
	*slot = e;
	sni_push_newest(cache, e);
	cache->count++;
}

void tls_sni_cache_free(struct tls_sni_cache *cache)
{
	if (!cache)
		return;
	while (cache->oldest)
		sni_evict_oldest(cache);
	free(cache->buckets);
	free(cache);
}
