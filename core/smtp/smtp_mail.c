/* smtp_mail — MAIL FROM and RCPT TO: the path and its parameters
 * (SIZE, BODY, SMTPUTF8, REQUIRETLS, DSN's) checked as smtp-server and
 * the RFCs say, then the policy's verdict on the address; refusals are
 * logged, the core's own included. */
#include "smtp/session.h"
#include "smtp/session_commands.h"
#include "smtp/smtp_session.h"

#include "net/conn.h"
#include "smtp/reply.h"
#include "proto/replies.h"
#include "smtp/smtp_log.h"

#include <stdio.h>
#include <string.h>

#define SMTP_PATH_LIMIT 254

/* ---- MAIL / RCPT -------------------------------------------------------- */

/* Replies to a path that did not parse; returns false then. */
static bool session_path_ok(struct conn *c, enum smtp_path_status st, const struct smtp_path *p,
                            bool mail)
{
	switch (st) {
	case SMTP_PATH_OK:
		if (p->address_len <= SMTP_PATH_LIMIT)
			return true;
		/* RFC 5321 4.5.3.1.3: 256 octets for the path, brackets included. */
		conn_reply(c, 501, mail ? "5.1.7" : "5.1.3", "Error: address longer than %d octets",
		           SMTP_PATH_LIMIT);
		return false;
	case SMTP_PATH_SYNTAX:
		conn_reply(c, 501, "5.5.4", "Error: Syntax: %s", mail ? "MAIL FROM:<address>" : "RCPT TO:<address>");
		return false;
	case SMTP_PATH_BAD_ADDRESS:
		if (mail)
			conn_reply_known(c, REPLY_BAD_SENDER);
		else
			conn_reply_known(c, REPLY_BAD_RECIPIENT);
		return false;
	case SMTP_PATH_DUP_PARAM:
		conn_reply(c, 501, "5.5.4", "Error: duplicate %.*s parameter",
		           (int)p->params[p->nparams].key_len, p->params[p->nparams].key);
		return false;
	case SMTP_PATH_BAD_PARAM:
		conn_reply_known(c, REPLY_BAD_PARAMETER);
		return false;
	case SMTP_PATH_TOO_MANY_PARAMS:
		conn_reply_known(c, REPLY_TOO_MANY_PARAMETERS);
		return false;
	}
	return false;
}

static bool param_is(const struct smtp_param *p, const char *key)
{
	return smtp_ascii_ieq(p->key, p->key_len, key, strlen(key));
}

static bool value_is(const struct smtp_param *p, const char *v)
{
	return p->value && smtp_ascii_ieq(p->value, p->value_len, v, strlen(v));
}

/* An RFC 3461 xtext value of at most max decoded bytes. */
static bool session_xtext_ok(const struct smtp_param *p, size_t max)
{
	char out[SMTP_PATH_MAX + 1];
	long n = smtp_xtext_decode(p->value, p->value_len, out, sizeof out);
	return n >= 0 && (size_t)n <= max;
}

/* RFC 3461 NOTIFY: NEVER alone, or a list of SUCCESS, FAILURE, DELAY. */
static bool session_notify_ok(const struct smtp_param *p)
{
	const char *v = p->value, *end = p->value + p->value_len;
	bool never = false;
	int n = 0;
	for (;;) {
		const char *comma = memchr(v, ',', (size_t)(end - v));
		size_t len = comma ? (size_t)(comma - v) : (size_t)(end - v);
		if (smtp_ascii_ieq(v, len, "NEVER", 5))
			never = true;
		else if (!smtp_ascii_ieq(v, len, "SUCCESS", 7) && !smtp_ascii_ieq(v, len, "FAILURE", 7) &&
		         !smtp_ascii_ieq(v, len, "DELAY", 5))
			return false; /* an empty element ("SUCCESS,") included */
		n++;
		if (!comma)
			break;
		v = comma + 1;
	}
	return !(never && n > 1);
}

/* RFC 3461 ORCPT: addr-type ";" xtext. */
static bool session_orcpt_ok(const struct smtp_param *p)
{
	const char *semi = memchr(p->value, ';', p->value_len);
	if (!semi || semi == p->value)
		return false;
	for (const char *q = p->value; q < semi; q++)
		if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') ||
		      *q == '-'))
			return false;
	struct smtp_param rest = {.value = semi + 1, .value_len = p->value_len - (size_t)(semi + 1 - p->value)};
	return rest.value_len > 0 && session_xtext_ok(&rest, SMTP_PATH_MAX);
}

