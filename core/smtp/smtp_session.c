/* smtp_session — the SMTP state machine's dispatch: a command line goes
 * through the limits (unknown commands, errors, junk, unauthenticated
 * commands) to its line of the command table: the guards, the check, then
 * proceed; checks and proceeds live by job in smtp_helo.c (connect,
 * HELO/EHLO, STARTTLS, TLS), smtp_mail.c (MAIL, RCPT), smtp_body.c (DATA,
 * BDAT), smtp_auth.c and smtp_xclient.c. Input comes from conn (framed
 * lines, body bytes); replies go to conn's buffer; decisions come from the
 * session's policy (smtp/policy.h). */
#include "smtp/smtp_session.h"
#include "smtp/session.h"
#include "smtp/session_commands.h"

#include "net/conn.h"
#include "smtp/reply.h"
#include "proto/replies.h"
#include "smtp/smtp_auth.h"
#include "smtp/smtp_xclient.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UNKNOWN_COMMANDS_MAX 10 /* smtp-server's cap */
#define ERRORS_MAX 20           /* Postfix's smtpd_hard_error_limit */

static bool session_may_auth(const struct conn *c)
{
	return !config_verb_disabled(smtp_opt(c), SMTP_VERB_AUTH) && smtp_opt(c)->nauth_methods > 0;
}

/* smtp-server's rule: with AUTH on and not optional, mail needs a login.
 * (Asked on every command: the two flags first.) */
bool smtp_session_auth_required(const struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	return !smtp_opt(c)->auth_optional && !s->authenticated && session_may_auth(c);
}

/* AUTH is offered only where the password cannot be sniffed, unless the
 * operator says otherwise. */
bool smtp_session_auth_offered(const struct conn *c)
{
	return session_may_auth(c) && (c->secure || smtp_opt(c)->allow_insecure_auth);
}

bool smtp_session_dsn_on(const struct conn *c)
{
	return !smtp_opt(c)->hide_dsn;
}

/* RFC 3848: ESMTP + S (TLS) + A (authenticated); RFC 6531 3.7.4: UTF8SMTP
 * (or UTF8LMTP) + S + A while the transaction has SMTPUTF8. Looked up
 * rather than formatted: it is read on every HELO. */
const char *smtp_session_transmission(const struct smtp_session *s)
{
	static const char *const types[][4] = { /* by protocol, then S and A */
		{"SMTP", "SMTPA", "SMTPS", "SMTPSA"},
		{"ESMTP", "ESMTPA", "ESMTPS", "ESMTPSA"},
		{"LMTP", "LMTPA", "LMTPS", "LMTPSA"},
		{"UTF8SMTP", "UTF8SMTPA", "UTF8SMTPS", "UTF8SMTPSA"},
		{"UTF8LMTP", "UTF8LMTPA", "UTF8LMTPS", "UTF8LMTPSA"},
	};
	const struct conn *c = s->conn;
	bool utf8 = s->tx.smtputf8;
	int proto = smtp_opt(c)->lmtp ? (utf8 ? 4 : 2) : utf8 ? 3 : s->esmtp;
	return types[proto][(c->secure ? 2 : 0) | (s->authenticated ? 1 : 0)];
}

void smtp_session_update_transmission(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	s->policy->changed(s, FACT_TRANSMISSION);
}

const char *smtp_session_opening_command(const struct smtp_session *s)
{
	if (!s->greeted)
		return NULL;
	return smtp_opt(s->conn)->lmtp ? "LHLO" : s->esmtp ? "EHLO" : "HELO";
}

void smtp_session_reset_transaction(struct conn *c)
{
	smtp_session_reset_transaction_with(c, 0);
}

void smtp_session_reset_transaction_with(struct conn *c, unsigned facts)
{
	struct smtp_session *s = conn_session(c);
	if (s->tx.chunking && s->state == SMTP_STATE_COMMAND) {
		/* RSET (or EHLO, STARTTLS) between BDAT chunks: the message is
		 * abandoned, and so is the onData waiting for the rest of it. */
		s->policy->cancel(s);
		smtp_session_body_free(c);
	}
	bool utf8 = s->tx.smtputf8;
	s->tx = (struct transaction){.mail_from = s->tx.mail_from}; /* its buffer stays */
	if (s->rcpts)
		rcpt_set_clear(s->rcpts);
	s->policy->changed(s, FACT_ENVELOPE | facts | (utf8 ? FACT_TRANSMISSION : 0));
}

