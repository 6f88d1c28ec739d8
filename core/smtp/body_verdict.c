#include "smtp/body_verdict.h"
#include "smtp/session.h"

#include "net/conn.h"
#include "proto/replies.h"

#include <stdio.h>

int body_verdict(const struct conn *c, struct body_refusal *r)
{
	struct smtp_session *s = conn_session(c);
	const struct body *b = s->body;
	/* In this order: the size first, as smtp-server answers it. */
	if (b->size_exceeded) {
		r->code = 552;
		r->enhanced = "5.3.4";
		snprintf(r->text, sizeof r->text, "Error: message exceeds fixed maximum message size %llu",
		         (unsigned long long)smtp_opt(c)->size);
	} else if (b->dec.bare_seen && smtp_opt(c)->bare_line_endings == SMTP_BARE_REJECT) {
		const struct smtp_reply *bare = &smtp_replies[REPLY_BARE_LINE_ENDING];
		r->code = bare->code;
		r->enhanced = bare->enhanced;
		snprintf(r->text, sizeof r->text, "%s", bare->text);
	} else if (b->line_too_long) {
		r->code = 554;
		r->enhanced = "5.6.0";
		snprintf(r->text, sizeof r->text, "Error: a message line is longer than %zu octets",
		         smtp_opt(c)->max_line_length);
	} else {
		return 0;
	}
	return r->code;
}
