/* api_socket — the cosocket object behind smtp.tcp and ngx.socket.tcp
 * (api_socket.h): its life, connect (a name, an address or a unix socket,
 * or an idle connection from the pool), the timeouts in each face's unit,
 * setkeepalive and close. The transport is api_socket_io.c. */
#include "lua/api_socket.h"

#include "lua/api_dns.h"
#include "lua/errors.h"
#include "lua/lua_api.h"
#include "lua/lua_runtime.h"
#include "lua/modules.h"
#include "net/dns.h"
#include "net/server.h"

#include <lauxlib.h>

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define SOCK_CLASS "smtp.tcp socket"
#define SOCK_DEFAULT_TIMEOUT 60.0

static struct lua_api_class sock_class = LUA_API_CLASS_NONE;

struct ev_loop *sock_loop(void)
{
	return server_current ? server_current->loop : EV_DEFAULT;
}

struct lua_socket *sock_check(lua_State *L)
{
	return lua_api_checkudata(L, 1, &sock_class, SOCK_CLASS);
}

struct lua_socket *sock_check_idle(lua_State *L)
{
	struct lua_socket *t = sock_check(L);
	if (hook_pending_thread(&t->pending))
		luaL_error(L, "smtp.tcp: socket busy (another hook waits on it)");
	return t;
}

/* Ends the op in flight without resuming anyone. */
static void sock_stop(struct lua_socket *t)
{
	if (t->dns) {
		dns_cancel(t->dns);
		t->dns = NULL;
	}
	pool_unwait(&t->waiter);
	/* A wake fed to us and not yet seen goes to the next in the queue. */
	if (ev_clear_pending(sock_loop(), &t->waiter.wake))
		pool_kick(sock_loop(), t->pool_key);
	ev_io_stop(sock_loop(), &t->io);
	ev_timer_stop(sock_loop(), &t->timer);
	luaL_unref(lua_main, LUA_REGISTRYINDEX, t->send_ref);
	t->send_ref = LUA_NOREF;
	t->op = OP_NONE;
}

void sock_close(struct lua_socket *t)
{
	sock_stop(t);
	if (t->ssl) {
		SSL_free(t->ssl);
		t->ssl = NULL;
	}
	if (t->fd >= 0) {
		close(t->fd);
		t->fd = -1;
	}
	if (t->counted) {
		t->counted = false;
		pool_release(sock_loop(), t->pool_key);
	}
	buf_free(&t->rbuf);
}

int sock_fail(lua_State *L, struct lua_socket *t, const char *err, bool fatal)
{
	if (!t->ngx)
		return lua_api_fail(L, err);
	/* lua-nginx-module's reasons are lowercase ("connection reset by peer"). */
	char low[256];
	snprintf(low, sizeof low, "%s", err);
	low[0] = (char)tolower((unsigned char)low[0]);
	if (fatal)
		sock_close(t);
	return lua_api_fail(L, low);
}

static void sock_cleanup(struct hook_pending *p)
{
	/* The hook is gone: the socket is left unusable mid-operation, and
	 * (a script may keep it) tied to no session. */
	sock_close((struct lua_socket *)p);
	p->c = NULL;
}

lua_State *sock_waiting(struct lua_socket *t)
{
	lua_State *co = hook_pending_thread(&t->pending);
	if (!co)
		sock_stop(t);
	return co;
}

void sock_resume(struct lua_socket *t, int nres)
{
	sock_stop(t);
	hook_pending_done(&t->pending, nres);
}

static double sock_op_timeout(const struct lua_socket *t, enum sock_op op)
{
	switch (op) {
	case OP_SEND:
		return t->send_timeout;
	case OP_RECEIVE:
		return t->read_timeout;
	default:
		return t->connect_timeout;
	}
}

/* Watches the socket for op (events 0: only the timeout runs, as while
 * the name is looked up). */
void sock_arm(struct lua_socket *t, enum sock_op op, int events)
{
	t->op = op;
	ev_io_stop(sock_loop(), &t->io);
	if (events) {
		ev_io_set(&t->io, t->fd, events);
		ev_io_start(sock_loop(), &t->io);
	}
	double timeout = sock_op_timeout(t, op);
	if (timeout > 0 && !ev_is_active(&t->timer)) {
		ev_timer_set(&t->timer, timeout, 0.);
		ev_timer_start(sock_loop(), &t->timer);
	}
}

