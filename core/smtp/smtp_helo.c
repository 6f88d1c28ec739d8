/* smtp_helo — the session's opening: greetingDelay, the reverse lookup
 * and the connect verdict before the greeting, HELO/EHLO/LHLO and the EHLO
 * keywords, STARTTLS, and what follows a TLS handshake (the secure
 * verdict, or the policy told of its failure). */
#include "smtp/smtp_session.h"
#include "smtp/session.h"
#include "smtp/session_commands.h"

#include "base/metrics.h"
#include "net/conn.h"
#include "smtp/reply.h"
#include "proto/replies.h"
#include "net/server.h"
#include "smtp/smtp_auth.h"
#include "smtp/smtp_rdns.h"
#include "smtp/smtp_xclient.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static bool session_starttls_offered(struct conn *c)
{
	return c->opt->tls.ctx && !c->secure && !smtp_session_verb_disabled(c, SMTP_VERB_STARTTLS);
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
	struct smtp_session *s = conn_session(c);
	/* The address is final here (after a PROXY header); a reverse lookup
	 * may name it next. The session table says "[address]" from its start:
	 * it is told only if a name was kept. */
	if (s->client_hostname) {
		free(s->client_hostname);
		s->client_hostname = NULL; /* "[address]" */
		s->policy->changed(s, FACT_CLIENT_HOSTNAME);
	}
	if (smtp_opt(c)->resolve_client_hostname)
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
		conn_session(c)->pregreet = true;
		conn_session(c)->policy->changed(conn_session(c), FACT_PREGREET);
		conn_log(c, LOG_INFO, "pregreet: the client spoke before the greeting", NULL);
	}
	session_lookup_then_connect(c);
	conn_resume(c);
}

