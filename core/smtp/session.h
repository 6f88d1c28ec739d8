/* session — the SMTP session a connection carries: the protocol state
 * (greeting, transaction, body, BDAT, SASL, XCLIENT, counters), the line
 * reader, the reverse DNS lookup, the question in flight to its policy. The connection (net/conn.h) is its transport: the session is
 * its owner and hears from it through struct conn_owner_ops. */
#ifndef LUASMTPD_SMTP_SESSION_STATE_H
#define LUASMTPD_SMTP_SESSION_STATE_H

#include "base/buf.h"
#include "net/conn.h"
#include "proto/replies.h"
#include "proto/smtp_parse.h"
#include "smtp/message.h"
#include "smtp/policy.h"
#include "smtp/options.h"
#include "smtp/rcpt_set.h"
#include "smtp/state.h"

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

enum sasl_step {
	SASL_NONE,
	SASL_PLAIN_RESPONSE,
	SASL_LOGIN_USER,
	SASL_LOGIN_PASS,
	SASL_CRAM_RESPONSE,
	SASL_XOAUTH2_RESPONSE,
	SASL_XOAUTH2_ERROR, /* the JSON challenge is out: the client's next line ends it */
};

/* The mail transaction: what MAIL and RCPT have set so far. */
struct transaction {
	bool has_mail;
	bool smtputf8;
	bool binarymime; /* BODY=BINARYMIME: BDAT only */
	bool chunking;   /* a BDAT has started the message */
	unsigned nrcpt;
	char *mail_from; /* once has_mail; in the session's paths */
};

/* What MAIL and RCPT need and an idle session does not: one object of a
 * free list from the session's first MAIL or RCPT to its end
 * (smtp_session_need_paths). The session points into it. */
struct session_paths {
	char judged[SMTP_PATH_MAX + 1];
	char mail_from[SMTP_PATH_MAX + 1];
	struct rcpt_set rcpts;
};

/* The message body as it streams in (DATA, BDAT): allocated when a message
 * begins and freed when it ends, so idle sessions do not carry it. */
struct body {
	struct smtp_data_decoder dec;
	struct buf pending;  /* decoded bytes not yet handed to the hook */
	uint64_t byte_length;
	bool size_exceeded;
	bool line_too_long;  /* a line longer than maxLineLength */
	size_t line_len;     /* of the line in progress (for maxLineLength) */
	bool ended;
	bool hook_done;      /* onData returned (or there is none) */
	struct hook_outcome outcome; /* the data verdict's reply, once hook_done */
	struct hook_outcome *rcpt_replies; /* ... and its per-recipient ones (LMTP), or NULL */
	int save_fd;         /* stream:save() target, -1 when none */
	char *save_path;
	int save_errno;
	bool handed_out;     /* stream:read() or stream:save() has taken bytes */
	struct message msg;  /* the header block and its edits (smtp/message.h) */
};

struct smtp_session {
	struct conn *conn; /* its transport */
	enum smtp_state state; /* written by smtp_session_enter only */
	uint32_t skipped; /* bytes of an over-long line dropped so far (ends past 1 MiB) */
	struct listener_set *cfg; /* a reference: the script generation this session runs */
	struct smtp_line_reader lines;
	ev_timer *greet_delay; /* greetingDelay before onConnect, while it runs */
	char *x_peer;    /* the peer that used XCLIENT/XFORWARD first (trust is its), or NULL */

	/* Facts the policy shows (enum session_fact in smtp/policy.h), with pregreet below. */
	char *client_hostname;      /* resolved or named, "" unknown; NULL: "[address]" (smtp_session_client_hostname) */
	char *helo_name;            /* HELO/EHLO's argument, lower-cased; NULL before (smtp_session_set_name) */
	/* The opening command and the transmission type follow from the flags
	 * below: smtp_session_opening_command, smtp_session_transmission. */
	char *user;                 /* the user a login named (when a string), or NULL */
	/* The TLS version and cipher are the connection's: smtp_session_tls_names. */

