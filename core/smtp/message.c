#include "smtp/message.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* RFC 5322 2.1.1: lines of at most 78 characters where they can be. */
#define MESSAGE_FOLD_COLUMN 78

enum message_op { EDIT_ADD, EDIT_INSERT, EDIT_CHANGE, EDIT_REMOVE };

struct message_edit {
	enum message_op op;
	size_t index;       /* EDIT_INSERT: before which field; EDIT_CHANGE: nth */
	char *name;         /* name and value share one allocation */
	size_t nlen;
	const char *value;  /* NULL: EDIT_REMOVE, or EDIT_CHANGE deleting */
	size_t vlen;
};

/* One field of the block being written out: received bytes, or a new
 * field's own (owned). */
struct field {
	const char *p;
	size_t len;
	size_t nlen; /* its name is p[0..nlen); 0: a line that names no field */
	bool owned;
};

struct fields {
	struct field *v;
	size_t n, cap;
};

void message_init(struct message *m, size_t limit)
{
	memset(m, 0, sizeof *m);
	m->limit = limit;
}

static void message_free_edits(struct message *m)
{
	for (size_t i = 0; i < m->nedits; i++)
		free(m->edits[i].name);
	free(m->edits);
	m->edits = NULL;
	m->nedits = m->edits_cap = 0;
}

void message_free(struct message *m)
{
	buf_free(&m->head);
	message_free_edits(m);
}

/* Where the header block ends in p[0..max), given where the last piece
 * left off: a line whose text is "" or "\r" before its LF is the blank
 * one. Lines of text are skipped with memchr; the state (mid_line,
 * cr_at_bol) is only looked at where a line starts. Returns the bytes
 * that belong to the block; *complete tells whether its end was found. */
static size_t message_scan(struct message *m, const char *p, size_t max, bool *complete)
{
	size_t i = 0;
	*complete = false;
	while (i < max) {
		if (m->mid_line) {
			const char *lf = memchr(p + i, '\n', max - i);
			if (!lf)
				return max;
			i = (size_t)(lf - p) + 1;
			m->mid_line = false;
			continue;
		}
		char ch = p[i++];
		if (ch == '\n') {
			m->blank_len = m->cr_at_bol ? 2 : 1;
			m->cr_at_bol = false;
			*complete = true;
			return i;
		}
		if (ch == '\r' && !m->cr_at_bol) {
			m->cr_at_bol = true;
			continue;
		}
		m->cr_at_bol = false;
		m->mid_line = true;
	}
	return i;
}

/* The block limit, m->limit or the default. */
static size_t message_limit(const struct message *m)
{
	return m->limit ? m->limit : MESSAGE_HEADER_MAX;
}

size_t message_take(struct message *m, const char *p, size_t n)
{
	if (message_ready(m))
		return 0;
	size_t limit = message_limit(m);
	size_t room = limit - buf_used(&m->head);
	bool complete;
	size_t i = message_scan(m, p, n < room ? n : room, &complete);
	m->complete = complete;
	buf_append(&m->head, p, i);
	if (!m->complete && buf_used(&m->head) == limit)
		m->oversized = true;
	return i;
}

bool message_pass_in_place(struct message *m, const char *p, size_t n, bool ended)
{
	if (m->nedits || m->emitted || m->head.len || m->mid_line || m->cr_at_bol)
		return false;
	size_t limit = message_limit(m);
	bool complete;
	message_scan(m, p, n < limit ? n : limit, &complete);
	/* Not written out: the scan's state goes back to a line start, as
	 * message_take will find it. */
	if (!complete && !ended && n < limit) {
		m->mid_line = m->cr_at_bol = false;
		m->blank_len = 0;
		return false;
	}
	m->complete = m->emitted = true;
	return true;
}

void message_end(struct message *m)
{
	m->complete = true;
}

/* ---- edits --------------------------------------------------------------- */

/* RFC 5322 3.6.8: ftext is printable US-ASCII but the colon. */
static bool message_name_ok(const char *name, size_t nlen)
{
	if (nlen == 0 || nlen > 900)
		return false;
	for (size_t i = 0; i < nlen; i++) {
		unsigned char ch = (unsigned char)name[i];
		if (ch < 33 || ch > 126 || ch == ':')
			return false;
	}
	return true;
}

