/*
 * smtp_path.c — the arguments of MAIL FROM and RCPT TO: the path in angle
 * brackets (RFC 5321 4.1.2, with RFC 6531 UTF-8), its ESMTP parameters, and
 * the parameter value syntaxes xtext (RFC 3461) and SIZE (RFC 1870). One
 * strict function validates and extracts together, so no address can reach
 * a hook without having passed the checks (the OpenSMTPD CVE-2020-7247
 * lesson).
 */
#include "proto/smtp_parse.h"

#include "base/byte_table.h"

#include <arpa/inet.h>
#include <string.h>

#define SMTP_LOCAL_MAX 64   /* RFC 5321 4.5.3.1.1, in octets */
#define SMTP_DOMAIN_MAX 255 /* RFC 5321 4.5.3.1.2 */
#define SMTP_LABEL_MAX 63   /* RFC 1035 2.3.4 */

/* ---- character classes -------------------------------------------------- */

/* One table lookup per byte instead of a chain of comparisons (and a
 * memchr for atext): an address is scanned several times on every MAIL
 * and RCPT. The table is built at compile time from the definitions. */
enum {
	CC_CONTROL = 1, /* C0 and DEL */
	CC_8BIT = 2,    /* UTF-8 bytes */
	CC_ALNUM = 4,
	CC_ATEXT = 8,  /* RFC 5321 atext, widened by RFC 6531 to any UTF-8 byte */
	CC_QTEXT = 16, /* qtextSMTP (printable ASCII but '"' and '\\'), plus UTF-8 bytes */
};

#define CC_IS_ALNUM(c) (((c) >= '0' && (c) <= '9') || ((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z'))
#define CC_IS_SPECIAL(c)                                                                       \
	((c) == '!' || (c) == '#' || (c) == '$' || (c) == '%' || (c) == '&' || (c) == '\'' ||   \
	 (c) == '*' || (c) == '+' || (c) == '-' || (c) == '/' || (c) == '=' || (c) == '?' ||    \
	 (c) == '^' || (c) == '_' || (c) == '`' || (c) == '{' || (c) == '|' || (c) == '}' || (c) == '~')
#define CC(c)                                                                                      \
	(((c) < 0x20 || (c) == 0x7f ? CC_CONTROL : 0) |                                            \
	 ((c) >= 0x80 ? CC_8BIT | CC_ATEXT | CC_QTEXT : 0) | (CC_IS_ALNUM(c) ? CC_ALNUM | CC_ATEXT : 0) | \
	 (CC_IS_SPECIAL(c) ? CC_ATEXT : 0) |                                                        \
	 ((c) >= 0x20 && (c) <= 0x7e && (c) != '"' && (c) != '\\' ? CC_QTEXT : 0))
static const unsigned char smtp_cc[256] = BYTE_TABLE(CC);

static bool smtp_is(unsigned char c, unsigned class)
{
	return smtp_cc[c] & class;
}

static bool smtp_is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static bool smtp_is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* The classes of s[0..len) together: one pass answers several questions. */
static unsigned smtp_classes(const char *s, size_t len)
{
	unsigned seen = 0;
	for (size_t i = 0; i < len; i++)
		seen |= smtp_cc[(unsigned char)s[i]];
	return seen;
}

/* Length of the UTF-8 sequence starting at s (at most len bytes), or 0 if it
 * is malformed, overlong, a surrogate or above U+10FFFF. Overlong forms
 * matter: "\xc0\xaa" must not become a '*' further down the line. */
