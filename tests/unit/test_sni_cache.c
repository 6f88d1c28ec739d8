/*
 * test_sni_cache.c — unit tests for the SNICallback cache
 * (core/tls_sni_cache.c) with real OpenSSL contexts: hits, the least
 * recently used name evicted at the bound, a hit refreshing a name, a name
 * answered twice, no limit (growth past many buckets), and the cache
 * keeping its own reference to each context.
 */
#include "tls/tls_sni_cache.h"
#include "unit.h"

#include <stdio.h>

static SSL_CTX *new_ctx(void)
{
	return SSL_CTX_new(TLS_server_method());
}

static void test_lru_eviction(void)
{
	struct tls_sni_cache *c = tls_sni_cache_new(2);
	SSL_CTX *a = new_ctx(), *b = new_ctx(), *x = new_ctx();
	CHECK(tls_sni_cache_get(c, "a.example") == NULL);
	tls_sni_cache_put(c, "a.example", a);
	tls_sni_cache_put(c, "b.example", b);
	CHECK(tls_sni_cache_get(c, "a.example") == a); /* a is now the newest */
	tls_sni_cache_put(c, "c.example", x);          /* b goes */
	CHECK(tls_sni_cache_get(c, "b.example") == NULL);
	CHECK(tls_sni_cache_get(c, "a.example") == a);
	CHECK(tls_sni_cache_get(c, "c.example") == x);
	tls_sni_cache_put(c, "d.example", b); /* c was looked up after a: a goes */
	CHECK(tls_sni_cache_get(c, "a.example") == NULL);
	CHECK(tls_sni_cache_get(c, "c.example") == x);
	CHECK(tls_sni_cache_get(c, "d.example") == b);
	/* the cache holds references of its own (ASan: no use after free) */
	SSL_CTX_free(a);
	SSL_CTX_free(b);
	SSL_CTX_free(x);
	CHECK(SSL_CTX_get_timeout(tls_sni_cache_get(c, "c.example")) > 0);
	tls_sni_cache_free(c);
}

static void test_answered_twice(void)
{
	struct tls_sni_cache *c = tls_sni_cache_new(1);
	SSL_CTX *a = new_ctx(), *b = new_ctx();
	tls_sni_cache_put(c, "a.example", a);
	tls_sni_cache_put(c, "a.example", b);
	CHECK(tls_sni_cache_get(c, "a.example") == b);
	SSL_CTX_free(a);
	SSL_CTX_free(b);
	tls_sni_cache_free(c);
}

/* Caches ctx for n0.example .. n<n-1>.example; returns how many of them
 * are then found. */
static int fill_and_count(struct tls_sni_cache *c, SSL_CTX *ctx, int n)
{
	char name[32];
	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof name, "n%d.example", i);
		tls_sni_cache_put(c, name, ctx);
	}
	int found = 0;
	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof name, "n%d.example", i);
		found += tls_sni_cache_get(c, name) == ctx;
	}
	return found;
}

static void test_no_limit(void)
{
	struct tls_sni_cache *c = tls_sni_cache_new(0);
	SSL_CTX *ctx = new_ctx();
	CHECK_INT(fill_and_count(c, ctx, 5000), 5000);
	CHECK(tls_sni_cache_get(c, "n5000.example") == NULL);
	SSL_CTX_free(ctx);
	tls_sni_cache_free(c);
}

static void test_bound_many_names(void)
{
	struct tls_sni_cache *c = tls_sni_cache_new(100);
	SSL_CTX *ctx = new_ctx();
	CHECK_INT(fill_and_count(c, ctx, 1000), 100);
	CHECK(tls_sni_cache_get(c, "n999.example") == ctx);
	CHECK(tls_sni_cache_get(c, "n899.example") == NULL);
	SSL_CTX_free(ctx);
	tls_sni_cache_free(c);
}

int main(void)
{
	RUN(test_lru_eviction);
	RUN(test_answered_twice);
	RUN(test_no_limit);
	RUN(test_bound_many_names);
	tls_sni_cache_free(NULL);
	return unit_summary();
}