/* No NUL, and CR or LF only in folds: CRLF or LF before a space or tab. */
static bool message_value_ok(const char *v, size_t vlen)
{
	for (size_t i = 0; i < vlen; i++) {
		if (v[i] == '\0')
			return false;
		if (v[i] == '\r' && (i + 1 == vlen || v[i + 1] != '\n'))
			return false;
		if (v[i] == '\n' && (i + 1 == vlen || (v[i + 1] != ' ' && v[i + 1] != '\t')))
			return false;
	}
	return true;
}

static const char *message_edit(struct message *m, enum message_op op, size_t index, const char *name,
                                size_t nlen, const char *value, size_t vlen)
{
	if (m->emitted)
		return "header already read";
	if (m->oversized)
		return "header too large";
	if (!message_name_ok(name, nlen))
		return "bad header name";
	if (value && !message_value_ok(value, vlen))
		return "bad header value";
	if (m->nedits == m->edits_cap) {
		size_t cap = m->edits_cap ? 2 * m->edits_cap : 4;
		struct message_edit *e = realloc(m->edits, cap * sizeof *e);
		if (!e)
			abort();
		m->edits = e;
		m->edits_cap = cap;
	}
	char *copy = malloc(nlen + (value ? vlen : 0) + 1);
	if (!copy)
		abort();
	memcpy(copy, name, nlen);
	if (value)
		memcpy(copy + nlen, value, vlen);
	m->edits[m->nedits++] = (struct message_edit){
		.op = op, .index = index, .name = copy, .nlen = nlen,
		.value = value ? copy + nlen : NULL, .vlen = value ? vlen : 0,
	};
	return NULL;
}

const char *message_add(struct message *m, const char *name, size_t nlen, const char *value, size_t vlen)
{
	return message_edit(m, EDIT_ADD, 0, name, nlen, value ? value : "", vlen);
}

const char *message_insert(struct message *m, size_t index, const char *name, size_t nlen, const char *value,
                           size_t vlen)
{
	return message_edit(m, EDIT_INSERT, index, name, nlen, value ? value : "", vlen);
}

const char *message_change(struct message *m, const char *name, size_t nlen, size_t nth, const char *value,
                           size_t vlen)
{
	return message_edit(m, EDIT_CHANGE, nth, name, nlen, value, vlen);
}

const char *message_remove(struct message *m, const char *name, size_t nlen)
{
	return message_edit(m, EDIT_REMOVE, 0, name, nlen, NULL, 0);
}

/* ---- writing out --------------------------------------------------------- */

static void fields_insert(struct fields *f, size_t at, struct field x)
{
	if (f->n == f->cap) {
		f->cap = f->cap ? 2 * f->cap : 16;
		if (!(f->v = realloc(f->v, f->cap * sizeof *f->v)))
			abort();
	}
	if (at > f->n)
		at = f->n;
	memmove(f->v + at + 1, f->v + at, (f->n - at) * sizeof *f->v);
	f->v[at] = x;
	f->n++;
}

static void fields_delete(struct fields *f, size_t at)
{
	if (f->v[at].owned)
		free((char *)f->v[at].p);
	memmove(f->v + at, f->v + at + 1, (f->n - at - 1) * sizeof *f->v);
	f->n--;
}

/* The received fields: a line starting with a space or tab continues the
 * field before it. */
static void fields_parse(struct fields *f, const char *p, size_t len)
{
	const char *end = p + len;
	while (p < end) {
		const char *q = p;
		do {
			const char *lf = memchr(q, '\n', (size_t)(end - q));
			q = lf ? lf + 1 : end;
		} while (q < end && (*q == ' ' || *q == '\t'));
		size_t nlen = 0;
		const char *colon = memchr(p, ':', (size_t)(q - p));
		const char *lf = memchr(p, '\n', (size_t)(q - p));
		if (*p != ' ' && *p != '\t' && colon && (!lf || colon < lf)) {
			nlen = (size_t)(colon - p);
			while (nlen > 0 && (p[nlen - 1] == ' ' || p[nlen - 1] == '\t'))
				nlen--; /* RFC 5322 4.5.3: "Subject :" */
		}
		fields_insert(f, f->n, (struct field){.p = p, .len = (size_t)(q - p), .nlen = nlen});
		p = q;
	}
}

