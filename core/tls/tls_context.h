/* tls_context — OpenSSL server contexts built from smtp-server's TLS
 * options (key, cert, ca, pfx, passphrase, minVersion, ciphers, ...), the
 * way tls.createSecureContext builds them in Node. */
#ifndef LUASMTPD_TLS_CONTEXT_H
#define LUASMTPD_TLS_CONTEXT_H

#include <lua.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

/* Per-context settings the handshake needs after the context is built. */
struct tls_ctx_info {
	bool request_cert;
	bool reject_unauthorized;
	/* Which of requestCert, rejectUnauthorized and ca the options set:
	 * a context chosen by SNI takes the others from its listener. */
	bool own_request_cert, own_reject_unauthorized, own_ca;
};

/* Builds a context from the options table at idx (already merged with the
 * defaults). Errors name the option: "option 'minVersion': ...". */
SSL_CTX *tls_context_from_lua(lua_State *L, int idx, char *err, size_t errlen);
const struct tls_ctx_info *tls_context_info(const SSL_CTX *ctx);
/* Client certificate settings for a handshake moved to chosen (by SNI):
 * chosen's own requestCert, rejectUnauthorized and ca, the listener's
 * for those it does not set. */
void tls_context_inherit_verification(SSL *ssl, SSL_CTX *chosen, SSL_CTX *listener);
/* Is this table key one of the options tls_context_from_lua reads? */
bool tls_context_option(const char *name);

/* smtp.tls.context(opts) objects: a userdata owning an SSL_CTX reference. */
void tls_context_push(lua_State *L, SSL_CTX *ctx);
SSL_CTX *tls_context_check(lua_State *L, int idx); /* NULL if not one */
void tls_context_register(lua_State *L);

/* A trust store from a ca value at idx, as the ca option reads it (PEM
 * text or a file path, or a list of them). NULL when it names no usable
 * certificate (err says why, like "option 'ca': cannot open ..."). */
X509_STORE *tls_ca_store(lua_State *L, int idx, char *err, size_t errlen);

#endif
