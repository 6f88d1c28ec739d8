#include "net/conn.h"

#include "net/conn_tls.h"
#include "lua/lua_hook.h"
#include "lua/api_tls.h"
#include "base/metrics.h"
#include "proto/proxy_parse.h"
#include "lua/lua_runtime.h"
#include "lua/lua_session.h"
#include "net/server.h"
#include "smtp/smtp_rdns.h"
#include "smtp/smtp_session.h"

#include <arpa/inet.h>
#include "base/cidr.h"
#include <errno.h>
#include <lauxlib.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* Input beyond these stays in the kernel until the session catches up:
 * back-pressure instead of unbounded buffers. */
#define CONN_OUT_HIGH (256 * 1024)
#define CONN_PENDING_HIGH (1024 * 1024)
#define CONN_READ_CMD 16384
#define CONN_UNTERMINATED_MAX (1024 * 1024)
#define CONN_READ_DATA 65536

static void conn_make_id(char id[17])
{
	static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
	static uint64_t state;
	if (state == 0 && getrandom(&state, sizeof state, 0) != sizeof state)
		state = (uint64_t)getpid() ^ (uint64_t)time(NULL) << 20;
	/* splitmix64: ids must be unique and unguessable enough for logs,
	 * not secret. */
	uint64_t z = (state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	z ^= z >> 31;
	uint64_t y = z * 0xff51afd7ed558ccdull;
	for (int i = 0; i < 16; i++) {
		uint64_t src = i < 12 ? z >> (5 * i) : y >> (5 * (i - 12));
		id[i] = alphabet[src & 31];
	}
	id[16] = '\0';
}

static void conn_addr_string(const struct sockaddr *sa, char *out, size_t len, int *port)
{
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
			inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], out, (socklen_t)len);
		else
			inet_ntop(AF_INET6, &s6->sin6_addr, out, (socklen_t)len);
		*port = ntohs(s6->sin6_port);
	} else if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &s4->sin_addr, out, (socklen_t)len);
		*port = ntohs(s4->sin_port);
	} else {
		snprintf(out, len, "unknown");
		*port = 0;
	}
}

static void conn_on_io(struct ev_loop *loop, ev_io *w, int revents);
static void conn_on_timer(struct ev_loop *loop, ev_timer *w, int revents);
static void conn_begin_session(struct conn *c);
static void conn_run_session(struct conn *c);
static void conn_proxy_start(struct conn *c);
static void conn_proxy_read(struct conn *c);
static void conn_proxy_timer(struct conn *c);
static void conn_line_progress(struct conn *c);

struct conn *conn_new(struct server *srv, struct config *cfg, struct smtp_options *opt, int fd,
                      const struct sockaddr *peer, const struct sockaddr *local)
{
	struct conn *c = calloc(1, sizeof *c);
	if (!c)
		abort();
	c->srv = srv;
	c->cfg = cfg;
	config_ref(cfg);
	metrics_connection(+1);
	c->opt = opt;
	c->fd = fd;
	c->phase = PHASE_CONNECT;
	c->session_ref = LUA_NOREF;
	c->hook.co_ref = LUA_NOREF;
	c->pending_ref = LUA_NOREF;
	c->tls_obj_ref = LUA_NOREF;
	conn_make_id(c->id);
	conn_addr_string(peer, c->remote_addr, sizeof c->remote_addr, &c->remote_port);
	struct sockaddr_storage asked;
	socklen_t llen = sizeof asked;
	if (!local && getsockname(fd, (struct sockaddr *)&asked, &llen) == 0)
		local = (struct sockaddr *)&asked;
	if (local)
		conn_addr_string(local, c->local_addr, sizeof c->local_addr, &c->local_port);
	/* AUTH lines may be longer than commands (RFC 4954 4: 12,288 octets);
	 * smtp_session_line holds other commands to maxCommandLength. */
	size_t max = c->opt->max_command_length;
	smtp_line_reader_init(&c->lines, max > SMTP_AUTH_LINE_MAX ? max : SMTP_AUTH_LINE_MAX);
	ev_io_init(&c->io, conn_on_io, fd, EV_READ);
	ev_init(&c->timer, conn_on_timer);
	c->timer.repeat = c->opt->socket_timeout > 0 ? c->opt->socket_timeout : 0;
	return c;
}

