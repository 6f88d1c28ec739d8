/* pool — per-worker pools of idle outbound connections, keyed by a name
 * (a pool name or "host:port"), as lua-nginx-module's cosocket pools: a
 * connection put back stays open and is handed to the next connect to the
 * same key. Each idle one is watched: a peer that closes it (or sends
 * anything) takes it out at once; it expires after its idle timeout; a
 * full pool closes its oldest. A pooled TLS connection keeps its SSL *, so
 * it is reused without a new handshake. It knows no Lua. */
#ifndef LUASMTPD_POOL_H
#define LUASMTPD_POOL_H

#include <ev.h>
#include <openssl/ssl.h>
#include <stdbool.h>

#define POOL_KEY_MAX 256
#define POOL_DEFAULT_SIZE 30
#define POOL_DEFAULT_IDLE 60.0

/* One connection as it leaves or enters a pool. */
struct pool_conn {
	int fd;
	SSL *ssl;       /* NULL for plain TCP */
	unsigned reused; /* times it was taken from a pool */
};

/* Keeps pc idle under key on loop for at most idle seconds (0: no limit),
 * closing the oldest of key beyond size connections (size < 1: the
 * default). The pool owns pc from now on. Returns 0, or -1 with err when
 * it was closed instead (a key too long, no memory). */
int pool_put(struct ev_loop *loop, const char *key, const struct pool_conn *pc, double idle,
             int size, char *err, size_t errlen);
/* Takes the most recently put idle connection of key into *pc (its reused
 * count already incremented): true, or false when key has none. */
bool pool_get(struct ev_loop *loop, const char *key, struct pool_conn *pc);
/* The idle connections of key (for tests and metrics). */
int pool_count(const char *key);
/* Closes every idle connection (a worker's exit, a reload). */
void pool_close_all(struct ev_loop *loop);

#endif
