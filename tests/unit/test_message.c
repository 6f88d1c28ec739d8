/*
 * test_message.c — the header block and its edits (smtp/message.h): where
 * the block ends (CRLF, bare LF, split anywhere, no blank line, the
 * limit), each edit's output, folding, refusals, and the body left to the
 * caller byte for byte.
 */
#include "smtp/message.h"
#include "unit.h"

#include <stdlib.h>
#include <string.h>

/* Feeds msg in pieces of step bytes (0: at once), ends it, and returns the
 * written-out header followed by the rest, as a writer would put it. */
static struct buf run(struct message *m, const char *msg, size_t step)
{
	size_t len = strlen(msg), at = 0;
	struct buf body = {0}, out = {0};
	while (at < len) {
		size_t n = step && len - at > step ? step : len - at;
		size_t took = message_take(m, msg + at, n);
		buf_append(&body, msg + at + took, n - took);
		at += n;
	}
	message_end(m);
	CHECK(message_ready(m));
	message_emit(m, &out);
	if (buf_used(&body))
		buf_append(&out, buf_head(&body), buf_used(&body));
	buf_free(&body);
	return out;
}

#define CHECK_OUT(out, lit) CHECK_MEM(buf_head(&(out)), buf_used(&(out)), lit)

static void test_split_anywhere(void)
{
	const char *msg = "From: a@b\r\nSubject: hi\r\n there\r\n\r\nbody\r\n\r\nmore\r\n";
	for (size_t step = 0; step < 8; step++) {
		struct message m = {0};
		CHECK(!message_add(&m, "X-A", 3, "1", 1));
		struct buf out = run(&m, msg, step);
		CHECK_OUT(out, "From: a@b\r\nSubject: hi\r\n there\r\nX-A: 1\r\n\r\nbody\r\n\r\nmore\r\n");
		buf_free(&out);
		message_free(&m);
	}
}

static void test_edits(void)
{
	struct message m = {0};
	CHECK(!message_insert(&m, 0, "Received", 8, "from x", 6));
	CHECK(!message_remove(&m, "subject", 7));
	CHECK(!message_add(&m, "X-Spam-Status", 13, "No", 2));
	struct buf out = run(&m, "Subject: one\r\nTo: t\r\nSUBJECT: two\r\n\tcontinued\r\n\r\nSubject: body\r\n", 0);
	CHECK_OUT(out, "Received: from x\r\nTo: t\r\nX-Spam-Status: No\r\n\r\nSubject: body\r\n");
	buf_free(&out);
	message_free(&m);
}

static void test_milter_edits(void)
{
	struct message m = {0};
	CHECK(!message_change(&m, "X-A", 3, 2, "new", 3));
	CHECK(!message_change(&m, "x-a", 3, 1, NULL, 0));
	CHECK(!message_change(&m, "X-None", 6, 1, "added", 5));
	CHECK(!message_change(&m, "X-None2", 7, 1, NULL, 0));
	CHECK(!message_insert(&m, 1, "X-I", 3, "", 0));
	CHECK(!message_insert(&m, 99, "X-Last", 6, "z", 1));
	struct buf out = run(&m, "X-A: 1\r\nX-B: b\r\nX-A: 2\r\n\r\n", 0);
	CHECK_OUT(out, "X-B: b\r\nX-I:\r\nX-A: new\r\nX-None: added\r\nX-Last: z\r\n\r\n");
	buf_free(&out);
	message_free(&m);
}

static void test_refusals(void)
{
	struct message m = {0};
	CHECK_STR(message_add(&m, "Bad Name", 8, "v", 1), "bad header name");
	CHECK_STR(message_add(&m, "Bad:", 4, "v", 1), "bad header name");
	CHECK_STR(message_add(&m, "", 0, "v", 1), "bad header name");
	CHECK_STR(message_add(&m, "\xc3\xa9", 2, "v", 1), "bad header name");
	CHECK_STR(message_add(&m, "X", 1, "a\r\nb", 4), "bad header value");
	CHECK_STR(message_add(&m, "X", 1, "a\nb", 3), "bad header value");
	CHECK_STR(message_add(&m, "X", 1, "a\rb", 3), "bad header value");
	CHECK_STR(message_add(&m, "X", 1, "a\0b", 3), "bad header value");
	CHECK_STR(message_add(&m, "X", 1, "a\r\n", 3), "bad header value");
	CHECK(!message_add(&m, "X", 1, "a\r\n\tb\n c \xc3\xa9", 11));
	struct buf out = run(&m, "\r\nbody", 0);
	CHECK_OUT(out, "X: a\r\n\tb\r\n c \xc3\xa9\r\n\r\nbody");
	CHECK_STR(message_add(&m, "X", 1, "v", 1), "header already read");
	buf_free(&out);
	message_free(&m);
}

