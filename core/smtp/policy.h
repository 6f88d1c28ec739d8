/* policy — the seam between the SMTP session and whatever decides for it
 * (the Lua script; in tests a table of verdicts): the only way the session
 * asks for a decision. Each question is answered later through
 * done(s, verdict), possibly before the call returns; until then the
 * session reads no more input. The session never learns how the decision
 * was made. */
#ifndef LUASMTPD_SMTP_POLICY_H
#define LUASMTPD_SMTP_POLICY_H

#include "proto/smtp_parse.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

struct smtp_session;
struct proxy_info;
struct ssl_ctx_st; /* OpenSSL's SSL_CTX */

enum hook_kind { HOOK_ACCEPT, HOOK_REJECT, HOOK_FAILED };

/* The reply part of a verdict: accept, or the SMTP reply a refusal (or a
 * failed decision) asks for. (The name predates the seam: hooks made it.) */
struct hook_outcome {
	enum hook_kind kind;
	int code;
	char enhanced[16]; /* "5.1.1"; "" when the text already starts with one */
	char text[512];    /* sanitised: no control bytes */
};

/* *dst = *src up to the text's end: an outcome is over 500 bytes, and a
 * whole copy on every hook cost about 70 instructions (callgrind), most
 * replies being "" or a short line. Bytes after the text's NUL are left. */
static inline void hook_outcome_copy(struct hook_outcome *dst, const struct hook_outcome *src)
{
	dst->kind = src->kind;
	dst->code = src->code;
	memcpy(dst->enhanced, src->enhanced, sizeof dst->enhanced);
	memcpy(dst->text, src->text, strnlen(src->text, sizeof src->text - 1) + 1);
	dst->text[sizeof dst->text - 1] = '\0';
}

struct policy_verdict {
	struct hook_outcome reply;
	/* What the session's disabled commands are after the decision: a
	 * policy may change them at any step (session.disabledCommands). */
	bool disabled_set;          /* false: the listener's option applies */
	uint32_t disabled_commands; /* when set: 1 << SMTP_VERB_* each */
	/* auth: nobody here decides logins (the reply is then the session's);
	 * accepted, whether the policy named the user (it must). An accepted
	 * auth's reply.text is the success text, "" for the usual one. */
	bool undecided;
	bool user_set;
	const char *user; /* ... and when it is a string, that (valid during done) */
	/* data in LMTP: one reply per recipient, in RCPT order (malloc'd: the
	 * session frees it), or NULL for the one reply above. An accepted
	 * one's text is the success text, "" for the usual one. */
	struct hook_outcome *rcpt_replies;
};

/* Who a client says it is, and its proof: AUTH's (SASL) or XCLIENT's. */
struct policy_auth {
	const char *method; /* "PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "XCLIENT" */
	const char *username;
	size_t username_len;
	const char *secret; /* PLAIN, LOGIN: the password; XOAUTH2: the access
	                     * token; CRAM-MD5: the client's digest (hex); XCLIENT: NULL */
	size_t secret_len;
	const char *challenge; /* CRAM-MD5: the challenge sent, else NULL */
};

/* One XCLIENT/XFORWARD attribute as the front end gave it. */
struct policy_attr {
	const char *name;  /* "NAME", "ADDR", "PORT", "PROTO", "HELO", "LOGIN", "IDENT", "SOURCE" */
	const char *value; /* NULL: [UNAVAILABLE] or [TEMPUNAVAIL] */
};

/* What a policy is busy with: nothing, a decision (its time is not the
 * client's idleness), or a decision that waits for the body as it streams
 * in (the client's time). */
enum policy_wait { POLICY_IDLE, POLICY_DECIDING, POLICY_READING };

typedef void (*policy_done_fn)(struct smtp_session *s, const struct policy_verdict *v);
/* The answer to servername: ctx serves the handshake (NULL: the default
 * context), or refused ends it. */
typedef void (*policy_servername_fn)(struct smtp_session *s, struct ssl_ctx_st *ctx, bool refused);

/* The facts of a session a policy shows its deciders (the Lua session
 * table): each is told when it changes, its value being in struct
 * smtp_session (or its conn). They are bits: facts that change together
 * (HELO's new envelope, name and transmission type) are told in one call,
 * which the Lua policy writes in one call into Lua. */
