#include "tls/tls_context.h"
#include "tls/tls_tickets.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pkcs12.h>
#include <openssl/x509v3.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int tls_info_index = -1;

static void tls_info_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	free(ptr);
}

static void tls_indexes(void)
{
	if (tls_info_index < 0)
		tls_info_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, tls_info_free);
}

void tls_options_init(struct tls_options *o)
{
	*o = (struct tls_options){.reject_unauthorized = true, .honor_cipher_order = true};
}

const struct tls_ctx_info *tls_context_info(const SSL_CTX *ctx)
{
	static const struct tls_ctx_info none;
	const struct tls_ctx_info *info = SSL_CTX_get_ex_data(ctx, tls_info_index);
	return info ? info : &none;
}

struct tls_err {
	char *buf;
	size_t len;
};

static bool tls_fail(struct tls_err *e, const char *option, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static bool tls_fail(struct tls_err *e, const char *option, const char *fmt, ...)
{
	int n = snprintf(e->buf, e->len, "option '%s': ", option);
	va_list ap;
	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < e->len)
		vsnprintf(e->buf + n, e->len - (size_t)n, fmt, ap);
	va_end(ap);
	/* OpenSSL's own reason, when it has one, says what was wrong. */
	unsigned long code = ERR_peek_last_error();
	if (code) {
		size_t l = strlen(e->buf);
		char reason[256];
		ERR_error_string_n(code, reason, sizeof reason);
		snprintf(e->buf + l, e->len - l, " (%s)", reason);
	}
	ERR_clear_error();
	return false;
}

/* A PEM/DER source: the option's value is PEM text, or a file path. */
static BIO *tls_source(const char *value, size_t len)
{
	if (memmem(value, len, "-----BEGIN", 10))
		return BIO_new_mem_buf(value, (int)len);
	return BIO_new_file(value, "rb");
}

static int tls_passphrase_cb(char *buf, int size, int rwflag, void *u)
{
	const char *pass = u;
	if (!pass)
		return 0;
	int n = (int)strlen(pass);
	if (n > size)
		n = size;
	memcpy(buf, pass, (size_t)n);
	return n;
}

static bool tls_load_key(SSL_CTX *ctx, const char *v, size_t len, const char *pass, struct tls_err *e)
{
	BIO *b = tls_source(v, len);
	EVP_PKEY *pkey = b ? PEM_read_bio_PrivateKey(b, NULL, tls_passphrase_cb, (void *)pass) : NULL;
	BIO_free(b);
	if (!pkey)
		return tls_fail(e, "key", "cannot read a private key from %s", b ? "it" : v);
	int ok = SSL_CTX_use_PrivateKey(ctx, pkey);
	EVP_PKEY_free(pkey);
	return ok == 1 || tls_fail(e, "key", "cannot use the private key");
}