/* session.disabledCommands, when a hook has set it, replaces the option. */
static uint32_t session_disabled_mask(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	return s->disabled_override ? s->disabled_commands : smtp_opt(c)->disabled_commands;
}

bool smtp_session_verb_disabled(struct conn *c, enum smtp_verb v)
{
	return (session_disabled_mask(c) >> v) & 1u;
}

void smtp_session_set_user(struct smtp_session *s, const char *user)
{
	s->authenticated = true;
	free(s->user);
	s->user = NULL;
	if (user && !(s->user = strdup(user)))
		abort();
}

void smtp_session_take_verdict(struct smtp_session *s, const struct policy_verdict *v)
{
	s->disabled_override = v->disabled_set;
	s->disabled_commands = v->disabled_commands;
}

size_t smtp_text_put(char *out, size_t len, size_t o, const char *s)
{
	size_t n = strnlen(s, len - 1 - o);
	memcpy(out + o, s, n);
	out[o + n] = '\0';
	return o + n;
}

/* "name ESMTP banner", put together without printf: every connection's. */
void smtp_session_greet(struct conn *c)
{
	const struct smtp_options *o = smtp_opt(c);
	char text[1024];
	size_t n = smtp_text_put(text, sizeof text, 0, o->name);
	smtp_session_enter(c, SMTP_STATE_COMMAND);
	n = smtp_text_put(text, sizeof text, n, o->lmtp ? " LMTP" : " ESMTP");
	if (o->banner) {
		n = smtp_text_put(text, sizeof text, n, " ");
		smtp_text_put(text, sizeof text, n, o->banner);
	}
	conn_reply(c, 220, NULL, "%s", text);
}

/* ---- the rest ----------------------------------------------------------- */

static void session_add_error(struct conn *c);

/* Postfix's smtpd_junk_command_limit: commands that move no mail are free
 * up to maxJunkCommands per message; past it each one counts as an error,
 * so a client that only keeps the session busy meets the error limit. */
static void session_count_junk(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	unsigned max = smtp_opt(c)->max_junk_commands;
	if (max && ++s->junk_commands > max)
		session_add_error(c);
}

static void cmd_rset(struct conn *c, const struct smtp_cmd *cmd, struct smtp_args *a)
{
	smtp_session_reset_transaction(c);
	conn_reply_known(c, REPLY_RSET);
}

static void cmd_noop(struct conn *c, const struct smtp_cmd *cmd, struct smtp_args *a)
{
	conn_reply_known(c, REPLY_OK);
}

static void cmd_quit(struct conn *c, const struct smtp_cmd *cmd, struct smtp_args *a)
{
	conn_end(c, SMTP_REPLY_ARGS(REPLY_BYE));
}

static enum smtp_reply_id check_vrfy(struct conn *c, const struct smtp_cmd *cmd, struct smtp_args *a)
{
	return cmd->arg_len == 0 ? REPLY_VRFY_SYNTAX : SMTP_CHECK_PASS;
}

static void cmd_vrfy(struct conn *c, const struct smtp_cmd *cmd, struct smtp_args *a)
{
	conn_reply_known(c, REPLY_VRFY);
}

static void cmd_help(struct conn *c, const struct smtp_cmd *cmd, struct smtp_args *a)
{
	conn_reply_known(c, REPLY_HELP);
}

static void cmd_http(struct conn *c, const struct smtp_cmd *cmd, struct smtp_args *a)
{
	conn_end(c, SMTP_REPLY_ARGS(REPLY_HTTP_REQUEST));
}

