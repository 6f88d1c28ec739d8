/* conn — one client connection as a transport: its socket, watchers,
 * buffers, TLS, PROXY header, timers and deadlines. It knows nothing of the
 * protocol it carries: it reports to its owner (the SMTP session,
 * smtp/session.c) through one table of callbacks, struct conn_owner_ops,
 * as nginx's c->read->handler or Redis's ae file events do. */
#ifndef LUASMTPD_CONN_H
#define LUASMTPD_CONN_H

#include "base/buf.h"
#include "base/log.h"
#include "net/listener_options.h"

#include <ev.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct server;
struct conn;
struct proxy_info;

/* Why a connection is refused before it begins. */
enum conn_refusal {
	CONN_REFUSED_CLIENTS, /* maxClients */
	CONN_REFUSED_PEER,    /* maxConnectionsPerIp */
	CONN_REFUSED_RATE,    /* maxConnectionRate */
};

/* The transport's phases; what the protocol does while the connection is
 * open is its owner's own state (the SMTP session's: smtp/state.h). */
enum conn_phase {
	PHASE_PROXY,     /* waiting for the PROXY protocol header */
	PHASE_HANDSHAKE, /* TLS handshake (implicit TLS or after STARTTLS) */
	PHASE_OPEN,      /* the owner's: it reads and writes through c */
	PHASE_CLOSING,   /* flushing the last reply, then close */
	PHASE_CLOSED,    /* socket closed; the owner may still finish (onClose) */
};

/* What the connection tells its owner. Each is called with c alive; after
 * on_closed only on_stop (a server shutdown meets every connection) and
 * on_release follow. */
struct conn_owner_ops {
	/* The session may begin (after accept, or after the PROXY header pi,
	 * else NULL): implicit TLS first, or the protocol's greeting. */
	void (*on_open)(struct conn *c, const struct proxy_info *pi);
	/* Refused before it began: say why with conn_send_now; c closes next. */
	void (*on_refused)(struct conn *c, enum conn_refusal why);
	/* c->in has new bytes: consume what can be handled now. */
	void (*on_input)(struct conn *c);
	/* Besides the transport's own back-pressure, may c read now? */
	bool (*wants_input)(const struct conn *c);
	/* Is the owner reading a byte stream (a message body) rather than
	 * lines? Reads are larger then, and every byte, not only a whole
	 * line, keeps the connection alive at minDataRate. */
	bool (*streaming)(const struct conn *c);
	/* A ClientHello named a server (not in the SNI cache): answer with
	 * conn_tls_servername_answer, now or later. */
	void (*on_servername)(struct conn *c, const char *name);
	void (*on_tls_done)(struct conn *c);
	/* The handshake failed: the owner closes c. */
	void (*on_tls_failed)(struct conn *c, const char *code, const char *reason);
	/* socketTimeout of silence (or a handshake's deadline) has passed. */
	void (*on_timeout)(struct conn *c);
	/* Server shutdown: end after the work in hand, or now (closeTimeout). */
	void (*on_stop)(struct conn *c, bool now);
	/* The socket has just closed: stop whatever runs for c. */
	void (*on_closed)(struct conn *c);
	/* From the loop, with nothing of c on the stack: the owner finishes,
	 * then calls conn_free(c). */
	void (*on_release)(struct conn *c);
};

struct conn {
	ev_io io;
	/* socketTimeout while open, lazily: progress only moves idle_deadline
	 * on, and the timer, which never fires after it, re-arms itself for
	 * the rest when it fires early (conn_on_timer). The PROXY header's
	 * deadline; the deferred free once closed. */
	ev_timer timer;
	struct server *srv;
	struct listener_options *opt; /* its listener's options (the owner keeps them alive) */
	int fd;
	enum conn_phase phase;
	char id[17];
	char remote_addr[64];
	int remote_port;
	char local_addr[64];
	int local_port;
	ev_tstamp proxy_deadline;
	ev_tstamp data_deadline; /* a message must keep up minDataRate */
	ev_tstamp idle_deadline; /* when the open connection times out (ev_now's clock) */
	ev_tstamp handshake_deadline; /* handshakeTimeout after accept or STARTTLS; 0: none */