void conn_log(struct conn *c, enum log_level level, const char *msg, ...)
{
	va_list ap;
	va_start(ap, msg);
	log_vkv(level, c->id, msg, ap);
	va_end(ap);
}

/* maxConnectionRate: connections per minute from one address. A small
 * table indexed by a hash of the address; a collision only makes two
 * addresses share a budget for a minute. */
static bool conn_rate_exceeded(const struct conn *c)
{
	unsigned max = c->opt->max_connection_rate;
	if (!max)
		return false;
	static struct conn_rate {
		char ip[64];
		ev_tstamp window;
		unsigned count;
	} rates[1024];
	unsigned h = 2166136261u;
	for (const char *p = c->remote_addr; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	ev_tstamp now = ev_now(c->srv->loop);
	struct conn_rate *r = &rates[h % 1024];
	if (strcmp(r->ip, c->remote_addr) != 0 || now - r->window >= 60) {
		snprintf(r->ip, sizeof r->ip, "%s", c->remote_addr);
		r->window = now;
		r->count = 0;
	}
	return ++r->count > max;
}

/* maxConnectionsPerIp: counted over the open connections (the new one is
 * among them). A linear walk: cheap next to an accept at the limits in use. */
bool conn_too_many_from_peer(const struct conn *c)
{
	unsigned max = c->opt->max_connections_per_ip;
	if (!max)
		return false;
	unsigned n = 0;
	for (const struct conn *o = c->srv->conns; o; o = o->next)
		if (o->phase != PHASE_CLOSED && strcmp(o->remote_addr, c->remote_addr) == 0 && ++n > max)
			return true;
	return false;
}

/* Writes directly: used only for the refusal of a client over maxClients,
 * which never gets a session. */
static void conn_refuse_now(struct conn *c, const char *line)
{
	ssize_t w = send(c->fd, line, strlen(line), MSG_NOSIGNAL | MSG_DONTWAIT);
	(void)w;
}

void conn_start(struct conn *c, const char *listen_addr)
{
	char port[16];
	snprintf(port, sizeof port, "%d", c->remote_port);
	conn_log(c, LOG_INFO, "connection", "remote", c->remote_addr, "port", port, "listen",
	         listen_addr, NULL);
	const char *busy = c->opt->max_clients && c->srv->nconns > c->opt->max_clients
	                       ? "Too many connected clients, try again in a moment"
	                   : conn_too_many_from_peer(c) ? "Too many connections from your address"
	                   : conn_rate_exceeded(c)      ? "Too many connections from your address, slow down"
	                                                : NULL;
	if (busy) {
		char line[320];
		snprintf(line, sizeof line, "421 %s%s %s\r\n", c->opt->hide_enhanced ? "" : "4.4.2 ",
		         c->opt->name, busy);
		conn_refuse_now(c, line);
		conn_close(c, busy);
		return;
	}
	if (c->opt->use_proxy) {
		conn_proxy_start(c);
		return;
	}
	conn_begin_session(c);
}

/* The session proper: after accept, or after the PROXY header. */
static void conn_begin_session(struct conn *c)
{
	lua_session_new(c);
	conn_run_session(c);
}

/* TLS first (implicit), or onConnect and the greeting. */
static void conn_run_session(struct conn *c)
{
	c->phase = PHASE_CONNECT;
	ev_io_start(c->srv->loop, &c->io);
	if (c->timer.repeat > 0)
		ev_timer_again(c->srv->loop, &c->timer);
	if (c->opt->secure) {
		conn_tls_begin(c); /* onConnect follows the handshake */
		return;
	}
	smtp_session_connect(c);
	conn_flush(c);
}

/* ---- PROXY protocol ------------------------------------------------------ */

static void conn_proxy_start(struct conn *c)
{
	if (!cidr_list_match(c->opt->proxy_trusted, c->opt->nproxy_trusted, c->remote_addr)) {
		/* Behind a load balancer, a direct connection is not a client. */
		conn_close(c, "not a trusted PROXY peer");
		return;
	}
	c->phase = PHASE_PROXY;
	c->proxy_deadline = ev_now(c->srv->loop) + (c->opt->socket_timeout > 0 ? c->opt->socket_timeout : 60);
	ev_io_set(&c->io, c->fd, EV_READ);
	ev_io_start(c->srv->loop, &c->io);
	ev_timer_set(&c->timer, c->proxy_deadline - ev_now(c->srv->loop), 0.);
	ev_timer_start(c->srv->loop, &c->timer);
}

/* Puts the header's addresses on the session. */
static void conn_proxy_apply(struct conn *c, const struct proxy_info *pi)
{
	char port[16];
	if (!pi->local) {
		snprintf(c->remote_addr, sizeof c->remote_addr, "%s", pi->src);
		c->remote_port = pi->src_port;
		snprintf(c->local_addr, sizeof c->local_addr, "%s", pi->dst);
		c->local_port = pi->dst_port;
	}
	snprintf(port, sizeof port, "%d", c->remote_port);
	conn_log(c, LOG_INFO, "proxy", "version", pi->version == 1 ? "1" : "2", "client", c->remote_addr,
	         "port", port, NULL);
	c->timer.repeat = c->opt->socket_timeout > 0 ? c->opt->socket_timeout : 0;
	ev_timer_stop(c->srv->loop, &c->timer);
	ev_io_stop(c->srv->loop, &c->io);
	lua_session_new(c);
	lua_State *L = lua_main;
	lua_session_push(L, c);
	lua_createtable(L, 0, 5);
	lua_pushinteger(L, pi->version);
	lua_setfield(L, -2, "version");
	if (!pi->local) {
		lua_pushstring(L, pi->src);
		lua_setfield(L, -2, "sourceAddress");
		lua_pushinteger(L, pi->src_port);
		lua_setfield(L, -2, "sourcePort");
		lua_pushstring(L, pi->dst);
		lua_setfield(L, -2, "destinationAddress");
		lua_pushinteger(L, pi->dst_port);
		lua_setfield(L, -2, "destinationPort");
	}
	lua_setfield(L, -2, "proxy");
	lua_pop(L, 1);
	conn_run_session(c);
}

/* The header is read with MSG_PEEK and then exactly its length, so the
 * bytes after it (a TLS ClientHello) stay in the socket for OpenSSL. */
static void conn_proxy_read(struct conn *c)
{
	unsigned char peek[PROXY_HEADER_MAX];
	ssize_t r = recv(c->fd, peek, sizeof peek, MSG_PEEK);
	if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
		conn_close(c, "closed before the PROXY header");
		return;
	}
	if (r < 0)
		return;
	struct proxy_info pi;
	enum proxy_status st = proxy_parse(peek, (size_t)r, &pi);
	if (st == PROXY_BAD || (st == PROXY_NEED_MORE && (size_t)r == sizeof peek)) {
		conn_log(c, LOG_WARN, "bad PROXY header", NULL);
		conn_close(c, "bad PROXY header");
		return;
	}
	if (st == PROXY_NEED_MORE) {
		/* Peeked bytes would wake the watcher at once: poll a little
		 * later instead, within the deadline. */
		ev_io_stop(c->srv->loop, &c->io);
		double left = c->proxy_deadline - ev_now(c->srv->loop);
		ev_timer_stop(c->srv->loop, &c->timer);
		ev_timer_set(&c->timer, left < 0.05 ? (left > 0 ? left : 0.) : 0.05, 0.);
		ev_timer_start(c->srv->loop, &c->timer);
		return;
	}
	unsigned char sink[PROXY_HEADER_MAX];
	if (recv(c->fd, sink, pi.length, 0) != (ssize_t)pi.length) {
		conn_close(c, "PROXY header read failed");
		return;
	}
	conn_proxy_apply(c, &pi);
}