static void test_folding(void)
{
	struct message m = {0};
	const char *v = "pass (sender SPF authorized) smtp.mailfrom=someone@example.org "
	                "dkim=pass header.d=example.org header.s=selector1 dmarc=pass";
	CHECK(!message_add(&m, "Authentication-Results", 22, v, strlen(v)));
	const char *nospace = "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567";
	CHECK(!message_add(&m, "X-Long", 6, nospace, strlen(nospace)));
	const char *blanks = "a                                                                               ";
	CHECK(!message_add(&m, "X-Blanks", 8, blanks, strlen(blanks)));
	struct buf out = run(&m, "\r\n", 0);
	CHECK_OUT(out, "Authentication-Results: pass (sender SPF authorized)\r\n"
	               " smtp.mailfrom=someone@example.org dkim=pass header.d=example.org\r\n"
	               " header.s=selector1 dmarc=pass\r\n"
	               "X-Long: 0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567\r\n"
	               "X-Blanks: a                                                                               \r\n"
	               "\r\n");
	buf_free(&out);
	message_free(&m);
}

/* One field X-A: 1 added (or put on top) to msg fed in pieces of step. */
#define CHECK_X_A(top, msg, step, lit)                                        \
	do {                                                                   \
		struct message m_ = {0};                                       \
		CHECK(!(top ? message_insert(&m_, 0, "X-A", 3, "1", 1)         \
		            : message_add(&m_, "X-A", 3, "1", 1)));            \
		struct buf out_ = run(&m_, msg, step);                         \
		CHECK_OUT(out_, lit);                                          \
		buf_free(&out_);                                               \
		message_free(&m_);                                             \
	} while (0)

static void test_bare_lf_and_no_blank_line(void)
{
	CHECK_X_A(false, "A: 1\nB: 2\n\nbody\n", 1, "A: 1\nB: 2\nX-A: 1\r\n\nbody\n");
	/* All header, its last line unended: the added field ends it. */
	CHECK_X_A(false, "A: 1\r\nB: 2", 3, "A: 1\r\nB: 2\r\nX-A: 1\r\n");
	/* Empty message; a message that starts with its blank line. */
	CHECK_X_A(false, "", 0, "X-A: 1\r\n");
	CHECK_X_A(true, "\r\n\r\nbody", 2, "X-A: 1\r\n\r\n\r\nbody");
}

static void test_no_edits_passes_through(void)
{
	struct message m = {0};
	const char *msg = "weird\r\n\rline\r\n  lead\r\n\r\nbody";
	struct buf out = run(&m, msg, 1);
	CHECK_OUT(out, "weird\r\n\rline\r\n  lead\r\n\r\nbody");
	buf_free(&out);
	message_free(&m);
}

static void test_limit(void)
{
	struct message m;
	message_init(&m, 16);
	CHECK(!message_insert(&m, 0, "X-Top", 5, "t", 1));
	CHECK(!message_add(&m, "X-Add", 5, "a", 1));
	CHECK(!message_remove(&m, "A", 1));
	size_t took = message_take(&m, "A: 0123456789abcdef\r\n\r\nbody", 27);
	CHECK_INT(took, 16);
	CHECK(m.oversized && message_ready(&m));
	CHECK_STR(message_add(&m, "X", 1, "v", 1), "header too large");
	struct buf out = {0};
	message_emit(&m, &out);
	CHECK_OUT(out, "X-Top: t\r\nX-Add: a\r\nA: 0123456789abc");
	buf_free(&out);
	message_free(&m);

	/* Exactly at the limit with its blank line: complete, not oversized. */
	message_init(&m, 8);
	CHECK_INT(message_take(&m, "A: 1\r\n\r\nB", 9), 8);
	CHECK(m.complete && !m.oversized);
	message_free(&m);
}

/* The one-piece fast path: taken in place when the block ends in the
 * piece (blank line, limit or the message's end) and no edit was asked;
 * else m is left for message_take, which then finds the same block. */
