/* message — the header block of the message being received, as it
 * arrived, and the edits asked of it (a policy's stream:addHeader and the
 * like, a milter's add/insert/change header replies). Every writer of the
 * message (stream:read, stream:save and so Maildir and the relay client)
 * takes the header block through message_emit: the edited fields, then the
 * blank line and the body exactly as received.
 *
 * The block ends at its first empty line ("\r\n" or, when bare line endings
 * are let through, "\n"), which stays part of it; a message without one is
 * all header (message_end). A block over the limit is not parsed: it passes
 * unchanged, fields added or inserted before that was known go on top of
 * it, removals are dropped, and later edits fail. Fields the edits write end
 * in CRLF; a value without folds of its own is folded at spaces to keep
 * lines within 78 columns where it can. */
#ifndef LUASMTPD_MESSAGE_H
#define LUASMTPD_MESSAGE_H

#include "base/buf.h"

#include <stdbool.h>
#include <stddef.h>

/* The header block limit when message_init is not given one. */
#define MESSAGE_HEADER_MAX (1024 * 1024)

struct message_edit;

/* All zero is a valid empty message with the default limit. */
struct message {
	struct buf head;      /* the header block so far, its blank line once seen */
	size_t limit;         /* 0: MESSAGE_HEADER_MAX */
	size_t blank_len;     /* the blank line's bytes at the end of head (0, 1, 2) */
	bool mid_line;        /* scanning: the next byte does not start a line */
	bool cr_at_bol;       /* scanning: a line began with CR */
	bool complete;        /* the blank line or the end of the message was seen */
	bool oversized;       /* the block outgrew the limit */
	bool emitted;         /* written out: no more edits */
	struct message_edit *edits;
	size_t nedits, edits_cap;
};

void message_init(struct message *m, size_t limit);
void message_free(struct message *m);

/* Takes bytes into the header block until it is complete or over the
 * limit; returns how many it took: the rest (from p + result) is body. */
size_t message_take(struct message *m, const char *p, size_t n);
/* The message ended: a header block without its blank line is complete. */
void message_end(struct message *m);
/* The header block can be written out (complete or oversized). */
static inline bool message_ready(const struct message *m) { return m->complete || m->oversized; }
/* The fast path of a reader that takes the message as it arrives: while
 * nothing is gathered and no edit asked, a block that ends within p[0..n)
 * (its blank line, the limit, or the message's end: ended) would be
 * written out as received, so it is taken where it is: true, and the block
 * counts as written out (p[0..n) is the reader's, unchanged). false: nothing
 * changed, message_take it is. */
bool message_pass_in_place(struct message *m, const char *p, size_t n, bool ended);
/* Appends the edited header block, with the blank line as received, to
 * out and releases its memory; edits are over from then on. Needs ready. */
void message_emit(struct message *m, struct buf *out);
/* message_emit ahead of out's bytes instead of after them, in the room
 * before its head (where message_take consumed the block from, when it
 * came with body bytes behind it): true; false, and nothing done, when an
 * edit was asked (the block's length would change) or the room is not
 * there. Needs ready. */
bool message_emit_front(struct message *m, struct buf *out);

/* The edits, applied in the order they were made. Each returns NULL, or
 * why it was refused: a name outside RFC 5322's ftext, a value with NUL or
 * a CR or LF that is not a fold (CRLF or LF before a space or tab), a block
 * already written out or over the limit. name and value need not be
 * NUL-terminated. */
/* After the existing fields. */
const char *message_add(struct message *m, const char *name, size_t nlen, const char *value, size_t vlen);
/* Before the index-th field (0: before all of them, a trace field's place;
 * past the end: after all), as a milter's SMFIR_INSHEADER. */
const char *message_insert(struct message *m, size_t index, const char *name, size_t nlen, const char *value,
                           size_t vlen);
/* The nth (1-based) field of that name, case-insensitive, gets value;
 * value NULL deletes it; no such field: value is added after the existing
 * fields, as a milter's SMFIR_CHGHEADER. */
const char *message_change(struct message *m, const char *name, size_t nlen, size_t nth, const char *value,
                           size_t vlen);
/* Every field of that name, case-insensitive. */
const char *message_remove(struct message *m, const char *name, size_t nlen);

#endif
