/* smtp_body — the message: DATA and BDAT (RFC 3030) start it, the body
 * streams through the decoder and maxLineLength/size checks to the
 * policy, and after the end the replies (one per recipient in LMTP) come
 * from the core's limits and the data verdict. */
#include "smtp/session.h"
#include "smtp/session_commands.h"
#include "smtp/smtp_session.h"

#include "base/freelist.h"
#include "base/metrics.h"
#include "net/conn.h"
#include "smtp/reply.h"
#include "proto/replies.h"
#include "smtp/body_verdict.h"
#include "smtp/smtp_log.h"

#include <stdlib.h>
#include <string.h>

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
		conn_reply_hook_text(c, smtp_opt(c)->lmtp ? REPLY_MESSAGE_ACCEPTED : REPLY_MESSAGE_QUEUED, b->outcome.text);
	else
		conn_reply_known(c, smtp_opt(c)->lmtp ? REPLY_MESSAGE_ACCEPTED : REPLY_MESSAGE_QUEUED);
}

static void session_data_finish(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	struct body *b = s->body;
	size_t reply_at = c->out.len;
	if (!smtp_opt(c)->lmtp) {
		session_message_reply(c, NULL);
	} else {
		/* RFC 2033 4.2: one reply per accepted recipient, in order. */
		for (unsigned i = 0; i < s->tx.nrcpt; i++)
			session_message_reply(c, b->rcpt_replies ? &b->rcpt_replies[i] : NULL);
	}
	metrics_message(smtp_session_reply_code(c->out.data + reply_at));
	smtp_log_message(c, c->out.data + reply_at, c->out.len - reply_at);
	s->hook_seconds = 0;
	smtp_session_body_free(c);
	s->transactions++;
	s->unknown_commands = 0;
	s->errors = 0;
	s->junk_commands = 0;
	smtp_session_enter(c, SMTP_STATE_COMMAND);
	smtp_session_reset_transaction(c);
	if (s->stopping)
		conn_end(c, SMTP_REPLY_ARGS(REPLY_SHUTTING_DOWN));
}

static void session_data_done(struct smtp_session *s, const struct policy_verdict *v)
{
	struct body *b = s->body;
	b->hook_done = true;
	hook_outcome_copy(&b->outcome, &v->reply);
	b->rcpt_replies = v->rcpt_replies;
	smtp_session_take_verdict(s, v);
	/* At the end the body goes whole (smtp_session_body_free); a verdict
	 * before the end leaves the rest of the body to drain, unread. */
	if (b->ended) {
		session_data_finish(s->conn);
		return;
	}
	buf_free(&b->pending);
	message_free(&b->msg);
}

/* Message bodies freed, kept for the next messages (base/freelist.h says why). */
static struct freelist body_spare = FREELIST_INIT(sizeof(struct body), 16);

void smtp_session_body_free(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	struct body *b = s->body;
	if (!b)
		return;
	s->policy->message_end(s);
	free(b->rcpt_replies);
	buf_free(&b->pending);
	message_free(&b->msg);
	freelist_free(&body_spare, b);
	s->body = NULL;
}

/* A message begins: the body state, and the question about it. */
static void session_body_begin(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	struct body *b = freelist_calloc(&body_spare);
	smtp_data_init(&b->dec, smtp_opt(c)->bare_line_endings);
	s->body = b;
	s->policy->data(s, session_data_done);
}

enum smtp_reply_id smtp_check_data(struct conn *c, const struct smtp_cmd *cmd, struct smtp_args *a)
{
	if (conn_session(c)->tx.binarymime)
		return REPLY_BINARYMIME_NEEDS_BDAT;
	return cmd->arg_len ? REPLY_DATA_SYNTAX : SMTP_CHECK_PASS;
}

void smtp_cmd_data(struct conn *c, const struct smtp_cmd *cmd, struct smtp_args *a)
{
	smtp_session_enter(c, SMTP_STATE_DATA);
	conn_reply_known(c, REPLY_DATA_GO_AHEAD);
	session_body_begin(c);
}

/* n message bytes are in the spare room of the pending buffer: count them
 * and hand them on (or drop them when nobody will read them). */
