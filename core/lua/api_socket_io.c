/* api_socket_io — the cosocket's transport (api_socket.h): plain or TLS
 * reads and writes, send, the receive patterns, sslhandshake, and the loop
 * side that drives an operation the hook waits on. */
#include "lua/api_socket.h"

#include "lua/errors.h"
#include "lua/lua_api.h"
#include "lua/tls_options.h"

#include <lauxlib.h>

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define SOCK_READ_CHUNK 16384

static SSL_CTX *sock_client_ctx;

/* ---- transport ---------------------------------------------------------- */

/* > 0 bytes, 0 closed, -1 errno (EAGAIN: *events says what to wait for). */
static ssize_t sock_raw_recv(struct lua_socket *t, char *p, size_t n, int *events)
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

static ssize_t sock_raw_send(struct lua_socket *t, const char *p, size_t n, int *events)
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

static int sock_push_taken(lua_State *L, struct buf *b, size_t n, size_t skip)
{
	lua_pushlstring(L, n ? buf_head(b) : "", n); /* no buffer before the first read */
	buf_consume(b, n + skip);
	return 1;
}

/* Pushes the buffer's first len bytes without any CR, and takes them and
 * skip more (the LF): "*l" ignores every CR of the line, not only one
 * before the LF, in the partial line of an error too (lua-nginx-module
 * and LuaSocket say so, and do so). */
static int sock_push_line(lua_State *L, struct buf *b, size_t len, size_t skip)
{
	luaL_Buffer lb;
	luaL_buffinit(L, &lb);
	const char *p = len ? buf_head(b) : NULL, *end = p ? p + len : NULL;
	while (p < end) {
		const char *cr = memchr(p, '\r', (size_t)(end - p));
		luaL_addlstring(&lb, p, (size_t)((cr ? cr : end) - p));
		p = cr ? cr + 1 : end;
	}
	luaL_pushresult(&lb);
	buf_consume(b, len + skip);
	return 1;
}

/* Pushes nil, err and what was received so far (lua-nginx-module's
 * partial data), taking it from the buffer. */
static int sock_fail_partial(lua_State *L, struct lua_socket *t, const char *err, bool fatal)
{
	size_t n = buf_used(&t->rbuf);
	lua_pushnil(L);
	lua_pushstring(L, err);
	if (t->recv_mode == RECV_LINE)
		sock_push_line(L, &t->rbuf, n, 0);
	else
		sock_push_taken(L, &t->rbuf, n, 0);
	if (fatal && t->ngx)
		sock_close(t);
	return 3;
}

/* Pushes the result of the receive in flight if the buffer satisfies it:
 * returns the number of values pushed, or 0 when more is needed. eof: the
 * peer has closed. */
static int sock_try_receive(lua_State *L, struct lua_socket *t, bool eof)
{
	struct buf *b = &t->rbuf;
	const char *p = buf_head(b);
	size_t n = buf_used(b);
	switch (t->recv_mode) {
	case RECV_LINE: {
		const char *lf = n ? memchr(p, '\n', n) : NULL; /* p is NULL before the first read */
		if (lf)
			return sock_push_line(L, b, (size_t)(lf - p), 1);
		break;
	}
	case RECV_BYTES:
		if (n >= t->recv_n)
			return sock_push_taken(L, b, t->recv_n, 0);
		break;
	case RECV_ANY:
		if (n)
			return sock_push_taken(L, b, n < t->recv_n ? n : t->recv_n, 0);
		break;
	case RECV_UNTIL: {
		const char *at = n ? memmem(p, n, t->until_pat, t->until_len) : NULL;
		size_t size = t->until_size;
		if (at) {
			size_t before = (size_t)(at - p);
			if (size && before > size)
				return sock_push_taken(L, b, size, 0);
			t->until_ended = size > 0;
			return t->until_inclusive ? sock_push_taken(L, b, before + t->until_len, 0)
			                          : sock_push_taken(L, b, before, t->until_len);
		}
		/* Bytes that cannot begin the pattern may go before it is seen. */
		if (size && n >= t->until_len && n - (t->until_len - 1) >= size)
			return sock_push_taken(L, b, size, 0);
		break;
	}
	case RECV_ALL:
		break;
	}
	if (!eof)
		return 0;
	t->eof = true;
	if (t->recv_mode == RECV_ALL)
		return sock_push_taken(L, b, n, 0);
	/* As OpenResty: nil, "closed", and what was received. */
	return sock_fail_partial(L, t, LUA_ERR_CLOSED, true);
}