static void conn_proxy_timer(struct conn *c)
{
	if (ev_now(c->srv->loop) >= c->proxy_deadline) {
		conn_close(c, "no PROXY header within socketTimeout");
		return;
	}
	conn_proxy_read(c);
	if (c->phase == PHASE_PROXY && !ev_is_active(&c->timer)) {
		ev_io_start(c->srv->loop, &c->io);
		ev_timer_set(&c->timer, c->proxy_deadline - ev_now(c->srv->loop), 0.);
		ev_timer_start(c->srv->loop, &c->timer);
	}
}

/* "250-" or "250 2.1.0 " without printf: it comes with every reply. */
static void conn_reply_prefix(struct buf *out, int code, char sep, const char *enhanced)
{
	size_t elen = enhanced ? strlen(enhanced) : 0;
	if (code < 100 || code > 999 || elen > 32) {
		buf_appendf(out, "%d%c%s%s", code, sep, elen ? enhanced : "", elen ? " " : "");
		return;
	}
	char *p = buf_reserve(out, 5 + elen + 1);
	p[0] = (char)('0' + code / 100);
	p[1] = (char)('0' + code / 10 % 10);
	p[2] = (char)('0' + code % 10);
	p[3] = sep;
	out->len += 4;
	if (elen) {
		memcpy(p + 4, enhanced, elen);
		p[4 + elen] = ' ';
		out->len += elen + 1;
	}
}

