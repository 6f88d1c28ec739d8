/*
 * smtp_parse — the pure SMTP parser: bytes in, lines, commands, paths and
 * message bodies out. No I/O, no allocation, no global state, so every
 * function here can be unit-tested and fuzzed on its own.
 */
#ifndef LUASMTPD_SMTP_PARSE_H
#define LUASMTPD_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- command lines ------------------------------------------------------ */

enum smtp_line_status {
	SMTP_LINE_NEED_MORE, /* no complete line yet; nothing consumed */
	SMTP_LINE_OK,        /* *line, *line_len hold one line without its terminator */
	SMTP_LINE_TOO_LONG,  /* a line longer than max ended (consumed through its LF) */
	SMTP_LINE_SKIPPING,  /* inside an over-long line: bytes consumed and dropped */
};

/* Frames command lines. A line ends at LF; one CR right before the LF is
 * stripped (bare LF is accepted for commands, as smtp-server and Postfix do).
 * An over-long line is dropped in place so memory stays bounded however
 * long the client keeps talking, and is reported once, when its LF arrives.
 * NEED_MORE is only returned while the pending bytes still fit (max bytes,
 * plus a possible final CR), so the caller never buffers more than max + 1
 * bytes plus one read; SKIPPING consumes the whole buffer. len == 0 gives
 * NEED_MORE. *line and *line_len are set only on SMTP_LINE_OK (NULL/0
 * otherwise); *consumed is always set. */
struct smtp_line_reader {
	size_t max;    /* longest line accepted, terminator excluded */
	bool skipping; /* inside an over-long line */
};

void smtp_line_reader_init(struct smtp_line_reader *r, size_t max);
enum smtp_line_status smtp_line_next(struct smtp_line_reader *r, const char *buf, size_t len,
                                     const char **line, size_t *line_len, size_t *consumed);

/* RFC 4954 4: an AUTH command or SASL line may be 12,288 octets long. */
#define SMTP_AUTH_LINE_MAX 12288

/* ---- commands ----------------------------------------------------------- */

enum smtp_verb {
	SMTP_VERB_UNKNOWN = 0,
	SMTP_VERB_HELO,
	SMTP_VERB_EHLO,
	SMTP_VERB_LHLO,
	SMTP_VERB_MAIL,
	SMTP_VERB_RCPT,
	SMTP_VERB_DATA,
	SMTP_VERB_BDAT,
	SMTP_VERB_RSET,
	SMTP_VERB_NOOP,
	SMTP_VERB_QUIT,
	SMTP_VERB_VRFY,
	SMTP_VERB_EXPN,
	SMTP_VERB_HELP,
	SMTP_VERB_STARTTLS,
	SMTP_VERB_AUTH,
	SMTP_VERB_XCLIENT,
	SMTP_VERB_XFORWARD,
	SMTP_VERB_HTTP, /* "GET / HTTP/1.1" and friends: cross-protocol attack */
	SMTP_VERB_COUNT
};

enum smtp_cmd_status {
	SMTP_CMD_OK,
	SMTP_CMD_EMPTY,    /* empty or blank line: 500 */
	SMTP_CMD_BAD_CHAR, /* NUL, bare CR or another C0 control byte: 501 5.5.2 */
};

struct smtp_cmd {
	enum smtp_verb verb;
	const char *name; /* the verb as the client wrote it (points into the line) */
	size_t name_len;
	const char *arg; /* after the verb and its separating spaces, trailing spaces trimmed */
	size_t arg_len;  /* 0 when the command has no argument; arg then points at the line end */
};

/* Splits a line (from smtp_line_next) into verb and argument. Verbs are
 * case-insensitive. TAB counts as a space; leading blanks are skipped. A
 * line "METHOD target HTTP/d.d" with METHOD one of OPTIONS GET HEAD POST PUT
 * DELETE TRACE CONNECT (any case, any target) is SMTP_VERB_HTTP. Unless the
 * result is SMTP_CMD_OK, *cmd is an empty SMTP_VERB_UNKNOWN command. */
enum smtp_cmd_status smtp_parse_command(const char *line, size_t len, struct smtp_cmd *cmd);

