/* api_tcp — smtp.tcp(), a non-blocking TCP (and TLS) client for hooks, in
 * the manner of OpenResty's cosockets: calls read as blocking code but
 * suspend only the calling hook while the loop serves everyone else.
 * Failures and timeouts return nil, err; timeouts are in seconds. */
#include "smtp/session.h"

#include "base/buf.h"
#include "lua/api_dns.h"
#include "lua/lua_api.h"
#include "lua/lua_hook.h"
#include "lua/lua_runtime.h"
#include "lua/modules.h"
#include "net/conn.h"
#include "net/dns.h"
#include "net/server.h"
#include "lua/tls_options.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define TCP_CLASS "smtp.tcp socket"
#define TCP_DEFAULT_TIMEOUT 60.0
#define TCP_READ_CHUNK 16384

enum tcp_op { OP_NONE, OP_RESOLVE, OP_CONNECT, OP_SEND, OP_RECEIVE, OP_HANDSHAKE };
enum tcp_recv { RECV_LINE, RECV_BYTES, RECV_ALL };

struct lua_tcp {
	struct hook_pending pending; /* first member: the cleanup gets us back */
	ev_io io;
	ev_timer timer;
	int fd;
	SSL *ssl;
	double timeout;
	enum tcp_op op;
	struct buf rbuf;
	int send_ref; /* keeps the string being sent alive */
	const char *send_ptr;
	size_t send_len, send_off;
	enum tcp_recv recv_mode;
	size_t recv_n;
	/* connect(name, port): the lookup before the connect */
	struct dns_query *dns;
	int port;
};

static SSL_CTX *tcp_client_ctx;
static int tcp_class = LUA_NOREF;

static struct ev_loop *tcp_loop(void)
{
	return server_current ? server_current->loop : EV_DEFAULT;
}

static struct lua_tcp *tcp_check(lua_State *L)
{
	return lua_api_checkudata(L, 1, tcp_class, TCP_CLASS);
}

/* The socket, for a call that uses it: one hook at a time (a socket kept
 * in a script's table is in reach of every session). */
static struct lua_tcp *tcp_check_idle(lua_State *L)
{
	struct lua_tcp *t = tcp_check(L);
	if (hook_pending_thread(&t->pending))
		luaL_error(L, "smtp.tcp: socket busy (another hook waits on it)");
	return t;
}

/* Ends the op in flight without resuming anyone. */
static void tcp_stop(struct lua_tcp *t)
{
	if (t->dns) {
		dns_cancel(t->dns);
		t->dns = NULL;
	}
	ev_io_stop(tcp_loop(), &t->io);
	ev_timer_stop(tcp_loop(), &t->timer);
	luaL_unref(lua_main, LUA_REGISTRYINDEX, t->send_ref);
	t->send_ref = LUA_NOREF;
	t->op = OP_NONE;
}

static void tcp_close(struct lua_tcp *t)
{
	tcp_stop(t);
	if (t->ssl) {
		SSL_free(t->ssl);
		t->ssl = NULL;
	}
	if (t->fd >= 0) {
		close(t->fd);
		t->fd = -1;
	}
	buf_free(&t->rbuf);
}

static void tcp_cleanup(struct hook_pending *p)
{
	/* The hook is gone: the socket is left unusable mid-operation. */
	tcp_close((struct lua_tcp *)p);
}

/* The coroutine waiting on t's op; NULL (and the op stopped) when its
 * hook run is over. */
static lua_State *tcp_waiting(struct lua_tcp *t)
{
	lua_State *co = hook_pending_thread(&t->pending);
	if (!co)
		tcp_stop(t);
	return co;
}

/* Finishes the op in flight: the results are on the hook's coroutine. */
static void tcp_resume(struct lua_tcp *t, int nres)
{
	tcp_stop(t);
	hook_pending_done(&t->pending, nres);
}

static void tcp_resume_fail(struct lua_tcp *t, const char *err)
{
	lua_State *co = tcp_waiting(t);
	if (co)
		tcp_resume(t, lua_api_fail(co, err));
}

/* Watches the socket for op (events 0: only the timeout runs, as while
 * the name is looked up). */
