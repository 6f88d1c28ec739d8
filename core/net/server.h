/* server — the listening sockets, the set of connections, signals, reload
 * (HUP, certificate renewals on disk: through the struct server_ops its
 * owner gives it) and the graceful stop. */
#ifndef LUASMTPD_SERVER_H
#define LUASMTPD_SERVER_H

#include "net/listener_options.h"
#include "net/heap_trim.h"

#include <ev.h>
#include <sys/socket.h>
#include <stdbool.h>

struct conn;
struct server;

/* What the server asks of whoever configures it (main.c installs the Lua
 * runtime's, lua/server_ops.c): net/ loads no script and knows no Lua. */
struct server_ops {
	/* The script loaded again for a reload (one reference); NULL and err. */
	struct listener_set *(*load)(struct server *srv, char *err, size_t errlen);
	void (*ref)(struct listener_set *cfg);
	/* The last reference gone, cfg is freed (sessions hold theirs). */
	void (*unref)(struct listener_set *cfg);
	/* cfg became the server's: its process-wide settings apply. */
	void (*adopt)(struct listener_set *cfg);
	/* Every listener's TLS of cfg built again from its options (files
	 * renewed on disk); all or nothing, false and err. */
	bool (*rebuild_tls)(struct listener_set *cfg, char *err, size_t errlen);
	/* The loop is about to serve; it stops or drains (no new sessions);
	 * the process is done with the runtime. */
	void (*serving)(void);
	void (*stopping)(void);
	void (*close)(void);
};

struct listener {
	ev_io io;
	struct server *srv;
	struct listener_options *opt; /* in srv->cfg */
	int fd;
	char addr[96];
	/* Bound to one address (not a wildcard): every session's local
	 * address, known without a getsockname(2) each; else AF_UNSPEC. */
	struct sockaddr_storage local;
	struct listener *next;
};

struct cert_watch {
	ev_stat stat;
	struct server *srv;
};

struct server {
	struct ev_loop *loop;
	const struct server_ops *ops;
	struct listener_set *cfg; /* the current script; sessions may hold older ones */
	const char *script;
	char **listen_override;
	size_t noverride;
	struct listener *listeners;
	struct conn *conns;
	unsigned nconns;
	/* Gives a new connection its owner (sets c->ops and c->owner). */
	void (*accept_conn)(struct conn *c);
	bool stopping;
	bool accepting; /* false in a master, whose workers accept */
	bool draining;  /* an old worker after a reload: no new sessions */
	bool worker;    /* one of a master's workers: HUP is the master's */
	unsigned worker_id;    /* its slot, 0 .. worker_count - 1 (0 in a single process) */
	unsigned worker_count; /* --workers N; 0 in a single process */
	ev_signal sig_term, sig_int, sig_hup, sig_quit;
	ev_timer close_timer;
	struct cert_watch *watches;
	size_t nwatches;
	ev_timer cert_settle; /* a renewal writes several files: wait for the last */
	ev_timer accept_pause; /* out of descriptors: accepting waits (see server_accept) */
	bool accept_paused;
	ev_tstamp accept_pause_logged;
	struct heap_trim handshake_trim; /* the heap after a burst of TLS handshakes */
};

/* The running server, for the smtp.server Lua API. */
extern struct server *server_current;

bool server_listen(struct server *srv, char *err, size_t errlen);
/* Serves: sets up signals, accepts, runs the loop until stopped. */
void server_run(struct server *srv);
/* Stops accepting and ends the loop once the open sessions have ended by
 * themselves (an old worker after a reload). */
void server_drain(struct server *srv);
/* Drops root for the script's `user`, if any; false and err on failure. */
bool server_drop_privileges(struct server *srv, char *err, size_t errlen);
/* Loads the script again; on failure nothing changes. */
bool server_reload(struct server *srv, char *err, size_t errlen);
/* The listeners' TLS was built again: watch the files it was read from. */
void server_watch_certs(struct server *srv);
/* Closes the listening sockets (a master stopping its workers). */
void server_stop_listening(struct server *srv);
/* Stops accepting; open sessions end as on TERM. */
void server_stop(struct server *srv, const char *why);
void server_conn_gone(struct server *srv, struct conn *c);
void server_free(struct server *srv);

#endif
