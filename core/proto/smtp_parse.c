/*
 * smtp_parse.c — command lines: framing a byte stream into lines with a hard
 * length cap, splitting a line into verb and argument, and the HELO/EHLO
 * argument check. Pure: no I/O, no allocation, no locale (a script may call
 * os.setlocale, and tolower() in a Turkish locale breaks "mail" == "MAIL").
 */
#include "proto/smtp_parse.h"

#include <stdint.h>
#include <string.h>

#define SMTP_HELO_MAX 255

/* ---- line framing ------------------------------------------------------- */

void smtp_line_reader_init(struct smtp_line_reader *r, size_t max)
{
	r->max = max;
	r->skipping = false;
}

/* No LF in buf: either wait for the rest of the line or, once it cannot fit
 * any more, start dropping it so the caller never buffers more than max + 1. */
static enum smtp_line_status smtp_line_partial(struct smtp_line_reader *r, const char *buf,
                                               size_t len, size_t *consumed)
{
	if (!r->skipping) {
		/* a final CR may be the first half of the terminator */
		size_t body = buf[len - 1] == '\r' ? len - 1 : len;

		if (body <= r->max)
			return SMTP_LINE_NEED_MORE;
		r->skipping = true;
	}
	*consumed = len;
	return SMTP_LINE_SKIPPING;
}

enum smtp_line_status smtp_line_next(struct smtp_line_reader *r, const char *buf, size_t len,
                                     const char **line, size_t *line_len, size_t *consumed)
{
	const char *lf;
	size_t n;

	*line = NULL;
	*line_len = 0;
	*consumed = 0;
	if (len == 0)
		return SMTP_LINE_NEED_MORE;
	lf = memchr(buf, '\n', len);
	if (!lf)
		return smtp_line_partial(r, buf, len, consumed);
	*consumed = (size_t)(lf - buf) + 1;
	if (r->skipping) {
		r->skipping = false;
		return SMTP_LINE_TOO_LONG;
	}
	n = (size_t)(lf - buf);
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	if (n > r->max)
		return SMTP_LINE_TOO_LONG;
	*line = buf;
	*line_len = n;
	return SMTP_LINE_OK;
}

/* ---- commands ----------------------------------------------------------- */

/* "" for the verbs that have no wire name of their own */
static const char *const smtp_verb_names[SMTP_VERB_COUNT] = {
	[SMTP_VERB_UNKNOWN] = "",
	[SMTP_VERB_HELO] = "HELO",
	[SMTP_VERB_EHLO] = "EHLO",
	[SMTP_VERB_LHLO] = "LHLO",
	[SMTP_VERB_MAIL] = "MAIL",
	[SMTP_VERB_RCPT] = "RCPT",
	[SMTP_VERB_DATA] = "DATA",
	[SMTP_VERB_BDAT] = "BDAT",
	[SMTP_VERB_RSET] = "RSET",
	[SMTP_VERB_NOOP] = "NOOP",
	[SMTP_VERB_QUIT] = "QUIT",
	[SMTP_VERB_VRFY] = "VRFY",
	[SMTP_VERB_EXPN] = "EXPN",
	[SMTP_VERB_HELP] = "HELP",
	[SMTP_VERB_STARTTLS] = "STARTTLS",
	[SMTP_VERB_AUTH] = "AUTH",
	[SMTP_VERB_XCLIENT] = "XCLIENT",
	[SMTP_VERB_XFORWARD] = "XFORWARD",
	[SMTP_VERB_HTTP] = "",
};

static const char *const smtp_http_methods[] = {
	"OPTIONS", "GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "CONNECT",
};

static bool smtp_is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* Bytes that are equal cost one comparison: commands and keywords mostly
 * come in the case they are written in (about 14 instructions a byte went
 * to folding both sides every time, on every command, callgrind). */
bool smtp_ascii_ieq(const char *a, size_t alen, const char *b, size_t blen)
{
	if (alen != blen)
		return false;
	for (size_t i = 0; i < alen; i++) {
		unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
		if (x != y && ((x ^ y) != 0x20 || (unsigned char)((x | 0x20) - 'a') > 'z' - 'a'))
			return false;
	}
	return true;
}

static bool smtp_word_eq(const char *s, size_t len, const char *word)
{
	return smtp_ascii_ieq(s, len, word, strlen(word));
}

/* TAB is the one C0 byte clients legitimately put in a command line.
 * Eight bytes a step: every command line is scanned, and mostly holds none
 * (the test is exact for "some byte < 0x20"; a tab is told apart after). */
static bool smtp_has_control(const char *s, size_t len)
{
	const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
	size_t i = 0;

	for (; i + 8 <= len; i += 8) {
		uint64_t x;
		memcpy(&x, s + i, 8);
		if (((x - 0x20 * ones) & ~x & highs) == 0)
			continue;
		for (size_t j = i; j < i + 8; j++)
			if ((unsigned char)s[j] < 0x20 && s[j] != '\t')
				return true;
	}
	for (; i < len; i++)
		if ((unsigned char)s[i] < 0x20 && s[i] != '\t')
			return true;
	return false;
}

static const char *smtp_skip_blanks(const char *p, const char *end)
{
	while (p < end && smtp_is_blank(*p))
		p++;
	return p;
}

const char *smtp_verb_name(enum smtp_verb verb)
{
	if ((unsigned)verb >= SMTP_VERB_COUNT)
		return "";
	return smtp_verb_names[verb];
}