static void tcp_arm(struct lua_tcp *t, enum tcp_op op, int events)
{
	t->op = op;
	ev_io_stop(tcp_loop(), &t->io);
	if (events) {
		ev_io_set(&t->io, t->fd, events);
		ev_io_start(tcp_loop(), &t->io);
	}
	if (t->timeout > 0 && !ev_is_active(&t->timer)) {
		ev_timer_set(&t->timer, t->timeout, 0.);
		ev_timer_start(tcp_loop(), &t->timer);
	}
}

/* Suspends the calling hook until op completes within the timeout. */
static int tcp_wait(lua_State *L, struct lua_tcp *t, enum tcp_op op, int events)
{
	if (!hook_current(L))
		return luaL_error(L, "smtp.tcp: only a hook's own coroutine can wait for the network");
	tcp_arm(t, op, events);
	return hook_wait(L, &t->pending);
}

/* Re-arms for the other direction (TLS may need to write to read). */
static void tcp_rearm(struct lua_tcp *t, int events)
{
	ev_io_stop(tcp_loop(), &t->io);
	ev_io_set(&t->io, t->fd, events);
	ev_io_start(tcp_loop(), &t->io);
}

/* ---- transport ---------------------------------------------------------- */

/* > 0 bytes, 0 closed, -1 errno (EAGAIN: *events says what to wait for). */
static ssize_t tcp_raw_recv(struct lua_tcp *t, char *p, size_t n, int *events)
{
	*events = EV_READ;
	if (!t->ssl)
		return recv(t->fd, p, n, 0);
	ERR_clear_error();
	int r = SSL_read(t->ssl, p, (int)n);
	if (r > 0)
		return r;
	int e = SSL_get_error(t->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		*events = e == SSL_ERROR_WANT_WRITE ? EV_WRITE : EV_READ;
		errno = EAGAIN;
		return -1;
	}
	if (e == SSL_ERROR_ZERO_RETURN)
		return 0;
	errno = errno ? errno : ECONNRESET;
	return -1;
}

static ssize_t tcp_raw_send(struct lua_tcp *t, const char *p, size_t n, int *events)
{
	*events = EV_WRITE;
	if (!t->ssl)
		return send(t->fd, p, n, MSG_NOSIGNAL);
	ERR_clear_error();
	int w = SSL_write(t->ssl, p, (int)n);
	if (w > 0)
		return w;
	int e = SSL_get_error(t->ssl, w);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		*events = e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE;
		errno = EAGAIN;
		return -1;
	}
	errno = errno ? errno : EPIPE;
	return -1;
}

/* ---- receive ------------------------------------------------------------ */

/* Pushes the result of the receive in flight if the buffer satisfies it:
 * returns the number of values pushed, or 0 when more is needed. eof: the
 * peer has closed. */
static int tcp_try_receive(lua_State *L, struct lua_tcp *t, bool eof)
{
	struct buf *b = &t->rbuf;
	const char *p = buf_head(b);
	size_t n = buf_used(b);
	if (t->recv_mode == RECV_LINE) {
		const char *lf = n ? memchr(p, '\n', n) : NULL; /* p is NULL before the first read */
		if (lf) {
			size_t len = (size_t)(lf - p);
			lua_pushlstring(L, p, len > 0 && p[len - 1] == '\r' ? len - 1 : len);
			buf_consume(b, len + 1);
			return 1;
		}
	} else if (t->recv_mode == RECV_BYTES && n >= t->recv_n) {
		lua_pushlstring(L, p, t->recv_n);
		buf_consume(b, t->recv_n);
		return 1;
	}
	if (!eof)
		return 0;
	if (t->recv_mode == RECV_ALL) {
		lua_pushlstring(L, p, n);
		buf_consume(b, n);
		return 1;
	}
	/* As OpenResty: nil, "closed", and what was received. */
	lua_pushnil(L);
	lua_pushstring(L, LUA_ERR_CLOSED);
	lua_pushlstring(L, p, n);
	buf_consume(b, n);
	return 3;
}

/* Reads what is available; returns 1 on progress, 0 at EOF, -1 to wait
 * (events set), -2 on error (errno). */
static int tcp_fill(struct lua_tcp *t, int *events)
{
	char *dst = buf_reserve(&t->rbuf, TCP_READ_CHUNK);
	ssize_t r = tcp_raw_recv(t, dst, TCP_READ_CHUNK, events);
	if (r > 0) {
		t->rbuf.len += (size_t)r;
		return 1;
	}
	if (r == 0)
		return 0;
	return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -1 : -2;
}