static bool tls_load_cert(SSL_CTX *ctx, const char *v, size_t len, struct tls_err *e)
{
	BIO *b = tls_source(v, len);
	X509 *leaf = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	if (!leaf) {
		BIO_free(b);
		return tls_fail(e, "cert", "cannot read a certificate from %s", b ? "it" : v);
	}
	bool ok = SSL_CTX_use_certificate(ctx, leaf) == 1;
	X509_free(leaf);
	X509 *extra;
	while (ok && (extra = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
		ok = SSL_CTX_add0_chain_cert(ctx, extra) == 1;
	ERR_clear_error(); /* the end of the chain reads as an error */
	BIO_free(b);
	return ok || tls_fail(e, "cert", "cannot use the certificate");
}

static bool tls_add_ca_pem(X509_STORE *store, const char *v, size_t len, STACK_OF(X509_NAME) *names,
                           struct tls_err *e)
{
	BIO *b = tls_source(v, len);
	if (!b)
		return tls_fail(e, "ca", "cannot open %s", v);
	int n = 0;
	X509 *x;
	while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
		X509_STORE_add_cert(store, x);
		if (names)
			sk_X509_NAME_push(names, X509_NAME_dup(X509_get_subject_name(x)));
		X509_free(x);
		n++;
	}
	ERR_clear_error();
	BIO_free(b);
	return n > 0 || tls_fail(e, "ca", "no certificate found in %s", len > 64 ? "the PEM text" : v);
}

/* The ca values (PEM text or paths) into store; names, when not NULL,
 * gets their subjects. */
static bool tls_add_ca(const struct tls_blob *ca, size_t nca, X509_STORE *store,
                       STACK_OF(X509_NAME) *names, struct tls_err *e)
{
	for (size_t i = 0; i < nca; i++)
		if (!tls_add_ca_pem(store, ca[i].data, ca[i].len, names, e))
			return false;
	return true;
}

static bool tls_load_ca(const struct tls_options *o, SSL_CTX *ctx, struct tls_err *e)
{
	STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
	bool ok = tls_add_ca(o->ca, o->nca, SSL_CTX_get_cert_store(ctx), names, e);
	if (ok && sk_X509_NAME_num(names) > 0)
		SSL_CTX_set_client_CA_list(ctx, names);
	else
		sk_X509_NAME_pop_free(names, X509_NAME_free);
	return ok;
}

X509_STORE *tls_ca_store(const struct tls_blob *ca, size_t nca, char *err, size_t errlen)
{
	struct tls_err e = {err, errlen};
	X509_STORE *store = X509_STORE_new();
	if (!store)
		abort();
	if (!tls_add_ca(ca, nca, store, NULL, &e)) {
		X509_STORE_free(store);
		return NULL;
	}
	if (sk_X509_OBJECT_num(X509_STORE_get0_objects(store)) > 0)
		return store;
	X509_STORE_free(store);
	snprintf(err, errlen, "option 'ca': no certificate given");
	return NULL;
}

static bool tls_load_pfx(SSL_CTX *ctx, const char *v, size_t len, const char *pass, struct tls_err *e)
{
	/* A path, or the PKCS#12 bytes themselves (as a Node Buffer would be). */
	BIO *b = memchr(v, '\0', len) || len > 4096 ? BIO_new_mem_buf(v, (int)len) : BIO_new_file(v, "rb");
	PKCS12 *p12 = b ? d2i_PKCS12_bio(b, NULL) : NULL;
	BIO_free(b);
	if (!p12)
		return tls_fail(e, "pfx", "cannot read PKCS#12 data");
	EVP_PKEY *pkey = NULL;
	X509 *cert = NULL;
	STACK_OF(X509) *chain = NULL;
	bool ok = PKCS12_parse(p12, pass ? pass : "", &pkey, &cert, &chain) == 1;
	PKCS12_free(p12);
	if (!ok)
		return tls_fail(e, "pfx", "cannot decrypt it (wrong passphrase?)");
	ok = SSL_CTX_use_certificate(ctx, cert) == 1 && SSL_CTX_use_PrivateKey(ctx, pkey) == 1;
	for (int i = 0; ok && chain && i < sk_X509_num(chain); i++) {
		X509 *x = sk_X509_value(chain, i);
		X509_up_ref(x);
		ok = SSL_CTX_add0_chain_cert(ctx, x) == 1;
	}
	EVP_PKEY_free(pkey);
	X509_free(cert);
	sk_X509_pop_free(chain, X509_free);
	return ok || tls_fail(e, "pfx", "cannot use its key or certificate");
}

static bool tls_version(const char *name, const char *v, int *out, struct tls_err *e)
{
	static const struct {
		const char *name;
		int version;
	} versions[] = {
		{"TLSv1", TLS1_VERSION}, {"TLSv1.1", TLS1_1_VERSION},
		{"TLSv1.2", TLS1_2_VERSION}, {"TLSv1.3", TLS1_3_VERSION},
	};
	for (size_t i = 0; i < sizeof versions / sizeof *versions; i++) {
		if (strcmp(versions[i].name, v) == 0) {
			*out = versions[i].version;
			return true;
		}
	}
	return tls_fail(e, name, "\"%s\" is not one of TLSv1, TLSv1.1, TLSv1.2, TLSv1.3", v);
}

static bool tls_ticket_keys(const char *v, size_t len, struct tls_err *e)
{
	return len == TLS_TICKET_KEYS_LEN ||
	       tls_fail(e, "ticketKeys", "expected %d bytes, got %zu", TLS_TICKET_KEYS_LEN, len);
}

static void scope_add(EVP_MD_CTX *md, const void *data, size_t len)
{
	unsigned char n[4] = {0xff, 0xff, 0xff, 0xff}; /* NULL: not given */
	if (data)
		for (int i = 0; i < 4; i++)
			n[i] = (unsigned char)(len >> (24 - 8 * i));
	EVP_DigestUpdate(md, n, 4);
	if (data)
		EVP_DigestUpdate(md, data, len);
}

static void scope_add_cert(EVP_MD_CTX *md, X509 *x)
{
	unsigned char fp[EVP_MAX_MD_SIZE];
	unsigned n = 0;
	if (x && X509_digest(x, EVP_sha256(), fp, &n) == 1)
		scope_add(md, fp, n);
}

/* What the session tickets are bound to: the certificate, the trust
 * anchors for client certificates and every option that shapes a session.
 * A reload that changes any of them gets other ticket keys (a resumed
 * session would skip the checks the new settings make). */
static void tls_ticket_scope(const struct tls_options *o, SSL_CTX *ctx, unsigned char out[TLS_TICKET_SCOPE_LEN])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned len = 0;
	if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
		abort();
	scope_add_cert(md, SSL_CTX_get0_certificate(ctx));
	const char *strings[] = {o->min_version, o->max_version, o->ciphers, o->ciphersuites, o->ecdh_curve};
	for (size_t i = 0; i < sizeof strings / sizeof *strings; i++)
		scope_add(md, strings[i], strings[i] ? strlen(strings[i]) : 0);
	scope_add(md, o->session_id_context.data, o->session_id_context.len);
	long timeout = SSL_CTX_get_timeout(ctx);
	unsigned char flags[] = {o->request_cert, o->reject_unauthorized, o->honor_cipher_order, o->has_request_cert,
	                         o->has_reject_unauthorized, o->has_ca};
	scope_add(md, &timeout, sizeof timeout);
	scope_add(md, flags, sizeof flags);
	STACK_OF(X509_OBJECT) *anchors = X509_STORE_get0_objects(SSL_CTX_get_cert_store(ctx));
	for (int i = 0; i < sk_X509_OBJECT_num(anchors); i++)
		scope_add_cert(md, X509_OBJECT_get0_X509(sk_X509_OBJECT_value(anchors, i)));
	if (EVP_DigestFinal_ex(md, out, &len) != 1 || len != TLS_TICKET_SCOPE_LEN)
		abort();
	EVP_MD_CTX_free(md);
}

