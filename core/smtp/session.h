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
	uint64_t declared_size;
	char mail_from[SMTP_PATH_MAX + 1]; /* once has_mail */
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
	struct listener_set *cfg; /* a reference: the script generation this session runs */
	struct smtp_line_reader lines;
	size_t skipped; /* bytes of an over-long line dropped so far */
	ev_timer *greet_delay; /* greetingDelay before onConnect, while it runs */
	char *x_peer;    /* the peer that used XCLIENT/XFORWARD first (trust is its), or NULL */
	bool x_locked;   /* XCLIENT/XFORWARD ADDR has been given: no more of them */

	/* Facts the policy shows (enum session_fact in smtp/policy.h). */
	bool pregreet;              /* the client spoke before the greeting */
	char client_hostname[256];  /* "[address]" unless resolved or named; "" unknown */
	char helo_name[256];        /* HELO/EHLO's argument, lower-cased; "" before */
	const char *opening_command; /* "HELO", "EHLO", "LHLO"; NULL before */
	char transmission[16];      /* RFC 3848's "ESMTPSA" and the like */
	char *user;                 /* the user a login named (when a string), or NULL */
	char tls_version[16];       /* once secure */
	char tls_cipher[64];

	bool greeted;      /* HELO/EHLO/LHLO seen */
	bool esmtp;        /* EHLO rather than HELO */
	bool authenticated;
	bool stopping;     /* server shutdown: end after the current transaction */
	bool disabled_override; /* a hook set session.disabledCommands */
	uint32_t disabled_commands;
	unsigned unauth_commands;
	unsigned unknown_commands;
	unsigned errors; /* 500/501/503 replies since the last message */
	unsigned junk_commands; /* NOOP, RSET, VRFY, HELP since the last message */
	unsigned transactions;
	double hook_seconds; /* spent running hooks for the current message */
	struct transaction tx;
	uint64_t bdat_remaining; /* bytes of the current chunk still to read */
	bool bdat_last;
	enum smtp_reply_id bdat_refusal; /* a refused chunk's guard, answered once it is read (see
	                                  * smtp/session_commands.h); REPLY_COUNT: none */
	enum sasl_step sasl;
	enum auth_method sasl_method;
	char *sasl_user;   /* LOGIN: the username while the password is awaited */
	char *sasl_challenge; /* CRAM-MD5: the challenge sent */
	struct hook_outcome *sasl_refusal; /* XOAUTH2: onAuth's, sent after the error challenge */
	unsigned auth_failures;
	struct body *body; /* NULL between messages */

	/* reverse DNS of the client (resolveClientHostname) */
	struct dns_query *rdns;
	void (*rdns_next)(struct conn *c);
	char *rdns_name;       /* the PTR name while its forward lookup runs */

	const struct smtp_policy *policy; /* what the session asks for decisions */
	char judged[SMTP_PATH_MAX + 1]; /* the address MAIL/RCPT asked the policy about */

	void *policy_state; /* the policy's own, from attach to detach */
	struct rcpt_set rcpts; /* envelope.rcptTo by address: repeats found in O(1) */
};

/* The session c carries. */
static inline struct smtp_session *conn_session(const struct conn *c)
{
	return c->owner;
}

/* The server's acceptor: a new session owns c from here on, and frees it
 * after onClose. */
void smtp_session_accept(struct conn *c);

#endif