static void conn_vreply(struct conn *c, int code, char sep, const char *enhanced, const char *fmt,
                        va_list ap)
{
	if (c->phase == PHASE_CLOSED)
		return;
	conn_reply_prefix(&c->out, code, sep, enhanced && !c->opt->hide_enhanced ? enhanced : NULL);
	if (!strchr(fmt, '%')) { /* a literal of ours: nothing to format or clean */
		buf_append(&c->out, fmt, strlen(fmt));
		buf_append(&c->out, "\r\n", 2);
		return;
	}
	char text[1024];
	int r = vsnprintf(text, sizeof text, fmt, ap);
	size_t n = r < 0 ? 0 : (size_t)r < sizeof text ? (size_t)r : sizeof text - 1;
	/* A reply never carries a control byte, whatever was formatted into it. */
	char *w = buf_reserve(&c->out, n + 2);
	for (size_t i = 0; i < n; i++)
		w[i] = (unsigned char)text[i] < ' ' || text[i] == 0x7f ? ' ' : text[i];
	memcpy(w + n, "\r\n", 2);
	c->out.len += n + 2;
}

void conn_reply(struct conn *c, int code, const char *enhanced, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	conn_vreply(c, code, ' ', enhanced, fmt, ap);
	va_end(ap);
}

void conn_reply_more(struct conn *c, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	conn_vreply(c, code, '-', NULL, fmt, ap);
	va_end(ap);
}

void conn_reply_outcome(struct conn *c, const struct hook_outcome *o)
{
	conn_reply(c, o->code, o->enhanced, "%s", o->text);
}

void conn_reply_hook_text(struct conn *c, enum smtp_reply_id id, const char *text)
{
	const struct smtp_reply *r = &smtp_replies[id];
	conn_reply(c, r->code, smtp_has_enhanced(text) ? NULL : r->enhanced, "%s", text);
}

void conn_reply_known(struct conn *c, enum smtp_reply_id id)
{
	const struct smtp_reply *r = &smtp_replies[id];
	if (c->phase == PHASE_CLOSED)
		return;
	/* Catalogue texts are checked when loaded: printable, nothing to clean. */
	conn_reply_prefix(&c->out, r->code, ' ', !c->opt->hide_enhanced ? r->enhanced : NULL);
	buf_append(&c->out, r->text, r->text_len);
	buf_append(&c->out, "\r\n", 2);
}


/* One send through TLS or the socket; -1 with errno EAGAIN to wait. */
static ssize_t conn_send(struct conn *c, const char *p, size_t n)
{
	if (c->ssl && c->secure) {
		ssize_t w = conn_tls_send(c, p, n, &c->tls_write_wants_read);
		return w;
	}
	return send(c->fd, p, n, MSG_NOSIGNAL);
}

