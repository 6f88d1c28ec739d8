#include "net/conn_tls.h"

#include "net/conn.h"
#include "net/server.h"
#include "tls/tls_context.h"
#include "tls/tls_keyshare.h"
#include "tls/tls_sni_cache.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The servername of a ClientHello (RFC 6066 3), lower-cased and allocated;
 * NULL if none. */
static char *tls_hello_servername(SSL *ssl)
{
	const unsigned char *p;
	size_t len;
	if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &len) || len < 5)
		return NULL;
	size_t list = (size_t)p[0] << 8 | p[1];
	if (list + 2 != len || p[2] != TLSEXT_NAMETYPE_host_name)
		return NULL;
	size_t n = (size_t)p[3] << 8 | p[4];
	if (n + 5 > len || n == 0 || n > 255)
		return NULL;
	char *out = malloc(n + 1);
	if (!out)
		abort();
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = p[5 + i];
		if (ch <= ' ' || ch >= 0x7f) {
			free(out);
			return NULL; /* not a hostname: treat as no SNI */
		}
		out[i] = (char)tolower(ch);
	}
	out[n] = '\0';
	return out;
}

/* Moves the handshake to another context, as nginx does for SNI: the
 * certificate comes with SSL_set_SSL_CTX, verification settings do not
 * (they are set here: the context's own, else the listener's). */
static void tls_switch_context(SSL *ssl, SSL_CTX *ctx, SSL_CTX *listener)
{
	SSL_set_SSL_CTX(ssl, ctx);
	tls_context_inherit_verification(ssl, ctx, listener);
	SSL_clear_options(ssl, SSL_get_options(ssl) & ~SSL_CTX_get_options(ctx));
	SSL_set_options(ssl, SSL_CTX_get_options(ctx));
}

static SSL_CTX *tls_sni_lookup(const struct listener_options *o, const char *name)
{
	for (size_t i = 0; i < o->tls.nsni; i++)
		if (strcmp(o->tls.sni[i].name, name) == 0)
			return o->tls.sni[i].ctx;
	return NULL;
}

/* The SNICallback's answers are kept per listener options, by name, until
 * a reload or updateSecureContext (sniCacheSize names at most). */
static SSL_CTX *tls_cache_get(struct conn *c)
{
	return c->opt->sni_cache ? tls_sni_cache_get(c->opt->sni_cache, c->servername) : NULL;
}

static void tls_cache_put(struct conn *c, SSL_CTX *ctx)
{
	if (!c->opt->sni_cache)
		c->opt->sni_cache = tls_sni_cache_new(c->opt->sni_cache_size);
	tls_sni_cache_put(c->opt->sni_cache, c->servername, ctx);
}

void conn_tls_servername_answer(struct conn *c, SSL_CTX *ctx, bool refused)
{
	c->sni_done = true;
	c->sni_failed = refused;
	if (ctx) {
		SSL_CTX_up_ref(ctx);
		c->sni_ctx = ctx;
		tls_cache_put(c, ctx);
	}
	/* An answer that came after a yield resumes the paused handshake. */
	if (c->sni_async && c->phase == PHASE_HANDSHAKE)
		conn_tls_handshake(c);
}

bool conn_tls_waiting(const struct conn *c)
{
	return c->sni_async && !c->sni_done;
}

/* The connection whose handshake step is running: OpenSSL calls
 * tls_client_hello only from within SSL_do_handshake, so this pointer
 * finds it without SSL_set_app_data, whose ex_data stack would cost every
 * open connection about 100 bytes (figure (5t) of make bench). */
static struct conn *tls_handshaking;

static int tls_client_hello(SSL *ssl, int *alert, void *arg)
{
	struct conn *c = tls_handshaking;
	if (!c)
		return SSL_CLIENT_HELLO_SUCCESS;
	if (!c->sni_done) {
		free(c->servername);
		c->servername = tls_hello_servername(ssl);
		SSL_CTX *cached = c->servername ? tls_cache_get(c) : NULL;
		if (cached) {
			SSL_CTX_up_ref(cached);
			c->sni_ctx = cached;
			c->sni_done = true;
		} else if (c->servername) {
			c->sni_async = false;
			c->ops->on_servername(c, c->servername);
			if (!c->sni_done) {
				c->sni_async = true; /* it yielded: ask again when it answers */
				return SSL_CLIENT_HELLO_RETRY;
			}
		} else {
			c->sni_done = true;
		}
	}
	if (c->sni_failed) {
		*alert = SSL_AD_UNRECOGNIZED_NAME;
		return SSL_CLIENT_HELLO_ERROR;
	}
	SSL_CTX *ctx = c->sni_ctx ? c->sni_ctx : c->servername ? tls_sni_lookup(c->opt, c->servername) : NULL;
	if (ctx)
		tls_switch_context(ssl, ctx, c->opt->tls.ctx);
	return SSL_CLIENT_HELLO_SUCCESS;
}

