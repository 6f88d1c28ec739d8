#include "smtp/session.h"

#include "base/freelist.h"
#include "net/conn_tls.h"
#include "net/server.h"
#include "proto/replies.h"
#include "smtp/reply.h"
#include "smtp/smtp_rdns.h"
#include "smtp/smtp_session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct smtp_policy *policy_current;

void smtp_policy_use(const struct smtp_policy *p)
{
	policy_current = p;
}

/* Body bytes onData has not taken yet, beyond which reading waits. */
#define SESSION_PENDING_HIGH (1024 * 1024)
/* Bytes of a line with no end yet, beyond which the session ends. */
#define SESSION_UNTERMINATED_MAX (1024 * 1024)

static const struct conn_owner_ops session_ops;

/* Sessions freed, kept for the next connections (base/freelist.h says why). */
static struct freelist session_spare = FREELIST_INIT(sizeof(struct smtp_session), 16);
/* The address buffers of sessions that have had a MAIL or RCPT. */
static struct freelist paths_spare = FREELIST_INIT(sizeof(struct session_paths), 16);

char *smtp_session_set_name(char **field, const char *name, size_t len)
{
	if (len > SMTP_SESSION_NAME_MAX)
		len = SMTP_SESSION_NAME_MAX;
	free(*field);
	char *p = malloc(len + 1);
	if (!p)
		abort();
	memcpy(p, name, len);
	p[len] = '\0';
	return *field = p;
}

_Static_assert(SMTP_SESSION_HOSTNAME_BUF >= sizeof ((struct conn *)0)->remote_addr + 2, "[address] fits");

const char *smtp_session_client_hostname(const struct smtp_session *s, char buf[SMTP_SESSION_HOSTNAME_BUF])
{
	if (s->client_hostname)
		return s->client_hostname;
	size_t n = strlen(s->conn->remote_addr);
	buf[0] = '[';
	memcpy(buf + 1, s->conn->remote_addr, n);
	memcpy(buf + 1 + n, "]", 2);
	return buf;
}

void smtp_session_need_paths(struct smtp_session *s)
{
	if (s->judged)
		return;
	struct session_paths *p = freelist_alloc(&paths_spare);
	p->rcpts = (struct rcpt_set){0};
	s->judged = p->judged;
	s->tx.mail_from = p->mail_from;
	s->rcpts = &p->rcpts;
}

void smtp_session_accept(struct conn *c)
{
	struct smtp_session *s = freelist_calloc(&session_spare);
	s->conn = c;
	/* The script generation the session runs: c's options live in it. */
	s->cfg = c->srv->cfg;
	c->srv->ops->ref(s->cfg);
	s->policy = policy_current;
	s->policy->attach(s);
	/* AUTH lines may be longer than commands (RFC 4954 4: 12,288 octets);
	 * smtp_session_line holds other commands to maxCommandLength. */
	size_t max = smtp_opt(c)->max_command_length;
	smtp_line_reader_init(&s->lines, max > SMTP_AUTH_LINE_MAX ? max : SMTP_AUTH_LINE_MAX);
	c->ops = &session_ops;
	c->owner = s;
}

/* Frees c's session and what it holds, then c; the configuration last. */
static void session_free(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	struct listener_set *cfg = s->cfg;
	const struct server_ops *ops = c->srv->ops;
	smtp_session_body_free(c);
	s->policy->detach(s);
	free(s->user);
	free(s->x_peer);
	free(s->sasl_user); /* or the challenge, or the refusal: they share it */
	free(s->client_hostname);
	free(s->helo_name);
	if (s->judged) {
		rcpt_set_free(s->rcpts);
		freelist_free(&paths_spare, s->judged);
	}
	freelist_free(&session_spare, s);
	c->owner = NULL;
	conn_free(c);
	ops->unref(cfg);
}

static void session_on_open(struct conn *c, const struct proxy_info *pi)
{
	struct smtp_session *s = conn_session(c);
	s->policy->opened(s, pi);
	if (smtp_opt(c)->secure) {
		smtp_session_enter(c, SMTP_STATE_TLS);
		conn_tls_begin(c); /* onConnect follows the handshake */
		return;
	}
	smtp_session_connect(c);
	conn_flush(c);
}

/* The catalogue's reply with the server's name before its text, sent past
 * the buffer: the session has not begun. */
static void session_on_refused(struct conn *c, enum conn_refusal why)
{
	static const enum smtp_reply_id replies[] = {
		[CONN_REFUSED_CLIENTS] = REPLY_TOO_MANY_CLIENTS,
		[CONN_REFUSED_PEER] = REPLY_TOO_MANY_CONNECTIONS,
		[CONN_REFUSED_RATE] = REPLY_CONNECTION_RATE,
	};
	const struct smtp_reply *r = &smtp_replies[replies[why]];
	bool enhanced = !smtp_opt(c)->hide_enhanced;
	char line[320];
	snprintf(line, sizeof line, "%d %s%s%s %s\r\n", r->code, enhanced ? r->enhanced : "", enhanced ? " " : "",
	         smtp_opt(c)->name, r->text);
	conn_send_now(c, line);
}