static size_t smtp_utf8_seq(const unsigned char *s, size_t len)
{
	size_t n, i;
	unsigned char lo = 0x80, hi = 0xbf;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4;
	else
		return 0;
	if (s[0] == 0xe0)
		lo = 0xa0;
	else if (s[0] == 0xed)
		hi = 0x9f;
	else if (s[0] == 0xf0)
		lo = 0x90;
	else if (s[0] == 0xf4)
		hi = 0x8f;
	if (n > len || s[1] < lo || s[1] > hi)
		return 0;
	for (i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return n;
}

static bool smtp_valid_utf8(const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, n;

	while (i < len) {
		n = smtp_utf8_seq(u + i, len - i);
		if (n == 0)
			return false;
		i += n;
	}
	return true;
}

static const char *smtp_skip_blanks(const char *p, const char *end)
{
	while (p < end && smtp_is_blank(*p))
		p++;
	return p;
}

/* ---- local part --------------------------------------------------------- */

/* Length of the dot-atom at s, 0 if there is none or it has an empty atom
 * (leading, trailing or doubled dot). */
static size_t smtp_dot_atom_len(const char *s, size_t len)
{
	size_t i = 0, start;

	for (;;) {
		start = i;
		while (i < len && smtp_is((unsigned char)s[i], CC_ATEXT))
			i++;
		if (i == start)
			return 0;
		if (i == len || s[i] != '.')
			return i;
		i++;
	}
}

/* Length of the quoted-string at s (quotes included), 0 if malformed */
static size_t smtp_quoted_len(const char *s, size_t len)
{
	size_t i = 1;

	while (i < len) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"')
			return i + 1;
		if (c == '\\') {
			/* quoted-pairSMTP: a backslash and one printable ASCII byte */
			if (i + 1 == len || (unsigned char)s[i + 1] < 0x20 || (unsigned char)s[i + 1] > 0x7e)
				return 0;
			i += 2;
		} else if (smtp_is(c, CC_QTEXT)) {
			i++;
		} else {
			return 0;
		}
	}
	return 0;
}

static size_t smtp_local_part_len(const char *s, size_t len)
{
	return s[0] == '"' ? smtp_quoted_len(s, len) : smtp_dot_atom_len(s, len);
}

/* ---- domain ------------------------------------------------------------- */

/* Letters, digits and inner hyphens per label; bytes >= 0x80 pass so that
 * UTF-8 (U-label) domains work under SMTPUTF8. Letters and digits, most
 * of a name, take one table lookup each. */
static bool smtp_valid_hostname(const char *s, size_t len)
{
	size_t label = 0;

	if (len == 0 || len > SMTP_DOMAIN_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (smtp_is(c, CC_ALNUM | CC_8BIT)) {
			label++;
		} else if (c == '-' && label > 0) {
			label++;
		} else if (c == '.') {
			if (label == 0 || label > SMTP_LABEL_MAX || s[i - 1] == '-')
				return false;
			label = 0;
		} else {
			return false;
		}
	}
	return label > 0 && label <= SMTP_LABEL_MAX && s[len - 1] != '-';
}

/* "[1.2.3.4]" or "[IPv6:...]"; general tagged literals are refused since
 * nothing could deliver to them. Callers have ruled out control bytes, so
 * the NUL-terminated copy inet_pton needs is the whole literal. */
static bool smtp_valid_address_literal(const char *s, size_t len)
{
	char text[INET6_ADDRSTRLEN];
	unsigned char addr[sizeof(struct in6_addr)];
	int family = AF_INET;

	if (len < 2 || s[len - 1] != ']')
		return false;
	s++;
	len -= 2;
	if (len >= 5 && smtp_ascii_ieq(s, 5, "IPv6:", 5)) {
		family = AF_INET6;
		s += 5;
		len -= 5;
	}
	if (len == 0 || len >= sizeof text)
		return false;
	memcpy(text, s, len);
	text[len] = '\0';
	return inet_pton(family, text, addr) == 1;
}

static bool smtp_valid_domain(const char *s, size_t len)
{
	if (len > 0 && s[0] == '[')
		return smtp_valid_address_literal(s, len);
	return smtp_valid_hostname(s, len);
}

/* ---- the path ----------------------------------------------------------- */

/* Skips an RFC 5321 source route ("@a,@b:"), obsolete and ignored (4.1.1.3)
 * but still sent by a few clients. Returns the mailbox after it, or NULL. */
static const char *smtp_skip_route(const char *s, const char *end, bool lenient)
{
	const char *colon = memchr(s, ':', (size_t)(end - s));
	const char *p, *comma;

	if (!colon || lenient)
		return colon ? colon + 1 : NULL;
	for (p = s;; p = comma + 1) {
		comma = memchr(p, ',', (size_t)(colon - p));
		if (!comma)
			comma = colon;
		if (*p != '@' || !smtp_valid_hostname(p + 1, (size_t)(comma - p - 1)))
			return NULL;
		if (comma == colon)
			return colon + 1;
	}
}

