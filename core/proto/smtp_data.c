/*
 * smtp_data.c — the DATA body decoder: dot-unstuffing (RFC 5321 4.5.2) and
 * end-of-data detection, where only CRLF "." CRLF ends the body so the 2023
 * smuggling variants built from bare CR or LF stay content. Bytes whose
 * meaning depends on what follows (a CR, a line-start ".", ".\r") are held
 * in the state instead of being looked ahead at, which makes the result
 * independent of how TCP cut the stream. Ordinary content is copied in runs
 * of lines found with SIMD bit masks; the state machine only runs at line
 * ends that need it.
 */
#include "proto/smtp_parse.h"

#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

enum smtp_data_state {
	SMTP_DATA_LINE_START, /* after a real CRLF, or the one ending the DATA command */
	SMTP_DATA_MID_LINE,
	SMTP_DATA_CR,     /* a CR held back: CRLF or bare CR depends on the next byte */
	SMTP_DATA_DOT,    /* a line-start "." held back: stuffing, end or content */
	SMTP_DATA_DOT_CR, /* a line-start ".\r" held back: one LF away from the end */
	SMTP_DATA_SOFT_LINE_START, /* after a bare CR or LF made a CRLF ("normalize") */
	SMTP_DATA_SOFT_DOT, /* its "." held back: stuffing or content, never the end */
	SMTP_DATA_DONE,
};

/* One call's view of its input and where its output goes. */
struct smtp_data_scan {
	const char *p, *end;
	char *o;
};

/* A line end the decoder passes as it is: a CRLF whose next line starts
 * with neither "." nor the end of the chunk. */
static inline bool smtp_data_plain_eol(const char *q, const char *end)
{
	return end - q > 2 && q[0] == '\r' && q[1] == '\n' && q[2] != '.';
}

/* Passes over the plain line ends among m, the CR and LF bits of the
 * bytes at p: returns the first that is not plain, or NULL. *carry, in:
 * p[0] is the LF of a plain CRLF already passed; out: so is p[width]. */
static inline const char *smtp_data_mask_stop(const char *p, const char *end, uint32_t m, unsigned width,
                                              unsigned *carry)
{
	m &= ~*carry;
	*carry = 0;
	while (m) {
		unsigned i = (unsigned)__builtin_ctz(m);
		if (!smtp_data_plain_eol(p + i, end))
			return p + i;
		*carry = i + 1 == width;
		m &= m - 1; /* the CR */
		m &= m - 1; /* its LF, when in this block */
	}
	return NULL;
}

/* The first CR or LF in [p, end) that is not a plain line end, or end.
 * The CR and LF of 16 bytes come as one bit mask where SSE2 is (every
 * x86-64) and the plain line ends in it are passed over bit by bit, so a
 * message of ordinary lines costs its blocks and a look at each CRLF, not
 * a search and a return to the state machine per line; the rest byte by
 * byte. */
static const char *smtp_data_find_stop(const char *p, const char *end)
{
	unsigned carry = 0; /* the LF at p was passed with its CR */
	const char *q;
#ifdef __SSE2__
	const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
	for (; end - p >= 16; p += 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
		uint32_t m = (uint32_t)_mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, lf)));
		if ((q = smtp_data_mask_stop(p, end, m, 16, &carry)))
			return q;
	}
#endif
	for (p += carry;; p += 2) {
		while (p < end && *p != '\r' && *p != '\n')
			p++;
		if (p == end || !smtp_data_plain_eol(p, end))
			return p;
	}
}

static void smtp_data_copy(struct smtp_data_scan *s, const char *from, const char *upto)
{
	size_t n = (size_t)(upto - from);

	if (s->o != from) /* in place, output trails input once a dot is dropped */
		memmove(s->o, from, n);
	s->o += n;
}

static void smtp_data_emit(struct smtp_data_scan *s, char c)
{
	*s->o++ = c;
}

/* A CR or LF that is not part of a CRLF. It never ends the body. Made a
 * CRLF ("normalize"), it starts a line whose stuffed dot goes, as the
 * sender who ends lines so meant it; kept ("reject"), it starts nothing. */
static void smtp_data_bare(struct smtp_data_decoder *d, struct smtp_data_scan *s, char c)
{
	d->bare_seen = true;
	if (d->mode == SMTP_BARE_NORMALIZE) {
		smtp_data_emit(s, '\r');
		smtp_data_emit(s, '\n');
		d->state = SMTP_DATA_SOFT_LINE_START;
	} else {
		smtp_data_emit(s, c);
		d->state = SMTP_DATA_MID_LINE;
	}
}

/* The hot path: runs of lines that need nothing, up to the first line end
 * that needs the state machine (or the end of the chunk). Whole lines that
 * need nothing (no stuffed dot, no bare CR or LF) go out as they came, in
 * one copy. */
static void smtp_data_mid_line(struct smtp_data_decoder *d, struct smtp_data_scan *s)
{
	const char *run = s->p;
	const char *eol = smtp_data_find_stop(s->p, s->end);

	if (eol == s->end) {
		s->p = eol;
	} else if (*eol == '\n') {
		smtp_data_copy(s, run, eol);
		s->p = eol + 1;
		smtp_data_bare(d, s, '\n');
		return;
	} else if (eol + 1 == s->end || eol[1] != '\n') {
		smtp_data_copy(s, run, eol);
		s->p = eol + 1;
		d->state = SMTP_DATA_CR;
		return;
	} else { /* a CRLF before a "." or the chunk's end */
		s->p = eol + 2;
		d->state = SMTP_DATA_LINE_START;
	}
	smtp_data_copy(s, run, s->p);
}

/* Resolves a held-back byte (or a line start) with the byte at s->p, which
 * is consumed only when it belongs to what was held. */
static void smtp_data_step(struct smtp_data_decoder *d, struct smtp_data_scan *s)
{
	char c = *s->p;

	switch (d->state) {
	case SMTP_DATA_LINE_START:
	case SMTP_DATA_SOFT_LINE_START:
		if (c == '.') {
			s->p++;
			d->state = d->state == SMTP_DATA_LINE_START ? SMTP_DATA_DOT : SMTP_DATA_SOFT_DOT;
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
	case SMTP_DATA_SOFT_DOT:
		/* ".x" drops the stuffed dot; a "." line is content, even ".\r\n" */
		if (c == '\r' || c == '\n')
			smtp_data_emit(s, '.');
		d->state = SMTP_DATA_MID_LINE;
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

bool smtp_data_in_place_ok(const struct smtp_data_decoder *d)
{
	return d->mode != SMTP_BARE_NORMALIZE &&
	       (d->state == SMTP_DATA_LINE_START || d->state == SMTP_DATA_MID_LINE);
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
	s.o = out;
	while (s.p < s.end && d->state != SMTP_DATA_DONE)
		smtp_data_step(d, &s);
	*out_len = (size_t)(s.o - out);
	*done = d->state == SMTP_DATA_DONE;
	return (size_t)(s.p - in);
}
