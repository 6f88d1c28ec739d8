#include "tls/tls_tickets.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define SECRET_LEN 32

/* A page of its own, so that it can be left out of core dumps. */
static unsigned char *secret;
static EVP_CIPHER *ticket_cipher; /* fetched once: no lookup per ticket */
static int keys_index = -1;
static time_t (*clock_now)(void);

struct ticket_keys {
	bool fixed;
	long long period; /* of cur; -1: not derived yet */
	unsigned char scope[TLS_TICKET_SCOPE_LEN];
	unsigned char cur[TLS_TICKET_KEYS_LEN], prev[TLS_TICKET_KEYS_LEN];
};

static void keys_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	if (ptr)
		OPENSSL_clear_free(ptr, sizeof(struct ticket_keys));
}

void tls_tickets_init(void)
{
	if (secret)
		return;
	void *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (page == MAP_FAILED)
		abort();
	madvise(page, 4096, MADV_DONTDUMP);
	if (RAND_priv_bytes(page, SECRET_LEN) != 1)
		abort(); /* no CSPRNG: no key worth the name */
	secret = page;
	ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-128-CBC", NULL);
	keys_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, keys_free);
	if (!ticket_cipher || keys_index < 0)
		abort();
}

void tls_tickets_set_clock(time_t (*now)(void))
{
	clock_now = now;
}

/* HMAC-SHA512(secret, scope || period): 64 bytes, of which the first 48
 * are a key set (the first 16, the name, differ from period to period). */
static void keys_derive(const unsigned char *scope, long long period, unsigned char out[TLS_TICKET_KEYS_LEN])
{
	unsigned char msg[TLS_TICKET_SCOPE_LEN + 8], mac[64];
	memcpy(msg, scope, TLS_TICKET_SCOPE_LEN);
	for (int i = 0; i < 8; i++)
		msg[TLS_TICKET_SCOPE_LEN + i] = (unsigned char)((unsigned long long)period >> (56 - 8 * i));
	size_t len = 0;
	if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA512", NULL, secret, SECRET_LEN, msg, sizeof msg, mac, sizeof mac,
	               &len) || len != sizeof mac)
		abort();
	memcpy(out, mac, TLS_TICKET_KEYS_LEN);
	OPENSSL_cleanse(mac, sizeof mac);
}

/* Brings the derived keys up to the clock's period. */
static void keys_refresh(struct ticket_keys *k)
{
	if (k->fixed)
		return;
	long long period = (long long)(clock_now ? clock_now() : time(NULL)) / TLS_TICKET_PERIOD;
	if (period == k->period)
		return;
	if (period == k->period + 1)
		memcpy(k->prev, k->cur, sizeof k->prev);
	else
		keys_derive(k->scope, period - 1, k->prev);
	keys_derive(k->scope, period, k->cur);
	k->period = period;
}

static int keys_use(const unsigned char *key, unsigned char *iv, EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)(key + 16), 16),
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};
	if (EVP_MAC_CTX_set_params(hctx, params) != 1 ||
	    EVP_CipherInit_ex(cctx, ticket_cipher, NULL, key + 32, iv, enc) != 1)
		return -1;
	return 1;
}

/* The handshake's context (the one SNI chose) holds the keys; OpenSSL
 * calls this through the listener's context, which has it too. */
static int tickets_cb(SSL *ssl, unsigned char name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                      EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
	struct ticket_keys *k = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), keys_index);
	if (!k)
		return 0; /* no ticket issued, none accepted: full handshakes */
	keys_refresh(k);
	if (enc) {
		if (RAND_bytes(iv, 16) != 1)
			return -1;
		memcpy(name, k->cur, 16);
		return keys_use(k->cur, iv, cctx, hctx, 1);
	}
	/* 2: resumed, and new tickets follow. TLS 1.3 sends them after every
	 * resumption (as OpenSSL does with its own keys: a client like
	 * Postfix's cache replaces the ticket it used); TLS 1.2 only when the
	 * ticket was under the previous key. */
	int renew = SSL_version(ssl) >= TLS1_3_VERSION ? 2 : 1;
	if (memcmp(name, k->cur, 16) == 0) {
		int r = keys_use(k->cur, iv, cctx, hctx, 0);
		return r == 1 ? renew : r;
	}
	if (!k->fixed && memcmp(name, k->prev, 16) == 0) {
		int r = keys_use(k->prev, iv, cctx, hctx, 0);
		return r == 1 ? 2 : r;
	}
	return 0; /* not ours, or older than a period: full handshake */
}

void tls_tickets_install(SSL_CTX *ctx, const unsigned char *fixed, const unsigned char *scope)
{
	tls_tickets_init();
	struct ticket_keys *k = OPENSSL_zalloc(sizeof *k);
	if (!k)
		abort();
	k->period = -1;
	if (fixed) {
		k->fixed = true;
		memcpy(k->cur, fixed, TLS_TICKET_KEYS_LEN);
	} else {
		memcpy(k->scope, scope, TLS_TICKET_SCOPE_LEN);
	}
	SSL_CTX_set_ex_data(ctx, keys_index, k);
	SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, tickets_cb);
}
