/* api_udp — ngx.socket.udp(), lua-nginx-module's datagram cosocket, for
 * lua-resty-dns and statsd-style senders: setpeername, send, receive
 * (which suspends only the calling hook), settimeout in milliseconds,
 * close. Peers are addresses or unix: paths (as in nginx without a
 * resolver, a name is refused). */
#include "lua/api_socket.h"

#include "lua/errors.h"
#include "lua/lua_api.h"
#include "lua/lua_runtime.h"
#include "lua/modules.h"

#include <lauxlib.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define UDP_CLASS "ngx.socket.udp"
#define UDP_MAX_DATAGRAM 65536
#define UDP_DEFAULT_TIMEOUT 60.0

struct lua_udp {
	struct hook_pending pending; /* first member: the cleanup gets us back */
	ev_io io;
	ev_timer timer;
	int fd;
	double timeout; /* seconds, 0: none */
	size_t max;     /* the receive in flight's size */
};

static struct lua_api_class udp_class = LUA_API_CLASS_NONE;

static struct lua_udp *udp_check(lua_State *L)
{
	return lua_api_checkudata(L, 1, &udp_class, UDP_CLASS);
}

static struct lua_udp *udp_check_idle(lua_State *L)
{
	struct lua_udp *u = udp_check(L);
	if (hook_pending_thread(&u->pending))
		luaL_error(L, "ngx.socket.udp: socket busy (another hook waits on it)");
	return u;
}

static void udp_stop(struct lua_udp *u)
{
	ev_io_stop(sock_loop(), &u->io);
	ev_timer_stop(sock_loop(), &u->timer);
}

static void udp_close(struct lua_udp *u)
{
	udp_stop(u);
	if (u->fd >= 0) {
		close(u->fd);
		u->fd = -1;
	}
}

static void udp_cleanup(struct hook_pending *p)
{
	udp_stop((struct lua_udp *)p);
	p->c = NULL; /* a script may keep the socket past the session */
}

static int udp_fail_errno(lua_State *L, int e)
{
	char low[128];
	snprintf(low, sizeof low, "%s", lua_api_errno(e));
	low[0] = (char)tolower((unsigned char)low[0]);
	return lua_api_fail(L, low);
}

/* setpeername(host, port) or setpeername("unix:/path"). */
static int udp_setpeername(lua_State *L)
{
	struct lua_udp *u = udp_check_idle(L);
	const char *host = luaL_checkstring(L, 2);
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	socklen_t len = 0;
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
	struct sockaddr_un *su = (struct sockaddr_un *)&ss;
	if (strncmp(host, "unix:", 5) == 0) {
		if (strlen(host + 5) >= sizeof su->sun_path)
			return lua_api_fail(L, LUA_ERR_PATH_TOO_LONG);
		su->sun_family = AF_UNIX;
		snprintf(su->sun_path, sizeof su->sun_path, "%s", host + 5);
		len = sizeof *su;
	} else {
		lua_Integer port = luaL_checkinteger(L, 3);
		if (port < 1 || port > 65535)
			return luaL_argerror(L, 3, "expected a port from 1 to 65535");
		if (strcmp(host, "localhost") == 0)
			host = "127.0.0.1";
		if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
			s4->sin_family = AF_INET;
			s4->sin_port = htons((uint16_t)port);
			len = sizeof *s4;
		} else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
			s6->sin6_family = AF_INET6;
			s6->sin6_port = htons((uint16_t)port);
			len = sizeof *s6;
		} else {
			lua_pushnil(L);
			lua_pushfstring(L, "no resolver defined to resolve \"%s\"", host);
			return 2;
		}
	}
	udp_close(u);
	u->fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (u->fd < 0)
		return udp_fail_errno(L, errno);
	if (connect(u->fd, (struct sockaddr *)&ss, len) != 0) {
		int e = errno;
		udp_close(u);
		return udp_fail_errno(L, e);
	}
	lua_pushinteger(L, 1);
	return 1;
}