static bool session_body_bytes(struct conn *c, size_t n)
{
	struct smtp_session *s = conn_session(c);
	struct body *b = s->body;
	b->byte_length += n;
	if (smtp_opt(c)->size && b->byte_length > smtp_opt(c)->size)
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
	size_t max = smtp_opt(c)->max_line_length;
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
	if (smtp_opt(c)->max_line_length)
		session_check_lines(c, out, out_len);
	/* The end first: a reader handed the last bytes learns there are no
	 * more without waiting once again (a small message in one read wakes
	 * onData once). */
	if (done)
		session_body_end(c);
	if (session_body_bytes(c, out_len)) {
		if (in_place)
			s->policy->body(s, out, out_len);
		else
			b->pending.len += out_len;
	}
	/* onData has read it all and answered: the message is over. */
	if (s->state != SMTP_STATE_DATA)
		return used;
	s->policy->body_more(s);
	/* onData may have answered and the message ended: b is gone then. */
	if (s->state == SMTP_STATE_DATA && s->body->ended && s->body->hook_done)
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

enum smtp_reply_id smtp_check_bdat(struct conn *c, const struct smtp_cmd *cmd, struct smtp_args *a)
{
	if (session_parse_bdat(cmd, &a->bdat.size, &a->bdat.last))
		return SMTP_CHECK_PASS;
	/* Without a size the chunk cannot be skipped: the session ends. */
	conn_end(c, SMTP_REPLY_ARGS(REPLY_BDAT_SYNTAX));
	return SMTP_CHECK_SENT;
}

void smtp_cmd_bdat(struct conn *c, const struct smtp_cmd *cmd, struct smtp_args *a)
{
	struct smtp_session *s = conn_session(c);
	s->bdat_remaining = a->bdat.size;
	s->bdat_last = a->bdat.last;
	smtp_session_enter(c, SMTP_STATE_BDAT);
	/* A refused chunk is still read (RFC 3030 2): its reply waits for it. */
	s->bdat_refusal = SMTP_CHECK_PASS;
	if (!s->tx.chunking) {
		if (a->unmet != SMTP_CHECK_PASS) {
			s->bdat_refusal = a->unmet;
			if (s->bdat_remaining == 0)
				session_bdat_chunk_done(c);
			return;
		}
		s->tx.chunking = true;
		session_body_begin(c);
	}
	if (s->bdat_remaining == 0 && s->state == SMTP_STATE_BDAT)
		session_bdat_chunk_done(c);
}

/* The end of a chunk: its reply, or the message's after LAST. */
static void session_bdat_chunk_done(struct conn *c)
{
	struct body *b = conn_session(c)->body;
	if (conn_session(c)->bdat_refusal != SMTP_CHECK_PASS) {
		smtp_session_enter(c, SMTP_STATE_COMMAND);
		smtp_session_refuse(c, conn_session(c)->bdat_refusal);
		return;
	}
	if (!conn_session(c)->bdat_last) {
		smtp_session_enter(c, SMTP_STATE_COMMAND);
		conn_reply(c, 250, "2.0.0", "%llu octets received",
		           (unsigned long long)b->byte_length);
		return;
	}
	smtp_session_enter(c, SMTP_STATE_DATA); /* the reply waits for onData */
	session_body_end(c);
	conn_session(c)->policy->body_more(conn_session(c));
	if (conn_session(c)->state == SMTP_STATE_DATA && conn_session(c)->body->hook_done) /* else b is gone, see above */
		session_data_finish(c);
}

size_t smtp_session_bdat(struct conn *c, const char *p, size_t n)
{
	struct smtp_session *s = conn_session(c);
	size_t take = n < s->bdat_remaining ? n : (size_t)s->bdat_remaining;
	if (s->bdat_refusal == SMTP_CHECK_PASS && take) {
		if (session_body_bytes(c, take))
			s->policy->body(s, p, take);
		else
			s->policy->body_more(s);
	}
	s->bdat_remaining -= take;
	if (s->bdat_remaining == 0 && s->state == SMTP_STATE_BDAT)
		session_bdat_chunk_done(c);
	return take;
}
