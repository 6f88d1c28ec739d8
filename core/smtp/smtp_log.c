#include "smtp/smtp_log.h"
#include "smtp/session.h"

#include "base/buf.h"
#include "base/log.h"
#include "net/conn.h"

#include <string.h>

/* A reply's text is at most ~1 KiB; a log line need not carry more than
 * this of it (queue ids come early). */
#define LOG_REPLY_MAX 512

/* The reply line at *p (without its CRLF), bounded, in *line and *len; *p
 * moves past it. */
static void log_next_reply(const char **p, const char *end, const char **line, size_t *len)
{
	const char *eol = memchr(*p, '\r', (size_t)(end - *p));
	size_t n = (size_t)((eol ? eol : end) - *p);
	*line = *p;
	*len = n < LOG_REPLY_MAX ? n : LOG_REPLY_MAX;
	*p = eol && eol + 2 <= end ? eol + 2 : end;
}

/* The field to=: the recipients' addresses, comma-separated: all of them
 * (first = 0), or only the first-th (LMTP, one line per recipient). One
 * address is logged as it is; several are joined in a buffer kept for
 * the next message. */
static void log_recipients(const struct smtp_session *s, unsigned first)
{
	static struct buf to;
	unsigned n = s->tx.nrcpt;
	unsigned from = first ? first : 1, last = first ? first : n;
	if (from == last && from <= n) {
		const char *a = rcpt_set_spelling(s->rcpts, from);
		log_field("to", a ? a : "", a ? strlen(a) : 0);
		return;
	}
	to.len = 0;
	for (unsigned i = from; i <= last && i <= n; i++) {
		const char *a = rcpt_set_spelling(s->rcpts, i);
		if (a && to.len)
			buf_append(&to, ",", 1);
		if (a)
			buf_append(&to, a, strlen(a));
	}
	log_field("to", to.len ? to.data : "", to.len);
}

/* A NULL value leaves the field out, as in conn_log. */
static void log_string(const char *key, const char *value)
{
	if (value)
		log_field(key, value, strlen(value));
}

/* One line per message, the most frequent line there is: made field by
 * field into the log's buffer, with no formatting call in between. */
void smtp_log_message(struct conn *c, const char *replies, size_t len)
{
	struct smtp_session *s = conn_session(c);
	if (!log_enabled(LOG_INFO))
		return;
	const char *from = s->tx.has_mail ? s->tx.mail_from : NULL;
	const char *tls, *cipher;
	smtp_session_tls_names(c, &tls, &cipher);
	/* LMTP: RFC 2033 gives a reply per recipient, each its own verdict. */
	unsigned lines = smtp_opt(c)->lmtp ? s->tx.nrcpt : 1;
	const char *p = replies, *end = replies + len;
	for (unsigned i = 1; i <= lines && p < end; i++) {
		const char *reply;
		size_t rlen;
		log_next_reply(&p, end, &reply, &rlen);
		log_begin(LOG_INFO, conn_session_id(c), "message");
		log_string("client", c->remote_addr);
		log_string("tls", tls);
		log_string("cipher", cipher);
		log_string("user", s->user);
		log_string("from", from);
		log_recipients(s, smtp_opt(c)->lmtp ? i : 0);
		log_field_uint("size", (unsigned long long)s->body->byte_length);
		log_field("reply", reply, rlen);
		log_field_ms("hook_ms", s->hook_seconds);
		log_end();
	}
}

void smtp_log_refused(struct conn *c, bool rcpt, const char *address, const char *reply, size_t len)
{
	struct smtp_session *s = conn_session(c);
	if (!log_enabled(LOG_INFO))
		return;
	const char *from = !rcpt ? address : s->tx.has_mail ? s->tx.mail_from : NULL;
	const char *line;
	size_t n;
	log_next_reply(&reply, reply + len, &line, &n);
	log_begin(LOG_INFO, conn_session_id(c), rcpt ? "recipient refused" : "sender refused");
	log_string("client", c->remote_addr);
	log_string("from", from);
	log_string("to", rcpt ? address : NULL);
	log_field("reply", line, n);
	log_end();
}