/* Upper-case canonical name of a verb ("MAIL"), or "" for UNKNOWN/HTTP. */
const char *smtp_verb_name(enum smtp_verb verb);
/* The verb named by s (case-insensitive), SMTP_VERB_UNKNOWN if none. */
enum smtp_verb smtp_verb_from_name(const char *s, size_t len);

/* a[0..alen) == b[0..blen) ignoring ASCII case. Locale-independent, unlike
 * strncasecmp once a script has called os.setlocale. */
bool smtp_ascii_ieq(const char *a, size_t alen, const char *b, size_t blen);

/* ---- MAIL FROM / RCPT TO ------------------------------------------------ */

#define SMTP_PATH_MAX 512 /* longer than RFC 5321's 256 to allow SMTPUTF8 */
#define SMTP_PARAMS_MAX 16

struct smtp_param {
	const char *key; /* points into the argument; not NUL-terminated */
	size_t key_len;
	const char *value; /* NULL for a bare keyword ("SMTPUTF8"); "" for "KEY=" */
	size_t value_len;
};

struct smtp_path {
	char address[SMTP_PATH_MAX + 1]; /* NUL-terminated; source route removed */
	size_t address_len;
	bool is_null;       /* MAIL FROM:<> */
	bool is_postmaster; /* RCPT TO:<postmaster> (any case), no domain */
	bool has_8bit;      /* the address has bytes >= 0x80 (needs SMTPUTF8) */
	struct smtp_param params[SMTP_PARAMS_MAX];
	size_t nparams;
};

enum smtp_path_kind { SMTP_PATH_MAIL, SMTP_PATH_RCPT };

enum smtp_path_status {
	SMTP_PATH_OK,
	SMTP_PATH_SYNTAX,      /* not "FROM:<...>" / "TO:<...>": 501 5.5.4 */
	SMTP_PATH_BAD_ADDRESS, /* brackets fine, address invalid: 501 5.1.7 (MAIL) / 5.1.3 (RCPT) */
	SMTP_PATH_BAD_PARAM,   /* a parameter that is not KEY or KEY=VALUE: 501 5.5.4 */
	SMTP_PATH_DUP_PARAM,   /* the same KEY twice (case-insensitive): 501 5.5.4 */
	SMTP_PATH_TOO_MANY_PARAMS,
};

/* Parses the argument of MAIL ("FROM:<a@b> SIZE=10") or RCPT ("TO:<a@b>").
 * Lenient where real clients are sloppy: any case, spaces after the colon.
 * Strict where it matters: brackets required, local@domain with a valid
 * domain or address literal, no control bytes, <> only for MAIL,
 * <postmaster> only for RCPT. The local part is a dot-atom or a quoted
 * string (kept with its quotes) of at most 64 octets; the domain is at most
 * 255 octets of labels (letters, digits, inner hyphens, UTF-8) or
 * [IPv4] / [IPv6:...]; 8-bit bytes must be valid UTF-8. With lenient set,
 * only "something@something" without spaces, control bytes or angle
 * brackets is required of the address (smtp-server's
 * lenientAddressParsing). A source route is dropped in both modes. Params
 * are separated by blanks; KEY is a letter or digit, then letters, digits
 * and hyphens; VALUE is any bytes but blanks and control bytes, possibly
 * none. On SMTP_PATH_DUP_PARAM /
 * SMTP_PATH_BAD_PARAM, out->nparams indexes the offending parameter in
 * out->params (on SMTP_PATH_TOO_MANY_PARAMS it is SMTP_PARAMS_MAX). */
enum smtp_path_status smtp_parse_path(enum smtp_path_kind kind, const char *arg, size_t len,
                                      bool lenient, struct smtp_path *out);

/* The parameter named key (case-insensitive), or NULL. */
const struct smtp_param *smtp_path_param(const struct smtp_path *p, const char *key);

/* Decodes RFC 3461 xtext ("a+2Bb" -> "a+b") into out (cap bytes; not
 * NUL-terminated). Returns the decoded length, or -1 on a malformed escape,
 * a byte xtext does not allow (outside '!'..'~', or '='), an escape that
 * decodes to a control byte, or when out is too small. Hex may be any case. */
