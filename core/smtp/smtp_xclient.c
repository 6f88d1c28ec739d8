#include "smtp/smtp_xclient.h"
#include "smtp/session.h"
#include "smtp/session_commands.h"

#include "net/conn.h"
#include "smtp/reply.h"
#include "proto/replies.h"
#include "smtp/smtp_rdns.h"
#include "smtp/smtp_session.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define X_MAX_ATTRS 8

static const char *const x_names[X_COUNT] = {"NAME", "ADDR", "PORT", "PROTO", "HELO", "LOGIN", "IDENT", "SOURCE"};

static bool x_trusted(const struct conn *c, bool xforward)
{
	struct smtp_session *s = conn_session(c);
	const struct smtp_options *o = smtp_opt(c);
	bool on = xforward ? o->use_xforward : o->use_xclient;
	const struct cidr *list = xforward ? o->xforward_trusted : o->xclient_trusted;
	size_t n = xforward ? o->nxforward_trusted : o->nxclient_trusted;
	if (!on)
		return false;
	return cidr_list_match(list, n, s->x_peer ? s->x_peer : c->remote_addr);
}

bool smtp_xclient_offered(const struct conn *c, bool xforward)
{
	struct smtp_session *s = conn_session(c);
	return !s->x_locked && x_trusted(c, xforward);
}

static bool x_hostname(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 255)
		return false;
	for (const char *p = s; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' && *p != '_')
			return false;
	return true;
}

static bool x_valid(enum x_attr a, struct x_value *val)
{
	if (val->unavailable)
		return true;
	char *v = val->v;
	switch (a) {
	case X_NAME:
		return x_hostname(v);
	case X_ADDR: {
		unsigned char bin[16];
		if (strncasecmp(v, "IPV6:", 5) == 0)
			memmove(v, v + 5, strlen(v + 5) + 1);
		return inet_pton(AF_INET, v, bin) == 1 || inet_pton(AF_INET6, v, bin) == 1;
	}
	case X_PORT: {
		char *end;
		long p = strtol(v, &end, 10);
		return *v && !*end && p >= 0 && p <= 65535;
	}
	case X_PROTO:
		return strcasecmp(v, "SMTP") == 0 || strcasecmp(v, "ESMTP") == 0;
	case X_HELO:
		return smtp_valid_helo(v, strlen(v));
	case X_SOURCE:
		return strcasecmp(v, "LOCAL") == 0 || strcasecmp(v, "REMOTE") == 0;
	default:
		return *v != '\0';
	}
}

/* Parses and checks every attribute before anything is applied. */
static bool x_parse(const struct smtp_cmd *cmd, bool xforward, struct x_value vals[X_COUNT])
{
	memset(vals, 0, sizeof(struct x_value) * X_COUNT);
	const char *p = cmd->arg, *end = cmd->arg + cmd->arg_len;
	int n = 0;
	while (p < end) {
		while (p < end && *p == ' ')
			p++;
		if (p == end)
			break;
		const char *sp = memchr(p, ' ', (size_t)(end - p));
		const char *wend = sp ? sp : end;
		const char *eq = memchr(p, '=', (size_t)(wend - p));
		if (!eq || ++n > X_MAX_ATTRS)
			return false;
		int a = -1;
		for (int i = 0; i < X_COUNT; i++)
			if (smtp_ascii_ieq(p, (size_t)(eq - p), x_names[i], strlen(x_names[i])))
				a = i;
		bool allowed = a >= 0 && (xforward ? a != X_LOGIN : (a != X_IDENT && a != X_SOURCE));
		if (!allowed || vals[a].present)
			return false;
		struct x_value *val = &vals[a];
		long len = smtp_xtext_decode(eq + 1, (size_t)(wend - eq - 1), val->v, X_VALUE_MAX);
		if (len < 0)
			return false;
		val->v[len] = '\0';
		val->present = true;
		val->unavailable = strcmp(val->v, "[UNAVAILABLE]") == 0 || strcmp(val->v, "[TEMPUNAVAIL]") == 0;
		if (!x_valid((enum x_attr)a, val))
			return false;
		p = wend;
	}
	return n > 0;
}

/* Tells the policy what the front end says, before it applies. */
static void x_record(struct conn *c, bool xforward, struct x_value vals[X_COUNT])
{
	struct smtp_session *s = conn_session(c);
	struct policy_attr attrs[X_COUNT];
	size_t n = 0;
	for (int a = 0; a < X_COUNT; a++)
		if (vals[a].present)
			attrs[n++] = (struct policy_attr){x_names[a], vals[a].unavailable ? NULL : vals[a].v};
	s->policy->forwarded(s, xforward, attrs, n);
}