/* Reads what is available; returns 1 on progress, 0 at EOF, -1 to wait
 * (events set), -2 on error (errno). */
static int sock_fill(struct lua_socket *t, int *events)
{
	char *dst = buf_reserve(&t->rbuf, SOCK_READ_CHUNK);
	ssize_t r = sock_raw_recv(t, dst, SOCK_READ_CHUNK, events);
	if (r > 0) {
		t->rbuf.len += (size_t)r;
		sock_rearm_quickack(t);
		return 1;
	}
	if (r == 0)
		return 0;
	return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -1 : -2;
}

/* Drives a receive; pushes results on L and returns their count, or 0 to
 * wait (events set). */
static int sock_receive_step(lua_State *L, struct lua_socket *t, int *events)
{
	for (;;) {
		int n = sock_try_receive(L, t, false);
		if (n)
			return n;
		int r = sock_fill(t, events);
		if (r == 0)
			return sock_try_receive(L, t, true);
		if (r == -1)
			return 0;
		if (r == -2)
			return sock_fail_partial(L, t, lua_api_errno(errno), true);
	}
}

static int sock_receive_start(lua_State *L, struct lua_socket *t)
{
	if (t->fd < 0)
		return sock_fail(L, t, LUA_ERR_CLOSED, false);
	int events;
	int n = sock_receive_step(L, t, &events);
	return n ? n : sock_wait(L, t, OP_RECEIVE, events);
}

/* receive([pattern]): "*l" (the default), "*a", or a size (a number or a
 * numeric string, as lua-nginx-module takes it). */
int sock_receive(lua_State *L)
{
	struct lua_socket *t = sock_check_idle(L);
	if (lua_type(L, 2) == LUA_TNUMBER || (lua_type(L, 2) == LUA_TSTRING && lua_tonumber(L, 2) > 0) ||
	    (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "0") == 0)) {
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
	return sock_receive_start(L, t);
}

/* receiveany(max): whatever has arrived, at most max bytes, waiting only
 * while nothing has. */
int sock_receiveany(lua_State *L)
{
	struct lua_socket *t = sock_check_idle(L);
	lua_Number max = luaL_checknumber(L, 2);
	if (max < 1)
		return luaL_argerror(L, 2, "bad max argument");
	t->recv_mode = RECV_ANY;
	t->recv_n = (size_t)max;
	return sock_receive_start(L, t);
}

/* The iterator receiveuntil returns: each call reads up to the next
 * occurrence of the pattern (its upvalue 2, the socket upvalue 1). With a
 * size, it returns at most size bytes a call, and once the data before
 * the pattern is all returned, one nil (lua-nginx-module's end marker). */
static int sock_until_iter(lua_State *L)
{
	lua_Integer size = luaL_optinteger(L, 1, 0);
	if (size < 0)
		return luaL_argerror(L, 1, "expected a size >= 0");
	lua_settop(L, 0);
	lua_pushvalue(L, lua_upvalueindex(1));
	struct lua_socket *t = sock_check_idle(L);
	if (t->until_ended) {
		t->until_ended = false;
		lua_pushnil(L);
		return 1;
	}
	t->until_size = (size_t)size;
	size_t len;
	t->until_pat = lua_tolstring(L, lua_upvalueindex(2), &len);
	t->until_len = len;
	t->until_inclusive = lua_toboolean(L, lua_upvalueindex(3));
	t->recv_mode = RECV_UNTIL;
	return sock_receive_start(L, t);
}

