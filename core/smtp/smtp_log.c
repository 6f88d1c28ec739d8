#include "smtp/smtp_log.h"
#include "smtp/session.h"

#include "base/buf.h"
#include "net/conn.h"

#include <stdio.h>
#include <string.h>

/* A reply's text is at most ~1 KiB; a log line need not carry more than
 * this of it (queue ids come early). */
#define LOG_REPLY_MAX 512

/* The reply line at *p (without its CRLF), bounded; *p moves past it. */
static void log_next_reply(const char **p, const char *end, char *out, size_t outlen)
{
	const char *eol = memchr(*p, '\r', (size_t)(end - *p));
	size_t n = (size_t)((eol ? eol : end) - *p);
	snprintf(out, outlen, "%.*s", (int)(n < outlen - 1 ? n : outlen - 1), *p);
	*p = eol && eol + 2 <= end ? eol + 2 : end;
}

/* The recipients' addresses, comma-separated: all of them (first = 0), or
 * only the first-th (LMTP, one line per recipient). */
static void log_recipients(const struct smtp_session *s, unsigned first, struct buf *to)
{
	to->len = 0;
	unsigned n = s->tx.nrcpt;
	for (unsigned i = first ? first : 1; i <= (first ? first : n) && i <= n; i++) {
		const char *a = rcpt_set_spelling(s->rcpts, i);
		if (a && to->len)
			buf_append(to, ",", 1);
		if (a)
			buf_append(to, a, strlen(a));
	}
	buf_append(to, "", 1);
}

void smtp_log_message(struct conn *c, const char *replies, size_t len)
{
	struct smtp_session *s = conn_session(c);
	if (!log_enabled(LOG_INFO))
		return;
	const char *from = s->tx.has_mail ? s->tx.mail_from : NULL;
	const char *tls, *cipher;
	smtp_session_tls_names(c, &tls, &cipher);
	char size[24], ms[32], reply[LOG_REPLY_MAX + 1];
	snprintf(size, sizeof size, "%llu", (unsigned long long)s->body->byte_length);
	snprintf(ms, sizeof ms, "%.3f", s->hook_seconds * 1000);
	/* LMTP: RFC 2033 gives a reply per recipient, each its own verdict. */
	unsigned lines = smtp_opt(c)->lmtp ? s->tx.nrcpt : 1;
	struct buf to = {0};
	const char *p = replies, *end = replies + len;
	for (unsigned i = 1; i <= lines && p < end; i++) {
		log_recipients(s, smtp_opt(c)->lmtp ? i : 0, &to);
		log_next_reply(&p, end, reply, sizeof reply);
		conn_log(c, LOG_INFO, "message", "client", c->remote_addr, "tls", tls, "cipher", cipher, "user",
		         s->user, "from", from, "to", to.data, "size", size, "reply", reply, "hook_ms", ms, NULL);
	}
	buf_free(&to);
}

void smtp_log_refused(struct conn *c, bool rcpt, const char *address, const char *reply, size_t len)
{
	struct smtp_session *s = conn_session(c);
	if (!log_enabled(LOG_INFO))
		return;
	const char *from = !rcpt ? address : s->tx.has_mail ? s->tx.mail_from : NULL;
	char line[LOG_REPLY_MAX + 1];
	log_next_reply(&reply, reply + len, line, sizeof line);
	conn_log(c, LOG_INFO, rcpt ? "recipient refused" : "sender refused", "client", c->remote_addr, "from",
	         from, "to", rcpt ? address : NULL, "reply", line, NULL);
}