/* Drives a receive; pushes results on L and returns their count, or 0 to
 * wait (events set). */
static int tcp_receive_step(lua_State *L, struct lua_tcp *t, int *events)
{
	for (;;) {
		int n = tcp_try_receive(L, t, false);
		if (n)
			return n;
		int r = tcp_fill(t, events);
		if (r == 0)
			return tcp_try_receive(L, t, true);
		if (r == -1)
			return 0;
		if (r == -2)
			return lua_api_fail(L, lua_api_errno(errno));
	}
}

static int tcp_receive(lua_State *L)
{
	struct lua_tcp *t = tcp_check_idle(L);
	if (t->fd < 0)
		return lua_api_fail(L, LUA_ERR_CLOSED);
	if (lua_type(L, 2) == LUA_TNUMBER) {
		lua_Number n = lua_tonumber(L, 2);
		if (n < 0)
			return luaL_argerror(L, 2, "expected a size >= 0");
		t->recv_mode = RECV_BYTES;
		t->recv_n = (size_t)n;
	} else {
		const char *pat = luaL_optstring(L, 2, "*l");
		if (strcmp(pat, "*l") == 0)
			t->recv_mode = RECV_LINE;
		else if (strcmp(pat, "*a") == 0)
			t->recv_mode = RECV_ALL;
		else
			return luaL_argerror(L, 2, "expected \"*l\", \"*a\" or a size");
	}
	int events;
	int n = tcp_receive_step(L, t, &events);
	return n ? n : tcp_wait(L, t, OP_RECEIVE, events);
}

/* ---- send --------------------------------------------------------------- */

/* Pushes the result when the send is complete; 0 to wait (events set). */
static int tcp_send_step(lua_State *L, struct lua_tcp *t, int *events)
{
	while (t->send_off < t->send_len) {
		ssize_t w = tcp_raw_send(t, t->send_ptr + t->send_off, t->send_len - t->send_off, events);
		if (w < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				return 0;
			return lua_api_fail(L, lua_api_errno(errno));
		}
		t->send_off += (size_t)w;
	}
	lua_pushinteger(L, (lua_Integer)t->send_len);
	return 1;
}

static int tcp_send(lua_State *L)
{
	struct lua_tcp *t = tcp_check_idle(L);
	size_t len;
	const char *data = luaL_checklstring(L, 2, &len);
	if (t->fd < 0)
		return lua_api_fail(L, LUA_ERR_CLOSED);
	t->send_ptr = data;
	t->send_len = len;
	t->send_off = 0;
	int events;
	int n = tcp_send_step(L, t, &events);
	if (n)
		return n;
	lua_pushvalue(L, 2);
	t->send_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return tcp_wait(L, t, OP_SEND, events);
}

/* ---- connect and TLS ---------------------------------------------------- */

static int tcp_connect_result(lua_State *L, struct lua_tcp *t)
{
	int err = 0;
	socklen_t len = sizeof err;
	if (getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		err = errno;
	if (err) {
		close(t->fd);
		t->fd = -1;
		return lua_api_fail(L, lua_api_errno(err));
	}
	lua_pushboolean(L, 1);
	return 1;
}

static bool tcp_parse_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len)
{
	memset(ss, 0, sizeof *ss);
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	if (strcmp(host, "localhost") == 0)
		host = "127.0.0.1";
	if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		*len = sizeof *s4;
		return true;
	}
	if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		*len = sizeof *s6;
		return true;
	}
	return false;
}

/* Starts connecting to ss: pushes the result and returns its count, or 0
 * while the connection is in progress. */
