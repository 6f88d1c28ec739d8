/* pool — per-worker pools of idle outbound connections, keyed by a name
 * (a pool name or "host:port"), as lua-nginx-module's cosocket pools: a
 * connection put back stays open and is handed to the next connect to the
 * same key. Each idle one is watched: a peer that closes it (or sends
 * anything) takes it out at once; it expires after its idle timeout; a
 * full pool closes its oldest. A pooled TLS connection keeps its SSL *, so
 * it is reused without a new handshake. A connect under a backlog takes a
 * slot of its pool, or waits in the pool's queue for one. It knows no
 * Lua. */
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
	bool counted;   /* holds one of its pool's slots (pool_reserve) */
};

struct pool;

/* A connect queued for a pool whose slots are all taken (lua-nginx-
 * module's backlog). When a slot frees or a connection goes idle, the
 * first one queued is taken off the queue and its wake watcher (never
 * started, its callback set by the owner) gets EV_TIMER fed to it. */
struct pool_waiter {
	ev_timer wake;
	struct pool_waiter *next;
	struct pool *pool; /* NULL: not queued */
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
/* Slots: a pool counts the connections made under a backlog, open or
 * idle (lua-nginx-module limits only those). Takes one of key's slots if
 * fewer than size are taken: true, or false when all are. */
bool pool_reserve(const char *key, int size);
/* Gives a slot back (its connection is closed) and wakes a waiter. */
void pool_release(struct ev_loop *loop, const char *key);
/* Wakes the first waiter of key, if any (one whose wake was lost). */
void pool_kick(struct ev_loop *loop, const char *key);
/* Queues w on key (false: no memory); pool_waiting says how many are. */
bool pool_wait(const char *key, struct pool_waiter *w);
int pool_waiting(const char *key);
/* Takes w off its queue, if it is on one. */
void pool_unwait(struct pool_waiter *w);
/* The idle connections of key (for tests and metrics). */
int pool_count(const char *key);
/* Closes every idle connection (a worker's exit, a reload). */
void pool_close_all(struct ev_loop *loop);

#endif