bool conn_flush(struct conn *c)
{
	while (buf_used(&c->out) > 0) {
		ssize_t w = conn_send(c, buf_head(&c->out), buf_used(&c->out));
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			conn_close(c, strerror(errno));
			return false;
		}
		buf_consume(&c->out, (size_t)w);
	}
	buf_release_if_empty(&c->out);
	if (c->phase == PHASE_CLOSING && buf_used(&c->out) == 0) {
		conn_close(c, NULL);
		return false;
	}
	if (c->starttls_pending && buf_used(&c->out) == 0) {
		/* The 220 is on the wire in plaintext: from here on, TLS. */
		c->starttls_pending = false;
		conn_tls_begin(c);
		return c->phase != PHASE_CLOSED;
	}
	conn_update_io(c);
	return true;
}

void conn_end(struct conn *c, int code, const char *enhanced, const char *text)
{
	if (c->phase == PHASE_CLOSED || c->phase == PHASE_CLOSING)
		return;
	if (c->phase == PHASE_HANDSHAKE || c->phase == PHASE_PROXY) {
		conn_close(c, text); /* no channel to say it on */
		return;
	}
	conn_reply(c, code, enhanced, "%s", text);
	hook_cancel(c);
	c->phase = PHASE_CLOSING;
	/* A refusal may meet input still unread; a 221 answers a client that
	 * said QUIT and is done talking. */
	c->drain_on_close = code >= 400;
	/* Whatever the client pipelined after the last reply is not executed. */
	buf_free(&c->in);
	conn_flush(c);
}

static void conn_finish(struct conn *c);

static void conn_on_close_done(struct conn *c, const struct hook_outcome *o, lua_State *co,
                               int nres)
{
	(void)o;
	(void)co;
	(void)nres;
	conn_finish(c);
}

/* Runs after conn_close from the loop, with nothing of c on the stack. */
static void conn_finalize(struct conn *c)
{
	lua_State *co = c->session_ref != LUA_NOREF ? hook_prepare(c, HOOK_CLOSE) : NULL;
	if (!co) {
		conn_finish(c);
		return;
	}
	lua_session_push(co, c);
	hook_start(c, 1, conn_on_close_done);
}

static void conn_finish(struct conn *c)
{
	struct server *srv = c->srv;
	ev_timer_stop(srv->loop, &c->timer);
	smtp_session_body_free(c);
	lua_tls_detach(c);
	conn_tls_free(c);
	lua_session_free(c);
	luaL_unref(lua_main, LUA_REGISTRYINDEX, c->pending_ref);
	buf_free(&c->in);
	buf_free(&c->out);
	free(c->x_peer);
	free(c->sasl_user);
	free(c->sasl_challenge);
	free(c->sasl_refusal);
	config_unref(lua_main, c->cfg);
	metrics_connection(-1);
	server_conn_gone(srv, c);
	free(c);
}

/* Closing with unread input makes the kernel send a reset, which can
 * destroy our last reply (a 421, a 554) before the client reads it: read
 * what is already there first. Bounded: no waiting for more. */
static void conn_drain_before_close(int fd)
{
	char sink[4096];
	for (int i = 0; i < 16; i++)
		if (recv(fd, sink, sizeof sink, MSG_DONTWAIT) <= 0)
			break;
	shutdown(fd, SHUT_WR);
}

void conn_close(struct conn *c, const char *reason)
{
	if (c->phase == PHASE_CLOSED)
		return;
	c->phase = PHASE_CLOSED;
	conn_log(c, LOG_INFO, "closed", "reason", reason ? reason : "done", NULL);
	smtp_session_cancel_greeting_delay(c);
	smtp_rdns_cancel(c);
	hook_cancel(c);
	smtp_session_body_free(c);
	ev_io_stop(c->srv->loop, &c->io);
	if (c->ssl && c->secure)
		SSL_shutdown(c->ssl); /* close_notify, best effort, never waited for */
	if (c->drain_on_close)
		conn_drain_before_close(c->fd);
	close(c->fd);
	c->fd = -1;
	ev_timer_stop(c->srv->loop, &c->timer);
	ev_timer_set(&c->timer, 0., 0.);
	ev_timer_start(c->srv->loop, &c->timer);
}