#define SMTP_WORD(a, b, c, d) ((uint32_t)(a) | (uint32_t)(b) << 8 | (uint32_t)(c) << 16 | (uint32_t)(d) << 24)
/* The four-letter verbs as words, the commonest first; test_parse checks
 * the table against smtp_verb_names. */
static const struct {
	uint32_t word;
	enum smtp_verb verb;
} smtp_verbs4[] = {
	{SMTP_WORD('M', 'A', 'I', 'L'), SMTP_VERB_MAIL}, {SMTP_WORD('R', 'C', 'P', 'T'), SMTP_VERB_RCPT},
	{SMTP_WORD('D', 'A', 'T', 'A'), SMTP_VERB_DATA}, {SMTP_WORD('R', 'S', 'E', 'T'), SMTP_VERB_RSET},
	{SMTP_WORD('E', 'H', 'L', 'O'), SMTP_VERB_EHLO}, {SMTP_WORD('Q', 'U', 'I', 'T'), SMTP_VERB_QUIT},
	{SMTP_WORD('B', 'D', 'A', 'T'), SMTP_VERB_BDAT}, {SMTP_WORD('N', 'O', 'O', 'P'), SMTP_VERB_NOOP},
	{SMTP_WORD('H', 'E', 'L', 'O'), SMTP_VERB_HELO}, {SMTP_WORD('L', 'H', 'L', 'O'), SMTP_VERB_LHLO},
	{SMTP_WORD('A', 'U', 'T', 'H'), SMTP_VERB_AUTH}, {SMTP_WORD('V', 'R', 'F', 'Y'), SMTP_VERB_VRFY},
	{SMTP_WORD('E', 'X', 'P', 'N'), SMTP_VERB_EXPN}, {SMTP_WORD('H', 'E', 'L', 'P'), SMTP_VERB_HELP},
};

/* Four bytes of s as one word, each masked. */
static uint32_t smtp_verb_word(const char *s, unsigned mask)
{
	return SMTP_WORD((unsigned char)s[0] & mask, (unsigned char)s[1] & mask, (unsigned char)s[2] & mask,
	                 (unsigned char)s[3] & mask);
}

enum smtp_verb smtp_verb_from_name(const char *s, size_t len)
{
	int v;

	if (len == 0)
		return SMTP_VERB_UNKNOWN;
	if (len == 4) {
		/* Most verbs have four letters: one comparison of words each. Masking
		 * bit 5 folds a-z onto A-Z and maps no other byte onto a letter. */
		uint32_t w = smtp_verb_word(s, 0xdf);
		for (size_t i = 0; i < sizeof smtp_verbs4 / sizeof smtp_verbs4[0]; i++)
			if (smtp_verbs4[i].word == w)
				return smtp_verbs4[i].verb;
		return SMTP_VERB_UNKNOWN;
	}
	/* The first letter rules out almost every verb before any strlen. */
	char first = s[0] >= 'a' && s[0] <= 'z' ? (char)(s[0] - 'a' + 'A') : s[0];
	for (v = 0; v < SMTP_VERB_COUNT; v++)
		if (smtp_verb_names[v][0] == first &&
		    smtp_word_eq(s, len, smtp_verb_names[v]))
			return (enum smtp_verb)v;
	return SMTP_VERB_UNKNOWN;
}

/* "METHOD target HTTP/d.d": a browser or proxy scanner talking to the SMTP
 * port, which the core answers by hanging up rather than by replying 500s
 * the browser could render (cross-protocol attacks). Any target counts, so
 * "OPTIONS *", "CONNECT host:443" and proxy-style "GET http://..." match. */
static bool smtp_is_http(const struct smtp_cmd *cmd)
{
	const size_t vlen = sizeof "HTTP/1.1" - 1;
	const char *v;
	size_t i;

	if (cmd->arg_len < vlen + 2)
		return false;
	v = cmd->arg + cmd->arg_len - vlen;
	if (!smtp_is_blank(v[-1]))
		return false;
	if (memcmp(v, "HTTP/", 5) != 0 || v[6] != '.')
		return false;
	if (v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9')
		return false;
	for (i = 0; i < sizeof smtp_http_methods / sizeof smtp_http_methods[0]; i++)
		if (smtp_word_eq(cmd->name, cmd->name_len, smtp_http_methods[i]))
			return true;
	return false;
}

enum smtp_cmd_status smtp_parse_command(const char *line, size_t len, struct smtp_cmd *cmd)
{
	const char *end = line + len;
	const char *p;

	cmd->verb = SMTP_VERB_UNKNOWN;
	cmd->name = line;
	cmd->name_len = 0;
	cmd->arg = end;
	cmd->arg_len = 0;
	if (smtp_has_control(line, len))
		return SMTP_CMD_BAD_CHAR;
	p = smtp_skip_blanks(line, end);
	if (p == end)
		return SMTP_CMD_EMPTY;
	cmd->name = p;
	while (p < end && !smtp_is_blank(*p))
		p++;
	cmd->name_len = (size_t)(p - cmd->name);
	p = smtp_skip_blanks(p, end);
	while (end > p && smtp_is_blank(end[-1]))
		end--;
	cmd->arg = p;
	cmd->arg_len = (size_t)(end - p);
	cmd->verb = smtp_is_http(cmd) ? SMTP_VERB_HTTP : smtp_verb_from_name(cmd->name, cmd->name_len);
	return SMTP_CMD_OK;
}

/* ---- HELO/EHLO ---------------------------------------------------------- */

bool smtp_valid_helo(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > SMTP_HELO_MAX)
		return false;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		/* space ends the one word; DEL would reach logs and Received: */
		if (c <= 0x20 || c == 0x7f)
			return false;
	}
	return true;
}
