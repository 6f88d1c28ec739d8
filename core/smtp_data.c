/*
 * smtp_data.c — the DATA body decoder: dot-unstuffing (RFC 5321 4.5.2) and
 * end-of-data detection, where only CRLF "." CRLF ends the body so the 2023
 * smuggling variants built from bare CR or LF stay content. Bytes whose
 * meaning depends on what follows (a CR, a line-start ".", ".\r") are held
 * in the state instead of being looked ahead at, which makes the result
 * independent of how TCP cut the stream. Ordinary content is copied in runs
 * between line ends found with memchr; the state machine only runs at line
 * ends.
 */
#include "smtp_parse.h"

#include <string.h>

enum smtp_data_state {
	SMTP_DATA_LINE_START, /* after a real CRLF, or the one ending the DATA command */
	SMTP_DATA_MID_LINE,
	SMTP_DATA_CR,     /* a CR held back: CRLF or bare CR depends on the next byte */
	SMTP_DATA_DOT,    /* a line-start "." held back: stuffing, end or content */
	SMTP_DATA_DOT_CR, /* a line-start ".\r" held back: one LF away from the end */
	SMTP_DATA_DONE,
};

/* One call's view of its input, with the next CR and LF remembered so that
 * each byte is scanned at most once per character sought. */
struct smtp_data_scan {
	const char *p, *end;
	const char *cr, *lf; /* next CR / LF at or after the last search, or end */
	char *o;
};

static const char *smtp_data_find(const char *p, const char *end, char c)
{
	const char *hit = memchr(p, c, (size_t)(end - p));

	return hit ? hit : end;
}

/* The next CR or LF at or after s->p, or s->end */
static const char *smtp_data_next_eol(struct smtp_data_scan *s)
{
	if (s->cr < s->p)
		s->cr = smtp_data_find(s->p, s->end, '\r');
	if (s->lf < s->p)
		s->lf = smtp_data_find(s->p, s->end, '\n');
	return s->cr < s->lf ? s->cr : s->lf;
}

static void smtp_data_copy(struct smtp_data_scan *s, const char *upto)
{
	size_t n = (size_t)(upto - s->p);

	memcpy(s->o, s->p, n);
	s->o += n;
	s->p = upto;
}

static void smtp_data_emit(struct smtp_data_scan *s, char c)
{
	*s->o++ = c;
}

/* A CR or LF that is not part of a CRLF. It never starts a line, so it can
 * neither end the body nor un-stuff a dot, whatever the mode. */
static void smtp_data_bare(struct smtp_data_decoder *d, struct smtp_data_scan *s, char c)
{
	d->bare_seen = true;
	if (d->mode == SMTP_BARE_NORMALIZE) {
		smtp_data_emit(s, '\r');
		smtp_data_emit(s, '\n');
	} else {
		smtp_data_emit(s, c);
	}
	d->state = SMTP_DATA_MID_LINE;
}

/* The hot path: copy up to the next line end, taking a whole line and its
 * CRLF in one copy when both are in this chunk. */
static void smtp_data_mid_line(struct smtp_data_decoder *d, struct smtp_data_scan *s)
{
	const char *eol = smtp_data_next_eol(s);

	if (eol == s->end) {
		smtp_data_copy(s, eol);
	} else if (*eol == '\n') {
		smtp_data_copy(s, eol);
		s->p++;
		smtp_data_bare(d, s, '\n');
	} else if (eol + 1 < s->end && eol[1] == '\n') {
		smtp_data_copy(s, eol + 2);
		d->state = SMTP_DATA_LINE_START;
	} else {
		smtp_data_copy(s, eol);
		s->p++;
		d->state = SMTP_DATA_CR;
	}
}

/* Resolves a held-back byte (or a line start) with the byte at s->p, which
 * is consumed only when it belongs to what was held. */
static void smtp_data_step(struct smtp_data_decoder *d, struct smtp_data_scan *s)
{
	char c = *s->p;

	switch (d->state) {
	case SMTP_DATA_LINE_START:
		if (c == '.') {
			s->p++;
			d->state = SMTP_DATA_DOT;
		} else {
			d->state = SMTP_DATA_MID_LINE;
		}
		break;
	case SMTP_DATA_CR:
		if (c == '\n') {
			s->p++;
			smtp_data_emit(s, '\r');
			smtp_data_emit(s, '\n');
			d->state = SMTP_DATA_LINE_START;
		} else {
			smtp_data_bare(d, s, '\r');
		}
		break;
	case SMTP_DATA_DOT:
		if (c == '\r') {
			s->p++;
			d->state = SMTP_DATA_DOT_CR;
			break;
		}
		/* ".x" drops the stuffed dot; "." ended by a bare LF is content */
		if (c == '\n')
			smtp_data_emit(s, '.');
		d->state = SMTP_DATA_MID_LINE;
		break;
	case SMTP_DATA_DOT_CR:
		if (c == '\n') {
			s->p++;
			d->state = SMTP_DATA_DONE;
			break;
		}
		/* "." ended by a bare CR: content, like "." ended by a bare LF */
		smtp_data_emit(s, '.');
		smtp_data_bare(d, s, '\r');
		break;
	case SMTP_DATA_MID_LINE:
	default: /* never SMTP_DATA_DONE: the caller's loop stops before */
		smtp_data_mid_line(d, s);
		break;
	}
}

void smtp_data_init(struct smtp_data_decoder *d, enum smtp_bare_mode mode)
{
	d->state = SMTP_DATA_LINE_START;
	d->mode = mode;
	d->bare_seen = false;
}

size_t smtp_data_decode(struct smtp_data_decoder *d, const char *in, size_t len, char *out,
                        size_t *out_len, bool *done)
{
	struct smtp_data_scan s;

	*out_len = 0;
	*done = d->state == SMTP_DATA_DONE;
	if (len == 0 || *done)
		return 0;
	s.p = in;
	s.end = in + len;
	s.cr = smtp_data_find(in, s.end, '\r');
	s.lf = smtp_data_find(in, s.end, '\n');
	s.o = out;
	while (s.p < s.end && d->state != SMTP_DATA_DONE)
		smtp_data_step(d, &s);
	*out_len = (size_t)(s.o - out);
	*done = d->state == SMTP_DATA_DONE;
	return (size_t)(s.p - in);
}
