/* libFuzzer target: the header block and its edits (smtp/message.c). The
 * first bytes pick a limit, a chunking and up to eight edits (names and
 * values from a table that holds bad ones too); the rest is the message.
 * Fed in one piece or in chunks it must come out the same; without edits
 * it must come out unchanged; with them, the bytes after the header block
 * (the body) stay byte-identical at the end. */
#include "smtp/message.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *const names[] = {"X-A", "subject", "Received", "From", "Bad Name", "", "x-a", "B:"};
static const char *const values[] = {
	"v", "", "a\r\n\tfolded", "a\nb", "a\rb", "\xc3\xa9 8-bit",
	"one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen",
	"trailing   ",
};

static void apply_edits(struct message *m, const uint8_t *e, size_t nedits)
{
	for (size_t i = 0; i < nedits; i++) {
		const char *n = names[e[2 * i] % 8], *v = values[(e[2 * i] >> 3) % 8];
		size_t idx = e[2 * i + 1] % 6;
		switch ((e[2 * i] >> 6) & 3) {
		case 0: message_add(m, n, strlen(n), v, strlen(v)); break;
		case 1: message_insert(m, idx, n, strlen(n), v, strlen(v)); break;
		case 2: message_change(m, n, strlen(n), idx, idx & 1 ? NULL : v, strlen(v)); break;
		default: message_remove(m, n, strlen(n)); break;
		}
	}
}

/* The message through m in chunks of step bytes (0: one piece); returns
 * the output and how many bytes of the input were header. */
static struct buf pass(const char *in, size_t len, size_t limit, size_t step, const uint8_t *e, size_t nedits,
                       size_t *head_len)
{
	struct message m;
	message_init(&m, limit);
	apply_edits(&m, e, nedits);
	struct buf body = {0}, out = {0};
	*head_len = 0;
	for (size_t at = 0; at < len;) {
		size_t n = step && len - at > step ? step : len - at;
		size_t took = message_take(&m, in + at, n);
		*head_len += took;
		buf_append(&body, in + at + took, n - took);
		at += n;
	}
	message_end(&m);
	message_emit(&m, &out);
	if (buf_used(&body))
		buf_append(&out, buf_head(&body), buf_used(&body));
	buf_free(&body);
	message_free(&m);
	return out;
}

/* message_pass_in_place takes the message in one piece exactly when
 * message_take would find the block ready in it and no edit was asked;
 * when it does not, message_take finds m as it was. */
static void check_in_place(const char *in, size_t len, size_t limit, const uint8_t *e, size_t nedits)
{
	struct message ref, m;
	message_init(&ref, limit);
	size_t took = message_take(&ref, in, len);
	bool ready = message_ready(&ref);
	for (int ended = 0; ended < 2; ended++) {
		message_init(&m, limit);
		apply_edits(&m, e, nedits);
		bool edited = m.nedits > 0;
		bool passed = message_pass_in_place(&m, in, len, ended);
		if (passed != (!edited && (ready || ended)))
			abort(); /* in place when it must not be, or not when it may */
		if (passed && (!message_ready(&m) || message_add(&m, "X-A", 3, "v", 1) == NULL))
			abort(); /* taken in place, yet open to edits */
		if (!passed && (message_take(&m, in, len) != took || message_ready(&m) != ready))
			abort(); /* the fallback found m changed */
		message_free(&m);
	}
	message_free(&ref);
}

/* The block written back in front of the body bytes it was taken from
 * (message_emit_front, unedited) comes out as message_emit's. */
static void check_front(const char *in, size_t len, size_t limit, const uint8_t *e, size_t nedits,
                        const struct buf *whole)
{
	struct message m;
	message_init(&m, limit);
	apply_edits(&m, e, nedits);
	struct buf pending = {0}, out = {0};
	buf_append(&pending, in, len);
	buf_consume(&pending, message_take(&m, in, len)); /* as lua_stream.c takes it from pending */
	message_end(&m);
	bool front = message_emit_front(&m, &pending);
	if (front != (m.nedits == 0 && (len == 0 || buf_used(&pending) > 0 || pending.off > 0)))
		abort(); /* declined with the room there and no edit, or the other way */
	if (!front) {
		message_emit(&m, &out);
		if (buf_used(&pending))
			buf_append(&out, buf_head(&pending), buf_used(&pending));
	}
	const struct buf *got = front ? &pending : &out;
	if (buf_used(got) != buf_used(whole) || (buf_used(got) && memcmp(buf_head(got), buf_head(whole), buf_used(got))))
		abort(); /* not what message_emit writes */
	buf_free(&pending);
	buf_free(&out);
	message_free(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 3)
		return 0;
	size_t limit = 1 + data[0] * 4u;
	size_t step = data[1] % 17;
	size_t nedits = data[2] % 9;
	if (size < 3 + 2 * nedits)
		return 0;
	const uint8_t *e = data + 3;
	const char *in = (const char *)data + 3 + 2 * nedits;
	size_t len = size - 3 - 2 * nedits;

	size_t h1, h2, h0;
	struct buf whole = pass(in, len, limit, 0, e, nedits, &h1);
	struct buf chunked = pass(in, len, limit, step, e, nedits, &h2);
	if (h1 != h2 || buf_used(&whole) != buf_used(&chunked) ||
	    (buf_used(&whole) && memcmp(buf_head(&whole), buf_head(&chunked), buf_used(&whole)) != 0))
		abort(); /* chunking changed the result */
	size_t body = len - h1;
	if (buf_used(&whole) < body || (body && memcmp(buf_head(&whole) + buf_used(&whole) - body, in + h1, body) != 0))
		abort(); /* the body is not byte-identical */
	struct buf plain = pass(in, len, limit, step, e, 0, &h0);
	if (buf_used(&plain) != len || (len && memcmp(buf_head(&plain), in, len) != 0))
		abort(); /* no edits, yet changed */
	check_in_place(in, len, limit, e, nedits);
	check_front(in, len, limit, e, nedits, &whole);
	buf_free(&whole);
	buf_free(&chunked);
	buf_free(&plain);
	return 0;
}