/* Should the session stop taking input for now? */
static bool conn_input_blocked(const struct conn *c)
{
	if (c->phase != PHASE_COMMAND && c->phase != PHASE_AUTH && c->phase != PHASE_DATA &&
	    c->phase != PHASE_BDAT)
		return true;
	if (c->starttls_pending)
		return true;
	if (buf_used(&c->out) > CONN_OUT_HIGH)
		return true;
	if (c->phase == PHASE_DATA || c->phase == PHASE_BDAT) {
		if (!c->body)
			return false; /* a refused BDAT chunk: read and dropped */
		if (c->body->ended)
			return true; /* until onData has answered */
		if (c->hook.active && c->hook.wait != WAIT_STREAM)
			return buf_used(&c->body->pending) > CONN_PENDING_HIGH;
		return false;
	}
	/* Between BDAT chunks onData waits for the next one: commands go on. */
	return c->hook.active && !(c->tx.chunking && c->hook.wait == WAIT_STREAM);
}

void conn_update_io(struct conn *c)
{
	if (c->phase == PHASE_CLOSED)
		return;
	int want;
	if (c->phase == PHASE_HANDSHAKE)
		want = c->hook.active ? 0 : c->tls_want_write ? EV_WRITE : EV_READ;
	else
		want = conn_input_blocked(c) ? 0 : c->tls_want_write ? EV_WRITE : EV_READ;
	if (buf_used(&c->out) > 0)
		want |= c->tls_write_wants_read ? EV_READ : EV_WRITE;
	if (want != (c->io.events & (EV_READ | EV_WRITE)) || !ev_is_active(&c->io)) {
		ev_io_stop(c->srv->loop, &c->io);
		ev_io_set(&c->io, c->fd, want);
		if (want)
			ev_io_start(c->srv->loop, &c->io);
	}
	/* Bytes OpenSSL has already decrypted will not wake the socket watcher. */
	if ((want & EV_READ) && c->ssl && c->secure && SSL_has_pending(c->ssl))
		ev_feed_event(c->srv->loop, &c->io, EV_READ);
}

void conn_process(struct conn *c)
{
	while (buf_used(&c->in) > 0 && !conn_input_blocked(c)) {
		char *p = c->in.data + c->in.off; /* ours: the body is decoded in place */
		size_t n = buf_used(&c->in);
		if (c->phase == PHASE_DATA) {
			buf_consume(&c->in, smtp_session_data(c, p, n));
			continue;
		}
		if (c->phase == PHASE_BDAT) {
			buf_consume(&c->in, smtp_session_bdat(c, p, n));
			continue;
		}
		const char *line;
		size_t line_len, used;
		enum smtp_line_status st = smtp_line_next(&c->lines, p, n, &line, &line_len, &used);
		if (st == SMTP_LINE_NEED_MORE)
			break;
		if (st == SMTP_LINE_SKIPPING) {
			buf_consume(&c->in, used);
			/* Megabytes with no line end are not a command: stop reading. */
			if ((c->skipped += used) > CONN_UNTERMINATED_MAX) {
				conn_end(c, 421, "4.4.2", "Error: line too long, closing connection");
				break;
			}
			continue;
		}
		c->skipped = 0;
		conn_line_progress(c);
		/* The line stays valid until consumed: handlers may read it first. */
		if (st == SMTP_LINE_TOO_LONG)
			smtp_session_line_too_long(c);
		else
			smtp_session_line(c, line, line_len);
		if (c->phase != PHASE_CLOSED && c->phase != PHASE_CLOSING)
			buf_consume(&c->in, used);
		if (c->starttls_pending) {
			/* Plaintext pipelined after STARTTLS is never executed
			 * (CVE-2011-0411). */
			buf_consume(&c->in, buf_used(&c->in));
			break;
		}
	}
	buf_release_if_empty(&c->in);
}

void conn_resume(struct conn *c)
{
	if (c->phase == PHASE_CLOSED)
		return;
	conn_process(c);
	conn_flush(c);
}

