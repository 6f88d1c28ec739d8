#include "smtp/smtp_session.h"
#include "smtp/session.h"

#include "smtp/body_verdict.h"
#include "net/conn.h"
#include "lua/lua_hook.h"
#include "lua/lua_runtime.h"
#include "lua/lua_session.h"
#include "lua/lua_stream.h"
#include "lua/lua_tls.h"
#include "base/metrics.h"
#include "smtp/smtp_auth.h"
#include "smtp/smtp_log.h"
#include "smtp/smtp_rdns.h"
#include "smtp/smtp_xclient.h"
#include "net/server.h"

#include <ctype.h>
#include <sys/socket.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define UNKNOWN_COMMANDS_MAX 10 /* smtp-server's cap */
#define ERRORS_MAX 20           /* Postfix's smtpd_hard_error_limit */
#define SMTP_PATH_LIMIT 254

/* ---- helpers ------------------------------------------------------------ */

static bool session_may_auth(const struct conn *c)
{
	return !config_verb_disabled(c->opt, SMTP_VERB_AUTH) && c->opt->nauth_methods > 0;
}

/* smtp-server's rule: with AUTH on and not optional, mail needs a login. */
static bool session_auth_required(const struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	return session_may_auth(c) && !c->opt->auth_optional && !s->authenticated;
}

/* AUTH is offered only where the password cannot be sniffed, unless the
 * operator says otherwise. */
bool smtp_session_auth_offered(const struct conn *c)
{
	return session_may_auth(c) && (c->secure || c->opt->allow_insecure_auth);
}

static bool session_verb_disabled(struct conn *c, enum smtp_verb v);
static void cmd_unknown(struct conn *c, const struct smtp_cmd *cmd);

static bool session_dsn_on(const struct conn *c)
{
	return !c->opt->hide_dsn;
}

static bool session_starttls_offered(struct conn *c)
{
	return c->opt->tls.ctx && !c->secure && !session_verb_disabled(c, SMTP_VERB_STARTTLS);
}