static bool smtp_valid_mailbox(const char *s, size_t len, bool has_8bit)
{
	size_t local;

	if (has_8bit && !smtp_valid_utf8(s, len))
		return false;
	local = smtp_local_part_len(s, len);
	if (local == 0 || local > SMTP_LOCAL_MAX || local == len || s[local] != '@')
		return false;
	return smtp_valid_domain(s + local + 1, len - local - 1);
}

/* smtp-server's lenientAddressParsing: "something@something" and nothing
 * that could break out of the brackets or the line. */
static bool smtp_valid_lenient(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (s[i] == ' ' || s[i] == '<' || s[i] == '>')
			return false;
	return len >= 3 && memchr(s + 1, '@', len - 2) != NULL;
}

/* Where the path's '>' is. A quoted local part may hide one ("a>b"@c). */
static const char *smtp_path_close(const char *p, const char *end, bool lenient)
{
	bool quoted = false;

	const char *close = memchr(p, '>', (size_t)(end - p));
	/* Without a quote before it, the first '>' is the one (most paths). */
	if (lenient || !close || !memchr(p, '"', (size_t)(close - p)))
		return close;
	for (; p < end; p++) {
		if (quoted && *p == '\\' && p + 1 < end)
			p++;
		else if (*p == '"')
			quoted = !quoted;
		else if (*p == '>' && !quoted)
			return p;
	}
	return NULL;
}

static enum smtp_path_status smtp_path_address(enum smtp_path_kind kind, const char *s,
                                               const char *end, bool lenient,
                                               struct smtp_path *out)
{
	size_t len;

	if (s == end) {
		out->is_null = kind == SMTP_PATH_MAIL;
		return out->is_null ? SMTP_PATH_OK : SMTP_PATH_BAD_ADDRESS;
	}
	unsigned classes = smtp_classes(s, (size_t)(end - s));
	if (classes & CC_CONTROL)
		return SMTP_PATH_BAD_ADDRESS;
	if (*s == '@') { /* the mailbox's own classes, after the route */
		if (!(s = smtp_skip_route(s, end, lenient)))
			return SMTP_PATH_BAD_ADDRESS;
		classes = smtp_classes(s, (size_t)(end - s));
	}
	len = (size_t)(end - s);
	if (len > SMTP_PATH_MAX)
		return SMTP_PATH_BAD_ADDRESS;
	if (smtp_ascii_ieq(s, len, "postmaster", 10)) {
		out->is_postmaster = kind == SMTP_PATH_RCPT;
		if (!out->is_postmaster)
			return SMTP_PATH_BAD_ADDRESS;
	} else if (!(lenient ? smtp_valid_lenient(s, len) : smtp_valid_mailbox(s, len, classes & CC_8BIT))) {
		return SMTP_PATH_BAD_ADDRESS;
	}
	memcpy(out->address, s, len);
	out->address[len] = '\0';
	out->address_len = len;
	out->has_8bit = classes & CC_8BIT;
	return SMTP_PATH_OK;
}

/* ---- parameters --------------------------------------------------------- */

static bool smtp_valid_param_key(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || !smtp_is((unsigned char)s[0], CC_ALNUM))
		return false;
	for (i = 1; i < len; i++)
		if (!smtp_is((unsigned char)s[i], CC_ALNUM) && s[i] != '-')
			return false;
	return true;
}

/* Fills *p from "KEY" or "KEY=VALUE" even when invalid, so that the caller
 * can name the parameter it refuses. */
static bool smtp_param_split(const char *tok, size_t len, struct smtp_param *p)
{
	const char *eq = memchr(tok, '=', len);

	p->key = tok;
	p->key_len = eq ? (size_t)(eq - tok) : len;
	p->value = eq ? eq + 1 : NULL;
	p->value_len = eq ? len - p->key_len - 1 : 0;
	return smtp_valid_param_key(p->key, p->key_len) && !(smtp_classes(tok, len) & CC_CONTROL);
}