static int udp_send(lua_State *L)
{
	struct lua_udp *u = udp_check_idle(L);
	size_t len;
	const char *data = sock_check_data(L, &len);
	if (u->fd < 0)
		return lua_api_fail(L, LUA_ERR_CLOSED);
	/* A datagram socket is always writable enough: a full buffer drops,
	 * as UDP may. */
	if (send(u->fd, data, len, MSG_NOSIGNAL) < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
		return udp_fail_errno(L, errno);
	lua_pushinteger(L, 1);
	return 1;
}

/* Pushes one datagram, or an error; 0 when none has come yet. */
static int udp_try_receive(lua_State *L, struct lua_udp *u)
{
	char buf[UDP_MAX_DATAGRAM];
	ssize_t r = recv(u->fd, buf, u->max, 0);
	if (r >= 0) {
		lua_pushlstring(L, buf, (size_t)r);
		return 1;
	}
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return 0;
	return udp_fail_errno(L, errno);
}

static void udp_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
	struct lua_udp *u = (struct lua_udp *)((char *)w - offsetof(struct lua_udp, io));
	lua_State *co = hook_pending_thread(&u->pending);
	if (!co) {
		udp_stop(u);
		return;
	}
	int n = udp_try_receive(co, u);
	if (n) {
		udp_stop(u);
		hook_pending_done(&u->pending, n);
	}
}

static void udp_on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct lua_udp *u = (struct lua_udp *)((char *)w - offsetof(struct lua_udp, timer));
	lua_State *co = hook_pending_thread(&u->pending);
	udp_stop(u);
	if (co)
		hook_pending_done(&u->pending, lua_api_fail(co, LUA_ERR_TIMEOUT));
}

/* receive([size]): one datagram, at most size bytes (65536). */
static int udp_receive(lua_State *L)
{
	struct lua_udp *u = udp_check_idle(L);
	lua_Integer max = luaL_optinteger(L, 2, UDP_MAX_DATAGRAM);
	if (max < 1 || max > UDP_MAX_DATAGRAM)
		return luaL_argerror(L, 2, "expected a size from 1 to 65536");
	if (u->fd < 0)
		return lua_api_fail(L, LUA_ERR_CLOSED);
	u->max = (size_t)max;
	int n = udp_try_receive(L, u);
	if (n)
		return n;
	if (!hook_can_wait(L))
		return luaL_error(L, "ngx.socket.udp: only a hook (or a coroutine it runs) can wait for the network");
	ev_io_set(&u->io, u->fd, EV_READ);
	ev_io_start(sock_loop(), &u->io);
	if (u->timeout > 0) {
		ev_timer_set(&u->timer, u->timeout, 0.);
		ev_timer_start(sock_loop(), &u->timer);
	}
	return hook_wait(L, &u->pending);
}

static int udp_settimeout(lua_State *L)
{
	struct lua_udp *u = udp_check(L);
	lua_Number ms = luaL_checknumber(L, 2);
	u->timeout = ms > 0 ? ms / 1000 : 0;
	return 0;
}

static int udp_close_method(lua_State *L)
{
	struct lua_udp *u = udp_check_idle(L);
	if (u->fd < 0)
		return lua_api_fail(L, LUA_ERR_CLOSED);
	udp_close(u);
	lua_pushinteger(L, 1);
	return 1;
}

static int udp_gc(lua_State *L)
{
	udp_close(udp_check(L));
	return 0;
}

int lua_udp_new(lua_State *L)
{
	static const luaL_Reg methods[] = {
		{"setpeername", udp_setpeername},
		{"send", udp_send},
		{"receive", udp_receive},
		{"settimeout", udp_settimeout},
		{"close", udp_close_method},
		{NULL, NULL},
	};
	static const luaL_Reg meta[] = {
		{"__gc", udp_gc},
		{NULL, NULL},
	};
	if (udp_class.ref == LUA_NOREF)
		udp_class = lua_api_class(L, methods, meta);
	struct lua_udp *u = lua_api_newudata(L, sizeof *u, &udp_class);
	u->pending.cleanup = udp_cleanup;
	u->fd = -1;
	u->timeout = UDP_DEFAULT_TIMEOUT;
	ev_init(&u->io, udp_on_io);
	ev_init(&u->timer, udp_on_timeout);
	return 1;
}
