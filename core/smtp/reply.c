#include "smtp/reply.h"

#include "smtp/options.h"
#include "smtp/session.h"

#include <stdio.h>
#include <stdarg.h>
#include <string.h>

/* "250-" or "250 2.1.0 " without printf: it comes with every reply. */
static void conn_reply_prefix(struct buf *out, int code, char sep, const char *enhanced)
{
	size_t elen = enhanced ? strlen(enhanced) : 0;
	if (code < 100 || code > 999 || elen > 32) {
		buf_appendf(out, "%d%c%s%s", code, sep, elen ? enhanced : "", elen ? " " : "");
		return;
	}
	char *p = buf_reserve(out, 5 + elen + 1);
	reply_code_put(p, code, sep);
	out->len += 4;
	if (elen) {
		memcpy(p + 4, enhanced, elen);
		p[4 + elen] = ' ';
		out->len += elen + 1;
	}
}

static void conn_vreply(struct conn *c, int code, char sep, const char *enhanced, const char *fmt,
                        va_list ap)
{
	if (conn_is_closed(c))
		return;
	conn_reply_prefix(&c->out, code, sep, enhanced && !smtp_opt(c)->hide_enhanced ? enhanced : NULL);
	if (!strchr(fmt, '%')) { /* a literal of ours: nothing to format or clean */
		buf_append(&c->out, fmt, strlen(fmt));
		buf_append(&c->out, "\r\n", 2);
		return;
	}
	char text[1024];
	const char *from = text;
	size_t n;
	if (strcmp(fmt, "%s") == 0) { /* a hook's text, most often: no printf */
		from = va_arg(ap, const char *);
		n = strnlen(from, sizeof text - 1);
	} else {
		int r = vsnprintf(text, sizeof text, fmt, ap);
		n = r < 0 ? 0 : (size_t)r < sizeof text ? (size_t)r : sizeof text - 1;
	}
	/* A reply never carries a control byte, whatever was formatted into it. */
	char *w = buf_reserve(&c->out, n + 2);
	for (size_t i = 0; i < n; i++)
		w[i] = (unsigned char)from[i] < ' ' || from[i] == 0x7f ? ' ' : from[i];
	memcpy(w + n, "\r\n", 2);
	c->out.len += n + 2;
}

void conn_reply(struct conn *c, int code, const char *enhanced, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	conn_vreply(c, code, ' ', enhanced, fmt, ap);
	va_end(ap);
}

void conn_reply_more(struct conn *c, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	conn_vreply(c, code, '-', NULL, fmt, ap);
	va_end(ap);
}

void conn_reply_outcome(struct conn *c, const struct hook_outcome *o)
{
	conn_reply(c, o->code, o->enhanced, "%s", o->text);
}

void conn_reply_hook_text(struct conn *c, enum smtp_reply_id id, const char *text)
{
	const struct smtp_reply *r = &smtp_replies[id];
	conn_reply(c, r->code, smtp_has_enhanced(text) ? NULL : r->enhanced, "%s", text);
}

void conn_reply_known(struct conn *c, enum smtp_reply_id id)
{
	const struct smtp_reply *r = &smtp_replies[id];
	if (conn_is_closed(c))
		return;
	/* Catalogue texts are checked when loaded: printable, nothing to clean. */
	if (smtp_opt(c)->hide_enhanced)
		buf_append(&c->out, r->bare, r->bare_len);
	else
		buf_append(&c->out, r->line, r->line_len);
}


void conn_end(struct conn *c, int code, const char *enhanced, const char *text)
{
	if (conn_is_ending(c))
		return;
	if (!conn_is_open(c)) { /* PROXY header, TLS handshake */
		conn_close(c, text); /* no channel to say it on */
		return;
	}
	conn_reply(c, code, enhanced, "%s", text);
	smtp_session_enter(c, SMTP_STATE_CLOSING);
	conn_session(c)->policy->cancel(conn_session(c));
	/* A refusal may meet input still unread; a 221 answers a client that
	 * said QUIT and is done talking. */
	conn_close_when_flushed(c, code >= 400);
}