void smtp_cmd_unknown(struct conn *c, const struct smtp_cmd *cmd)
{
	struct smtp_session *s = conn_session(c);
	if (++s->unknown_commands >= UNKNOWN_COMMANDS_MAX) {
		conn_end(c, SMTP_REPLY_ARGS(REPLY_TOO_MANY_UNRECOGNIZED));
		return;
	}
	conn_reply_known(c, REPLY_UNKNOWN_COMMAND);
}

/* ---- the command table -------------------------------------------------- */

/* The guards: each refusal stands for the state of the dialogue it
 * refuses (smtp/session_commands.h). */
#define HELO REPLY_NEED_HELO          /* no HELO/EHLO/LHLO yet */
#define LOGIN REPLY_AUTH_REQUIRED     /* AUTH is required and there was none */
#define MAIL REPLY_NEED_MAIL          /* no transaction */
#define RCPT REPLY_NEED_RCPT          /* no recipient */
#define NESTED REPLY_NESTED_MAIL      /* a transaction is open */
#define RCPT_BDAT REPLY_RCPT_AFTER_BDAT /* BDAT has begun the message */
#define DATA_BDAT REPLY_DATA_AFTER_BDAT /* the same, for DATA */
#define PLAIN CMD_BEFORE_TLS
#define JUNK CMD_JUNK
#define CHUNK CMD_AFTER_CHUNK

_Static_assert(REPLY_INTERNAL_ERROR == 0, "a guard list ends at its first 0");

/* One line per verb: flags, guards in order, check, proceed. A verb with
 * no line (EXPN) or disabled (disabledCommands) is unknown. */
static const struct smtp_command commands[SMTP_VERB_COUNT] = {
	[SMTP_VERB_HELO] =     {PLAIN, {0},                                   smtp_check_helo,     smtp_cmd_helo},
	[SMTP_VERB_EHLO] =     {PLAIN, {0},                                   smtp_check_helo,     smtp_cmd_helo},
	[SMTP_VERB_LHLO] =     {PLAIN, {0},                                   smtp_check_helo,     smtp_cmd_helo},
	[SMTP_VERB_STARTTLS] = {PLAIN, {0},                                   smtp_check_starttls, smtp_cmd_starttls},
	[SMTP_VERB_AUTH] =     {0,     {HELO},                                smtp_check_auth,     smtp_cmd_auth},
	[SMTP_VERB_MAIL] =     {0,     {HELO, LOGIN, NESTED},                 smtp_check_mail,     smtp_cmd_mail},
	[SMTP_VERB_RCPT] =     {0,     {HELO, LOGIN, MAIL, RCPT_BDAT},        smtp_check_rcpt,     smtp_cmd_rcpt},
	[SMTP_VERB_DATA] =     {0,     {DATA_BDAT, HELO, LOGIN, MAIL, RCPT},  smtp_check_data,     smtp_cmd_data},
	[SMTP_VERB_BDAT] =     {CHUNK, {HELO, LOGIN, MAIL, RCPT},             smtp_check_bdat,     smtp_cmd_bdat},
	[SMTP_VERB_RSET] =     {JUNK,  {0},                                   NULL,                cmd_rset},
	[SMTP_VERB_NOOP] =     {JUNK,  {0},                                   NULL,                cmd_noop},
	[SMTP_VERB_VRFY] =     {JUNK,  {0},                                   check_vrfy,          cmd_vrfy},
	[SMTP_VERB_HELP] =     {JUNK,  {0},                                   NULL,                cmd_help},
	[SMTP_VERB_QUIT] =     {PLAIN, {0},                                   NULL,                cmd_quit},
	[SMTP_VERB_XCLIENT] =  {0,     {0},                                   smtp_check_xclient,  smtp_cmd_xclient},
	[SMTP_VERB_XFORWARD] = {0,     {0},                                   smtp_check_xforward, smtp_cmd_xforward},
	[SMTP_VERB_HTTP] =     {0,     {0},                                   NULL,                cmd_http},
};

#undef HELO
#undef LOGIN
#undef MAIL
#undef RCPT
#undef NESTED
#undef RCPT_BDAT
#undef DATA_BDAT
#undef PLAIN
#undef JUNK
#undef CHUNK