static bool smtp_param_seen(const struct smtp_path *path, const struct smtp_param *p)
{
	size_t i;

	for (i = 0; i < path->nparams; i++)
		if (smtp_ascii_ieq(path->params[i].key, path->params[i].key_len, p->key, p->key_len))
			return true;
	return false;
}

static enum smtp_path_status smtp_path_params(const char *p, const char *end,
                                              struct smtp_path *out)
{
	const char *tok;
	struct smtp_param *param;

	if (p < end && !smtp_is_blank(*p))
		return SMTP_PATH_SYNTAX;
	for (;;) {
		p = smtp_skip_blanks(p, end);
		if (p == end)
			return SMTP_PATH_OK;
		if (out->nparams == SMTP_PARAMS_MAX)
			return SMTP_PATH_TOO_MANY_PARAMS;
		tok = p;
		while (p < end && !smtp_is_blank(*p))
			p++;
		param = &out->params[out->nparams];
		if (!smtp_param_split(tok, (size_t)(p - tok), param))
			return SMTP_PATH_BAD_PARAM;
		if (smtp_param_seen(out, param))
			return SMTP_PATH_DUP_PARAM;
		out->nparams++;
	}
}

enum smtp_path_status smtp_parse_path(enum smtp_path_kind kind, const char *arg, size_t len,
                                      bool lenient, struct smtp_path *out)
{
	const char *keyword = kind == SMTP_PATH_MAIL ? "FROM:" : "TO:";
	size_t klen = strlen(keyword);
	const char *end = arg + len, *p, *close;
	enum smtp_path_status st;

	out->address[0] = '\0';
	out->address_len = 0;
	out->is_null = out->is_postmaster = out->has_8bit = false;
	out->nparams = 0;
	if (len < klen || !smtp_ascii_ieq(arg, klen, keyword, klen))
		return SMTP_PATH_SYNTAX;
	p = smtp_skip_blanks(arg + klen, end);
	if (p == end || *p != '<')
		return SMTP_PATH_SYNTAX;
	close = smtp_path_close(p + 1, end, lenient);
	if (!close)
		return SMTP_PATH_SYNTAX;
	st = smtp_path_address(kind, p + 1, close, lenient, out);
	if (st != SMTP_PATH_OK)
		return st;
	return smtp_path_params(close + 1, end, out);
}

const struct smtp_param *smtp_path_param(const struct smtp_path *p, const char *key)
{
	size_t i, klen = strlen(key);

	for (i = 0; i < p->nparams; i++)
		if (smtp_ascii_ieq(p->params[i].key, p->params[i].key_len, key, klen))
			return &p->params[i];
	return NULL;
}

/* ---- parameter values --------------------------------------------------- */

static int smtp_hex_value(unsigned char c)
{
	if (smtp_is_digit(c))
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Lower-case hex is accepted although RFC 3461 asks for upper case: being
 * picky there would only fail DSNs from sloppy clients. A decoded control
 * byte is refused, since ENVID and ORCPT end up in DSN headers and logs. */
long smtp_xtext_decode(const char *in, size_t len, char *out, size_t cap)
{
	size_t i, n = 0;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];

		if (c == '+') {
			int hi, lo;

			if (len - i < 3)
				return -1;
			hi = smtp_hex_value((unsigned char)in[i + 1]);
			lo = smtp_hex_value((unsigned char)in[i + 2]);
			if (hi < 0 || lo < 0)
				return -1;
			c = (unsigned char)(hi << 4 | lo);
			if (smtp_is(c, CC_CONTROL))
				return -1;
			i += 2;
		} else if (c < '!' || c > '~' || c == '=') {
			return -1;
		}
		if (n == cap)
			return -1;
		out[n++] = (char)c;
	}
	return (long)n;
}

bool smtp_parse_size(const char *s, size_t len, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;

	if (len == 0 || len > 20)
		return false;
	for (i = 0; i < len; i++) {
		unsigned digit;

		if (!smtp_is_digit((unsigned char)s[i]))
			return false;
		digit = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - digit) / 10)
			return false;
		v = v * 10 + digit;
	}
	*out = v;
	return true;
}
