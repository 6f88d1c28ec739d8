/* tls_sni_cache — one listener's SNICallback answers, by servername. At
 * most a bounded number of names (sniCacheSize), the least recently used
 * evicted first: a client asking for ever new names cannot grow it. */
#ifndef LUASMTPD_TLS_SNI_CACHE_H
#define LUASMTPD_TLS_SNI_CACHE_H

#include <openssl/ssl.h>
#include <stddef.h>

struct tls_sni_cache;

/* max: names kept; 0: no limit. */
struct tls_sni_cache *tls_sni_cache_new(size_t max);
/* The context cached for name (a borrowed reference), or NULL; a hit makes
 * name the most recently used. */
SSL_CTX *tls_sni_cache_get(struct tls_sni_cache *cache, const char *name);
/* Caches ctx for name (taking a reference of its own), evicting the least
 * recently used name when full. */
void tls_sni_cache_put(struct tls_sni_cache *cache, const char *name, SSL_CTX *ctx);
void tls_sni_cache_free(struct tls_sni_cache *cache);

#endif