/* receiveuntil(pattern [, {inclusive = bool}]): an iterator reading the
 * stream up to each occurrence of pattern. */
int sock_receiveuntil(lua_State *L)
{
	sock_check(L);
	size_t len;
	luaL_checklstring(L, 2, &len);
	if (len == 0)
		return luaL_argerror(L, 2, "pattern is empty");
	bool inclusive = false;
	if (lua_type(L, 3) == LUA_TTABLE) {
		lua_getfield(L, 3, "inclusive");
		inclusive = lua_toboolean(L, -1);
		lua_pop(L, 1);
	}
	lua_settop(L, 2);
	lua_pushboolean(L, inclusive);
	lua_pushcclosure(L, sock_until_iter, 3);
	return 1;
}

/* ---- send --------------------------------------------------------------- */

/* The bytes of a string, a number or (nested) an array of them: counted
 * when out is NULL, else copied to out. Not through a luaL_Buffer: its
 * pieces live on the stack, where the walk's own values get between them
 * (a piece longer than LUAL_BUFFERSIZE lost all that came before it). */
static size_t sock_flatten(lua_State *L, int idx, char *out, int depth)
{
	int type = lua_type(L, idx);
	if (type == LUA_TSTRING || type == LUA_TNUMBER) {
		size_t len;
		const char *s = lua_tolstring(L, idx, &len);
		if (out)
			memcpy(out, s, len);
		return len;
	}
	if (type != LUA_TTABLE || depth > 32)
		luaL_error(L, "bad argument #1 to 'send' (string, number or array table expected, got %s)",
		           lua_typename(L, type));
	size_t total = 0;
	int n = (int)lua_objlen(L, idx);
	for (int i = 1; i <= n; i++) {
		lua_rawgeti(L, idx, i);
		total += sock_flatten(L, lua_gettop(L), out ? out + total : NULL, depth + 1);
		lua_pop(L, 1);
	}
	return total;
}

/* Pushes the result when the send is complete; 0 to wait (events set). */
static int sock_send_step(lua_State *L, struct lua_socket *t, int *events)
{
	while (t->send_off < t->send_len) {
		ssize_t w = sock_raw_send(t, t->send_ptr + t->send_off, t->send_len - t->send_off, events);
		if (w < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				return 0;
			return sock_fail(L, t, lua_api_errno(errno), true);
		}
		t->send_off += (size_t)w;
	}
	lua_pushinteger(L, (lua_Integer)t->send_len);
	return 1;
}

const char *sock_check_data(lua_State *L, size_t *len)
{
	if (lua_type(L, 2) == LUA_TTABLE) {
		/* A flat copy is simpler than writev over a tree: measured, then
		 * copied (a table may hold a whole message chunk after a command)
		 * into a userdata that slot 2 holds while the send lasts (no
		 * second copy as a string). */
		lua_settop(L, 2);
		size_t total = sock_flatten(L, 2, NULL, 0);
		char *flat = lua_newuserdata(L, total ? total : 1);
		sock_flatten(L, 2, flat, 0);
		lua_replace(L, 2);
		*len = total;
		return flat;
	}
	return luaL_checklstring(L, 2, len);
}

int sock_send(lua_State *L)
{
	struct lua_socket *t = sock_check_idle(L);
	size_t len;
	const char *data = sock_check_data(L, &len);
	if (t->fd < 0)
		return sock_fail(L, t, LUA_ERR_CLOSED, false);
	t->send_ptr = data;
	t->send_len = len;
	t->send_off = 0;
	int events;
	int n = sock_send_step(L, t, &events);
	if (n)
		return n;
	lua_pushvalue(L, 2);
	t->send_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return sock_wait(L, t, OP_SEND, events);
}

/* ---- TLS ------------------------------------------------------------------ */

#define SSL_SESSION_CLASS "ssl session"

static struct lua_api_class sock_session_class = LUA_API_CLASS_NONE;