/* Besides the transport's back-pressure: does the session take input now? */
static bool session_wants_input(const struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	if (s->state != SMTP_STATE_COMMAND && s->state != SMTP_STATE_AUTH && s->state != SMTP_STATE_DATA &&
	    s->state != SMTP_STATE_BDAT)
		return false;
	if (s->state == SMTP_STATE_DATA || s->state == SMTP_STATE_BDAT) {
		if (!s->body)
			return true; /* a refused BDAT chunk: read and dropped */
		if (s->body->ended)
			return false; /* until onData has answered */
		if (s->policy->waiting(s) == POLICY_DECIDING)
			return buf_used(&s->body->pending) <= SESSION_PENDING_HIGH;
		return true;
	}
	/* Between BDAT chunks onData waits for the next one: commands go on. */
	enum policy_wait w = s->policy->waiting(s);
	return w == POLICY_IDLE || (s->tx.chunking && w == POLICY_READING);
}

static bool session_streaming(const struct conn *c)
{
	enum smtp_state st = conn_session(c)->state;
	return st == SMTP_STATE_DATA || st == SMTP_STATE_BDAT;
}

/* Consumes buffered input until a hook suspends it or input runs out. */
static void session_on_input(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	while (buf_used(&c->in) > 0 && !conn_input_paused(c) && session_wants_input(c)) {
		char *p = c->in.data + c->in.off; /* ours: the body is decoded in place */
		size_t n = buf_used(&c->in);
		if (s->state == SMTP_STATE_DATA) {
			buf_consume(&c->in, smtp_session_data(c, p, n));
			continue;
		}
		if (s->state == SMTP_STATE_BDAT) {
			buf_consume(&c->in, smtp_session_bdat(c, p, n));
			continue;
		}
		const char *line;
		size_t line_len, used;
		enum smtp_line_status st = smtp_line_next(&s->lines, p, n, &line, &line_len, &used);
		if (st == SMTP_LINE_NEED_MORE)
			break;
		if (st == SMTP_LINE_SKIPPING) {
			buf_consume(&c->in, used);
			/* Megabytes with no line end are not a command: stop reading. */
			if ((s->skipped += used) > SESSION_UNTERMINATED_MAX) {
				conn_end(c, SMTP_REPLY_ARGS(REPLY_LINE_UNTERMINATED));
				break;
			}
			continue;
		}
		s->skipped = 0;
		conn_line_progress(c);
		/* The line stays valid until consumed: handlers may read it first. */
		if (st == SMTP_LINE_TOO_LONG)
			smtp_session_line_too_long(c);
		else
			smtp_session_line(c, line, line_len);
		if (!conn_is_ending(c))
			buf_consume(&c->in, used);
		if (c->starttls_pending) {
			/* Plaintext pipelined after STARTTLS is never executed
			 * (CVE-2011-0411). */
			buf_consume(&c->in, buf_used(&c->in));
			break;
		}
	}
	buf_release_if_empty(&c->in);
}

static void session_servername_done(struct smtp_session *s, SSL_CTX *ctx, bool refused)
{
	conn_tls_servername_answer(s->conn, ctx, refused);
}

static void session_on_servername(struct conn *c, const char *name)
{
	struct smtp_session *s = conn_session(c);
	s->policy->servername(s, name, session_servername_done);
}

static void session_on_timeout(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	/* Time spent waiting on the script is not the client's idleness. */
	if (s->policy->waiting(s) == POLICY_DECIDING) {
		conn_idle_restart(c);
		return;
	}
	conn_log(c, LOG_INFO, "timeout", NULL);
	if (conn_is_handshaking(c)) {
		smtp_session_tls_failed(c, "ERR_TLS_HANDSHAKE_TIMEOUT", "TLS handshake timeout");
		return;
	}
	conn_end(c, SMTP_REPLY_ARGS(REPLY_TIMEOUT));
}

static void session_on_stop(struct conn *c, bool now)
{
	if (now) {
		conn_end(c, SMTP_REPLY_ARGS(REPLY_SHUTTING_DOWN));
		return;
	}
	conn_session(c)->stopping = true;
	smtp_session_stop(c);
	if (!conn_is_closed(c))
		conn_flush(c);
}

static void session_on_closed(struct conn *c)
{
	smtp_session_enter(c, SMTP_STATE_CLOSING);
	smtp_session_cancel_greeting_delay(c);
	smtp_rdns_cancel(c);
	conn_session(c)->policy->cancel(conn_session(c));
	smtp_session_body_free(c);
}

static void session_on_close_done(struct smtp_session *s, const struct policy_verdict *v)
{
	session_free(s->conn);
}

/* The policy's last word (onClose), then the session and its connection go. */
static void session_on_release(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	s->policy->closed(s, session_on_close_done);
}

static const struct conn_owner_ops session_ops = {
	.on_open = session_on_open,
	.on_refused = session_on_refused,
	.on_input = session_on_input,
	.wants_input = session_wants_input,
	.streaming = session_streaming,
	.on_servername = session_on_servername,
	.on_tls_done = smtp_session_secured,
	.on_tls_failed = smtp_session_tls_failed,
	.on_timeout = session_on_timeout,
	.on_stop = session_on_stop,
	.on_closed = session_on_closed,
	.on_release = session_on_release,
};
