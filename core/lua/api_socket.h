/* api_socket — one TCP cosocket behind two faces: smtp.tcp (timeouts in
 * seconds, luasmtpd's documented API) and ngx.socket.tcp (lua-nginx-
 * module's semantics: milliseconds, numeric results, lowercase errno
 * strings, the socket closed on a fatal error). Calls read as blocking
 * code but suspend only the calling hook; idle connections go to the
 * worker's pools (net/pool.h). api_socket.c holds the object, connect and
 * pooling; api_socket_io.c the transport, send, receive and TLS. */
#ifndef LUASMTPD_API_SOCKET_H
#define LUASMTPD_API_SOCKET_H

#include "base/buf.h"
#include "lua/lua_hook.h"
#include "net/pool.h"

#include <ev.h>
#include <lua.h>
#include <openssl/ssl.h>
#include <stdbool.h>

enum sock_op { OP_NONE, OP_POOL_WAIT, OP_RESOLVE, OP_CONNECT, OP_SEND, OP_RECEIVE, OP_HANDSHAKE };
enum sock_recv { RECV_LINE, RECV_BYTES, RECV_ALL, RECV_ANY, RECV_UNTIL };
/* What sslhandshake returns once done: the connect's result, true, or the
 * TLS session (OpenResty's order, api_socket_io.c). */
enum sock_hs_result { HS_CONNECTED, HS_TRUE, HS_SESSION };

struct lua_socket {
	struct hook_pending pending; /* first member: the cleanup gets us back */
	ev_io io;
	ev_timer timer;
	int fd;
	SSL *ssl;
	bool ngx;    /* the ngx.socket.tcp face */
	bool eof;    /* the peer has closed: never pooled */
	bool quickack; /* setoption("quickack"): re-armed after each read */
	double connect_timeout, send_timeout, read_timeout; /* seconds, 0: none */
	enum sock_op op;
	struct buf rbuf;
	int send_ref; /* keeps the string being sent alive */
	const char *send_ptr;
	size_t send_len, send_off;
	enum sock_recv recv_mode;
	enum sock_hs_result hs_result;
	size_t recv_n;
	/* receiveuntil: the pattern (kept alive by the iterator's upvalue) */
	const char *until_pat;
	size_t until_len;
	size_t until_size; /* the iterator's size argument, 0: none */
	bool until_inclusive;
	bool until_ended; /* a sized read reached the pattern: next call says nil */
	/* connect(name, port): the lookup before the connect */
	struct dns_query *dns;
	int port;
	/* the pool this connection belongs to, and its reuse count */
	char pool_key[POOL_KEY_MAX];
	int pool_size;
	unsigned reused;
	/* connect's backlog (-1: none): the pool's slots limit connections,
	 * and a connect waits (waiter) for one, for host (and port) */
	int backlog;
	bool counted; /* holds a slot of its pool */
	struct pool_waiter waiter;
	char host[POOL_KEY_MAX];
};

struct ev_loop *sock_loop(void);
struct lua_socket *sock_check(lua_State *L);
/* The socket, for a call that uses it: one hook at a time (a socket kept
 * in a script's table is in reach of every session). */
struct lua_socket *sock_check_idle(lua_State *L);
/* Closes the connection (any op in flight stopped, nobody resumed). */
void sock_close(struct lua_socket *t);
/* Pushes nil, err (and the face's spelling of err) and returns 2; on the
 * ngx face a fatal error closes the socket, as lua-nginx-module does. */
int sock_fail(lua_State *L, struct lua_socket *t, const char *err, bool fatal);
/* Suspends the calling hook until op completes within the op's timeout. */
int sock_wait(lua_State *L, struct lua_socket *t, enum sock_op op, int events);
/* The coroutine waiting on t's op; NULL (and the op stopped) when its hook
 * run is over. */
lua_State *sock_waiting(struct lua_socket *t);
/* Finishes the op in flight: the results are on the hook's coroutine. */
void sock_resume(struct lua_socket *t, int nres);
void sock_arm(struct lua_socket *t, enum sock_op op, int events);
/* The result of a connect that is complete. */
int sock_connected(lua_State *L, struct lua_socket *t);
int sock_connect_result(lua_State *L, struct lua_socket *t);

void sock_on_io(struct ev_loop *loop, ev_io *w, int revents);
void sock_on_timeout(struct ev_loop *loop, ev_timer *w, int revents);

/* What send takes as argument 2: a string, a number or a (nested) array
 * of them, flattened into one buffer that replaces the table in slot 2, so
 * it lives as long as the slot (also ngx.socket.udp's send). */
const char *sock_check_data(lua_State *L, size_t *len);

/* api_udp.c: ngx.socket.udp(), a new datagram cosocket. */
int lua_udp_new(lua_State *L);

/* Methods from api_socket_io.c. */
int sock_send(lua_State *L);
int sock_receive(lua_State *L);
int sock_receiveany(lua_State *L);
int sock_receiveuntil(lua_State *L);
int sock_sslhandshake(lua_State *L);
/* Re-arms TCP_QUICKACK after a read when the script asked for it: Linux
 * drops back to delayed ACKs on its own. */
void sock_rearm_quickack(struct lua_socket *t);

#endif