static void test_pass_in_place(void)
{
	const char *msg = "A: 1\r\nB: 2\r\n\r\nbody\r\n";
	struct message m = {0};
	CHECK(message_pass_in_place(&m, msg, strlen(msg), false));
	CHECK(message_ready(&m));
	CHECK_STR(message_add(&m, "X", 1, "v", 1), "header already read");
	message_free(&m);

	/* The piece ends mid-block: not taken, and m is as it was. */
	struct message f = {0};
	CHECK(!message_pass_in_place(&f, msg, 9, false));
	struct buf out = run(&f, msg, 4);
	CHECK_OUT(out, "A: 1\r\nB: 2\r\n\r\nbody\r\n");
	buf_free(&out);
	message_free(&f);
	/* ... and a piece ending in a line-start CR leaves nothing held. */
	struct message cr = {0};
	CHECK(!message_pass_in_place(&cr, "A: 1\r\n\r", 8, false));
	CHECK_INT(message_take(&cr, "A: 1\r\n\rX\r\n\r\nb", 14), 12);
	CHECK_INT(cr.blank_len, 2);
	message_free(&cr);

	/* No blank line, but the message ended, or the limit is reached. */
	struct message end = {0};
	CHECK(message_pass_in_place(&end, "A: 1\r\n", 6, true));
	message_free(&end);
	struct message big;
	message_init(&big, 4);
	CHECK(message_pass_in_place(&big, "A: 1\r\n", 6, false));
	message_free(&big);

	/* An edit asked: the block is rebuilt, so never in place. */
	struct message e = {0};
	CHECK(!message_add(&e, "X-A", 3, "1", 1));
	CHECK(!message_pass_in_place(&e, msg, strlen(msg), true));
	out = run(&e, msg, 0);
	CHECK_OUT(out, "A: 1\r\nB: 2\r\nX-A: 1\r\n\r\nbody\r\n");
	buf_free(&out);
	message_free(&e);

	/* Bytes already gathered come first: not in place either. */
	struct message g = {0};
	CHECK_INT(message_take(&g, msg, 3), 3);
	CHECK(!message_pass_in_place(&g, msg + 3, strlen(msg) - 3, true));
	message_free(&g);
}

/* message_emit_front: the unedited block back in front of the body bytes
 * it was taken from; an edit, or no room before them, and it declines. */
static void test_emit_front(void)
{
	const char *msg = "A: 1\r\n\r\nbody";
	struct message m = {0};
	struct buf pending = {0};
	buf_append(&pending, msg, strlen(msg));
	buf_consume(&pending, message_take(&m, buf_head(&pending), buf_used(&pending)));
	CHECK(message_ready(&m));
	CHECK(message_emit_front(&m, &pending));
	CHECK_OUT(pending, "A: 1\r\n\r\nbody");
	CHECK_STR(message_add(&m, "X", 1, "v", 1), "header already read");
	message_free(&m);
	buf_free(&pending);

	/* The block came in an earlier piece: no room, message_emit it is. */
	struct message g = {0};
	CHECK_INT(message_take(&g, msg, 6), 6);
	CHECK_INT(message_take(&g, msg + 6, 2), 2);
	buf_append(&pending, "body", 4);
	CHECK(!message_emit_front(&g, &pending));
	CHECK(!g.emitted);
	message_free(&g);
	buf_free(&pending);

	/* An edit changes the block's length: declined as well. */
	struct message e = {0};
	CHECK(!message_add(&e, "X-A", 3, "1", 1));
	buf_append(&pending, msg, strlen(msg));
	buf_consume(&pending, message_take(&e, buf_head(&pending), buf_used(&pending)));
	CHECK(!message_emit_front(&e, &pending));
	struct buf out = {0};
	message_emit(&e, &out);
	CHECK_OUT(out, "A: 1\r\nX-A: 1\r\n\r\n");
	CHECK_OUT(pending, "body");
	buf_free(&out);
	buf_free(&pending);
	message_free(&e);
}

int main(void)
{
	RUN(test_split_anywhere);
	RUN(test_edits);
	RUN(test_milter_edits);
	RUN(test_refusals);
	RUN(test_folding);
	RUN(test_bare_lf_and_no_blank_line);
	RUN(test_no_edits_passes_through);
	RUN(test_limit);
	RUN(test_pass_in_place);
	RUN(test_emit_front);
	return unit_summary();
}