int sock_wait(lua_State *L, struct lua_socket *t, enum sock_op op, int events)
{
	if (!hook_can_wait(L))
		return luaL_error(L, "smtp.tcp: only a hook (or a coroutine it runs) can wait for the network");
	sock_arm(t, op, events);
	return hook_wait(L, &t->pending);
}

/* ---- connect ------------------------------------------------------------ */

int sock_connected(lua_State *L, struct lua_socket *t)
{
	if (t->ngx)
		lua_pushinteger(L, 1);
	else
		lua_pushboolean(L, 1);
	return 1;
}

int sock_connect_result(lua_State *L, struct lua_socket *t)
{
	int err = 0;
	socklen_t len = sizeof err;
	if (getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		err = errno;
	if (err) {
		sock_close(t);
		return sock_fail(L, t, lua_api_errno(err), false);
	}
	return sock_connected(L, t);
}

static bool sock_parse_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len)
{
	memset(ss, 0, sizeof *ss);
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	struct sockaddr_un *su = (struct sockaddr_un *)ss;
	if (strncmp(host, "unix:", 5) == 0) {
		if (strlen(host + 5) >= sizeof su->sun_path)
			return false;
		su->sun_family = AF_UNIX;
		snprintf(su->sun_path, sizeof su->sun_path, "%s", host + 5);
		*len = sizeof *su;
		return true;
	}
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
static int sock_start_connect(lua_State *L, struct lua_socket *t, const struct sockaddr_storage *ss,
                              socklen_t len)
{
	t->fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (t->fd < 0)
		return sock_fail(L, t, lua_api_errno(errno), false);
	if (ss->ss_family != AF_UNIX) {
		int one = 1;
		setsockopt(t->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	}
	if (connect(t->fd, (const struct sockaddr *)ss, len) == 0)
		return sock_connected(L, t);
	if (errno == EINPROGRESS || (errno == EAGAIN && ss->ss_family == AF_UNIX))
		return 0;
	int e = errno;
	sock_close(t);
	return sock_fail(L, t, lua_api_errno(e), false);
}

/* The first address of an A answer, with the port of the connect. Runs
 * from the loop, never inside sock_connect (dns.h). */
static void sock_resolved(void *arg, int status, const unsigned char *abuf, int alen)
{
	struct lua_socket *t = arg;
	t->dns = NULL;
	lua_State *co = sock_waiting(t);
	if (!co)
		return;
	struct ares_addrttl a[1];
	int n = 1;
	if (status == ARES_SUCCESS && (ares_parse_a_reply(abuf, alen, NULL, a, &n) != ARES_SUCCESS || n < 1))
		status = ARES_ENODATA;
	if (status != ARES_SUCCESS) {
		sock_close(t); /* gives its pool slot back */
		sock_resume(t, sock_fail(co, t, lua_dns_error(status), false));
		return;
	}
	struct sockaddr_storage ss;
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	memset(&ss, 0, sizeof ss);
	s4->sin_family = AF_INET;
	s4->sin_port = htons((uint16_t)t->port);
	s4->sin_addr = a[0].ipaddr;
	int r = sock_start_connect(co, t, &ss, sizeof *s4);
	if (r)
		sock_resume(t, r);
	else
		sock_arm(t, OP_CONNECT, EV_WRITE);
}

/* Connects t to its host and port: an idle connection of its pool, else
 * a new one; under a backlog a new one needs a slot of the pool, and
 * waits in the pool's queue for one while at most backlog others do.
 * Pushes the result and returns its count, or 0 when it waits (armed). */
static int sock_connect_start(lua_State *L, struct lua_socket *t)
{
	struct pool_conn pc;
	if (pool_get(sock_loop(), t->pool_key, &pc)) {
		t->fd = pc.fd;
		t->ssl = pc.ssl;
		t->reused = pc.reused;
		t->counted = pc.counted;
		return sock_connected(L, t);
	}
	if (t->backlog >= 0 && !t->counted) {
		if (!pool_reserve(t->pool_key, t->pool_size)) {
			if (pool_waiting(t->pool_key) >= t->backlog || !pool_wait(t->pool_key, &t->waiter))
				return sock_fail(L, t, LUA_ERR_BACKLOG, false);
			sock_arm(t, OP_POOL_WAIT, 0);
			return 0;
		}
		t->counted = true;
	}
	struct sockaddr_storage ss;
	socklen_t len;
	if (sock_parse_addr(t->host, t->port, &ss, &len)) {
		int r = sock_start_connect(L, t, &ss, len);
		if (!r)
			sock_arm(t, OP_CONNECT, EV_WRITE);
		return r;
	}
	if (strncmp(t->host, "unix:", 5) == 0) {
		sock_close(t);
		return sock_fail(L, t, LUA_ERR_PATH_TOO_LONG, false);
	}
	char err[256];
	t->dns = dns_query(t->host, ns_t_a, sock_resolved, t, err, sizeof err);
	if (!t->dns) {
		sock_close(t);
		return sock_fail(L, t, err, false);
	}
	sock_arm(t, OP_RESOLVE, 0);
	return 0;
}

/* A slot or an idle connection of the pool for the connect that waits. */
static void sock_on_pool_wake(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct lua_socket *t = (struct lua_socket *)((char *)w - offsetof(struct lua_socket, waiter.wake));
	lua_State *co = sock_waiting(t);
	if (!co || t->op != OP_POOL_WAIT)
		return;
	int n = sock_connect_start(co, t);
	if (n)
		sock_resume(t, n);
}

/* connect(host, port [, opts]) or connect("unix:/path" [, opts]); opts
 * {pool = name, pool_size = n, backlog = n}. An idle connection of the
 * pool is taken first. Without backlog, pool_size bounds only the idle
 * connections; with it, the connections of the pool, as lua-nginx-module
 * does (sock_connect_start). */
static int sock_connect(lua_State *L)
{
	struct lua_socket *t = sock_check_idle(L);
	const char *host = luaL_checkstring(L, 2);
	bool is_unix = strncmp(host, "unix:", 5) == 0;
	lua_Integer port = 0;
	int opts = is_unix ? 3 : 4;
	if (!is_unix) {
		port = luaL_checkinteger(L, 3);
		if (port < 1 || port > 65535)
			return luaL_argerror(L, 3, "expected a port from 1 to 65535");
	}
	sock_close(t);
	t->eof = false;
	t->quickack = false; /* setoption's options belong to a connection */
	t->until_ended = false;
	t->reused = 0;
	t->pool_size = POOL_DEFAULT_SIZE;
	t->backlog = -1;
	const char *pool = NULL;
	if (lua_type(L, opts) == LUA_TTABLE) {
		lua_getfield(L, opts, "pool");
		pool = lua_tostring(L, -1);
		lua_getfield(L, opts, "pool_size");
		if (lua_isnumber(L, -1))
			t->pool_size = (int)lua_tointeger(L, -1);
		lua_getfield(L, opts, "backlog");
		if (lua_isnumber(L, -1) && lua_tointeger(L, -1) >= 0)
			t->backlog = (int)lua_tointeger(L, -1);
		else if (!lua_isnil(L, -1))
			return luaL_argerror(L, opts, "bad \"backlog\" option value");
		lua_pop(L, 2); /* the pool name stays on the stack while used */
	} else if (!lua_isnoneornil(L, opts)) {
		return luaL_argerror(L, opts, "expected an options table");
	}
	if (pool)
		snprintf(t->pool_key, sizeof t->pool_key, "%s", pool);
	else if (is_unix)
		snprintf(t->pool_key, sizeof t->pool_key, "%s", host);
	else
		snprintf(t->pool_key, sizeof t->pool_key, "%s:%d", host, (int)port);
	snprintf(t->host, sizeof t->host, "%s", host);
	t->port = (int)port;
	int r = sock_connect_start(L, t);
	if (r)
		return r;
	if (!hook_can_wait(L)) {
		sock_close(t);
		return luaL_error(L, "smtp.tcp: only a hook (or a coroutine it runs) can wait for the network");
	}
	return hook_wait(L, &t->pending);
}

/* ---- keepalive and close -------------------------------------------------- */

/* A timeout argument in the face's unit, in seconds; nil: dflt. */
static double sock_opt_seconds(lua_State *L, const struct lua_socket *t, int idx, double dflt)
{
	if (lua_isnoneornil(L, idx))
		return dflt;
	double v = luaL_checknumber(L, idx);
	if (v < 0)
		luaL_argerror(L, idx, "expected a timeout >= 0");
	return t->ngx ? v / 1000 : v;
}

/* setkeepalive([idle [, pool_size]]): the connection goes idle into its
 * pool (idle 0: no limit; nil: 60 s), the object is closed. A connection
 * with unread bytes cannot be reused, as lua-nginx-module says. */
static int sock_setkeepalive(lua_State *L)
{
	struct lua_socket *t = sock_check_idle(L);
	double idle = sock_opt_seconds(L, t, 2, POOL_DEFAULT_IDLE);
	int size = (int)luaL_optinteger(L, 3, t->pool_size);
	if (t->fd < 0 || t->eof)
		return sock_fail(L, t, LUA_ERR_CLOSED, false);
	if (buf_used(&t->rbuf))
		return sock_fail(L, t, LUA_ERR_UNREAD, false);
	char peek;
	ssize_t r = recv(t->fd, &peek, 1, MSG_PEEK | MSG_DONTWAIT);
	if (r >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
		/* Bytes nobody asked for, or the peer's close: not reusable. */
		sock_close(t);
		return sock_fail(L, t, r > 0 ? LUA_ERR_DUBIOUS : LUA_ERR_CLOSED, false);
	}
	struct pool_conn pc = {.fd = t->fd, .ssl = t->ssl, .reused = t->reused, .counted = t->counted};
	t->fd = -1;
	t->ssl = NULL;
	t->counted = false; /* the slot goes with the connection */
	sock_close(t);
	char err[64];
	if (pool_put(sock_loop(), t->pool_key, &pc, idle, size, err, sizeof err) != 0)
		return sock_fail(L, t, err, false);
	return sock_connected(L, t);
}

static int sock_getreusedtimes(lua_State *L)
{
	struct lua_socket *t = sock_check(L);
	if (t->fd < 0)
		return sock_fail(L, t, LUA_ERR_CLOSED, false);
	lua_pushinteger(L, t->reused);
	return 1;
}

static int sock_settimeout(lua_State *L)
{
	struct lua_socket *t = sock_check(L);
	luaL_checknumber(L, 2);
	double s = sock_opt_seconds(L, t, 2, 0);
	t->connect_timeout = t->send_timeout = t->read_timeout = s;
	return 0;
}

/* settimeouts(connect, send, read), each in the face's unit. */
static int sock_settimeouts(lua_State *L)
{
	struct lua_socket *t = sock_check(L);
	t->connect_timeout = sock_opt_seconds(L, t, 2, t->connect_timeout);
	t->send_timeout = sock_opt_seconds(L, t, 3, t->send_timeout);
	t->read_timeout = sock_opt_seconds(L, t, 4, t->read_timeout);
	return 0;
}

/* setoption(name, value), lua-nginx-module's options plus "quickack":
 * a peer that writes twice without TCP_NODELAY (libmilter) has its second
 * write held by Nagle until our delayed ACK of the first, 40 ms. */
static const struct {
	const char *name;
	int level, opt;
	bool flag; /* a boolean; else a size in bytes */
} sock_options[] = {
	{"keepalive", SOL_SOCKET, SO_KEEPALIVE, true},
	{"reuseaddr", SOL_SOCKET, SO_REUSEADDR, true},
	{"tcp-nodelay", IPPROTO_TCP, TCP_NODELAY, true},
	{"sndbuf", SOL_SOCKET, SO_SNDBUF, false},
	{"rcvbuf", SOL_SOCKET, SO_RCVBUF, false},
	{"quickack", IPPROTO_TCP, TCP_QUICKACK, true},
};

void sock_rearm_quickack(struct lua_socket *t)
{
	int on = 1;
	if (t->quickack)
		(void)setsockopt(t->fd, IPPROTO_TCP, TCP_QUICKACK, &on, sizeof on);
}

static int sock_setoption(lua_State *L)
{
	struct lua_socket *t = sock_check(L);
	const char *name = luaL_checkstring(L, 2);
	size_t i = 0;
	while (i < sizeof sock_options / sizeof sock_options[0] && strcmp(sock_options[i].name, name) != 0)
		i++;
	if (i == sizeof sock_options / sizeof sock_options[0])
		return sock_fail(L, t, LUA_ERR_BAD_OPTION, false);
	int v;
	if (sock_options[i].flag && lua_type(L, 3) == LUA_TBOOLEAN)
		v = lua_toboolean(L, 3);
	else
		v = (int)luaL_checkinteger(L, 3);
	if (!sock_options[i].flag && v <= 0)
		return luaL_argerror(L, 3, "a size in bytes");
	if (t->fd < 0)
		return sock_fail(L, t, LUA_ERR_CLOSED, false);
	if (setsockopt(t->fd, sock_options[i].level, sock_options[i].opt, &v, sizeof v) != 0)
		return sock_fail(L, t, lua_api_errno(errno), false);
	if (sock_options[i].level == IPPROTO_TCP && sock_options[i].opt == TCP_QUICKACK)
		t->quickack = v != 0;
	lua_pushboolean(L, 1);
	return 1;
}

static int sock_close_method(lua_State *L)
{
	struct lua_socket *t = sock_check_idle(L);
	if (t->fd < 0)
		return sock_fail(L, t, LUA_ERR_CLOSED, false);
	if (t->ssl)
		SSL_shutdown(t->ssl);
	sock_close(t);
	return sock_connected(L, t);
}

static int sock_gc(lua_State *L)
{
	sock_close(sock_check(L));
	return 0;
}

/* ---- the two faces -------------------------------------------------------- */

static void sock_register_class(lua_State *L)
{
	static const luaL_Reg methods[] = {
		{"connect", sock_connect},
		{"receive", sock_receive},
		{"receiveany", sock_receiveany},
		{"receiveuntil", sock_receiveuntil},
		{"send", sock_send},
		{"sslhandshake", sock_sslhandshake},
		{"settimeout", sock_settimeout},
		{"settimeouts", sock_settimeouts},
		{"setoption", sock_setoption},
		{"setkeepalive", sock_setkeepalive},
		{"getreusedtimes", sock_getreusedtimes},
		{"close", sock_close_method},
		{NULL, NULL},
	};
	static const luaL_Reg meta[] = {
		{"__gc", sock_gc},
		{NULL, NULL},
	};
	if (sock_class.ref == LUA_NOREF)
		sock_class = lua_api_class(L, methods, meta);
}

static int sock_new(lua_State *L, bool ngx)
{
	struct lua_socket *t = lua_api_newudata(L, sizeof *t, &sock_class);
	t->pending.cleanup = sock_cleanup;
	t->fd = -1;
	t->ngx = ngx;
	t->connect_timeout = t->send_timeout = t->read_timeout = SOCK_DEFAULT_TIMEOUT;
	t->send_ref = LUA_NOREF;
	t->pool_size = POOL_DEFAULT_SIZE;
	ev_init(&t->io, sock_on_io);
	ev_init(&t->timer, sock_on_timeout);
	ev_init(&t->waiter.wake, sock_on_pool_wake);
	t->backlog = -1;
	return 1;
}

static int sock_new_tcp(lua_State *L)
{
	return sock_new(L, false);
}

static int sock_new_ngx(lua_State *L)
{
	return sock_new(L, true);
}

int luaopen_smtp_tcp(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{"new", sock_new_tcp},
		{NULL, NULL},
	};
	sock_register_class(L);
	return lua_api_module(L, fns);
}

int luaopen_smtp_ngx_socket(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{"tcp", sock_new_ngx},
		{"udp", lua_udp_new},
		{NULL, NULL},
	};
	sock_register_class(L);
	return lua_api_module(L, fns);
}