static int sock_session_gc(lua_State *L)
{
	SSL_SESSION **s = lua_touserdata(L, 1);
	SSL_SESSION_free(*s);
	*s = NULL;
	return 0;
}

static void sock_session_register(lua_State *L)
{
	static const luaL_Reg meta[] = {
		{"__gc", sock_session_gc},
		{NULL, NULL},
	};
	if (sock_session_class.ref == LUA_NOREF)
		sock_session_class = lua_api_class(L, NULL, meta);
}

/* What a finished handshake returns: a session userdata, as lua-nginx-
 * module does, for an OpenResty-style call whose reused_session is not
 * false (true for false); the connect's result for luasmtpd's order. */
static int sock_handshake_done(lua_State *L, struct lua_socket *t)
{
	if (t->hs_result == HS_TRUE) {
		lua_pushboolean(L, 1);
		return 1;
	}
	SSL_SESSION *sess = t->hs_result == HS_SESSION ? SSL_get1_session(t->ssl) : NULL;
	if (!sess)
		return sock_connected(L, t);
	sock_session_register(L);
	SSL_SESSION **ud = lua_api_newudata(L, sizeof *ud, &sock_session_class);
	*ud = sess;
	return 1;
}

static int sock_handshake_step(lua_State *L, struct lua_socket *t, int *events)
{
	ERR_clear_error();
	int r = SSL_connect(t->ssl);
	if (r == 1)
		return sock_handshake_done(L, t);
	int e = SSL_get_error(t->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		*events = e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE;
		return 0;
	}
	char reason[256] = LUA_ERR_HANDSHAKE;
	unsigned long code = ERR_peek_last_error();
	long vr = SSL_get_verify_result(t->ssl);
	if (t->ngx) {
		/* lua-nginx-module's spellings: "<code>: <reason>" for a chain it
		 * refuses, its own for a name, else no reason but the log's. */
		if (vr == X509_V_ERR_HOSTNAME_MISMATCH)
			snprintf(reason, sizeof reason, LUA_ERR_HOST_MISMATCH);
		else if (vr != X509_V_OK)
			snprintf(reason, sizeof reason, "%ld: %s", vr, X509_verify_cert_error_string(vr));
	} else if (vr != X509_V_OK) {
		snprintf(reason, sizeof reason, LUA_ERR_VERIFY ": %s", X509_verify_cert_error_string(vr));
	} else if (code) {
		ERR_error_string_n(code, reason, sizeof reason);
	}
	ERR_clear_error();
	return sock_fail(L, t, reason, true);
}

/* sock:sslhandshake(servername, verify, opts), or OpenResty's
 * (reused_session, servername, verify, send_status_req, opts): a string in
 * the third place can only be OpenResty's server_name, a session or a
 * boolean in the second only its reused_session, and on the ngx face a nil
 * there is OpenResty's too. OpenResty's order returns the session (to give
 * a later handshake as reused_session, which resumes it), or true when
 * reused_session is false, as lua-nginx-module does. opts, a table and
 * always the last argument, cannot be taken for any of OpenResty's
 * positional ones (none is a table), so OpenResty code runs unchanged and
 * an OpenResty-style call may add it too. opts.ca (PEM text or a file
 * path, or a list of them, as the ca option reads them) replaces the
 * system store for this handshake, as Node's ca option does. A connection
 * taken from a pool already in TLS is not shaken again (lua-nginx-module
 * does the same). */
