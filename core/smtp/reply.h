/* reply — SMTP replies queued on a connection's output: code, enhanced
 * status code (unless hideENHANCEDSTATUSCODES), text without control
 * bytes; and the final reply that ends a session. */
#ifndef LUASMTPD_SMTP_REPLY_H
#define LUASMTPD_SMTP_REPLY_H

#include "net/conn.h"
#include "proto/replies.h"

#include <string.h>

struct hook_outcome;

/* Queues a reply line; multi-line replies call this once per line. */
void conn_reply(struct conn *c, int code, const char *enhanced, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Queues a non-final line of a multi-line reply ("250-PIPELINING"). */
void conn_reply_more(struct conn *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* "250-" at p: code (100..999) and its separator. */
static inline void reply_code_put(char *p, int code, char sep)
{
	p[0] = (char)('0' + code / 100);
	p[1] = (char)('0' + code / 10 % 10);
	p[2] = (char)('0' + code % 10);
	p[3] = sep;
}
/* The same for a literal text of ours, len bytes, printable, code
 * 100..999: one copy, nothing to format or clean. Inline, so that a
 * constant code is written as it is (EHLO's keywords, eight on every EHLO). */
static inline void conn_reply_more_text(struct conn *c, int code, const char *text, size_t len)
{
	if (conn_is_closed(c))
		return;
	char *p = buf_reserve(&c->out, 4 + len + 2);
	reply_code_put(p, code, '-');
	memcpy(p + 4, text, len);
	memcpy(p + 4 + len, "\r\n", 2);
	c->out.len += 4 + len + 2;
}
/* Queues the reply a hook's rejection asks for. */
void conn_reply_outcome(struct conn *c, const struct hook_outcome *o);
/* A hook's text in the catalogue's reply id: its enhanced code goes first
 * unless the text starts with its own ("2.6.1 queued as X"). */
void conn_reply_hook_text(struct conn *c, enum smtp_reply_id id, const char *text);
/* Queues a reply of the catalogue (smtp_replies.h). */
void conn_reply_known(struct conn *c, enum smtp_reply_id id);
/* Queues a final reply, then closes once it is written (the hook in flight
 * is dropped, unread input too). */
void conn_end(struct conn *c, int code, const char *enhanced, const char *text);

#endif