const struct smtp_command *smtp_command_of(enum smtp_verb v)
{
	return &commands[v < SMTP_VERB_COUNT ? v : SMTP_VERB_UNKNOWN];
}

/* What the guards test, one bit each: the session's state is read once
 * per command (session_reached) and each guard is a mask, not a branch of
 * a switch (every command of every message goes through here). */
enum {
	REACHED_HELO = 1,     /* greeted */
	REACHED_LOGIN = 2,    /* no login required, or logged in */
	REACHED_MAIL = 4,     /* a transaction is open */
	REACHED_RCPT = 8,     /* ... with a recipient */
	REACHED_NO_MAIL = 16, /* no transaction */
	REACHED_NO_CHUNK = 32, /* no BDAT has begun the message */
};

static const unsigned char guard_needs[REPLY_COUNT] = {
	[REPLY_NEED_HELO] = REACHED_HELO,
	[REPLY_AUTH_REQUIRED] = REACHED_LOGIN,
	[REPLY_NEED_MAIL] = REACHED_MAIL,
	[REPLY_NEED_RCPT] = REACHED_RCPT,
	[REPLY_NESTED_MAIL] = REACHED_NO_MAIL,
	[REPLY_RCPT_AFTER_BDAT] = REACHED_NO_CHUNK,
	[REPLY_DATA_AFTER_BDAT] = REACHED_NO_CHUNK,
};

static unsigned session_reached(const struct smtp_session *s, bool login_required)
{
	return (s->greeted ? REACHED_HELO : 0) | (login_required ? 0 : REACHED_LOGIN) |
	       (s->tx.has_mail ? REACHED_MAIL : REACHED_NO_MAIL) | (s->tx.nrcpt > 0 ? REACHED_RCPT : 0) |
	       (s->tx.chunking ? 0 : REACHED_NO_CHUNK);
}

/* Each verb's guards as one mask, made from the table at the first
 * command: most commands meet all their guards, and one test says so. */
static unsigned char command_needs[SMTP_VERB_COUNT];

static void commands_needs_make(void)
{
	for (int v = 0; v < SMTP_VERB_COUNT; v++)
		for (int i = 0; i < SMTP_GUARDS_MAX && commands[v].guards[i]; i++)
			command_needs[v] |= guard_needs[commands[v].guards[i]];
}

/* The first guard of e the session does not meet, or SMTP_CHECK_PASS. */
static enum smtp_reply_id session_unmet(const struct smtp_command *e, unsigned reached)
{
	static bool made;
	if (!made) {
		commands_needs_make();
		made = true;
	}
	if (!(command_needs[e - commands] & ~reached))
		return SMTP_CHECK_PASS;
	for (int i = 0; i < SMTP_GUARDS_MAX && e->guards[i]; i++)
		if (guard_needs[e->guards[i]] & ~reached)
			return e->guards[i];
	return SMTP_CHECK_PASS;
}

void smtp_session_refuse(struct conn *c, enum smtp_reply_id guard)
{
	const struct smtp_reply *r = &smtp_replies[guard];
	if (guard == REPLY_AUTH_REQUIRED)
		conn_reply(c, r->code, r->enhanced, "%s", smtp_opt(c)->auth_required_message);
	else
		conn_reply_known(c, guard);
}

/* A verb the table takes: its guards, its check, then proceed. */
static void session_run(struct conn *c, const struct smtp_command *e, const struct smtp_cmd *cmd,
                        bool login_required)
{
	struct smtp_args a;
	a.unmet = session_unmet(e, session_reached(conn_session(c), login_required));
	enum smtp_reply_id r = a.unmet;
	if (r == SMTP_CHECK_PASS || (e->flags & CMD_AFTER_CHUNK))
		r = e->check ? e->check(c, cmd, &a) : SMTP_CHECK_PASS;
	if (r == SMTP_CHECK_PASS)
		e->proceed(c, cmd, &a);
	else if (r != SMTP_CHECK_SENT)
		smtp_session_refuse(c, r);
	if (e->flags & CMD_JUNK)
		session_count_junk(c);
}