	bool greeted;      /* HELO/EHLO/LHLO seen */
	bool esmtp;        /* EHLO rather than HELO */
	bool authenticated;
	bool stopping;     /* server shutdown: end after the current transaction */
	bool disabled_override; /* a hook set session.disabledCommands */
	bool pregreet;     /* the client spoke before the greeting (a fact the policy shows) */
	bool x_locked;     /* XCLIENT/XFORWARD ADDR has been given: no more of them */
	bool bdat_last;    /* the current chunk is BDAT LAST */
	uint32_t disabled_commands;
	unsigned unauth_commands;
	unsigned unknown_commands;
	unsigned errors; /* 500/501/503 replies since the last message */
	unsigned junk_commands; /* NOOP, RSET, VRFY, HELP since the last message */
	unsigned transactions;
	double hook_seconds; /* spent running hooks for the current message */
	struct transaction tx;
	uint64_t bdat_remaining; /* bytes of the current chunk still to read */
	enum smtp_reply_id bdat_refusal; /* a refused chunk's guard, answered once it is read (see
	                                  * smtp/session_commands.h); REPLY_COUNT: none */
	enum sasl_step sasl;
	enum auth_method sasl_method;
	unsigned auth_failures;
	union { /* one at a time, as the step (or XCLIENT's onConnect) says; freed once */
		char *sasl_user;   /* LOGIN: the username while the password is awaited */
		char *sasl_challenge; /* CRAM-MD5: the challenge sent */
		struct hook_outcome *sasl_refusal; /* XOAUTH2: onAuth's, sent after the error challenge */
	};
	struct body *body; /* NULL between messages */

	struct rdns_lookup *rdns; /* reverse DNS of the client while it runs (smtp_rdns.c), or NULL */

	const struct smtp_policy *policy; /* what the session asks for decisions */
	char *judged; /* the address MAIL/RCPT asked the policy about; in the session's paths */

	void *policy_state; /* the policy's own, from attach to detach */
	struct rcpt_set *rcpts; /* envelope.rcptTo by address (repeats found in O(1)); in the session's paths */
};

/* The session c carries. */
static inline struct smtp_session *conn_session(const struct conn *c)
{
	return c->owner;
}

/* The server's acceptor: a new session owns c from here on, and frees it
 * after onClose. */
void smtp_session_accept(struct conn *c);

/* An idle session is kept small (issue 16: its memory is what a held
 * connection costs), so what only a HELO or a transaction needs is
 * allocated when it does. */

/* The longest HELO name or client hostname kept (longer ones are cut). */
#define SMTP_SESSION_NAME_MAX 255

/* *field = a copy of the len bytes at name (cut to SMTP_SESSION_NAME_MAX),
 * allocated at its length; the old value freed. Returns the copy. */
char *smtp_session_set_name(char **field, const char *name, size_t len);

/* The client hostname: s->client_hostname, or when there is none the
 * usual "[address]", which is not stored but put together in buf. */
#define SMTP_SESSION_HOSTNAME_BUF 68
const char *smtp_session_client_hostname(const struct smtp_session *s, char buf[SMTP_SESSION_HOSTNAME_BUF]);

/* "HELO", "EHLO" or "LHLO" once greeted (an LMTP server takes only LHLO,
 * an SMTP one only the other two), NULL before. */
const char *smtp_session_opening_command(const struct smtp_session *s);
/* RFC 3848's "ESMTPSA" and the like, from what the session is now. */
const char *smtp_session_transmission(const struct smtp_session *s);
/* The connection's TLS version and cipher (OpenSSL's constant strings),
 * NULL while it is not secure. */
void smtp_session_tls_names(const struct conn *c, const char **version, const char **cipher);

/* Gives s its paths (judged, tx.mail_from, rcpts) at its first MAIL or
 * RCPT; NULL before. */
void smtp_session_need_paths(struct smtp_session *s);

#endif