static void tls_tickets(const struct tls_options *o, SSL_CTX *ctx)
{
	unsigned char scope[TLS_TICKET_SCOPE_LEN];
	if (o->ticket_keys.data) {
		tls_tickets_install(ctx, (const unsigned char *)o->ticket_keys.data, NULL);
		return;
	}
	tls_ticket_scope(o, ctx, scope);
	tls_tickets_install(ctx, NULL, scope);
}

/* Peer certificates are judged after the handshake (conn.authorized) unless
 * rejectUnauthorized asks OpenSSL to refuse them in it. */
static int tls_verify_keep_going(int ok, X509_STORE_CTX *store)
{
	return 1;
}

static bool tls_identity(const struct tls_options *o, SSL_CTX *ctx, struct tls_err *e)
{
	const char *pfx = o->pfx.data, *key = o->key.data, *cert = o->cert.data;
	if (pfx && !tls_load_pfx(ctx, pfx, o->pfx.len, o->passphrase, e))
		return false;
	if (cert && !tls_load_cert(ctx, cert, o->cert.len, e))
		return false;
	if (key && !tls_load_key(ctx, key, o->key.len, o->passphrase, e))
		return false;
	if (!pfx && !(key && cert))
		return tls_fail(e, key ? "cert" : "key", "a TLS listener needs both key and cert (or pfx)");
	if (SSL_CTX_check_private_key(ctx) != 1)
		return tls_fail(e, "key", "does not match the certificate");
	return true;
}

/* TLS 1.2 suites when `ciphers` is not given: the forward-secret AEAD ones
 * of Mozilla's "intermediate" profile. OpenSSL's own default also offers
 * CBC suites (LUCKY13); TLS 1.3 suites are all AEAD already. */
static const char tls_default_ciphers[] =
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

static bool tls_protocol(const struct tls_options *o, SSL_CTX *ctx, struct tls_err *e)
{
	const char *minv = o->min_version, *maxv = o->max_version, *ciphers = o->ciphers;
	const char *suites = o->ciphersuites, *curves = o->ecdh_curve;
	int v = 0; /* set by tls_version when it succeeds; LTO cannot tell */
	if (minv && (!tls_version("minVersion", minv, &v, e) || !SSL_CTX_set_min_proto_version(ctx, v)))
		return false;
	if (maxv && (!tls_version("maxVersion", maxv, &v, e) || !SSL_CTX_set_max_proto_version(ctx, v)))
		return false;
	if (SSL_CTX_set_cipher_list(ctx, ciphers ? ciphers : tls_default_ciphers) != 1)
		return tls_fail(e, "ciphers", "no usable cipher in \"%s\"", ciphers ? ciphers : tls_default_ciphers);
	if (suites && SSL_CTX_set_ciphersuites(ctx, suites) != 1)
		return tls_fail(e, "ciphersuites", "no usable suite in \"%s\"", suites);
	if (curves && strcasecmp(curves, "auto") != 0 && SSL_CTX_set1_groups_list(ctx, curves) != 1)
		return tls_fail(e, "ecdhCurve", "unknown curve in \"%s\"", curves);
	return true;
}