/* RCPT parameters: DSN's, when DSN is on. */
static bool session_rcpt_params_ok(struct conn *c, const struct smtp_path *path)
{
	for (size_t i = 0; smtp_session_dsn_on(c) && i < path->nparams; i++) {
		const struct smtp_param *p = &path->params[i];
		bool notify = param_is(p, "NOTIFY"), orcpt = param_is(p, "ORCPT");
		if ((notify || orcpt) && (!p->value || p->value_len == 0)) {
			conn_reply(c, 501, "5.5.4", "Error: %s parameter requires a value", notify ? "NOTIFY" : "ORCPT");
			return false;
		}
		if (notify && !session_notify_ok(p)) {
			conn_reply_known(c, REPLY_BAD_NOTIFY);
			return false;
		}
		if (orcpt && !session_orcpt_ok(p)) {
			conn_reply_known(c, REPLY_BAD_ORCPT);
			return false;
		}
	}
	return true;
}

/* MAIL parameters smtp-server validates; the others go to the hook. */
static bool session_mail_params_ok(struct conn *c, const struct smtp_path *path)
{
	for (size_t i = 0; i < path->nparams; i++) {
		const struct smtp_param *p = &path->params[i];
		bool dsn_param = smtp_session_dsn_on(c) && (param_is(p, "RET") || param_is(p, "ENVID"));
		bool needs_value = param_is(p, "SIZE") || param_is(p, "BODY") || dsn_param;
		if (needs_value && (!p->value || p->value_len == 0)) {
			conn_reply(c, 501, "5.5.4", "Error: %.*s parameter requires a value", (int)p->key_len, p->key);
			return false;
		}
		if (param_is(p, "SIZE")) {
			uint64_t size;
			if (!smtp_parse_size(p->value, p->value_len, &size)) {
				conn_reply_known(c, REPLY_BAD_SIZE);
				return false;
			}
			if (smtp_opt(c)->size && !smtp_opt(c)->hide_size && size > smtp_opt(c)->size) {
				conn_reply(c, 552, "5.3.4", "Error: message exceeds fixed maximum message size %llu",
				           (unsigned long long)smtp_opt(c)->size);
				return false;
			}
		} else if (param_is(p, "BODY")) {
			conn_session(c)->tx.binarymime = value_is(p, "BINARYMIME") && smtp_session_chunking_offered(c);
			if (!value_is(p, "7BIT") && !value_is(p, "8BITMIME") && !conn_session(c)->tx.binarymime) {
				conn_reply_known(c, REPLY_BAD_BODY);
				return false;
			}
		} else if (param_is(p, "SMTPUTF8")) {
			if (p->value) {
				conn_reply_known(c, REPLY_SMTPUTF8_VALUE);
				return false;
			}
			conn_session(c)->tx.smtputf8 = true;
		} else if (param_is(p, "REQUIRETLS")) {
			if (p->value) {
				conn_reply_known(c, REPLY_REQUIRETLS_VALUE);
				return false;
			}
			if (!c->secure) {
				conn_reply_known(c, REPLY_REQUIRETLS_NOT_TLS);
				return false;
			}
		} else if (dsn_param && param_is(p, "RET") && !value_is(p, "FULL") && !value_is(p, "HDRS")) {
			conn_reply_known(c, REPLY_BAD_RET);
			return false;
		} else if (dsn_param && param_is(p, "ENVID") && !session_xtext_ok(p, 100)) {
			conn_reply_known(c, REPLY_BAD_ENVID);
			return false;
		}
	}
	return true;
}

/* Asks the policy about path (MAIL or RCPT); the address is kept for the
 * reply and the log. */
static void session_judge_address(struct smtp_session *s, bool rcpt, const struct smtp_path *path,
                                  policy_done_fn done)
{
	smtp_session_need_paths(s);
	memcpy(s->judged, path->address, path->address_len + 1);
	if (rcpt)
		s->policy->rcpt(s, path, done);
	else
		s->policy->mail(s, path, done);
}

/* The policy refused the address judged: the reply, and a log line, as the
 * message summary would never mention it. */
static void session_refused(struct conn *c, bool rcpt, const struct hook_outcome *o)
{
	size_t reply_at = c->out.len;
	conn_reply_outcome(c, o);
	smtp_log_refused(c, rcpt, conn_session(c)->judged, c->out.data + reply_at, c->out.len - reply_at);
}

static void session_mail_done(struct smtp_session *s, const struct policy_verdict *v)
{
	struct conn *c = s->conn;
	smtp_session_take_verdict(s, v);
	if (v->reply.kind != HOOK_ACCEPT) {
		session_refused(c, false, &v->reply);
		s->tx.smtputf8 = false;
		return;
	}
	s->tx.has_mail = true;
	memcpy(s->tx.mail_from, s->judged, strlen(s->judged) + 1);
	if (s->tx.smtputf8)
		smtp_session_update_transmission(c);
	conn_reply_known(c, REPLY_MAIL_ACCEPTED);
}