static int tcp_start_connect(lua_State *L, struct lua_tcp *t, const struct sockaddr_storage *ss,
                             socklen_t len)
{
	t->fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (t->fd < 0)
		return lua_api_fail(L, lua_api_errno(errno));
	int one = 1;
	setsockopt(t->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (connect(t->fd, (const struct sockaddr *)ss, len) == 0) {
		lua_pushboolean(L, 1);
		return 1;
	}
	if (errno == EINPROGRESS)
		return 0;
	int e = errno;
	close(t->fd);
	t->fd = -1;
	return lua_api_fail(L, lua_api_errno(e));
}

/* The first address of an A answer, with the port of the connect. Runs
 * from the loop, never inside tcp_connect (dns.h). */
static void tcp_resolved(void *arg, int status, const unsigned char *abuf, int alen)
{
	struct lua_tcp *t = arg;
	t->dns = NULL;
	lua_State *co = tcp_waiting(t);
	if (!co)
		return;
	struct ares_addrttl a[1];
	int n = 1;
	if (status == ARES_SUCCESS && (ares_parse_a_reply(abuf, alen, NULL, a, &n) != ARES_SUCCESS || n < 1))
		status = ARES_ENODATA;
	if (status != ARES_SUCCESS) {
		tcp_resume_fail(t, lua_dns_error(status));
		return;
	}
	struct sockaddr_storage ss;
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	memset(&ss, 0, sizeof ss);
	s4->sin_family = AF_INET;
	s4->sin_port = htons((uint16_t)t->port);
	s4->sin_addr = a[0].ipaddr;
	int r = tcp_start_connect(co, t, &ss, sizeof *s4);
	if (r)
		tcp_resume(t, r);
	else
		tcp_arm(t, OP_CONNECT, EV_WRITE);
}

static int tcp_connect(lua_State *L)
{
	struct lua_tcp *t = tcp_check_idle(L);
	const char *host = luaL_checkstring(L, 2);
	lua_Integer port = luaL_checkinteger(L, 3);
	if (port < 1 || port > 65535)
		return luaL_argerror(L, 3, "expected a port from 1 to 65535");
	if (t->fd >= 0)
		tcp_close(t);
	struct sockaddr_storage ss;
	socklen_t len;
	if (tcp_parse_addr(host, (int)port, &ss, &len)) {
		int r = tcp_start_connect(L, t, &ss, len);
		return r ? r : tcp_wait(L, t, OP_CONNECT, EV_WRITE);
	}
	if (!hook_current(L))
		return luaL_error(L, "smtp.tcp: only a hook's own coroutine can wait for the network");
	char err[256];
	t->port = (int)port;
	t->dns = dns_query(host, ns_t_a, tcp_resolved, t, err, sizeof err);
	if (!t->dns)
		return lua_api_fail(L, err);
	return tcp_wait(L, t, OP_RESOLVE, 0);
}

static int tcp_handshake_step(lua_State *L, struct lua_tcp *t, int *events)
{
	ERR_clear_error();
	int r = SSL_connect(t->ssl);
	if (r == 1) {
		lua_pushboolean(L, 1);
		return 1;
	}
	int e = SSL_get_error(t->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		*events = e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE;
		return 0;
	}
	char reason[256] = "handshake failed";
	unsigned long code = ERR_peek_last_error();
	if (code)
		ERR_error_string_n(code, reason, sizeof reason);
	long vr = SSL_get_verify_result(t->ssl);
	if (vr != X509_V_OK)
		snprintf(reason, sizeof reason, "certificate verify failed: %s",
		         X509_verify_cert_error_string(vr));
	ERR_clear_error();
	return lua_api_fail(L, reason);
}

/* sock:sslhandshake(servername, verify, opts), or OpenResty's
 * (reused_session, servername, verify, send_status_req, opts): a string in
 * the third place can only be OpenResty's server_name. opts, a table and
 * always the last argument, cannot be taken for any of OpenResty's
 * positional ones (none is a table), so OpenResty code runs unchanged and
 * an OpenResty-style call may add it too. opts.ca (PEM text or a file
 * path, or a list of them, as the ca option reads them) replaces the
 * system store for this handshake, as Node's ca option does. */
static int tcp_sslhandshake(lua_State *L)
{
	struct lua_tcp *t = tcp_check_idle(L);
	int top = lua_gettop(L);
	int opts = top >= 2 && lua_type(L, top) == LUA_TTABLE ? top : 0;
	int last = opts ? opts - 1 : top; /* the last positional argument */
	int name = lua_type(L, 3) == LUA_TSTRING ? 3 : 2;
	const char *servername = name <= last ? luaL_optstring(L, name, NULL) : NULL;
	bool verify = name + 1 <= last && lua_toboolean(L, name + 1);
	if (t->fd < 0)
		return lua_api_fail(L, LUA_ERR_CLOSED);
	if (t->ssl)
		return lua_api_fail(L, LUA_ERR_TLS_ACTIVE);
	X509_STORE *ca = NULL;
	if (opts) {
		lua_getfield(L, opts, "ca");
		char err[256];
		if (!lua_isnil(L, -1) && !(ca = tls_ca_store_from_lua(L, lua_gettop(L), err, sizeof err)))
			return lua_api_fail(L, err);
	}
	if (!tcp_client_ctx) {
		tcp_client_ctx = SSL_CTX_new(TLS_client_method());
		SSL_CTX_set_default_verify_paths(tcp_client_ctx);
		SSL_CTX_set_min_proto_version(tcp_client_ctx, TLS1_2_VERSION);
	}
	t->ssl = SSL_new(tcp_client_ctx);
	SSL_set_fd(t->ssl, t->fd);
	SSL_set_connect_state(t->ssl);
	if (servername) {
		SSL_set_tlsext_host_name(t->ssl, servername);
		if (verify)
			SSL_set1_host(t->ssl, servername);
	}
	if (ca) {
		SSL_set1_verify_cert_store(t->ssl, ca);
		X509_STORE_free(ca);
	}
	SSL_set_verify(t->ssl, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	int events;
	int n = tcp_handshake_step(L, t, &events);
	return n ? n : tcp_wait(L, t, OP_HANDSHAKE, events);
}

/* ---- the loop side -------------------------------------------------------- */

static void tcp_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
	struct lua_tcp *t = (struct lua_tcp *)((char *)w - offsetof(struct lua_tcp, io));
	lua_State *co = tcp_waiting(t);
	if (!co)
		return;
	int events = 0, n = 0;
	switch (t->op) {
	case OP_CONNECT:
		tcp_resume(t, tcp_connect_result(co, t));
		return;
	case OP_SEND:
		n = tcp_send_step(co, t, &events);
		break;
	case OP_RECEIVE:
		n = tcp_receive_step(co, t, &events);
		break;
	case OP_HANDSHAKE:
		n = tcp_handshake_step(co, t, &events);
		break;
	case OP_NONE:
	case OP_RESOLVE:
		ev_io_stop(loop, w);
		return;
	}
	if (n)
		tcp_resume(t, n);
	else if (events != (w->events & (EV_READ | EV_WRITE)))
		tcp_rearm(t, events);
}

static void tcp_on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct lua_tcp *t = (struct lua_tcp *)((char *)w - offsetof(struct lua_tcp, timer));
	if (!tcp_waiting(t))
		return;
	if (t->op == OP_CONNECT) {
		close(t->fd);
		t->fd = -1;
	}
	tcp_resume_fail(t, LUA_ERR_TIMEOUT);
}

