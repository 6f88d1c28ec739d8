/* smtp_client — replies, EHLO keywords and the outgoing body of an SMTP
 * client (see smtp_client.h). */
#include "proto/smtp_client.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Length of a "c.sss.ddd" enhanced code of class cls at s (RFC 3463: one
 * to three digits for subject and detail) followed by a space or the end,
 * else 0. */
static size_t enhanced_len(const char *s, size_t len, char cls)
{
	size_t i = 0;
	if (len < 5 || s[0] != cls || s[1] != '.')
		return 0;
	i = 2;
	for (int part = 0; part < 2; part++) {
		size_t n = 0;
		while (i < len && is_digit(s[i]) && n < 3)
			i++, n++;
		if (n == 0)
			return 0;
		if (part == 0) {
			if (i >= len || s[i] != '.')
				return 0;
			i++;
		}
	}
	if (i < len && s[i] != ' ')
		return 0;
	return i;
}

enum smtp_client_status smtp_client_reply_line(struct smtp_client_reply *r, const char *line,
                                               size_t len, const char **text, size_t *text_len)
{
	if (len > 0 && line[len - 1] == '\r')
		len--;
	if (len > SMTP_CLIENT_LINE_MAX || len < 3 || memchr(line, '\0', len))
		return SMTP_CLIENT_BAD;
	if (line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '5' || !is_digit(line[2]))
		return SMTP_CLIENT_BAD;
	if (len > 3 && line[3] != ' ' && line[3] != '-')
		return SMTP_CLIENT_BAD;
	int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	bool first = r->code == 0;
	if (!first && code != r->code)
		return SMTP_CLIENT_BAD;
	r->code = code;
	const char *t = len > 4 ? line + 4 : line + len;
	size_t tl = len > 4 ? len - 4 : 0;
	size_t el = enhanced_len(t, tl, line[0]);
	if (first && el) {
		memcpy(r->enhanced, t, el);
		r->enhanced[el] = '\0';
	} else if (first) {
		r->enhanced[0] = '\0';
	}
	/* RFC 2034 repeats the code on every line; strip it where the first
	 * line had one, so the texts join into one sentence. */
	if (el && r->enhanced[0]) {
		t += el;
		tl -= el;
		if (tl && *t == ' ')
			t++, tl--;
	}
	*text = t;
	*text_len = tl;
	return len > 3 && line[3] == '-' ? SMTP_CLIENT_MORE : SMTP_CLIENT_DONE;
}

static bool word_is(const char *w, size_t wl, const char *name)
{
	return wl == strlen(name) && strncasecmp(w, name, wl) == 0;
}

/* The next space-separated word of s[*i..len), or NULL at the end. */
static const char *next_word(const char *s, size_t len, size_t *i, size_t *wl)
{
	while (*i < len && (s[*i] == ' ' || s[*i] == '\t'))
		(*i)++;
	if (*i >= len)
		return NULL;
	size_t start = *i;
	while (*i < len && s[*i] != ' ' && s[*i] != '\t' && s[*i] != '=')
		(*i)++;
	*wl = *i - start;
	if (*i < len && s[*i] == '=')
		(*i)++; /* "AUTH=PLAIN": the keyword ends at '=' */
	return s + start;
}

const struct smtp_client_flag smtp_client_flags[] = {
	{"PIPELINING", "pipelining", offsetof(struct smtp_client_ext, pipelining)},
	{"8BITMIME", "8bitmime", offsetof(struct smtp_client_ext, eightbitmime)},
	{"SMTPUTF8", "smtputf8", offsetof(struct smtp_client_ext, smtputf8)},
	{"DSN", "dsn", offsetof(struct smtp_client_ext, dsn)},
	{"CHUNKING", "chunking", offsetof(struct smtp_client_ext, chunking)},
	{"STARTTLS", "starttls", offsetof(struct smtp_client_ext, starttls)},
	{"BINARYMIME", "binarymime", offsetof(struct smtp_client_ext, binarymime)},
	{"ENHANCEDSTATUSCODES", "enhancedstatuscodes", offsetof(struct smtp_client_ext, enhancedstatuscodes)},
	{NULL, NULL, 0},
};

const struct smtp_client_mech smtp_client_mechs[] = {
	{"PLAIN", SMTP_AUTH_PLAIN},
	{"LOGIN", SMTP_AUTH_LOGIN},
	{"CRAM-MD5", SMTP_AUTH_CRAM_MD5},
	{"XOAUTH2", SMTP_AUTH_XOAUTH2},
	{NULL, 0},
};

