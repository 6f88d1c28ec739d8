/* smtp_session — the SMTP state machine's dispatch: a command line goes
 * through the limits (unknown commands, errors, junk, unauthenticated
 * commands) to its handler in the command table; the handlers live by job
 * in smtp_helo.c (connect, HELO/EHLO, STARTTLS, TLS), smtp_mail.c
 * (MAIL, RCPT) and smtp_body.c (DATA, BDAT). Input comes from conn
 * (framed lines, body bytes); replies go to conn's buffer; decisions come
 * from the session's policy (smtp/policy.h). */
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

/* smtp-server's rule: with AUTH on and not optional, mail needs a login. */
bool smtp_session_auth_required(const struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	return session_may_auth(c) && !smtp_opt(c)->auth_optional && !s->authenticated;
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
 * (or UTF8LMTP) + S + A while the transaction has SMTPUTF8. */
void smtp_session_update_transmission(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	const char *proto = smtp_opt(c)->lmtp ? "LMTP" : s->esmtp && !s->tx.smtputf8 ? "ESMTP" : "SMTP";
	snprintf(s->transmission, sizeof s->transmission, "%s%s%s%s", s->tx.smtputf8 ? "UTF8" : "", proto,
	         c->secure ? "S" : "", s->authenticated ? "A" : "");
	s->policy->changed(s, FACT_TRANSMISSION);
}

void smtp_session_reset_transaction(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	if (s->tx.chunking && s->state == SMTP_STATE_COMMAND) {
		/* RSET (or EHLO, STARTTLS) between BDAT chunks: the message is
		 * abandoned, and so is the onData waiting for the rest of it. */
		s->policy->cancel(s);
		smtp_session_body_free(c);
	}
	bool utf8 = s->tx.smtputf8;
	memset(&s->tx, 0, sizeof s->tx);
	rcpt_set_clear(&s->rcpts);
	s->policy->changed(s, FACT_ENVELOPE);
	if (utf8)
		smtp_session_update_transmission(c);
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

void smtp_session_greet(struct conn *c)
{
	smtp_session_enter(c, SMTP_STATE_COMMAND);
	if (smtp_opt(c)->banner)
		conn_reply(c, 220, NULL, "%s %s %s", smtp_opt(c)->name, smtp_opt(c)->lmtp ? "LMTP" : "ESMTP",
		           smtp_opt(c)->banner);
	else
		conn_reply(c, 220, NULL, "%s %s", smtp_opt(c)->name, smtp_opt(c)->lmtp ? "LMTP" : "ESMTP");
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

static void cmd_rset(struct conn *c, const struct smtp_cmd *cmd)
{
	smtp_session_reset_transaction(c);
	conn_reply_known(c, REPLY_RSET);
	session_count_junk(c);
}

static void cmd_noop(struct conn *c, const struct smtp_cmd *cmd)
{
	conn_reply_known(c, REPLY_OK);
	session_count_junk(c);
}

static void cmd_quit(struct conn *c, const struct smtp_cmd *cmd)
{
	conn_end(c, SMTP_REPLY_ARGS(REPLY_BYE));
}

static void cmd_vrfy(struct conn *c, const struct smtp_cmd *cmd)
{
	if (cmd->arg_len == 0)
		conn_reply_known(c, REPLY_VRFY_SYNTAX);
	else
		conn_reply_known(c, REPLY_VRFY);
	session_count_junk(c);
}

static void cmd_help(struct conn *c, const struct smtp_cmd *cmd)
{
	conn_reply_known(c, REPLY_HELP);
	session_count_junk(c);
}

static void cmd_http(struct conn *c, const struct smtp_cmd *cmd)
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

typedef void (*cmd_fn)(struct conn *, const struct smtp_cmd *);

static const cmd_fn commands[SMTP_VERB_COUNT] = {
	[SMTP_VERB_HELO] = smtp_cmd_helo, [SMTP_VERB_EHLO] = smtp_cmd_helo, [SMTP_VERB_LHLO] = smtp_cmd_helo,
	[SMTP_VERB_MAIL] = smtp_cmd_mail,
	[SMTP_VERB_RCPT] = smtp_cmd_rcpt, [SMTP_VERB_DATA] = smtp_cmd_data, [SMTP_VERB_RSET] = cmd_rset,
	[SMTP_VERB_NOOP] = cmd_noop, [SMTP_VERB_QUIT] = cmd_quit, [SMTP_VERB_VRFY] = cmd_vrfy,
	[SMTP_VERB_HELP] = cmd_help, [SMTP_VERB_AUTH] = smtp_auth_command, [SMTP_VERB_HTTP] = cmd_http,
	[SMTP_VERB_STARTTLS] = smtp_cmd_starttls, [SMTP_VERB_BDAT] = smtp_cmd_bdat,
	[SMTP_VERB_XCLIENT] = smtp_xclient_command, [SMTP_VERB_XFORWARD] = smtp_xforward_command,
};

/* smtp-server's limit: a client that must log in gets a few commands to do so. */
static bool session_unauth_limit_hit(struct conn *c, enum smtp_verb v)
{
	struct smtp_session *s = conn_session(c);
	unsigned max = smtp_opt(c)->max_unauth_commands;
	if (!max || !smtp_session_auth_required(c) || v == SMTP_VERB_AUTH)
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
	if (session_unauth_limit_hit(c, cmd.verb))
		return;
	cmd_fn fn = commands[cmd.verb];
	if (!fn || smtp_session_verb_disabled(c, cmd.verb))
		fn = smtp_cmd_unknown;
	if (smtp_opt(c)->needs_upgrade && !c->secure && fn != smtp_cmd_unknown && fn != smtp_cmd_helo &&
	    fn != smtp_cmd_starttls && fn != cmd_quit) {
		conn_reply_known(c, REPLY_MUST_STARTTLS);
		return;
	}
	fn(c, &cmd);
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
