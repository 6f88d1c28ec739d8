#include "smtp/smtp_auth.h"
#include "smtp/session.h"
#include "smtp/session_commands.h"

#include "smtp/auth_throttle.h"
#include "net/conn.h"
#include "smtp/reply.h"
#include "base/metrics.h"
#include "smtp/smtp_session.h"
#include "proto/replies.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* SASL lines are bounded by maxCommandLength; decoded they are smaller. */
#define AUTH_DECODED_MAX 12288

static void auth_reset(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	smtp_session_enter(c, SMTP_STATE_COMMAND);
	s->sasl = SASL_NONE;
	free(s->sasl_user);
	s->sasl_user = NULL;
	free(s->sasl_challenge);
	s->sasl_challenge = NULL;
	free(s->sasl_refusal);
	s->sasl_refusal = NULL;
}

/* A failed attempt: the reply, or the end of the session after too many. */
static void auth_failed(struct conn *c, int code, const char *enhanced, const char *text)
{
	metrics_auth(conn_session(c)->sasl_method, false);
	auth_reset(c);
	/* Only a permanent failure counts against the address: a 454 (the
	 * backend is down, or this very throttle) is not a wrong password. */
	if (code >= 500)
		auth_throttle_failed(c->remote_addr, smtp_opt(c)->max_auth_failures_per_ip, smtp_opt(c)->auth_failure_window);
	if (smtp_opt(c)->max_auth_failures && ++conn_session(c)->auth_failures >= smtp_opt(c)->max_auth_failures) {
		conn_log(c, LOG_WARN, "too many failed AUTH attempts", NULL);
		conn_end(c, SMTP_REPLY_ARGS(REPLY_AUTH_TOO_MANY_FAILURES));
		return;
	}
	conn_reply(c, code, enhanced, "%s", text);
}

static void auth_bad_data(struct conn *c)
{
	auth_reset(c);
	conn_reply_known(c, REPLY_AUTH_BAD_BASE64);
}

static void auth_done(struct smtp_session *s, const struct policy_verdict *v)
{
	struct conn *c = s->conn;
	const struct hook_outcome *o = &v->reply;
	enum auth_method method = s->sasl_method;
	smtp_session_take_verdict(s, v);
	if (v->undecided) {
		auth_failed(c, SMTP_REPLY_ARGS(REPLY_AUTH_NOT_IMPLEMENTED));
		return;
	}
	auth_reset(c);
	if (o->kind == HOOK_FAILED) {
		metrics_auth(method, false);
		conn_reply_outcome(c, o);
		return;
	}
	if (o->kind == HOOK_REJECT && method == AUTH_XOAUTH2) {
		/* RFC 7628 3.2.2: the error goes out as a challenge; the
		 * client's (empty) answer then gets the refusal. */
		static const char json[] = "{\"status\":\"401\",\"schemes\":\"bearer\",\"scope\":\"https://mail.google.com/\"}";
		char b64[sizeof json * 2];
		smtp_base64_encode(json, sizeof json - 1, b64);
		smtp_session_enter(c, SMTP_STATE_AUTH);
		s->sasl = SASL_XOAUTH2_ERROR;
		if (!(s->sasl_refusal = malloc(sizeof *s->sasl_refusal)))
			abort();
		*s->sasl_refusal = *o;
		conn_reply(c, 334, NULL, "%s", b64);
		return;
	}
	if (o->kind == HOOK_REJECT) {
		auth_failed(c, o->code, o->enhanced, o->text);
		return;
	}
	if (!v->user_set) {
		const struct smtp_reply *r = &smtp_replies[REPLY_AUTH_NO_USER];
		auth_failed(c, r->code, r->enhanced, r->text);
		return;
	}
	smtp_session_set_user(s, v->user);
	s->policy->changed(s, FACT_AUTH);
	metrics_auth(method, true);
	smtp_session_update_transmission(c);
	if (o->text[0])
		conn_reply_hook_text(c, REPLY_AUTH_ACCEPTED, o->text);
	else
		conn_reply_known(c, REPLY_AUTH_ACCEPTED);
	conn_log(c, LOG_INFO, "authenticated", "method", auth_method_name(method), NULL);
}

/* Asks the policy about the credentials the exchange has given. */
static void auth_ask(struct conn *c, const char *user, size_t ulen, const char *secret, size_t slen)
{
	struct smtp_session *s = conn_session(c);
	smtp_session_enter(c, SMTP_STATE_COMMAND);
	struct policy_auth a = {
		.method = auth_method_name(s->sasl_method),
		.username = user,
		.username_len = ulen,
		.secret = secret,
		.secret_len = slen,
		.challenge = s->sasl_method == AUTH_CRAM_MD5 ? s->sasl_challenge : NULL,
	};
	s->policy->auth(s, &a, auth_done);
}