/* "Name: value\r\n": a value with folds keeps them (its line ends made
 * CRLF); else it is folded before a space where a line would pass
 * MESSAGE_FOLD_COLUMN, never into a line of blanks only. */
static struct field field_new(const struct message_edit *e)
{
	struct buf b = {0};
	buf_append(&b, e->name, e->nlen);
	buf_append(&b, ":", 1);
	const char *v = e->value;
	size_t vlen = e->vlen;
	if (vlen)
		buf_append(&b, " ", 1);
	if (memchr(v, '\n', vlen)) {
		for (size_t i = 0; i < vlen; i++) {
			if (v[i] == '\n' && (i == 0 || v[i - 1] != '\r'))
				buf_append(&b, "\r", 1);
			buf_append(&b, v + i, 1);
		}
	} else {
		size_t col = e->nlen + 2;
		for (size_t i = 0; i < vlen;) {
			size_t j = i + 1;
			while (j < vlen && v[j] != ' ')
				j++;
			if (i > 0 && j - i > 1 && col + (j - i) > MESSAGE_FOLD_COLUMN) {
				buf_append(&b, "\r\n", 2);
				col = 0;
			}
			buf_append(&b, v + i, j - i);
			col += j - i;
			i = j;
		}
	}
	buf_append(&b, "\r\n", 2);
	/* The field owns the bytes: a copy that starts at offset 0. */
	size_t n = buf_used(&b);
	char *p = malloc(n);
	if (!p)
		abort();
	memcpy(p, buf_head(&b), n);
	buf_free(&b);
	return (struct field){.p = p, .len = n, .nlen = e->nlen, .owned = true};
}

static bool field_is(const struct field *f, const struct message_edit *e)
{
	return f->nlen == e->nlen && strncasecmp(f->p, e->name, e->nlen) == 0;
}

static void fields_apply(struct fields *f, const struct message_edit *e, bool parsed)
{
	switch (e->op) {
	case EDIT_ADD:
		fields_insert(f, f->n, field_new(e));
		return;
	case EDIT_INSERT:
		fields_insert(f, e->index, field_new(e));
		return;
	case EDIT_REMOVE:
		for (size_t i = f->n; i-- > 0;)
			if (field_is(&f->v[i], e))
				fields_delete(f, i);
		return;
	case EDIT_CHANGE:
		for (size_t i = 0, seen = 0; i < f->n; i++) {
			if (!field_is(&f->v[i], e) || ++seen < e->index)
				continue;
			fields_delete(f, i);
			if (e->value)
				fields_insert(f, i, field_new(e));
			return;
		}
		/* Only a parsed block tells that there is no such field. */
		if (e->value && parsed)
			fields_insert(f, f->n, field_new(e));
		return;
	}
}

static void message_emit_edited(struct message *m, struct buf *out)
{
	struct fields f = {0};
	const char *head = m->head.data ? buf_head(&m->head) : "";
	size_t used = buf_used(&m->head);
	size_t fields_len = m->oversized ? 0 : used - m->blank_len;
	fields_parse(&f, head, fields_len);
	for (size_t i = 0; i < m->nedits; i++)
		fields_apply(&f, &m->edits[i], !m->oversized);
	size_t start = out->len;
	for (size_t i = 0; i < f.n; i++) {
		/* A block cut short by the end of the message: its last line gets
		 * the line end a field after it needs. */
		if (f.v[i].owned && out->len > start && out->data[out->len - 1] != '\n')
			buf_append(out, "\r\n", 2);
		buf_append(out, f.v[i].p, f.v[i].len);
		if (f.v[i].owned)
			free((char *)f.v[i].p);
	}
	free(f.v);
	buf_append(out, head + fields_len, used - fields_len);
}

/* Written out: the block's memory goes, and edits are over. */
static void message_written(struct message *m)
{
	buf_free(&m->head);
	message_free_edits(m);
	m->emitted = true;
}

void message_emit(struct message *m, struct buf *out)
{
	if (m->nedits == 0) {
		if (buf_used(&m->head))
			buf_append(out, buf_head(&m->head), buf_used(&m->head));
	} else {
		message_emit_edited(m, out);
	}
	message_written(m);
}

bool message_emit_front(struct message *m, struct buf *out)
{
	if (m->nedits || !buf_prepend(out, buf_head(&m->head), buf_used(&m->head)))
		return false;
	message_written(m);
	return true;
}