/* Applies the client's identity to the session's own fields. */
static void x_apply(struct conn *c, struct x_value vals[X_COUNT])
{
	struct smtp_session *s = conn_session(c);
	if (vals[X_ADDR].present) {
		const char *addr = vals[X_ADDR].unavailable ? "unknown" : vals[X_ADDR].v;
		snprintf(c->remote_addr, sizeof c->remote_addr, "%.63s", addr); /* an IP: short */
		free(s->client_hostname);
		s->client_hostname = NULL; /* "[address]" */
	}
	if (vals[X_NAME].present) {
		const char *name = vals[X_NAME].unavailable ? "" : vals[X_NAME].v;
		smtp_session_set_name(&s->client_hostname, name, strlen(name));
	}
	if (vals[X_PORT].present && !vals[X_PORT].unavailable)
		c->remote_port = atoi(vals[X_PORT].v);
	if (vals[X_ADDR].present || vals[X_PORT].present)
		s->policy->changed(s, FACT_REMOTE);
	if (vals[X_ADDR].present || vals[X_NAME].present)
		s->policy->changed(s, FACT_CLIENT_HOSTNAME);
	if (vals[X_HELO].present) {
		const char *helo = vals[X_HELO].unavailable ? "" : vals[X_HELO].v;
		smtp_session_set_name(&s->helo_name, helo, strlen(helo));
		s->policy->changed(s, FACT_HELO);
	}
}

/* The check both commands share. */
static enum smtp_reply_id x_check(struct conn *c, const struct smtp_cmd *cmd, bool xforward,
                                  struct x_value vals[X_COUNT])
{
	if (!smtp_xclient_offered(c, xforward))
		return REPLY_XCLIENT_NOT_ALLOWED;
	if (conn_session(c)->tx.has_mail)
		return REPLY_XCLIENT_DURING_MAIL;
	if (!x_parse(cmd, xforward, vals))
		return REPLY_XCLIENT_SYNTAX;
	return SMTP_CHECK_PASS;
}

enum smtp_reply_id smtp_check_xclient(struct conn *c, const struct smtp_cmd *cmd, struct smtp_args *a)
{
	return x_check(c, cmd, false, a->x.vals);
}

enum smtp_reply_id smtp_check_xforward(struct conn *c, const struct smtp_cmd *cmd, struct smtp_args *a)
{
	return x_check(c, cmd, true, a->x.vals);
}

/* The peer that spoke first keeps the trust: later attributes are judged
 * by its address, not the one it named. */
static void x_remember_peer(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	if (!s->x_peer && !(s->x_peer = strdup(c->remote_addr)))
		abort();
}

static void x_login_done(struct smtp_session *s, const struct policy_verdict *v)
{
	struct conn *c = s->conn;
	smtp_session_take_verdict(s, v);
	if (v->reply.kind != HOOK_ACCEPT) {
		conn_end(c, 550, v->reply.enhanced, v->reply.text);
		return;
	}
	if (v->user_set) {
		smtp_session_set_user(s, v->user);
		s->policy->changed(s, FACT_XCLIENT_LOGIN);
		smtp_session_update_transmission(c);
	}
	smtp_session_greet(c);
}

/* LOGIN: the front end vouches for a user (kept in sasl_user while
 * onConnect runs); the policy has the last word. Then the new greeting. */
static void x_login(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	char *user = s->sasl_user;
	s->sasl_user = NULL;
	if (!user) {
		smtp_session_greet(c);
		return;
	}
	struct policy_auth a = {.method = "XCLIENT", .username = user, .username_len = strlen(user)};
	s->policy->auth(s, &a, x_login_done);
	free(user);
}

/* The new client passed onConnect, or Postfix-like the answer to XCLIENT
 * is its rejection and the connection ends as a refused one would. */
static void x_connect_done(struct smtp_session *s, const struct policy_verdict *v)
{
	if (smtp_session_connect_accepted(s, v))
		x_login(s->conn);
}

static void x_run_on_connect(struct conn *c)
{
	smtp_session_run_on_connect(c, x_connect_done);
}

void smtp_cmd_xclient(struct conn *c, const struct smtp_cmd *cmd, struct smtp_args *a)
{
	struct smtp_session *s = conn_session(c);
	struct x_value *vals = a->x.vals;
	x_remember_peer(c);
	smtp_session_forget_identity(c);
	x_record(c, false, vals);
	x_apply(c, vals);
	if (vals[X_ADDR].present)
		s->x_locked = true; /* the peer is now the client: it may not say more */
	conn_log(c, LOG_INFO, "xclient", "client", c->remote_addr, NULL);
	free(s->sasl_user);
	s->sasl_user = NULL;
	if (vals[X_LOGIN].present && !vals[X_LOGIN].unavailable && !(s->sasl_user = strdup(vals[X_LOGIN].v)))
		abort();
	if (!vals[X_ADDR].present && !vals[X_NAME].present) {
		x_login(c);
		return;
	}
	/* A new client: the connect-time checks are its too (no input is read
	 * meanwhile; the greeting waits for them). */
	if (vals[X_ADDR].present && conn_too_many_from_peer(c)) {
		conn_end(c, SMTP_REPLY_ARGS(REPLY_TOO_MANY_CONNECTIONS));
		return;
	}
	smtp_session_enter(c, SMTP_STATE_CONNECT);
	if (smtp_opt(c)->resolve_client_hostname && vals[X_ADDR].present && !vals[X_NAME].present)
		smtp_rdns_start(c, x_run_on_connect);
	else
		x_run_on_connect(c);
}

void smtp_cmd_xforward(struct conn *c, const struct smtp_cmd *cmd, struct smtp_args *a)
{
	struct x_value *vals = a->x.vals;
	x_remember_peer(c);
	smtp_session_reset_transaction(c);
	x_record(c, true, vals);
	x_apply(c, vals);
	conn_reply_known(c, REPLY_OK);
}