/* Decodes base64 into out (AUTH_DECODED_MAX + 1); -1 when it is not. */
static long auth_decode(const char *b64, size_t len, char *out)
{
	if (len / 4 * 3 > AUTH_DECODED_MAX)
		return -1;
	return smtp_base64_decode(b64, len, out);
}

/* ---- PLAIN and LOGIN ---------------------------------------------------- */

static void auth_plain(struct conn *c, const char *b64, size_t len)
{
	char dec[AUTH_DECODED_MAX + 1];
	long n = auth_decode(b64, len, dec);
	struct smtp_auth_plain pl;
	if (n < 0 || !smtp_auth_plain_split(dec, (size_t)n, &pl)) {
		auth_bad_data(c);
		return;
	}
	auth_ask(c, pl.authcid, pl.authcid_len, pl.password, pl.password_len);
}

/* One LOGIN answer: printable text, non-empty for the username. */
static long auth_login_decode(const char *b64, size_t len, char *out, bool user)
{
	long n = auth_decode(b64, len, out);
	for (long i = 0; i < n; i++)
		if ((unsigned char)out[i] < ' ')
			return -1;
	return n == 0 && user ? -1 : n;
}

static void auth_login_user(struct conn *c, const char *b64, size_t len)
{
	struct smtp_session *s = conn_session(c);
	char dec[AUTH_DECODED_MAX + 1];
	long n = auth_login_decode(b64, len, dec, true);
	if (n < 0) {
		auth_bad_data(c);
		return;
	}
	free(s->sasl_user);
	s->sasl_user = strndup(dec, (size_t)n);
	s->sasl = SASL_LOGIN_PASS;
	smtp_session_enter(c, SMTP_STATE_AUTH);
	conn_reply(c, 334, NULL, "UGFzc3dvcmQ6");
}

static void auth_login_pass(struct conn *c, const char *b64, size_t len)
{
	struct smtp_session *s = conn_session(c);
	char dec[AUTH_DECODED_MAX + 1];
	long n = auth_login_decode(b64, len, dec, false);
	if (n < 0 || !s->sasl_user) {
		auth_bad_data(c);
		return;
	}
	char *user = s->sasl_user;
	s->sasl_user = NULL;
	auth_ask(c, user, strlen(user), dec, (size_t)n);
	free(user);
}

/* ---- CRAM-MD5 (RFC 2195) ------------------------------------------------ */

static void auth_cram_start(struct conn *c)
{
	unsigned char rnd[8];
	RAND_bytes(rnd, sizeof rnd);
	char challenge[512];
	snprintf(challenge, sizeof challenge, "<%02x%02x%02x%02x%02x%02x%02x%02x.%ld@%s>", rnd[0],
	         rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7], (long)time(NULL), smtp_opt(c)->name);
	free(conn_session(c)->sasl_challenge);
	conn_session(c)->sasl_challenge = strdup(challenge);
	char b64[sizeof challenge * 2];
	smtp_base64_encode(challenge, strlen(challenge), b64);
	conn_session(c)->sasl = SASL_CRAM_RESPONSE;
	conn_reply(c, 334, NULL, "%s", b64);
}

static void auth_cram_response(struct conn *c, const char *b64, size_t len)
{
	struct smtp_session *s = conn_session(c);
	char dec[AUTH_DECODED_MAX + 1];
	long n = auth_decode(b64, len, dec);
	const char *sp = n > 0 ? memrchr(dec, ' ', (size_t)n) : NULL;
	if (!sp || sp == dec || !s->sasl_challenge) {
		auth_bad_data(c);
		return;
	}
	/* Clients may send the digest in upper case; we compare lower case. */
	for (char *p = dec + (sp - dec) + 1; p < dec + n; p++)
		if (*p >= 'A' && *p <= 'F')
			*p = (char)(*p + 32);
	auth_ask(c, dec, (size_t)(sp - dec), sp + 1, (size_t)(dec + n - sp - 1));
}

/* ---- XOAUTH2 ------------------------------------------------------------ */

/* "user=" U "\x01auth=Bearer " T "\x01\x01" */
static void auth_xoauth2(struct conn *c, const char *b64, size_t len)
{
	char dec[AUTH_DECODED_MAX + 1];
	long n = auth_decode(b64, len, dec);
	if (n < 0 || n < 5 || strncmp(dec, "user=", 5) != 0) {
		auth_bad_data(c);
		return;
	}
	const char *user = dec + 5;
	const char *sep = memchr(user, '\x01', (size_t)(dec + n - user));
	const char *auth = sep ? sep + 1 : NULL;
	if (!auth || dec + n - auth < 12 || strncasecmp(auth, "auth=Bearer ", 12) != 0) {
		auth_bad_data(c);
		return;
	}
	const char *tok = auth + 12;
	const char *end = memchr(tok, '\x01', (size_t)(dec + n - tok));
	if (!end) {
		auth_bad_data(c);
		return;
	}
	auth_ask(c, user, (size_t)(sep - user), tok, (size_t)(end - tok));
}

