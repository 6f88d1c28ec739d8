/* tls_context — OpenSSL server contexts built from smtp-server's TLS
 * options (key, cert, ca, pfx, passphrase, minVersion, ciphers, ...), the
 * way tls.createSecureContext builds them in Node. The options come as a
 * C struct: who reads them from a configuration (lua/tls_options.c) is no
 * concern of this layer. */
#ifndef LUASMTPD_TLS_CONTEXT_H
#define LUASMTPD_TLS_CONTEXT_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

/* One value of an option: PEM text, DER or PKCS#12 bytes, or a file path.
 * data is NUL-terminated (a path is used as a C string); NULL: not given. */
struct tls_blob {
	const char *data;
	size_t len;
};

/* The options of one context, as Node names them. The strings are
 * borrowed: they must outlive the call that builds the context only. */
struct tls_options {
	struct tls_blob key, cert, pfx;
	const char *passphrase;
	const struct tls_blob *ca; /* trust anchors for client certificates */
	size_t nca;
	const char *min_version, *max_version; /* "TLSv1" ... "TLSv1.3" */
	const char *ciphers, *ciphersuites, *ecdh_curve;
	struct tls_blob session_id_context, ticket_keys;
	bool has_session_timeout;
	double session_timeout; /* seconds, >= 0 */
	bool request_cert, reject_unauthorized, honor_cipher_order;
	/* Which of requestCert, rejectUnauthorized and ca the options set:
	 * a context chosen by SNI takes the others from its listener. */
	bool has_request_cert, has_reject_unauthorized, has_ca;
};

/* Per-context settings the handshake needs after the context is built. */
struct tls_ctx_info {
	bool request_cert;
	bool reject_unauthorized;
	bool own_request_cert, own_reject_unauthorized, own_ca;
};

/* No option given: Node's defaults (rejectUnauthorized and
 * honorCipherOrder on, everything else off or OpenSSL's). */
void tls_options_init(struct tls_options *o);
/* Builds a context from the options. Errors name the option:
 * "option 'minVersion': ...". */
SSL_CTX *tls_context_new(const struct tls_options *o, char *err, size_t errlen);
const struct tls_ctx_info *tls_context_info(const SSL_CTX *ctx);
/* Client certificate settings for a handshake moved to chosen (by SNI):
 * chosen's own requestCert, rejectUnauthorized and ca, the listener's
 * for those it does not set. */
void tls_context_inherit_verification(SSL *ssl, SSL_CTX *chosen, SSL_CTX *listener);

/* A trust store from ca values, as the ca option reads them. NULL when
 * they name no usable certificate (err says why, like "option 'ca':
 * cannot open ..."). */
X509_STORE *tls_ca_store(const struct tls_blob *ca, size_t nca, char *err, size_t errlen);

#endif