static void read_auth(struct smtp_client_ext *e, const char *s, size_t len, size_t i)
{
	const char *w;
	size_t wl;
	while ((w = next_word(s, len, &i, &wl)))
		for (const struct smtp_client_mech *m = smtp_client_mechs; m->name; m++)
			if (word_is(w, wl, m->name))
				e->auth |= m->bit;
}

void smtp_client_ehlo_line(struct smtp_client_ext *e, const char *text, size_t len)
{
	size_t i = 0, wl;
	const char *w = next_word(text, len, &i, &wl);
	if (!w)
		return;
	if (word_is(w, wl, "AUTH")) {
		read_auth(e, text, len, i);
		return;
	}
	if (word_is(w, wl, "SIZE")) {
		e->size = true;
		unsigned long long n = 0;
		const char *v = next_word(text, len, &i, &wl);
		for (size_t k = 0; v && k < wl && is_digit(v[k]); k++)
			n = n > (~0ULL - 9) / 10 ? ~0ULL : n * 10 + (unsigned)(v[k] - '0');
		e->max_size = n;
		return;
	}
	for (const struct smtp_client_flag *f = smtp_client_flags; f->keyword; f++)
		if (word_is(w, wl, f->keyword))
			*(bool *)((char *)e + f->offset) = true;
}

void smtp_client_body_init(struct smtp_client_body *b, bool dots, bool normalize)
{
	*b = (struct smtp_client_body){.dots = dots, .normalize = normalize, .line_start = true, .crlf = true};
}

/* One byte that may change on its way: a CR or LF, a dot at the start of a
 * line, or whatever follows a CR held back. Returns the bytes it wrote. */
static size_t feed_byte(struct smtp_client_body *b, char c, char *out)
{
	size_t o = 0;
	if (b->cr) { /* normalize: the CR ends a line whatever follows */
		b->cr = false;
		out[o++] = '\r';
		out[o++] = '\n';
		b->line_start = true;
		if (c == '\n')
			return o;
	}
	if (b->normalize && c == '\r') {
		b->cr = true;
		return o;
	}
	if (b->normalize && c == '\n') {
		out[o++] = '\r';
		out[o++] = '\n';
		b->line_start = true;
		return o;
	}
	if (b->line_start && c == '.' && b->dots)
		out[o++] = '.';
	out[o++] = c;
	b->line_start = c == '\n';
	b->crlf = c == '\n' && b->prev_cr;
	b->prev_cr = c == '\r';
	return o;
}

/* Index of the first c in in[from..len), or len. */
static size_t find_byte(const char *in, size_t from, size_t len, char c)
{
	const char *p = memchr(in + from, c, len - from);
	return p ? (size_t)(p - in) : len;
}

size_t smtp_client_body_feed(struct smtp_client_body *b, const char *in, size_t len, char *out)
{
	size_t o = 0, i = 0;
	/* The next LF and CR at or after i, found again only once i passes
	 * them, so the scans stay linear whatever the input. */
	size_t lf = find_byte(in, 0, len, '\n'), cr = find_byte(in, 0, len, '\r');
	while (i < len) {
		/* The text between line ends (most of a message) goes out in one
		 * copy; only the bytes around a line end are looked at one by one. */
		if (!b->cr && !(b->line_start && b->dots && in[i] == '.')) {
			if (lf < i)
				lf = find_byte(in, i, len, '\n');
			if (cr < i)
				cr = find_byte(in, i, len, '\r');
			size_t run = (lf < cr ? lf : cr) - i;
			if (run) {
				memcpy(out + o, in + i, run);
				o += run;
				i += run;
				b->line_start = b->crlf = b->prev_cr = false;
				continue;
			}
		}
		o += feed_byte(b, in[i++], out + o);
	}
	if (b->normalize && len)
		b->crlf = b->line_start && !b->cr;
	return o;
}

size_t smtp_client_body_end(struct smtp_client_body *b, char *out)
{
	size_t o = 0;
	/* A message that does not end its last line gets the CRLF the end
	 * marker needs (a pending CR is that line's end). */
	if (b->cr || !b->crlf) {
		out[o++] = '\r';
		out[o++] = '\n';
	}
	b->cr = b->prev_cr = false;
	b->line_start = b->crlf = true;
	if (b->dots) {
		memcpy(out + o, ".\r\n", 3);
		o += 3;
	}
	return o;
}