/* ---- the command -------------------------------------------------------- */

void smtp_auth_line(struct conn *c, const char *line, size_t len)
{
	struct smtp_session *s = conn_session(c);
	enum sasl_step step = s->sasl;
	s->sasl = SASL_NONE;
	if (step == SASL_XOAUTH2_ERROR) {
		struct hook_outcome refusal = *s->sasl_refusal; /* auth_failed frees it */
		auth_failed(c, refusal.code, refusal.enhanced, refusal.text);
		return;
	}
	if (len == 1 && line[0] == '*') {
		auth_reset(c);
		conn_reply_known(c, REPLY_AUTH_ABORTED);
		return;
	}
	switch (step) {
	case SASL_PLAIN_RESPONSE: auth_plain(c, line, len); break;
	case SASL_LOGIN_USER: auth_login_user(c, line, len); break;
	case SASL_LOGIN_PASS: auth_login_pass(c, line, len); break;
	case SASL_CRAM_RESPONSE: auth_cram_response(c, line, len); break;
	case SASL_XOAUTH2_RESPONSE: auth_xoauth2(c, line, len); break;
	default: auth_bad_data(c); break;
	}
}

static enum auth_method auth_find(const struct conn *c, const char *name, size_t len)
{
	for (size_t i = 0; i < smtp_opt(c)->nauth_methods; i++) {
		const char *m = auth_method_name(smtp_opt(c)->auth_methods[i]);
		if (smtp_ascii_ieq(m, strlen(m), name, len))
			return smtp_opt(c)->auth_methods[i];
	}
	return 0;
}

enum smtp_reply_id smtp_check_auth(struct conn *c, const struct smtp_cmd *cmd, struct smtp_args *a)
{
	if (conn_session(c)->authenticated)
		return REPLY_AUTH_AGAIN;
	if (!smtp_session_auth_offered(c))
		return REPLY_AUTH_NEEDS_TLS;
	if (conn_session(c)->tx.has_mail)
		return REPLY_AUTH_DURING_MAIL;
	const char *sp = memchr(cmd->arg, ' ', cmd->arg_len);
	size_t mlen = sp ? (size_t)(sp - cmd->arg) : cmd->arg_len;
	a->auth.ir = sp ? sp + 1 : NULL;
	a->auth.ir_len = sp ? cmd->arg_len - mlen - 1 : 0;
	if (mlen == 0 || (a->auth.ir && (a->auth.ir_len == 0 || memchr(a->auth.ir, ' ', a->auth.ir_len))))
		return REPLY_AUTH_SYNTAX;
	if (!(a->auth.method = auth_find(c, cmd->arg, mlen)))
		return REPLY_AUTH_UNKNOWN_MECHANISM;
	return SMTP_CHECK_PASS;
}

void smtp_cmd_auth(struct conn *c, const struct smtp_cmd *cmd, struct smtp_args *a)
{
	enum auth_method m = a->auth.method;
	const char *ir = a->auth.ir;
	size_t irlen = a->auth.ir_len;
	conn_session(c)->sasl_method = m;
	/* 454 (RFC 4954: temporary authentication failure), not 421: only AUTH
	 * is refused, mail may still go where AUTH is optional, and a client
	 * that insists meets maxAuthFailures, which closes the session. */
	if (auth_throttle_blocked(c->remote_addr, smtp_opt(c)->max_auth_failures_per_ip, smtp_opt(c)->auth_failure_window)) {
		conn_log(c, LOG_WARN, "AUTH refused: too many failures from this address", NULL);
		auth_failed(c, SMTP_REPLY_ARGS(REPLY_AUTH_THROTTLED));
		return;
	}
	smtp_session_enter(c, SMTP_STATE_AUTH);
	/* RFC 4954: "=" is an empty initial response. */
	if (ir && irlen == 1 && ir[0] == '=')
		irlen = 0;
	switch (m) {
	case AUTH_PLAIN:
		if (ir) {
			auth_plain(c, ir, irlen);
		} else {
			conn_session(c)->sasl = SASL_PLAIN_RESPONSE;
			conn_reply(c, 334, NULL, "%s", "");
		}
		break;
	case AUTH_LOGIN:
		if (ir) {
			auth_login_user(c, ir, irlen);
		} else {
			conn_session(c)->sasl = SASL_LOGIN_USER;
			conn_reply(c, 334, NULL, "VXNlcm5hbWU6");
		}
		break;
	case AUTH_CRAM_MD5:
		if (ir) {
			auth_bad_data(c); /* CRAM-MD5 has no initial response */
			return;
		}
		auth_cram_start(c);
		break;
	case AUTH_XOAUTH2:
		if (ir) {
			auth_xoauth2(c, ir, irlen);
		} else {
			conn_session(c)->sasl = SASL_XOAUTH2_RESPONSE;
			conn_reply(c, 334, NULL, "%s", "");
		}
		break;
	}
}