void smtp_session_connect(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	if (smtp_opt(c)->greeting_delay > 0) {
		if (!(s->greet_delay = malloc(sizeof *s->greet_delay)))
			abort();
		ev_timer_init(s->greet_delay, session_greeting_delay_done, smtp_opt(c)->greeting_delay, 0.);
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
	char name[SMTP_SESSION_HOSTNAME_BUF];
	const char *subst[2] = {smtp_opt(c)->name, smtp_session_client_hostname(conn_session(c), name)};
	size_t o = 0, k = 0;
	for (const char *p = smtp_opt(c)->helo_response; *p && o + 1 < len; p++) {
		if (p[0] == '%' && p[1] == 's' && k < 2) {
			o = smtp_text_put(out, len, o, subst[k++]);
			p++;
		} else {
			out[o++] = *p;
		}
	}
	out[o] = '\0';
}

bool smtp_session_chunking_offered(struct conn *c)
{
	return !smtp_opt(c)->hide_chunking && !smtp_session_verb_disabled(c, SMTP_VERB_BDAT);
}

#define EHLO_KEYWORD(c, kw) conn_reply_more_text((c), 250, kw, sizeof kw - 1)

static void session_ehlo_keywords(struct conn *c)
{
	const struct smtp_options *o = smtp_opt(c);
	if (!o->hide_pipelining)
		EHLO_KEYWORD(c, "PIPELINING");
	if (!o->hide_8bitmime)
		EHLO_KEYWORD(c, "8BITMIME");
	if (!o->hide_smtputf8)
		EHLO_KEYWORD(c, "SMTPUTF8");
	if (!o->hide_enhanced)
		EHLO_KEYWORD(c, "ENHANCEDSTATUSCODES");
	if (smtp_session_dsn_on(c))
		EHLO_KEYWORD(c, "DSN");
	if (smtp_session_chunking_offered(c)) {
		EHLO_KEYWORD(c, "CHUNKING");
		EHLO_KEYWORD(c, "BINARYMIME");
	}
	if (smtp_session_auth_offered(c) && !conn_session(c)->authenticated && !smtp_session_verb_disabled(c, SMTP_VERB_AUTH)) {
		char methods[64] = "";
		for (size_t i = 0; i < o->nauth_methods; i++) {
			strcat(methods, " ");
			strcat(methods, auth_method_name(o->auth_methods[i]));
		}
		conn_reply_more(c, 250, "AUTH%s", methods);
	}
	if (session_starttls_offered(c) && !o->hide_starttls)
		EHLO_KEYWORD(c, "STARTTLS");
	if (c->secure && !o->hide_requiretls)
		EHLO_KEYWORD(c, "REQUIRETLS");
	if (o->size && o->hide_size)
		EHLO_KEYWORD(c, "SIZE");
	else if (o->size)
		conn_reply_more(c, 250, "SIZE %llu", (unsigned long long)o->size);
	if (smtp_xclient_offered(c, false))
		EHLO_KEYWORD(c, "XCLIENT NAME ADDR PORT PROTO HELO LOGIN");
	if (smtp_xclient_offered(c, true))
		EHLO_KEYWORD(c, "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE");
}

enum smtp_reply_id smtp_check_helo(struct conn *c, const struct smtp_cmd *cmd, struct smtp_args *a)
{
	/* LMTP (RFC 2033): LHLO only; in SMTP, LHLO is unknown. */
	if (smtp_opt(c)->lmtp != (cmd->verb == SMTP_VERB_LHLO)) {
		if (smtp_opt(c)->lmtp)
			return cmd->verb == SMTP_VERB_HELO ? REPLY_LMTP_NO_HELO : REPLY_LMTP_NO_EHLO;
		smtp_cmd_unknown(c, cmd);
		return SMTP_CHECK_SENT;
	}
	if (cmd->arg_len == 0 || memchr(cmd->arg, ' ', cmd->arg_len) || memchr(cmd->arg, '\t', cmd->arg_len)) {
		conn_reply(c, 501, "5.5.4", "Error: Syntax: %s hostname", cmd->verb == SMTP_VERB_HELO ? "HELO" : "EHLO");
		return SMTP_CHECK_SENT;
	}
	return smtp_valid_helo(cmd->arg, cmd->arg_len) ? SMTP_CHECK_PASS : REPLY_BAD_HOSTNAME;
}

void smtp_cmd_helo(struct conn *c, const struct smtp_cmd *cmd, struct smtp_args *a)
{
	bool ehlo = cmd->verb != SMTP_VERB_HELO;
	struct smtp_session *s = conn_session(c);
	s->greeted = true;
	s->esmtp = ehlo;
	for (char *p = smtp_session_set_name(&s->helo_name, cmd->arg, cmd->arg_len); *p; p++)
		*p = (char)tolower((unsigned char)*p);
	/* The new envelope, the name and the transmission type: one call. */
	smtp_session_reset_transaction_with(c, FACT_HELO | FACT_TRANSMISSION);
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
	if (conn_is_closed(c))
		return;
	session_ehlo_keywords(c);
	char *last = c->out.data + c->out.len - 3;
	while (last > c->out.data + start && last[-1] != '\n')
		last--;
	last[3] = ' ';
}

/* RFC 3207 4.2: everything learnt before TLS is forgotten. */
void smtp_session_forget_identity(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	s->greeted = false;
	s->esmtp = false;
	s->authenticated = false;
	free(s->user);
	s->user = NULL;
	s->unauth_commands = 0;
	smtp_session_reset_transaction(c);
	free(s->helo_name);
	s->helo_name = NULL;
	s->policy->changed(s, FACT_HELO);
	s->policy->changed(s, FACT_USER_FORGOTTEN);
}

enum smtp_reply_id smtp_check_starttls(struct conn *c, const struct smtp_cmd *cmd, struct smtp_args *a)
{
	if (c->secure)
		return REPLY_TLS_ACTIVE;
	if (!session_starttls_offered(c)) {
		smtp_cmd_unknown(c, cmd);
		return SMTP_CHECK_SENT;
	}
	return cmd->arg_len ? REPLY_STARTTLS_SYNTAX : SMTP_CHECK_PASS;
}

void smtp_cmd_starttls(struct conn *c, const struct smtp_cmd *cmd, struct smtp_args *a)
{
	conn_reply_known(c, REPLY_STARTTLS_READY);
	smtp_session_forget_identity(c);
	smtp_session_enter(c, SMTP_STATE_TLS);
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
	if (smtp_opt(c)->secure)
		smtp_session_greet(c);
	else
		smtp_session_enter(c, SMTP_STATE_COMMAND);
}

static void session_run_on_secure(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	s->policy->secure(s, session_secure_done);
}

void smtp_session_tls_names(const struct conn *c, const char **version, const char **cipher)
{
	const SSL_CIPHER *ciph = c->secure ? SSL_get_current_cipher(c->ssl) : NULL;
	*version = c->secure ? SSL_get_version(c->ssl) : NULL;
	*cipher = !c->secure ? NULL : ciph ? SSL_CIPHER_get_name(ciph) : "";
}

void smtp_session_secured(struct conn *c)
{
	conn_session(c)->policy->changed(conn_session(c), FACT_TLS);
	smtp_session_update_transmission(c);
	const char *version, *cipher;
	smtp_session_tls_names(c, &version, &cipher);
	metrics_tls(version);
	conn_log(c, LOG_INFO, "tls", "version", version, "cipher", cipher, "servername", c->servername, NULL);
	if (!smtp_opt(c)->secure) {
		session_run_on_secure(c);
		return;
	}
	/* Implicit TLS: the session starts now, onConnect first (as smtp-server). */
	smtp_session_enter(c, SMTP_STATE_CONNECT);
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
	smtp_session_enter(c, SMTP_STATE_CLOSING);
	conn_close_pending(c);
	s->policy->tls_error(s, code, reason, session_error_done);
}