void conn_stop(struct conn *c)
{
	c->stopping = true;
	smtp_session_stop(c);
	if (c->phase != PHASE_CLOSED)
		conn_flush(c);
}

/* A complete command line: the idle timer starts over, and so does the
 * deadline a message that may follow must keep up with. */
static void conn_line_progress(struct conn *c)
{
	double t = c->opt->socket_timeout;
	if (t <= 0)
		return;
	c->timer.repeat = t;
	ev_timer_again(c->srv->loop, &c->timer);
	c->data_deadline = ev_now(c->srv->loop) + t;
}

/* n message bytes: each buys n / minDataRate seconds, never more than
 * socketTimeout ahead (Postfix's smtpd_min_data_rate). */
static void conn_data_progress(struct conn *c, size_t n)
{
	double t = c->opt->socket_timeout, rate = c->opt->min_data_rate;
	if (t <= 0)
		return;
	ev_tstamp now = ev_now(c->srv->loop);
	if (rate <= 0) {
		c->data_deadline = now + t;
	} else {
		c->data_deadline += (double)n / rate;
		if (c->data_deadline > now + t)
			c->data_deadline = now + t;
	}
	double left = c->data_deadline - now;
	c->timer.repeat = left > 0.001 ? left : 0.001;
	ev_timer_again(c->srv->loop, &c->timer);
}

static void conn_read(struct conn *c)
{
	size_t want = c->phase == PHASE_DATA || c->phase == PHASE_BDAT ? CONN_READ_DATA : CONN_READ_CMD;
	char *dst = buf_reserve(&c->in, want);
	ssize_t r = c->ssl ? conn_tls_recv(c, dst, want) : recv(c->fd, dst, want, 0);
	if (r == 0) {
		conn_close(c, "client closed the connection");
		return;
	}
	if (r < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			conn_close(c, strerror(errno));
		buf_release_if_empty(&c->in);
		return;
	}
	c->in.len += (size_t)r;
	/* For commands only a whole line is progress, and a message must keep
	 * up minDataRate: a client dripping bytes (slowloris) times out. */
	if (c->phase == PHASE_DATA || c->phase == PHASE_BDAT)
		conn_data_progress(c, (size_t)r);
	conn_process(c);
}

static void conn_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = (struct conn *)w;
	if (c->phase == PHASE_PROXY) {
		conn_proxy_read(c);
		return;
	}
	if (c->phase == PHASE_HANDSHAKE) {
		conn_tls_handshake(c);
		return;
	}
	if (c->ssl && c->tls_want_write && (revents & EV_WRITE))
		revents |= EV_READ; /* the read OpenSSL was writing for */
	if (revents & EV_READ)
		conn_read(c);
	if (c->phase != PHASE_CLOSED)
		conn_flush(c);
	/* Nothing else holds c now: free it without another loop turn. */
	if (c->phase == PHASE_CLOSED && ev_is_active(&c->timer)) {
		ev_timer_stop(loop, &c->timer);
		conn_finalize(c);
	}
}

static void conn_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = (struct conn *)((char *)w - offsetof(struct conn, timer));
	if (c->phase == PHASE_CLOSED) {
		conn_finalize(c);
		return;
	}
	if (c->phase == PHASE_PROXY) {
		conn_proxy_timer(c);
		return;
	}
	/* Time spent waiting on the script is not the client's idleness. */
	if (c->hook.active && c->hook.wait != WAIT_STREAM) {
		w->repeat = c->opt->socket_timeout;
		c->data_deadline = ev_now(loop) + w->repeat;
		ev_timer_again(loop, w);
		return;
	}
	conn_log(c, LOG_INFO, "timeout", NULL);
	if (c->phase == PHASE_HANDSHAKE) {
		smtp_session_tls_failed(c, "ERR_TLS_HANDSHAKE_TIMEOUT", "TLS handshake timeout");
		return;
	}
	if (c->phase == PHASE_CLOSING) {
		conn_close(c, "timeout while closing");
		return;
	}
	conn_end(c, 421, "4.4.2", "Timeout - closing connection");
}