/* A MAIL or RCPT the core refuses itself (syntax, parameters, SMTPUTF8,
 * maxRecipients) is logged like one a hook refuses; without a parsed
 * address, the argument as sent stands for it. */
static void session_refused_path(struct conn *c, bool rcpt, const struct smtp_cmd *cmd,
                                 const struct smtp_path *path, size_t reply_at)
{
	char arg[SMTP_PATH_LIMIT + 1];
	const char *address = path ? path->address : arg;
	if (!path) {
		size_t n = cmd->arg_len < SMTP_PATH_LIMIT ? cmd->arg_len : SMTP_PATH_LIMIT;
		memcpy(arg, cmd->arg, n);
		arg[n] = '\0';
	}
	smtp_log_refused(c, rcpt, address, c->out.data + reply_at, c->out.len - reply_at);
}

/* The path, its parameters and its characters; a refusal is logged as a
 * hook's would be, so the check answers itself. */
enum smtp_reply_id smtp_check_mail(struct conn *c, const struct smtp_cmd *cmd, struct smtp_args *a)
{
	struct smtp_session *s = conn_session(c);
	struct smtp_path *path = &a->path;
	size_t reply_at = c->out.len;
	enum smtp_path_status st = smtp_parse_path(SMTP_PATH_MAIL, cmd->arg, cmd->arg_len,
	                                           smtp_opt(c)->lenient_address_parsing, path);
	if (!session_path_ok(c, st, path, true)) {
		session_refused_path(c, false, cmd, NULL, reply_at);
		return SMTP_CHECK_SENT;
	}
	s->tx.smtputf8 = false;
	if (!session_mail_params_ok(c, path)) {
		session_refused_path(c, false, cmd, path, reply_at);
		return SMTP_CHECK_SENT;
	}
	if (path->has_8bit && !s->tx.smtputf8) {
		conn_reply_known(c, REPLY_NEED_SMTPUTF8);
		session_refused_path(c, false, cmd, path, reply_at);
		return SMTP_CHECK_SENT;
	}
	return SMTP_CHECK_PASS;
}

void smtp_cmd_mail(struct conn *c, const struct smtp_cmd *cmd, struct smtp_args *a)
{
	session_judge_address(conn_session(c), false, &a->path, session_mail_done);
}

static void session_rcpt_done(struct smtp_session *s, const struct policy_verdict *v)
{
	struct conn *c = s->conn;
	smtp_session_take_verdict(s, v);
	if (v->reply.kind != HOOK_ACCEPT) {
		session_refused(c, true, &v->reply);
		return;
	}
	/* A repeated recipient replaces the first (its place in the envelope
	 * is the index kept in the set), and counts once. */
	size_t len = strlen(s->judged);
	unsigned at = rcpt_set_find(s->rcpts, s->judged, len);
	if (at)
		rcpt_set_respell(s->rcpts, at, s->judged, len);
	else
		rcpt_set_add(s->rcpts, s->judged, len, ++s->tx.nrcpt);
	conn_reply_known(c, REPLY_RCPT_ACCEPTED);
}

/* As MAIL's, and maxRecipients. */
enum smtp_reply_id smtp_check_rcpt(struct conn *c, const struct smtp_cmd *cmd, struct smtp_args *a)
{
	struct smtp_session *s = conn_session(c);
	struct smtp_path *path = &a->path;
	size_t reply_at = c->out.len;
	enum smtp_path_status st = smtp_parse_path(SMTP_PATH_RCPT, cmd->arg, cmd->arg_len,
	                                           smtp_opt(c)->lenient_address_parsing, path);
	if (!session_path_ok(c, st, path, false)) {
		session_refused_path(c, true, cmd, NULL, reply_at);
		return SMTP_CHECK_SENT;
	}
	bool refused = true;
	if (!session_rcpt_params_ok(c, path))
		; /* replied */
	else if (path->has_8bit && !s->tx.smtputf8)
		conn_reply_known(c, REPLY_NEED_SMTPUTF8);
	else if (smtp_opt(c)->max_recipients && s->tx.nrcpt >= smtp_opt(c)->max_recipients &&
	         !rcpt_set_find(s->rcpts, path->address, path->address_len))
		conn_reply_known(c, REPLY_TOO_MANY_RECIPIENTS);
	else
		refused = false;
	if (!refused)
		return SMTP_CHECK_PASS;
	session_refused_path(c, true, cmd, path, reply_at);
	return SMTP_CHECK_SENT;
}

void smtp_cmd_rcpt(struct conn *c, const struct smtp_cmd *cmd, struct smtp_args *a)
{
	session_judge_address(conn_session(c), true, &a->path, session_rcpt_done);
}