int sock_sslhandshake(lua_State *L)
{
	struct lua_socket *t = sock_check_idle(L);
	int top = lua_gettop(L);
	int opts = top >= 2 && lua_type(L, top) == LUA_TTABLE ? top : 0;
	int last = opts ? opts - 1 : top; /* the last positional argument */
	int first = last >= 2 ? lua_type(L, 2) : LUA_TNIL;
	bool openresty = (last >= 3 && lua_type(L, 3) == LUA_TSTRING) || first == LUA_TUSERDATA ||
	                 first == LUA_TBOOLEAN || (t->ngx && first == LUA_TNIL);
	int name = openresty ? 3 : 2;
	const char *servername = name <= last ? luaL_optstring(L, name, NULL) : NULL;
	bool verify = name + 1 <= last && lua_toboolean(L, name + 1);
	SSL_SESSION *reuse = NULL;
	if (first == LUA_TUSERDATA) {
		sock_session_register(L);
		reuse = *(SSL_SESSION **)lua_api_checkudata(L, 2, &sock_session_class, SSL_SESSION_CLASS);
	}
	t->hs_result = !openresty ? HS_CONNECTED : first == LUA_TBOOLEAN && !lua_toboolean(L, 2) ? HS_TRUE
	                                                                                      : HS_SESSION;
	if (t->fd < 0)
		return sock_fail(L, t, LUA_ERR_CLOSED, false);
	if (t->ssl && t->reused)
		return sock_handshake_done(L, t);
	if (t->ssl)
		return sock_fail(L, t, LUA_ERR_TLS_ACTIVE, false);
	X509_STORE *ca = NULL;
	if (opts) {
		lua_getfield(L, opts, "ca");
		char err[256];
		if (!lua_isnil(L, -1) && !(ca = tls_ca_store_from_lua(L, lua_gettop(L), err, sizeof err)))
			return sock_fail(L, t, err, false);
	}
	if (!sock_client_ctx) {
		sock_client_ctx = SSL_CTX_new(TLS_client_method());
		SSL_CTX_set_default_verify_paths(sock_client_ctx);
		SSL_CTX_set_min_proto_version(sock_client_ctx, TLS1_2_VERSION);
	}
	t->ssl = SSL_new(sock_client_ctx);
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
	if (reuse)
		SSL_set_session(t->ssl, reuse);
	int events;
	int n = sock_handshake_step(L, t, &events);
	return n ? n : sock_wait(L, t, OP_HANDSHAKE, events);
}

/* ---- the loop side -------------------------------------------------------- */

/* Re-arms for the other direction (TLS may need to write to read). */
static void sock_rearm(struct lua_socket *t, int events)
{
	ev_io_stop(sock_loop(), &t->io);
	ev_io_set(&t->io, t->fd, events);
	ev_io_start(sock_loop(), &t->io);
}

void sock_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
	struct lua_socket *t = (struct lua_socket *)((char *)w - offsetof(struct lua_socket, io));
	lua_State *co = sock_waiting(t);
	if (!co)
		return;
	int events = 0, n = 0;
	switch (t->op) {
	case OP_CONNECT:
		sock_resume(t, sock_connect_result(co, t));
		return;
	case OP_SEND:
		n = sock_send_step(co, t, &events);
		break;
	case OP_RECEIVE:
		n = sock_receive_step(co, t, &events);
		break;
	case OP_HANDSHAKE:
		n = sock_handshake_step(co, t, &events);
		break;
	case OP_NONE:
	case OP_POOL_WAIT:
	case OP_RESOLVE:
		ev_io_stop(loop, w);
		return;
	}
	if (n)
		sock_resume(t, n);
	else if (events != (w->events & (EV_READ | EV_WRITE)))
		sock_rearm(t, events);
}

/* A read timeout leaves the socket usable (lua-nginx-module); a connect,
 * send or handshake cut short does not. */
void sock_on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct lua_socket *t = (struct lua_socket *)((char *)w - offsetof(struct lua_socket, timer));
	lua_State *co = sock_waiting(t);
	if (!co)
		return;
	enum sock_op op = t->op;
	int n;
	if (op == OP_RECEIVE) {
		n = sock_fail_partial(co, t, LUA_ERR_TIMEOUT, false);
	} else {
		bool connecting = op == OP_POOL_WAIT || op == OP_CONNECT || op == OP_RESOLVE;
		if (connecting)
			sock_close(t);
		n = sock_fail(co, t, LUA_ERR_TIMEOUT, !connecting);
	}
	sock_resume(t, n);
}