/* The code of a reply we queued: three digits, no strtol on every line. */
static int session_reply_code(const char *p)
{
	return (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
}

/* RFC 3848: ESMTP + S (TLS) + A (authenticated); RFC 6531 3.7.4: UTF8SMTP
 * (or UTF8LMTP) + S + A while the transaction has SMTPUTF8. */
void smtp_session_update_transmission(struct conn *c)
{
	char t[16];
	const char *proto = c->opt->lmtp ? "LMTP" : conn_session(c)->esmtp && !conn_session(c)->tx.smtputf8 ? "ESMTP" : "SMTP";
	snprintf(t, sizeof t, "%s%s%s%s", conn_session(c)->tx.smtputf8 ? "UTF8" : "", proto, c->secure ? "S" : "",
	         conn_session(c)->authenticated ? "A" : "");
	lua_session_set(c, "transmissionType", t);
}

void smtp_session_reset_transaction(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	if (s->tx.chunking && c->phase == PHASE_COMMAND) {
		/* RSET (or EHLO, STARTTLS) between BDAT chunks: the message is
		 * abandoned, and so is the onData waiting for the rest of it. */
		s->policy->cancel(s);
		smtp_session_body_free(c);
	}
	bool utf8 = s->tx.smtputf8;
	memset(&s->tx, 0, sizeof s->tx);
	rcpt_set_clear(&s->rcpts);
	lua_session_reset_envelope(c);
	if (utf8)
		smtp_session_update_transmission(c);
}

/* session.disabledCommands, when a hook has set it, replaces the option. */
static uint32_t session_disabled_mask(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	return s->disabled_override ? s->disabled_commands : c->opt->disabled_commands;
}

static bool session_verb_disabled(struct conn *c, enum smtp_verb v)
{
	return (session_disabled_mask(c) >> v) & 1u;
}

void smtp_session_take_verdict(struct smtp_session *s, const struct policy_verdict *v)
{
	s->disabled_override = v->disabled_set;
	s->disabled_commands = v->disabled_commands;
}

void smtp_session_greet(struct conn *c)
{
	c->phase = PHASE_COMMAND;
	if (c->opt->banner)
		conn_reply(c, 220, NULL, "%s %s %s", c->opt->name, c->opt->lmtp ? "LMTP" : "ESMTP",
		           c->opt->banner);
	else
		conn_reply(c, 220, NULL, "%s %s", c->opt->name, c->opt->lmtp ? "LMTP" : "ESMTP");
}

/* ---- connect ------------------------------------------------------------ */

static void session_run_on_secure(struct conn *c);

/* Also after XCLIENT's connect: the same verdict, the same refusal. */
bool smtp_session_connect_accepted(struct smtp_session *s, const struct policy_verdict *v)
{
	smtp_session_take_verdict(s, v);
	if (v->reply.kind == HOOK_ACCEPT)
		return true;
	conn_end(s->conn, v->reply.code, v->reply.enhanced, v->reply.text);
	return false;
}

/* After the connect verdict: the greeting, or with implicit TLS the
 * secure one first. */
static void session_connect_done(struct smtp_session *s, const struct policy_verdict *v)
{
	if (!smtp_session_connect_accepted(s, v))
		return;
	if (s->conn->secure)
		session_run_on_secure(s->conn);
	else
		smtp_session_greet(s->conn);
}

void smtp_session_run_on_connect(struct conn *c, policy_done_fn done)
{
	struct smtp_session *s = conn_session(c);
	s->policy->connect(s, done);
}

static void session_run_on_connect(struct conn *c)
{
	smtp_session_run_on_connect(c, session_connect_done);
}

static void session_lookup_then_connect(struct conn *c)
{
	if (c->opt->resolve_client_hostname)
		smtp_rdns_start(c, session_run_on_connect);
	else
		session_run_on_connect(c);
}

void smtp_session_cancel_greeting_delay(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	if (!s->greet_delay)
		return;
	ev_timer_stop(c->srv->loop, s->greet_delay);
	free(s->greet_delay);
	s->greet_delay = NULL;
}

/* greetingDelay has passed: a client that spoke already is a pregreeter
 * (a spam bot that does not wait for the banner); onConnect may refuse it. */
static void session_greeting_delay_done(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = w->data;
	smtp_session_cancel_greeting_delay(c);
	char b;
	if (recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0) {
		lua_pushboolean(lua_main, 1);
		lua_session_set_value(c, "pregreet", lua_main, -1);
		lua_pop(lua_main, 1);
		conn_log(c, LOG_INFO, "pregreet: the client spoke before the greeting", NULL);
	}
	session_lookup_then_connect(c);
	conn_resume(c);
}

void smtp_session_connect(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	if (c->opt->greeting_delay > 0) {
		if (!(s->greet_delay = malloc(sizeof *s->greet_delay)))
			abort();
		ev_timer_init(s->greet_delay, session_greeting_delay_done, c->opt->greeting_delay, 0.);
		s->greet_delay->data = c;
		ev_timer_start(c->srv->loop, s->greet_delay);
		return;
	}
	session_lookup_then_connect(c);
}

/* ---- HELO / EHLO -------------------------------------------------------- */

/* heloResponse with its two %s filled in by hand: the template is the
 * operator's, the client hostname is not trusted to be format-free. */
static void session_helo_text(struct conn *c, char *out, size_t len)
{
	lua_State *L = lua_main;
	lua_session_push(L, c);
	lua_getfield(L, -1, "clientHostname");
	const char *client = lua_tostring(L, -1);
	const char *subst[2] = {c->opt->name, client ? client : ""};
	size_t o = 0, k = 0;
	for (const char *p = c->opt->helo_response; *p && o + 1 < len; p++) {
		if (p[0] == '%' && p[1] == 's' && k < 2) {
			o += (size_t)snprintf(out + o, len - o, "%s", subst[k++]);
			if (o >= len)
				o = len - 1;
			p++;
		} else {
			out[o++] = *p;
		}
	}
	out[o] = '\0';
	lua_pop(L, 2);
}

static bool session_chunking_offered(struct conn *c)
{
	return !c->opt->hide_chunking && !session_verb_disabled(c, SMTP_VERB_BDAT);
}

static void session_ehlo_keywords(struct conn *c)
{
	const struct smtp_options *o = c->opt;
	if (!o->hide_pipelining)
		conn_reply_more(c, 250, "PIPELINING");
	if (!o->hide_8bitmime)
		conn_reply_more(c, 250, "8BITMIME");
	if (!o->hide_smtputf8)
		conn_reply_more(c, 250, "SMTPUTF8");
	if (!o->hide_enhanced)
		conn_reply_more(c, 250, "ENHANCEDSTATUSCODES");
	if (session_dsn_on(c))
		conn_reply_more(c, 250, "DSN");
	if (session_chunking_offered(c)) {
		conn_reply_more(c, 250, "CHUNKING");
		conn_reply_more(c, 250, "BINARYMIME");
	}
	if (smtp_session_auth_offered(c) && !conn_session(c)->authenticated && !session_verb_disabled(c, SMTP_VERB_AUTH)) {
		char methods[64] = "";
		for (size_t i = 0; i < o->nauth_methods; i++) {
			strcat(methods, " ");
			strcat(methods, auth_method_name(o->auth_methods[i]));
		}
		conn_reply_more(c, 250, "AUTH%s", methods);
	}
	if (session_starttls_offered(c) && !o->hide_starttls)
		conn_reply_more(c, 250, "STARTTLS");
	if (c->secure && !o->hide_requiretls)
		conn_reply_more(c, 250, "REQUIRETLS");
	if (o->size && o->hide_size)
		conn_reply_more(c, 250, "SIZE");
	else if (o->size)
		conn_reply_more(c, 250, "SIZE %llu", (unsigned long long)o->size);
	if (smtp_xclient_offered(c, false))
		conn_reply_more(c, 250, "XCLIENT NAME ADDR PORT PROTO HELO LOGIN");
	if (smtp_xclient_offered(c, true))
		conn_reply_more(c, 250, "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE");
}

static void cmd_helo(struct conn *c, const struct smtp_cmd *cmd)
{
	/* LMTP (RFC 2033): LHLO only; in SMTP, LHLO is unknown. */
	if (c->opt->lmtp != (cmd->verb == SMTP_VERB_LHLO)) {
		if (c->opt->lmtp)
			conn_reply(c, 500, "5.5.1", "Error: %s not allowed in LMTP server", smtp_verb_name(cmd->verb));
		else
			cmd_unknown(c, cmd);
		return;
	}
	bool ehlo = cmd->verb != SMTP_VERB_HELO;
	if (cmd->arg_len == 0 || memchr(cmd->arg, ' ', cmd->arg_len) || memchr(cmd->arg, '\t', cmd->arg_len)) {
		conn_reply(c, 501, "5.5.4", "Error: Syntax: %s hostname", ehlo ? "EHLO" : "HELO");
		return;
	}
	if (!smtp_valid_helo(cmd->arg, cmd->arg_len)) {
		conn_reply(c, 501, "5.5.4", "Error: Bad hostname syntax");
		return;
	}
	conn_session(c)->greeted = true;
	conn_session(c)->esmtp = ehlo;
	smtp_session_reset_transaction(c);
	char host[256];
	size_t n = cmd->arg_len < sizeof host ? cmd->arg_len : sizeof host - 1;
	for (size_t i = 0; i < n; i++)
		host[i] = (char)tolower((unsigned char)cmd->arg[i]);
	host[n] = '\0';
	lua_session_set(c, "hostNameAppearsAs", host);
	lua_session_set(c, "openingCommand", smtp_verb_name(cmd->verb));
	smtp_session_update_transmission(c);
	char text[512];
	session_helo_text(c, text, sizeof text);
	if (!ehlo) {
		conn_reply(c, 250, NULL, "%s", text);
		return;
	}
	/* Every line but the last is "250-"; the last keyword closes with
	 * "250 ", so the lines are built first and the last one fixed up. */
	size_t start = c->out.len;
	conn_reply_more(c, 250, "%s", text);
	session_ehlo_keywords(c);
	char *last = c->out.data + c->out.len - 3;
	while (last > c->out.data + start && last[-1] != '\n')
		last--;
	last[3] = ' ';
}

/* ---- MAIL / RCPT -------------------------------------------------------- */

static bool session_check_transaction_start(struct conn *c)
{
	if (!conn_session(c)->greeted) {
		conn_reply(c, 503, "5.5.1", "Error: send HELO/EHLO first");
		return false;
	}
	if (session_auth_required(c)) {
		conn_reply(c, 530, "5.7.0", "%s", c->opt->auth_required_message);
		return false;
	}
	return true;
}

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
			conn_reply(c, 501, "5.1.7", "Error: Bad sender address syntax");
		else
			conn_reply(c, 501, "5.1.3", "Error: Bad recipient address syntax");
		return false;
	case SMTP_PATH_DUP_PARAM:
		conn_reply(c, 501, "5.5.4", "Error: duplicate %.*s parameter",
		           (int)p->params[p->nparams].key_len, p->params[p->nparams].key);
		return false;
	case SMTP_PATH_BAD_PARAM:
		conn_reply(c, 501, "5.5.4", "Error: Bad parameter syntax");
		return false;
	case SMTP_PATH_TOO_MANY_PARAMS:
		conn_reply(c, 501, "5.5.4", "Error: too many parameters");
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
	for (size_t i = 0; session_dsn_on(c) && i < path->nparams; i++) {
		const struct smtp_param *p = &path->params[i];
		bool notify = param_is(p, "NOTIFY"), orcpt = param_is(p, "ORCPT");
		if ((notify || orcpt) && (!p->value || p->value_len == 0)) {
			conn_reply(c, 501, "5.5.4", "Error: %s parameter requires a value", notify ? "NOTIFY" : "ORCPT");
			return false;
		}
		if (notify && !session_notify_ok(p)) {
			conn_reply(c, 501, "5.5.4", "Error: NOTIFY parameter must be NEVER, or SUCCESS, FAILURE and DELAY");
			return false;
		}
		if (orcpt && !session_orcpt_ok(p)) {
			conn_reply(c, 501, "5.5.4", "Error: Bad ORCPT parameter syntax");
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
		bool dsn_param = session_dsn_on(c) && (param_is(p, "RET") || param_is(p, "ENVID"));
		bool needs_value = param_is(p, "SIZE") || param_is(p, "BODY") || dsn_param;
		if (needs_value && (!p->value || p->value_len == 0)) {
			conn_reply(c, 501, "5.5.4", "Error: %.*s parameter requires a value", (int)p->key_len, p->key);
			return false;
		}
		if (param_is(p, "SIZE")) {
			uint64_t size;
			if (!smtp_parse_size(p->value, p->value_len, &size)) {
				conn_reply(c, 501, "5.5.4", "Error: Bad message size syntax");
				return false;
			}
			if (c->opt->size && !c->opt->hide_size && size > c->opt->size) {
				conn_reply(c, 552, "5.3.4", "Error: message exceeds fixed maximum message size %llu",
				           (unsigned long long)c->opt->size);
				return false;
			}
			conn_session(c)->tx.declared_size = size;
		} else if (param_is(p, "BODY")) {
			conn_session(c)->tx.binarymime = value_is(p, "BINARYMIME") && session_chunking_offered(c);
			if (!value_is(p, "7BIT") && !value_is(p, "8BITMIME") && !conn_session(c)->tx.binarymime) {
				conn_reply(c, 501, "5.5.4", "Error: Invalid BODY parameter value. Must be 7BIT, 8BITMIME or BINARYMIME");
				return false;
			}
		} else if (param_is(p, "SMTPUTF8")) {
			if (p->value) {
				conn_reply(c, 501, "5.5.4", "Error: Invalid SMTPUTF8 parameter. This flag does not accept a value");
				return false;
			}
			conn_session(c)->tx.smtputf8 = true;
		} else if (param_is(p, "REQUIRETLS")) {
			if (p->value) {
				conn_reply(c, 501, "5.5.4", "Error: REQUIRETLS does not accept a value");
				return false;
			}
			if (!c->secure) {
				conn_reply(c, 530, "5.7.10", "Error: REQUIRETLS not permitted on non-TLS connections");
				return false;
			}
		} else if (dsn_param && param_is(p, "RET") && !value_is(p, "FULL") && !value_is(p, "HDRS")) {
			conn_reply(c, 501, "5.5.4", "Error: Invalid RET parameter value. Must be FULL or HDRS");
			return false;
		} else if (dsn_param && param_is(p, "ENVID") && !session_xtext_ok(p, 100)) {
			conn_reply(c, 501, "5.5.4", "Error: Bad ENVID parameter syntax");
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

static void cmd_mail(struct conn *c, const struct smtp_cmd *cmd)
{
	struct smtp_session *s = conn_session(c);
	if (!session_check_transaction_start(c))
		return;
	if (s->tx.has_mail) {
		conn_reply(c, 503, "5.5.1", "Error: nested MAIL command");
		return;
	}
	struct smtp_path path;
	size_t reply_at = c->out.len;
	enum smtp_path_status st = smtp_parse_path(SMTP_PATH_MAIL, cmd->arg, cmd->arg_len,
	                                           c->opt->lenient_address_parsing, &path);
	if (!session_path_ok(c, st, &path, true)) {
		session_refused_path(c, false, cmd, NULL, reply_at);
		return;
	}
	s->tx.smtputf8 = false;
	if (!session_mail_params_ok(c, &path)) {
		session_refused_path(c, false, cmd, &path, reply_at);
		return;
	}
	if (path.has_8bit && !s->tx.smtputf8) {
		conn_reply(c, 553, "5.6.7", "Error: internationalized address needs the SMTPUTF8 parameter");
		session_refused_path(c, false, cmd, &path, reply_at);
		return;
	}
	session_judge_address(s, false, &path, session_mail_done);
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
	if (!rcpt_set_find(&s->rcpts, s->judged, len))
		rcpt_set_add(&s->rcpts, s->judged, len, ++s->tx.nrcpt);
	conn_reply_known(c, REPLY_RCPT_ACCEPTED);
}

static void cmd_rcpt(struct conn *c, const struct smtp_cmd *cmd)
{
	struct smtp_session *s = conn_session(c);
	if (!session_check_transaction_start(c))
		return;
	if (!s->tx.has_mail) {
		conn_reply(c, 503, "5.5.1", "Error: need MAIL command");
		return;
	}
	if (s->tx.chunking) {
		conn_reply(c, 503, "5.5.1", "Error: RCPT is not allowed once BDAT has begun");
		return;
	}
	struct smtp_path path;
	size_t reply_at = c->out.len;
	enum smtp_path_status st = smtp_parse_path(SMTP_PATH_RCPT, cmd->arg, cmd->arg_len,
	                                           c->opt->lenient_address_parsing, &path);
	if (!session_path_ok(c, st, &path, false)) {
		session_refused_path(c, true, cmd, NULL, reply_at);
		return;
	}
	bool refused = true;
	if (!session_rcpt_params_ok(c, &path))
		; /* replied */
	else if (path.has_8bit && !s->tx.smtputf8)
		conn_reply(c, 553, "5.6.7", "Error: internationalized address needs the SMTPUTF8 parameter");
	else if (c->opt->max_recipients && s->tx.nrcpt >= c->opt->max_recipients &&
	         !rcpt_set_find(&s->rcpts, path.address, path.address_len))
		conn_reply(c, 452, "4.5.3", "Error: too many recipients");
	else
		refused = false;
	if (refused) {
		session_refused_path(c, true, cmd, &path, reply_at);
		return;
	}
	session_judge_address(s, true, &path, session_rcpt_done);
}

/* ---- DATA --------------------------------------------------------------- */

/* The reply for one recipient (LMTP) or the message (SMTP) after the final
 * dot: the core's limits first, then the data verdict. rcpt: the
 * recipient's own reply (LMTP), or NULL. */
static void session_message_reply(struct conn *c, const struct hook_outcome *rcpt)
{
	struct body *b = conn_session(c)->body;
	struct body_refusal refusal;
	if (body_verdict(c, &refusal)) {
		conn_reply(c, refusal.code, refusal.enhanced, "%s", refusal.text);
		return;
	}
	if (b->outcome.kind != HOOK_ACCEPT) {
		conn_reply_outcome(c, &b->outcome);
		return;
	}
	if (rcpt && rcpt->kind != HOOK_ACCEPT)
		conn_reply_outcome(c, rcpt);
	else if (rcpt && rcpt->text[0])
		conn_reply_hook_text(c, REPLY_MESSAGE_ACCEPTED, rcpt->text);
	else if (rcpt)
		conn_reply_known(c, REPLY_MESSAGE_ACCEPTED);
	else if (b->outcome.text[0])
		conn_reply_hook_text(c, c->opt->lmtp ? REPLY_MESSAGE_ACCEPTED : REPLY_MESSAGE_QUEUED, b->outcome.text);
	else
		conn_reply_known(c, c->opt->lmtp ? REPLY_MESSAGE_ACCEPTED : REPLY_MESSAGE_QUEUED);
}

static void session_data_finish(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	struct body *b = s->body;
	size_t reply_at = c->out.len;
	if (!c->opt->lmtp) {
		session_message_reply(c, NULL);
	} else {
		/* RFC 2033 4.2: one reply per accepted recipient, in order. */
		for (unsigned i = 0; i < s->tx.nrcpt; i++)
			session_message_reply(c, b->rcpt_replies ? &b->rcpt_replies[i] : NULL);
	}
	metrics_message(session_reply_code(c->out.data + reply_at));
	smtp_log_message(c, c->out.data + reply_at, c->out.len - reply_at);
	s->hook_seconds = 0;
	smtp_session_body_free(c);
	s->transactions++;
	s->unknown_commands = 0;
	s->errors = 0;
	s->junk_commands = 0;
	c->phase = PHASE_COMMAND;
	smtp_session_reset_transaction(c);
	if (s->stopping)
		conn_end(c, 421, "4.4.2", "Server shutting down");
}

static void session_data_done(struct smtp_session *s, const struct policy_verdict *v)
{
	struct body *b = s->body;
	b->hook_done = true;
	b->outcome = v->reply;
	b->rcpt_replies = v->rcpt_replies;
	smtp_session_take_verdict(s, v);
	/* A verdict before the end leaves the rest of the body to drain. */
	buf_free(&b->pending);
	if (b->ended)
		session_data_finish(s->conn);
}

/* DATA and BDAT share the checks before a message. */
static bool session_check_message_start(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	if (!session_check_transaction_start(c))
		return false;
	if (!s->tx.has_mail) {
		conn_reply(c, 503, "5.5.1", "Error: need MAIL command");
		return false;
	}
	if (s->tx.nrcpt == 0) {
		conn_reply(c, 503, "5.5.1", "Error: need RCPT command");
		return false;
	}
	return true;
}

void smtp_session_body_free(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	struct body *b = s->body;
	if (!b)
		return;
	s->policy->message_end(s);
	free(b->rcpt_replies);
	buf_free(&b->pending);
	free(b);
	s->body = NULL;
}

/* A message begins: the body state, and the question about it. */
static void session_body_begin(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	struct body *b = calloc(1, sizeof *b);
	if (!b)
		abort();
	smtp_data_init(&b->dec, c->opt->bare_line_endings);
	s->body = b;
	s->policy->data(s, session_data_done);
}

static void cmd_data(struct conn *c, const struct smtp_cmd *cmd)
{
	struct smtp_session *s = conn_session(c);
	if (s->tx.chunking) {
		conn_reply(c, 503, "5.5.1", "Error: DATA is not allowed after BDAT");
		return;
	}
	if (!session_check_message_start(c))
		return;
	if (s->tx.binarymime) {
		conn_reply(c, 503, "5.5.1", "Error: BODY=BINARYMIME needs BDAT, not DATA");
		return;
	}
	if (cmd->arg_len) {
		conn_reply(c, 501, "5.5.4", "Error: Syntax: DATA");
		return;
	}
	c->phase = PHASE_DATA;
	conn_reply(c, 354, NULL, "End data with <CR><LF>.<CR><LF>");
	session_body_begin(c);
}

/* n message bytes are in the spare room of the pending buffer: count them
 * and hand them on (or drop them when nobody will read them). */
static bool session_body_bytes(struct conn *c, size_t n)
{
	struct smtp_session *s = conn_session(c);
	struct body *b = s->body;
	b->byte_length += n;
	if (c->opt->size && b->byte_length > c->opt->size)
		b->size_exceeded = true;
	return !b->hook_done;
}

static void session_body_end(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	s->body->ended = true;
}

/* maxLineLength: measures the lines of decoded message bytes. */
static void session_check_lines(struct conn *c, const char *p, size_t n)
{
	struct smtp_session *s = conn_session(c);
	struct body *b = s->body;
	size_t max = c->opt->max_line_length;
	const char *end = p + n;
	while (p < end && !b->line_too_long) {
		const char *lf = memchr(p, '\n', (size_t)(end - p));
		size_t len = (size_t)((lf ? lf : end) - p);
		b->line_len += len;
		/* the CR of a CRLF is not part of the line */
		if (b->line_len > max + (lf && len > 0 && lf[-1] == '\r'))
			b->line_too_long = true;
		if (!lf)
			break;
		b->line_len = 0;
		p = lf + 1;
	}
}

size_t smtp_session_data(struct conn *c, char *p, size_t n)
{
	struct smtp_session *s = conn_session(c);
	struct body *b = s->body;
	/* Mostly the body does not outgrow its input: it is decoded over it, and
	 * onData or stream:save takes it from there without a copy into the
	 * pending buffer. */
	bool in_place = smtp_data_in_place_ok(&b->dec);
	char *out = in_place ? p : buf_reserve(&b->pending, 2 * n + 4);
	size_t out_len = 0;
	bool done = false;
	size_t used = smtp_data_decode(&b->dec, p, n, out, &out_len, &done);
	if (c->opt->max_line_length)
		session_check_lines(c, out, out_len);
	if (session_body_bytes(c, out_len)) {
		if (in_place)
			s->policy->body(s, out, out_len);
		else
			b->pending.len += out_len;
	}
	if (done)
		session_body_end(c);
	s->policy->body_more(s);
	/* onData may have answered and the message ended: b is gone then. */
	if (c->phase == PHASE_DATA && s->body->ended && s->body->hook_done)
		session_data_finish(c);
	return used;
}

/* ---- BDAT (RFC 3030) ---------------------------------------------------- */

static void session_bdat_chunk_done(struct conn *c);

/* "BDAT <size> [LAST]": false on bad syntax. */
static bool session_parse_bdat(const struct smtp_cmd *cmd, uint64_t *size, bool *last)
{
	const char *sp = memchr(cmd->arg, ' ', cmd->arg_len);
	size_t nlen = sp ? (size_t)(sp - cmd->arg) : cmd->arg_len;
	if (!smtp_parse_size(cmd->arg, nlen, size))
		return false;
	*last = false;
	if (!sp)
		return true;
	const char *rest = sp + 1;
	size_t rlen = cmd->arg_len - nlen - 1;
	*last = smtp_ascii_ieq(rest, rlen, "LAST", 4);
	return *last;
}

static void cmd_bdat(struct conn *c, const struct smtp_cmd *cmd)
{
	struct smtp_session *s = conn_session(c);
	uint64_t size;
	bool last;
	if (!session_parse_bdat(cmd, &size, &last)) {
		/* Without a size the chunk cannot be skipped: the session ends. */
		conn_end(c, 501, "5.5.4", "Error: Syntax: BDAT <size> [LAST]");
		return;
	}
	s->bdat_remaining = size;
	s->bdat_last = last;
	c->phase = PHASE_BDAT;
	/* A refused chunk is still read (RFC 3030 2): its reply waits for it. */
	s->bdat_refusal = NULL;
	if (!s->tx.chunking) {
		if (!s->tx.has_mail || s->tx.nrcpt == 0 || !s->greeted || session_auth_required(c)) {
			bool auth = s->greeted && session_auth_required(c);
			s->bdat_refusal = !s->greeted ? "Error: send HELO/EHLO first"
			                  : auth ? c->opt->auth_required_message
			                  : !s->tx.has_mail ? "Error: need MAIL command"
			                                    : "Error: need RCPT command";
			s->bdat_refusal_code = auth ? 530 : 503;
			if (s->bdat_remaining == 0)
				session_bdat_chunk_done(c);
			return;
		}
		s->tx.chunking = true;
		session_body_begin(c);
	}
	if (s->bdat_remaining == 0 && c->phase == PHASE_BDAT)
		session_bdat_chunk_done(c);
}

/* The end of a chunk: its reply, or the message's after LAST. */
static void session_bdat_chunk_done(struct conn *c)
{
	struct body *b = conn_session(c)->body;
	if (conn_session(c)->bdat_refusal) {
		c->phase = PHASE_COMMAND;
		conn_reply(c, conn_session(c)->bdat_refusal_code, conn_session(c)->bdat_refusal_code == 530 ? "5.7.0" : "5.5.1", "%s",
		           conn_session(c)->bdat_refusal);
		return;
	}
	if (!conn_session(c)->bdat_last) {
		c->phase = PHASE_COMMAND;
		conn_reply(c, 250, "2.0.0", "%llu octets received",
		           (unsigned long long)b->byte_length);
		return;
	}
	c->phase = PHASE_DATA; /* the reply waits for onData */
	session_body_end(c);
	conn_session(c)->policy->body_more(conn_session(c));
	if (c->phase == PHASE_DATA && conn_session(c)->body->hook_done) /* else b is gone, see above */
		session_data_finish(c);
}

size_t smtp_session_bdat(struct conn *c, const char *p, size_t n)
{
	struct smtp_session *s = conn_session(c);
	size_t take = n < s->bdat_remaining ? n : (size_t)s->bdat_remaining;
	if (!s->bdat_refusal && take) {
		if (session_body_bytes(c, take))
			s->policy->body(s, p, take);
		else
			s->policy->body_more(s);
	}
	s->bdat_remaining -= take;
	if (s->bdat_remaining == 0 && c->phase == PHASE_BDAT)
		session_bdat_chunk_done(c);
	return take;
}

/* ---- the rest ----------------------------------------------------------- */

static void session_add_error(struct conn *c);

/* Postfix's smtpd_junk_command_limit: commands that move no mail are free
 * up to maxJunkCommands per message; past it each one counts as an error,
 * so a client that only keeps the session busy meets the error limit. */
static void session_count_junk(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	unsigned max = c->opt->max_junk_commands;
	if (max && ++s->junk_commands > max)
		session_add_error(c);
}

static void cmd_rset(struct conn *c, const struct smtp_cmd *cmd)
{
	smtp_session_reset_transaction(c);
	conn_reply(c, 250, "2.0.0", "Flushed");
	session_count_junk(c);
}

static void cmd_noop(struct conn *c, const struct smtp_cmd *cmd)
{
	conn_reply(c, 250, "2.0.0", "OK");
	session_count_junk(c);
}

static void cmd_quit(struct conn *c, const struct smtp_cmd *cmd)
{
	conn_end(c, 221, "2.0.0", "Bye");
}

static void cmd_vrfy(struct conn *c, const struct smtp_cmd *cmd)
{
	if (cmd->arg_len == 0)
		conn_reply(c, 501, "5.5.4", "Error: Syntax: VRFY address");
	else
		conn_reply(c, 252, "2.0.0", "Try to send something. No promises though");
	session_count_junk(c);
}

static void cmd_help(struct conn *c, const struct smtp_cmd *cmd)
{
	conn_reply(c, 214, "2.0.0", "See https://tools.ietf.org/html/rfc5321 for details");
	session_count_junk(c);
}


static void cmd_unknown(struct conn *c, const struct smtp_cmd *cmd);

/* RFC 3207 4.2: everything learnt before TLS is forgotten. */
void smtp_session_forget_identity(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	s->greeted = false;
	s->esmtp = false;
	s->authenticated = false;
	s->unauth_commands = 0;
	smtp_session_reset_transaction(c);
	lua_session_set(c, "hostNameAppearsAs", NULL);
	lua_session_set(c, "openingCommand", NULL);
	lua_session_set(c, "user", NULL);
}

static void cmd_starttls(struct conn *c, const struct smtp_cmd *cmd)
{
	if (c->secure) {
		conn_reply(c, 503, "5.5.1", "Error: TLS already active");
		return;
	}
	if (!session_starttls_offered(c)) {
		cmd_unknown(c, cmd);
		return;
	}
	if (cmd->arg_len) {
		conn_reply(c, 501, "5.5.4", "Error: syntax: STARTTLS");
		return;
	}
	conn_reply(c, 220, "2.0.0", "Ready to start TLS");
	smtp_session_forget_identity(c);
	c->starttls_pending = true; /* conn_flush starts the handshake */
}

/* ---- TLS ---------------------------------------------------------------- */

static void session_secure_done(struct smtp_session *s, const struct policy_verdict *v)
{
	struct conn *c = s->conn;
	smtp_session_take_verdict(s, v);
	if (v->reply.kind != HOOK_ACCEPT) {
		conn_end(c, v->reply.code, v->reply.enhanced, v->reply.text);
		return;
	}
	if (c->opt->secure)
		smtp_session_greet(c);
	else
		c->phase = PHASE_COMMAND;
}

static void session_run_on_secure(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	s->policy->secure(s, session_secure_done);
}

void smtp_session_secured(struct conn *c)
{
	c->secure = true;
	c->phase = PHASE_CONNECT;
	lua_tls_session_fields(c);
	smtp_session_update_transmission(c);
	char version[16];
	snprintf(version, sizeof version, "%s", SSL_get_version(c->ssl));
	metrics_tls(version);
	conn_log(c, LOG_INFO, "tls", "version", version, "cipher",
	         SSL_CIPHER_get_name(SSL_get_current_cipher(c->ssl)), "servername",
	         c->servername, NULL);
	if (!c->opt->secure) {
		session_run_on_secure(c);
		return;
	}
	/* Implicit TLS: the session starts now, onConnect first (as smtp-server). */
	session_lookup_then_connect(c);
}

static void session_error_done(struct smtp_session *s, const struct policy_verdict *v)
{
	conn_close(s->conn, "TLS handshake failed");
}

void smtp_session_tls_failed(struct conn *c, const char *code, const char *reason)
{
	struct smtp_session *s = conn_session(c);
	conn_log(c, LOG_WARN, "TLS handshake failed", "code", code, "error", reason, NULL);
	c->phase = PHASE_CLOSING;
	s->policy->tls_error(s, code, reason, session_error_done);
}

static void cmd_http(struct conn *c, const struct smtp_cmd *cmd)
{
	conn_end(c, 421, "4.4.2", "HTTP requests not allowed");
}

static void cmd_unknown(struct conn *c, const struct smtp_cmd *cmd)
{
	struct smtp_session *s = conn_session(c);
	if (++s->unknown_commands >= UNKNOWN_COMMANDS_MAX) {
		conn_end(c, 421, "4.4.2", "Error: too many unrecognized commands");
		return;
	}
	conn_reply(c, 500, "5.5.2", "Error: command not recognized");
}

typedef void (*cmd_fn)(struct conn *, const struct smtp_cmd *);

static const cmd_fn commands[SMTP_VERB_COUNT] = {
	[SMTP_VERB_HELO] = cmd_helo, [SMTP_VERB_EHLO] = cmd_helo, [SMTP_VERB_LHLO] = cmd_helo,
	[SMTP_VERB_MAIL] = cmd_mail,
	[SMTP_VERB_RCPT] = cmd_rcpt, [SMTP_VERB_DATA] = cmd_data, [SMTP_VERB_RSET] = cmd_rset,
	[SMTP_VERB_NOOP] = cmd_noop, [SMTP_VERB_QUIT] = cmd_quit, [SMTP_VERB_VRFY] = cmd_vrfy,
	[SMTP_VERB_HELP] = cmd_help, [SMTP_VERB_AUTH] = smtp_auth_command, [SMTP_VERB_HTTP] = cmd_http,
	[SMTP_VERB_STARTTLS] = cmd_starttls, [SMTP_VERB_BDAT] = cmd_bdat,
	[SMTP_VERB_XCLIENT] = smtp_xclient_command, [SMTP_VERB_XFORWARD] = smtp_xforward_command,
};

/* smtp-server's limit: a client that must log in gets a few commands to do so. */
static bool session_unauth_limit_hit(struct conn *c, enum smtp_verb v)
{
	struct smtp_session *s = conn_session(c);
	unsigned max = c->opt->max_unauth_commands;
	if (!max || !session_auth_required(c) || v == SMTP_VERB_AUTH)
		return false;
	if (++s->unauth_commands < max)
		return false;
	conn_end(c, 421, "4.4.2", "Error: too many unauthenticated commands");
	return true;
}

/* Syntax and sequence errors (500, 501, 503) have a cap of their own: a
 * client that keeps getting them is not a mail client. */
static void session_count_error(struct conn *c, size_t reply_at)
{
	if (c->phase == PHASE_CLOSING || c->phase == PHASE_CLOSED || c->out.len < reply_at + 3)
		return;
	int code = session_reply_code(c->out.data + reply_at);
	if (code != 500 && code != 501 && code != 503)
		return;
	session_add_error(c);
}

static void session_add_error(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	if (++s->errors >= ERRORS_MAX)
		conn_end(c, 421, "4.4.2", "Error: too many errors");
}

static void session_command(struct conn *c, const char *line, size_t len);

void smtp_session_line(struct conn *c, const char *line, size_t len)
{
	struct smtp_session *s = conn_session(c);
	if (c->phase == PHASE_AUTH) {
		smtp_auth_line(c, line, len);
		return;
	}
	size_t reply_at = c->out.len;
	unsigned before = s->unknown_commands;
	session_command(c, line, len);
	/* cmd_unknown counts (and answers 421) itself */
	if (s->unknown_commands == before)
		session_count_error(c, reply_at);
}

static void session_command(struct conn *c, const char *line, size_t len)
{
	struct smtp_session *s = conn_session(c);
	struct smtp_cmd cmd;
	enum smtp_cmd_status st = smtp_parse_command(line, len, &cmd);
	if (st == SMTP_CMD_BAD_CHAR) {
		conn_reply(c, 501, "5.5.2", "Error: command contains a control character");
		return;
	}
	if (st == SMTP_CMD_EMPTY) {
		cmd_unknown(c, &cmd);
		return;
	}
	if (len > c->opt->max_command_length && cmd.verb != SMTP_VERB_AUTH) {
		smtp_session_line_too_long(c);
		return;
	}
	if (log_enabled(LOG_DEBUG))
		conn_log(c, LOG_DEBUG, "command", "verb", smtp_verb_name(cmd.verb), NULL);
	if (s->stopping && !s->tx.has_mail && cmd.verb != SMTP_VERB_QUIT) {
		conn_end(c, 421, "4.4.2", "Server shutting down");
		return;
	}
	if (session_unauth_limit_hit(c, cmd.verb))
		return;
	cmd_fn fn = commands[cmd.verb];
	if (!fn || session_verb_disabled(c, cmd.verb))
		fn = cmd_unknown;
	if (c->opt->needs_upgrade && !c->secure && fn != cmd_unknown && fn != cmd_helo &&
	    fn != cmd_starttls && fn != cmd_quit) {
		conn_reply(c, 530, "5.7.0", "Error: Must issue a STARTTLS command first");
		return;
	}
	fn(c, &cmd);
}

void smtp_session_line_too_long(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	if (c->phase == PHASE_AUTH) {
		c->phase = PHASE_COMMAND;
		s->sasl = SASL_NONE;
	}
	conn_reply(c, 500, "5.5.6", "Error: line too long");
}

void smtp_session_stop(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	/* Before the session began (PROXY, TLS handshake) conn_end just closes. */
	bool early = c->phase == PHASE_HANDSHAKE || c->phase == PHASE_PROXY;
	bool idle = c->phase == PHASE_COMMAND && !s->tx.has_mail && !s->hook.active &&
	            buf_used(&c->in) == 0;
	if (early || idle)
		conn_end(c, 421, "4.4.2", "Server shutting down");
}