/* ---- the object ----------------------------------------------------------- */

static int tcp_settimeout(lua_State *L)
{
	struct lua_tcp *t = tcp_check(L);
	double s = luaL_checknumber(L, 2);
	t->timeout = s > 0 ? s : 0;
	return 0;
}

static int tcp_close_method(lua_State *L)
{
	struct lua_tcp *t = tcp_check_idle(L);
	if (t->fd < 0)
		return lua_api_fail(L, LUA_ERR_CLOSED);
	if (t->ssl)
		SSL_shutdown(t->ssl);
	tcp_close(t);
	lua_pushboolean(L, 1);
	return 1;
}

static int tcp_gc(lua_State *L)
{
	tcp_close(tcp_check(L));
	return 0;
}

static int tcp_new(lua_State *L)
{
	struct lua_tcp *t = lua_api_newudata(L, sizeof *t, tcp_class);
	t->pending.cleanup = tcp_cleanup;
	t->fd = -1;
	t->timeout = TCP_DEFAULT_TIMEOUT;
	t->send_ref = LUA_NOREF;
	ev_init(&t->io, tcp_on_io);
	ev_init(&t->timer, tcp_on_timeout);
	return 1;
}

int luaopen_smtp_tcp(lua_State *L)
{
	static const luaL_Reg methods[] = {
		{"connect", tcp_connect},
		{"receive", tcp_receive},
		{"send", tcp_send},
		{"sslhandshake", tcp_sslhandshake},
		{"settimeout", tcp_settimeout},
		{"close", tcp_close_method},
		{NULL, NULL},
	};
	static const luaL_Reg meta[] = {
		{"__gc", tcp_gc},
		{NULL, NULL},
	};
	static const luaL_Reg fns[] = {
		{"new", tcp_new},
		{NULL, NULL},
	};
	if (tcp_class == LUA_NOREF)
		tcp_class = lua_api_class(L, methods, meta);
	return lua_api_module(L, fns);
}