/* smtp-server's limit: a client that must log in gets a few commands to do so. */
static bool session_unauth_limit_hit(struct conn *c, enum smtp_verb v, bool login_required)
{
	struct smtp_session *s = conn_session(c);
	unsigned max = smtp_opt(c)->max_unauth_commands;
	if (!max || !login_required || v == SMTP_VERB_AUTH)
		return false;
	if (++s->unauth_commands < max)
		return false;
	conn_end(c, SMTP_REPLY_ARGS(REPLY_TOO_MANY_UNAUTHENTICATED));
	return true;
}

/* Syntax and sequence errors (500, 501, 503) have a cap of their own: a
 * client that keeps getting them is not a mail client. */
static void session_count_error(struct conn *c, size_t reply_at)
{
	if (conn_is_ending(c) || c->out.len < reply_at + 3)
		return;
	int code = smtp_session_reply_code(c->out.data + reply_at);
	if (code != 500 && code != 501 && code != 503)
		return;
	session_add_error(c);
}

static void session_add_error(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	if (++s->errors >= ERRORS_MAX)
		conn_end(c, SMTP_REPLY_ARGS(REPLY_TOO_MANY_ERRORS));
}

static void session_command(struct conn *c, const char *line, size_t len);

void smtp_session_line(struct conn *c, const char *line, size_t len)
{
	struct smtp_session *s = conn_session(c);
	if (s->state == SMTP_STATE_AUTH) {
		smtp_auth_line(c, line, len);
		return;
	}
	size_t reply_at = c->out.len;
	unsigned before = s->unknown_commands;
	session_command(c, line, len);
	/* smtp_cmd_unknown counts (and answers 421) itself */
	if (s->unknown_commands == before)
		session_count_error(c, reply_at);
}

static void session_command(struct conn *c, const char *line, size_t len)
{
	struct smtp_session *s = conn_session(c);
	struct smtp_cmd cmd;
	enum smtp_cmd_status st = smtp_parse_command(line, len, &cmd);
	if (st == SMTP_CMD_BAD_CHAR) {
		conn_reply_known(c, REPLY_CONTROL_CHARACTER);
		return;
	}
	if (st == SMTP_CMD_EMPTY) {
		smtp_cmd_unknown(c, &cmd);
		return;
	}
	if (len > smtp_opt(c)->max_command_length && cmd.verb != SMTP_VERB_AUTH) {
		smtp_session_line_too_long(c);
		return;
	}
	if (log_enabled(LOG_DEBUG))
		conn_log(c, LOG_DEBUG, "command", "verb", smtp_verb_name(cmd.verb), NULL);
	if (s->stopping && !s->tx.has_mail && cmd.verb != SMTP_VERB_QUIT) {
		conn_end(c, SMTP_REPLY_ARGS(REPLY_SHUTTING_DOWN));
		return;
	}
	bool login_required = smtp_session_auth_required(c);
	if (session_unauth_limit_hit(c, cmd.verb, login_required))
		return;
	const struct smtp_command *e = &commands[cmd.verb];
	if (!e->proceed || smtp_session_verb_disabled(c, cmd.verb)) {
		smtp_cmd_unknown(c, &cmd);
		return;
	}
	if (smtp_opt(c)->needs_upgrade && !c->secure && !(e->flags & CMD_BEFORE_TLS)) {
		conn_reply_known(c, REPLY_MUST_STARTTLS);
		return;
	}
	session_run(c, e, &cmd, login_required);
}

void smtp_session_line_too_long(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	if (s->state == SMTP_STATE_AUTH) {
		smtp_session_enter(c, SMTP_STATE_COMMAND);
		s->sasl = SASL_NONE;
	}
	conn_reply_known(c, REPLY_LINE_TOO_LONG);
}

void smtp_session_stop(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	/* Before the session began (PROXY, TLS handshake) conn_end just closes. */
	bool early = !conn_is_open(c);
	bool idle = s->state == SMTP_STATE_COMMAND && !s->tx.has_mail && s->policy->waiting(s) == POLICY_IDLE &&
	            buf_used(&c->in) == 0;
	if (early || idle)
		conn_end(c, SMTP_REPLY_ARGS(REPLY_SHUTTING_DOWN));
}