	struct buf in;  /* unprocessed input */
	struct buf out; /* replies not yet written */
	bool drain_on_close; /* read pending input before close (see conn_close) */
	bool dispatching;    /* in conn_on_io's read and flush, which release c if it closes */
	bool batched;        /* read, its input waits for conn_batch_run (below it, batch_next) */

	/* TLS */
	SSL *ssl;
	bool secure;           /* the handshake has completed */
	bool starttls_pending; /* 220 queued: the handshake starts once it is sent */
	bool sni_done;         /* SNICallback has answered for this handshake */
	bool sni_failed;       /* ... and refused the name */
	bool sni_async;        /* ... after yielding: the handshake waits for it */
	bool tls_want_write;   /* OpenSSL must write before it can read on */
	bool tls_write_wants_read; /* ... or read before it can write on */
	SSL_CTX *sni_ctx;      /* what it chose (a reference), NULL: the default */
	char *servername;      /* the ClientHello's, lower-cased; NULL if none */

	const struct conn_owner_ops *ops;
	void *owner;

	struct conn *prev, *next; /* the server's list of connections */
	struct conn *batch_next;
};

/* local: the listener's own address, or NULL to ask the socket. The
 * caller sets c->ops and c->owner before conn_start. */
struct conn *conn_new(struct server *srv, struct listener_options *opt, int fd, const struct sockaddr *peer,
                      const struct sockaddr *local);
/* Admits c (connection limits, PROXY header), then opens it to its owner. */
void conn_start(struct conn *c, const char *listen_addr);
/* maxConnectionsPerIp: are there more open connections from c's address
 * (c among them) than allowed? */
bool conn_too_many_from_peer(const struct conn *c);
/* Writes line at once, past the buffer, best effort: for a refusal before
 * the session begins. */
void conn_send_now(struct conn *c, const char *line);
/* Sends what is queued; returns false if the connection died. */
bool conn_flush(struct conn *c);
/* Unread input is dropped; c closes once what is queued is written. drain:
 * read what the peer has sent meanwhile before closing (see conn_close). */
void conn_close_when_flushed(struct conn *c, bool drain);
/* Closes now; the struct is freed later from the loop (on_release). */
void conn_close(struct conn *c, const char *reason);
/* The owner closes c once it has had a last word with someone else (its
 * policy, on a failed handshake): meanwhile nothing is read or
 * handshaken, and socketTimeout closes c if that takes too long. */
void conn_close_pending(struct conn *c);
/* What the owner may ask of the transport's phase. */
static inline bool conn_is_open(const struct conn *c) { return c->phase == PHASE_OPEN; }
static inline bool conn_is_handshaking(const struct conn *c) { return c->phase == PHASE_HANDSHAKE; }
static inline bool conn_is_closed(const struct conn *c) { return c->phase == PHASE_CLOSED; }
/* Closing or closed: no reply goes out any more. */
static inline bool conn_is_ending(const struct conn *c)
{
	return c->phase == PHASE_CLOSING || c->phase == PHASE_CLOSED;
}
/* Frees c: its owner's last word, from on_release. */
void conn_free(struct conn *c);
/* Input is held back by the transport: a TLS upgrade waits for the output
 * to drain, or too much output is queued. */
bool conn_input_paused(const struct conn *c);
/* A complete command line has arrived: the idle timer starts over. */
void conn_line_progress(struct conn *c);
/* The owner is busy (not the peer): the idle timer starts over. */
void conn_idle_restart(struct conn *c);
/* The idle timer fires in t seconds (t <= 0: never), earlier or later than
 * it would have: for the transport's own phases (open, TLS handshake). */
void conn_idle_arm(struct conn *c, double t);
/* After an asynchronous step: the owner goes on with buffered input. */
void conn_resume(struct conn *c);
/* Server shutdown: the owner ends its session after its work in hand. */
void conn_stop(struct conn *c);
/* closeTimeout has passed: the owner ends its session now. */
void conn_stop_now(struct conn *c);
static inline const char *conn_session_id(const struct conn *c) { return c->id; }
/* Re-arms the watcher for what the connection waits on now. */
void conn_update_io(struct conn *c);
void conn_log(struct conn *c, enum log_level level, const char *msg, ...) __attribute__((sentinel));

#endif