static bool tls_sessions(const struct tls_options *o, SSL_CTX *ctx, struct tls_err *e)
{
	const char *sid = o->session_id_context.data, *tk = o->ticket_keys.data;
	size_t sid_len = o->session_id_context.len, tk_len = o->ticket_keys.len;
	if (sid && (sid_len > SSL_MAX_SID_CTX_LENGTH ||
	            SSL_CTX_set_session_id_context(ctx, (const unsigned char *)sid, (unsigned)sid_len) != 1))
		return tls_fail(e, "sessionIdContext", "at most %d bytes", SSL_MAX_SID_CTX_LENGTH);
	if (o->has_session_timeout)
		SSL_CTX_set_timeout(ctx, (long)o->session_timeout);
	return !tk || tls_ticket_keys(tk, tk_len, e);
}

static int tls_verify_mode(bool request, bool reject)
{
	if (!request)
		return SSL_VERIFY_NONE;
	return reject ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER;
}

static SSL_verify_cb tls_verify_callback(bool request, bool reject)
{
	return request && !reject ? tls_verify_keep_going : NULL;
}

void tls_context_inherit_verification(SSL *ssl, SSL_CTX *chosen, SSL_CTX *listener)
{
	const struct tls_ctx_info *own = tls_context_info(chosen), *base = tls_context_info(listener);
	bool request = own->own_request_cert ? own->request_cert : base->request_cert;
	bool reject = own->own_reject_unauthorized ? own->reject_unauthorized : base->reject_unauthorized;
	SSL_set_verify(ssl, tls_verify_mode(request, reject), tls_verify_callback(request, reject));
	SSL_set_verify_depth(ssl, SSL_CTX_get_verify_depth(chosen));
	if (own->own_ca || chosen == listener)
		return;
	/* The trust anchors verify the peer; the names go in the CertificateRequest. */
	SSL_set1_verify_cert_store(ssl, SSL_CTX_get_cert_store(listener));
	STACK_OF(X509_NAME) *names = SSL_CTX_get_client_CA_list(listener);
	if (names && sk_X509_NAME_num(names) > 0)
		SSL_set_client_CA_list(ssl, SSL_dup_CA_list(names));
}

static bool tls_verification(const struct tls_options *o, SSL_CTX *ctx, struct tls_err *e)
{
	struct tls_ctx_info *info = calloc(1, sizeof *info);
	if (!info)
		abort();
	SSL_CTX_set_ex_data(ctx, tls_info_index, info);
	info->own_request_cert = o->has_request_cert;
	info->own_reject_unauthorized = o->has_reject_unauthorized;
	info->own_ca = o->has_ca;
	info->request_cert = o->request_cert;
	info->reject_unauthorized = o->reject_unauthorized;
	if (o->honor_cipher_order)
		SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_verify(ctx, tls_verify_mode(info->request_cert, info->reject_unauthorized),
	                   tls_verify_callback(info->request_cert, info->reject_unauthorized));
	return tls_load_ca(o, ctx, e);
}

SSL_CTX *tls_context_new(const struct tls_options *o, char *err, size_t errlen)
{
	tls_indexes();
	struct tls_err e = {err, errlen};
	ERR_clear_error();
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		tls_fail(&e, "key", "cannot create a TLS context");
		return NULL;
	}
	/* No renegotiation (a DoS lever), no compression (CRIME); buffers
	 * released while idle keep idle TLS sessions small. */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
	                      SSL_MODE_ENABLE_PARTIAL_WRITE);
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* One TLS 1.3 ticket per handshake, not OpenSSL's two: each is a
	 * session encoded, encrypted and sent in a record of its own (about
	 * 10% of a full STARTTLS session), and an SMTP client keeps one
	 * session per destination (Postfix's cache keeps the newest). */
	SSL_CTX_set_num_tickets(ctx, 1);
	if (!tls_identity(o, ctx, &e) || !tls_protocol(o, ctx, &e) || !tls_sessions(o, ctx, &e) ||
	    !tls_verification(o, ctx, &e)) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	tls_tickets(o, ctx);
	return ctx;
}
