/* conn — one client connection: its socket, watchers, buffers, line
 * reader and TLS state. The SMTP session it carries (smtp/session.h) is
 * freed with it. */
#ifndef LUASMTPD_CONN_H
#define LUASMTPD_CONN_H

#include "base/buf.h"
#include "lua/config.h"
#include "base/log.h"
#include "lua/lua_hook.h"
#include "proto/smtp_parse.h"
#include "proto/replies.h"

#include <ev.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct server;
struct smtp_session;

enum conn_phase {
	PHASE_PROXY,     /* waiting for the PROXY protocol header */
	PHASE_HANDSHAKE, /* TLS handshake (implicit TLS or after STARTTLS) */
	PHASE_CONNECT,  /* onConnect running, no greeting yet */
	PHASE_COMMAND,  /* reading command lines */
	PHASE_AUTH,     /* reading SASL continuation lines */
	PHASE_DATA,     /* reading a message body */
	PHASE_BDAT,     /* reading a BDAT chunk */
	PHASE_CLOSING,  /* flushing the last reply, then close */
	PHASE_CLOSED,   /* socket closed; onClose may still run */
};

struct conn {
	ev_io io;
	ev_timer timer;   /* socketTimeout while open; the deferred free once closed */
	struct server *srv;
	struct config *cfg;       /* a reference: the script generation this session runs */
	struct smtp_options *opt; /* its listener's options, within cfg */
	int fd;
	enum conn_phase phase;
	char id[17];
	char remote_addr[64];
	int remote_port;
	char local_addr[64];
	int local_port;
	ev_tstamp proxy_deadline;
	ev_tstamp data_deadline; /* a message must keep up minDataRate */
	ev_tstamp handshake_deadline; /* handshakeTimeout after accept or STARTTLS; 0: none */

	struct buf in;  /* unprocessed input */
	struct buf out; /* replies not yet written */
	struct smtp_line_reader lines;
	size_t skipped; /* bytes of an over-long line dropped so far */
	bool drain_on_close; /* read pending input before close (see conn_close) */

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

	struct smtp_session *session; /* what the connection carries */

	struct conn *prev, *next; /* the server's list of connections */
};

/* local: the listener's own address, or NULL to ask the socket. */
struct conn *conn_new(struct server *srv, struct config *cfg, struct smtp_options *opt, int fd,
                      const struct sockaddr *peer, const struct sockaddr *local);
/* Starts the session (onConnect, then the greeting). */
void conn_start(struct conn *c, const char *listen_addr);
/* maxConnectionsPerIp: are there more open connections from c's address
 * (c among them) than allowed? */
bool conn_too_many_from_peer(const struct conn *c);
/* Queues a reply line; multi-line replies call this once per line. */
void conn_reply(struct conn *c, int code, const char *enhanced, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Queues a non-final line of a multi-line reply ("250-PIPELINING"). */
void conn_reply_more(struct conn *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Queues the reply a hook's rejection asks for. */
void conn_reply_outcome(struct conn *c, const struct hook_outcome *o);
/* A hook's text in the catalogue's reply id: its enhanced code goes first
 * unless the text starts with its own ("2.6.1 queued as X"). */
void conn_reply_hook_text(struct conn *c, enum smtp_reply_id id, const char *text);
/* Queues a reply of the catalogue (smtp_replies.h). */
void conn_reply_known(struct conn *c, enum smtp_reply_id id);
/* Sends what is queued; returns false if the connection died. */
bool conn_flush(struct conn *c);
/* Queues a final reply, then closes once it is written. */
void conn_end(struct conn *c, int code, const char *enhanced, const char *text);
/* Closes now; the struct is freed later from the loop. */
void conn_close(struct conn *c, const char *reason);
/* Consumes buffered input until a hook suspends it or input runs out. */
void conn_process(struct conn *c);
/* After an asynchronous hook has finished: go on with buffered input. */
void conn_resume(struct conn *c);
/* Server shutdown: end the session now if idle, else after its transaction. */
void conn_stop(struct conn *c);
static inline const char *conn_session_id(const struct conn *c) { return c->id; }
/* Re-arms the watcher for what the connection waits on now. */
void conn_update_io(struct conn *c);
void conn_log(struct conn *c, enum log_level level, const char *msg, ...) __attribute__((sentinel));

#endif