long smtp_xtext_decode(const char *in, size_t len, char *out, size_t cap);

/* Parses a SIZE= value: 1 to 20 decimal digits that fit in uint64_t.
 * Returns false on anything else ("", "-1", "1e9", overflow). */
bool smtp_parse_size(const char *s, size_t len, uint64_t *out);

/* Validates a HELO/EHLO argument: one word, at most 255 bytes, no control
 * bytes. A domain or an address literal is expected but, as in every real
 * MTA, not demanded. */
bool smtp_valid_helo(const char *s, size_t len);

/* ---- message bodies (DATA) ---------------------------------------------- */

enum smtp_bare_mode {
	SMTP_BARE_REJECT,    /* keep bare CR/LF as they are and flag them (the core then answers 554 5.5.2) */
	SMTP_BARE_NORMALIZE, /* turn every bare CR or LF into CRLF (bare_seen is still set) */
};

/* Dot-unstuffing DATA decoder. Only CRLF "." CRLF ends the body (also a
 * leading "." CRLF right after the 354); a bare LF or CR never does, so the
 * 2023 smuggling variants (<LF>.<LF>, <CR>.<CR>, <CR><LF>.<LF>, ...) are
 * content. Only a real CRLF starts a line for end detection; for unstuffing
 * so does a bare CR or LF made a CRLF by "normalize" (a "." line after it is
 * content, never the end). A line-start "." is dropped when more of the line follows
 * ("..x" -> ".x", ".x" -> "x"); a "." line ended by a bare CR or LF is
 * content. The CRLF before the final dot belongs to the message. Results do
 * not depend on how the input is split into chunks: bytes whose meaning
 * depends on the next byte (CR, a line-start ".") are consumed and held in
 * the state, and written out by a later call. */
struct smtp_data_decoder {
	int state;
	enum smtp_bare_mode mode;
	bool bare_seen; /* a bare CR or LF was seen in the body */
};

void smtp_data_init(struct smtp_data_decoder *d, enum smtp_bare_mode mode);
/* May the next call decode in place? Not when bare line ends become CRLFs,
 * nor when bytes held from the last call (a CR, a line-start ".") are
 * still to be written: either can put more out than comes in. */
bool smtp_data_in_place_ok(const struct smtp_data_decoder *d);

/* Decodes in[0..len) into out, which must hold at least 2 * len + 4 bytes,
 * or be in itself (decoding in place) when smtp_data_in_place_ok(d). Returns the number of input bytes consumed; *out_len gets the bytes
 * written. When the end marker is reached *done is set and the bytes after
 * it (pipelined commands) are left unconsumed. */
size_t smtp_data_decode(struct smtp_data_decoder *d, const char *in, size_t len, char *out,
                        size_t *out_len, bool *done);

/* ---- AUTH --------------------------------------------------------------- */

/* Strict base64 (RFC 4648, padding required, no whitespace). Returns the
 * decoded length or -1; empty input is -1 (SASL's empty response is "=",
 * for the caller to recognise). out must hold len / 4 * 3 + 1 bytes; the
 * result is NUL-terminated for convenience (it may contain NULs of its own). */
long smtp_base64_decode(const char *in, size_t len, char *out);
/* Encodes; out must hold (len + 2) / 3 * 4 + 1 bytes. Returns the length. */
size_t smtp_base64_encode(const char *in, size_t len, char *out);

struct smtp_auth_plain {
	const char *authzid, *authcid, *password; /* point into the decoded buffer */
	size_t authzid_len, authcid_len, password_len;
};

/* Splits a decoded SASL PLAIN message "authzid\0authcid\0password".
 * Exactly two NULs, a non-empty authcid (or an authzid standing in for an
 * empty one, as smtp-server accepts: authcid then points at the authzid)
 * and a non-empty password, no other control bytes (C0, DEL) in the
 * identities. Returns false otherwise. */
bool smtp_auth_plain_split(const char *msg, size_t len, struct smtp_auth_plain *out);

#endif