/* The handshake's timer: socketTimeout of silence, and never past its
 * deadline, so that a ClientHello dripped a byte at a time does not hold
 * a maxClients place (Node's handshakeTimeout, which smtp-server sets to
 * socketTimeout). Called on every step of the handshake. */
static void tls_handshake_timer(struct conn *c)
{
	ev_tstamp now = ev_now(c->srv->loop);
	double t = c->opt->socket_timeout;
	if (c->handshake_deadline > 0 && (t <= 0 || c->handshake_deadline - now < t))
		t = c->handshake_deadline - now > 0.001 ? c->handshake_deadline - now : 0.001;
	conn_idle_arm(c, t);
}

void conn_tls_begin(struct conn *c)
{
	/* Setting a pointer: cheaper than tracking which contexts have it. */
	SSL_CTX_set_client_hello_cb(c->opt->tls.ctx, tls_client_hello, NULL);
	c->ssl = SSL_new(c->opt->tls.ctx);
	if (!c->ssl) {
		conn_close(c, "cannot create a TLS session");
		return;
	}
	heap_trim_enter(&c->srv->handshake_trim);
	SSL_set_fd(c->ssl, c->fd);
	SSL_set_accept_state(c->ssl);
	c->phase = PHASE_HANDSHAKE;
	c->sni_done = c->sni_failed = false;
	double limit = c->opt->handshake_timeout < 0 ? c->opt->socket_timeout : c->opt->handshake_timeout;
	c->handshake_deadline = limit > 0 ? ev_now(c->srv->loop) + limit : 0;
	conn_tls_handshake(c);
}

/* The OpenSSL reason of the last failure, for logs and onError. */
static void tls_reason(char *out, size_t cap)
{
	unsigned long code = ERR_peek_last_error();
	if (code)
		ERR_error_string_n(code, out, cap);
	else
		snprintf(out, cap, "%s", errno ? strerror(errno) : "connection closed");
	ERR_clear_error();
}

void conn_tls_handshake(struct conn *c)
{
	ERR_clear_error();
	errno = 0;
	struct conn *outer = tls_handshaking; /* an SNICallback may step another's */
	tls_handshaking = c;
	int rc = SSL_do_handshake(c->ssl);
	tls_handshaking = outer;
	if (rc == 1) {
		conn_idle_arm(c, c->opt->socket_timeout);
		c->secure = true;
		tls_drop_key_shares(c->ssl);
		heap_trim_leave(&c->srv->handshake_trim);
		c->phase = PHASE_OPEN;
		c->ops->on_tls_done(c);
		conn_flush(c);
		return;
	}
	int err = SSL_get_error(c->ssl, rc);
	if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
		c->tls_want_write = err == SSL_ERROR_WANT_WRITE;
		conn_update_io(c);
		tls_handshake_timer(c);
		return;
	}
	if (err == SSL_ERROR_WANT_CLIENT_HELLO_CB) {
		c->tls_want_write = false;
		conn_update_io(c); /* nothing to read until SNICallback answers */
		return;
	}
	/* OpenSSL 3 reports a peer gone mid-handshake as an SSL error. */
	bool dropped = err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN ||
	               ERR_GET_REASON(ERR_peek_last_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
	char reason[256];
	tls_reason(reason, sizeof reason);
	c->ops->on_tls_failed(c, dropped ? "SocketError" : "TLSError", reason);
}

ssize_t conn_tls_recv(struct conn *c, void *buf, size_t n)
{
	ERR_clear_error();
	int r = SSL_read(c->ssl, buf, n > INT32_MAX ? INT32_MAX : (int)n);
	if (r > 0)
		return r;
	int err = SSL_get_error(c->ssl, r);
	c->tls_want_write = err == SSL_ERROR_WANT_WRITE;
	if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
		errno = EAGAIN;
		return -1;
	}
	if (err == SSL_ERROR_ZERO_RETURN)
		return 0;
	if (err == SSL_ERROR_SYSCALL && errno == 0)
		return 0;
	if (errno == 0)
		errno = EPROTO;
	ERR_clear_error();
	return -1;
}

ssize_t conn_tls_send(struct conn *c, const void *buf, size_t n, bool *want_read)
{
	ERR_clear_error();
	*want_read = false;
	int w = SSL_write(c->ssl, buf, n > INT32_MAX ? INT32_MAX : (int)n);
	if (w > 0)
		return w;
	int err = SSL_get_error(c->ssl, w);
	if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
		*want_read = err == SSL_ERROR_WANT_READ;
		errno = EAGAIN;
		return -1;
	}
	if (errno == 0)
		errno = EPIPE;
	ERR_clear_error();
	return -1;
}

void conn_tls_free(struct conn *c)
{
	if (c->ssl) {
		SSL_free(c->ssl);
		c->ssl = NULL;
		if (!c->secure) /* a handshake that failed or was cut short */
			heap_trim_leave(&c->srv->handshake_trim);
	}
	SSL_CTX_free(c->sni_ctx);
	c->sni_ctx = NULL;
	free(c->servername);
	c->servername = NULL;
}