enum session_fact {
	FACT_PREGREET = 1u << 0,        /* s->pregreet */
	FACT_CLIENT_HOSTNAME = 1u << 1, /* smtp_session_client_hostname(s) */
	FACT_HELO = 1u << 2,            /* s->helo_name, smtp_session_opening_command(s) */
	FACT_USER_FORGOTTEN = 1u << 3,  /* a login is forgotten (STARTTLS, XCLIENT) */
	FACT_AUTH = 1u << 4,            /* AUTH succeeded with the mechanism s->sasl_method */
	FACT_XCLIENT_LOGIN = 1u << 5,   /* XCLIENT LOGIN: the front end vouched for a user */
	FACT_TRANSMISSION = 1u << 6,    /* smtp_session_transmission(s) */
	FACT_ENVELOPE = 1u << 7,        /* a new, empty transaction */
	FACT_TLS = 1u << 8,             /* the handshake's outcome, on the conn */
	FACT_REMOTE = 1u << 9,          /* the conn's remote address and port (XCLIENT) */
};

struct smtp_policy {
	/* facts: one or more enum session_fact bits. */
	void (*changed)(struct smtp_session *s, unsigned facts);
	/* XCLIENT (or XFORWARD) is about to apply these attributes: the policy
	 * may record them, and what they override, for its deciders. */
	void (*forwarded)(struct smtp_session *s, bool xforward, const struct policy_attr *attrs, size_t n);
	/* A session begins or ends: the policy readies or frees what it keeps
	 * for it (detach comes after any question's done, or instead of it). */
	void (*attach)(struct smtp_session *s);
	void (*detach)(struct smtp_session *s);
	/* The connection is open, its PROXY header (pi, or NULL) read: the
	 * policy makes what its deciders see of the session. */
	void (*opened)(struct smtp_session *s, const struct proxy_info *pi);
	/* The client asked for this server name in its TLS hello (SNI). */
	void (*servername)(struct smtp_session *s, const char *name, policy_servername_fn done);
	/* The connection is gone: the policy's last word (done's verdict says
	 * nothing); the session is freed once done. */
	void (*closed)(struct smtp_session *s, policy_done_fn done);
	/* A client has connected (after greetingDelay and the reverse lookup;
	 * with implicit TLS after the handshake), or XCLIENT named a new one. */
	void (*connect)(struct smtp_session *s, policy_done_fn done);
	/* TLS is up: after STARTTLS, or after connect with implicit TLS. */
	void (*secure)(struct smtp_session *s, policy_done_fn done);
	/* A TLS handshake failed (code: "TLSError", "SocketError",
	 * "ERR_TLS_HANDSHAKE_TIMEOUT"); the connection closes once done. */
	void (*tls_error)(struct smtp_session *s, const char *code, const char *reason, policy_done_fn done);
	/* AUTH, once the SASL exchange has the credentials; XCLIENT LOGIN. */
	void (*auth)(struct smtp_session *s, const struct policy_auth *a, policy_done_fn done);
	/* MAIL FROM: the path has passed the session's own checks (syntax,
	 * parameters, SMTPUTF8). */
	void (*mail)(struct smtp_session *s, const struct smtp_path *path, policy_done_fn done);
	/* RCPT TO: likewise, and within maxRecipients. */
	void (*rcpt)(struct smtp_session *s, const struct smtp_path *path, policy_done_fn done);
	/* DATA or the first BDAT: a message begins (s->body is set). Its
	 * bytes follow through body() as they stream in, and body_more() says
	 * that bytes wait in s->body->pending or that the body has ended. The
	 * verdict may come before the end; the rest then drains unread. */
	void (*data)(struct smtp_session *s, policy_done_fn done);
	/* n decoded body bytes at p, valid only during the call. */
	void (*body)(struct smtp_session *s, const char *p, size_t n);
	void (*body_more)(struct smtp_session *s);
	/* The message is over or abandoned: the policy lets go of it. */
	void (*message_end)(struct smtp_session *s);
	/* The question in flight is dropped unanswered (RSET between BDAT
	 * chunks abandons the message and its data verdict). */
	void (*cancel)(struct smtp_session *s);
	enum policy_wait (*waiting)(const struct smtp_session *s);
};

/* The policy sessions created from now on ask (main.c wires the Lua one). */
void smtp_policy_use(const struct smtp_policy *p);

#endif
