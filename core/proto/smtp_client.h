/* smtp_client — what a client of another SMTP/LMTP server parses and
 * writes: the server's replies line by line (multiline, enhanced status
 * codes), the EHLO keywords, and the message body dot-stuffed as it
 * streams. Pure: bytes in, bytes out; no I/O, fuzzable. */
#ifndef LUASMTPD_SMTP_CLIENT_H
#define LUASMTPD_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

/* RFC 5321 4.5.3.1.5 allows 512 octets a reply line; real servers send
 * longer texts, so a line is refused only past this. */
#define SMTP_CLIENT_LINE_MAX 4096

enum smtp_client_status { SMTP_CLIENT_MORE, SMTP_CLIENT_DONE, SMTP_CLIENT_BAD };

/* One reply being read: the code every line must repeat, and the enhanced
 * status code (RFC 3463) of its first line ("" when it has none). */
struct smtp_client_reply {
	int code;        /* 0 before the first line */
	char enhanced[12];
};

/* Feeds one line of a reply, without its LF (a CR before it is dropped).
 * text and text_len give the line's text with its code, separator and, when
 * the first line had one, its enhanced code removed. BAD: not "ddd", "ddd "
 * or "ddd-", a code out of 200..599, a code other than the first line's,
 * a NUL, or a line over SMTP_CLIENT_LINE_MAX; DONE on the last line. */
enum smtp_client_status smtp_client_reply_line(struct smtp_client_reply *r, const char *line,
                                               size_t len, const char **text, size_t *text_len);

/* What the server said in its EHLO (or LHLO) reply. */
enum smtp_client_auth { SMTP_AUTH_PLAIN = 1, SMTP_AUTH_LOGIN = 2, SMTP_AUTH_CRAM_MD5 = 4, SMTP_AUTH_XOAUTH2 = 8 };
struct smtp_client_ext {
	bool pipelining, eightbitmime, smtputf8, dsn, chunking, starttls, binarymime, enhancedstatuscodes;
	bool size;                 /* SIZE was offered; */
	unsigned long long max_size; /* its limit, 0 for none */
	unsigned auth;             /* enum smtp_client_auth bits */
};

/* The keywords that are flags of struct smtp_client_ext, each with its
 * lower-case name and its member's offset; and the AUTH mechanisms known,
 * each with its bit. Both end with a NULL keyword. */
struct smtp_client_flag {
	const char *keyword, *name;
	size_t offset;
};
extern const struct smtp_client_flag smtp_client_flags[];
struct smtp_client_mech {
	const char *name;
	unsigned bit;
};
extern const struct smtp_client_mech smtp_client_mechs[];

/* Reads one keyword line's text (every line of the reply but the first,
 * which names the server). Unknown keywords are ignored, as RFC 5321 asks;
 * "AUTH=PLAIN LOGIN" (the pre-RFC 2554 form) counts as AUTH. */
void smtp_client_ehlo_line(struct smtp_client_ext *e, const char *text, size_t len);

/* The body as it goes after DATA (dots doubled at the start of a line) or
 * BDAT (as is), cut into chunks anywhere. normalize: a bare LF or CR ends a
 * line as CRLF does and is sent as CRLF (else it goes as it came, and a dot
 * after a bare LF is doubled too, so no peer can read a bare "\n.\n" as the
 * end). */
struct smtp_client_body {
	bool dots, normalize;
	bool line_start; /* the next byte begins a line */
	bool cr;         /* normalize: a CR waits to see whether an LF follows */
	bool crlf;       /* what went out so far is empty or ends with CRLF */
	bool prev_cr;    /* not normalize: the last byte out was a CR */
};

void smtp_client_body_init(struct smtp_client_body *b, bool dots, bool normalize);
/* out must hold SMTP_CLIENT_BODY_OUT(len) bytes; returns how many it wrote.
 * Bytes are only ever added (a held-back CR aside), so when b->cr is false
 * before and after the call, a return of len means out equals in. */
#define SMTP_CLIENT_BODY_OUT(len) (2 * (len) + 2)
size_t smtp_client_body_feed(struct smtp_client_body *b, const char *in, size_t len, char *out);
/* The end: a CRLF when the message did not end with one, then ".\r\n" after
 * DATA. out must hold SMTP_CLIENT_BODY_END bytes; returns how many it wrote. */
#define SMTP_CLIENT_BODY_END 5
size_t smtp_client_body_end(struct smtp_client_body *b, char *out);

#endif
