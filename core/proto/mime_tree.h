/* mime_tree — a message read by GMime into a plain C tree: its header
 * fields (raw and decoded), its parts (type, parameters, disposition,
 * filename, transfer encoding, charset, decoded size) and the text of
 * text parts as UTF-8, each bounded. Bodies are decoded through GMime's
 * filters as they stream, counted and dropped, so an attachment costs
 * its size in time, never in memory. Malformed input gives a partial tree
 * and defects (strings), never an error: the parser's warnings, nesting
 * cut at max_depth, limits reached. No Lua; fuzzed (tests/fuzz/fuzz_mime.c). */
#ifndef LUASMTPD_MIME_TREE_H
#define LUASMTPD_MIME_TREE_H

#include <stdbool.h>
#include <stddef.h>

struct _GMimeStream;

struct mime_limits {
	size_t max_text;       /* text kept per text part (UTF-8 bytes) */
	size_t max_total_text; /* text kept over all parts */
	unsigned max_depth;    /* parts nested deeper are left out */
	unsigned max_parts;    /* parts past this many are left out */
	size_t max_header_bytes; /* header fields past this many bytes are left out */
};

/* The defaults: 1 MiB of text a part, 8 MiB in all, 100 levels, 1,000
 * parts, 1 MiB of header fields. */
void mime_limits_default(struct mime_limits *lim);

struct mime_param {
	char *name; /* lowercase */
	char *value; /* RFC 2231 decoded, UTF-8 */
};

struct mime_part {
	char *type; /* "text/plain", lowercase */
	struct mime_param *params;
	size_t nparams;
	char *disposition; /* lowercase, NULL when the part has none */
	char *filename;    /* UTF-8, NULL when none */
	char *encoding;    /* "base64", ..., NULL without Content-Transfer-Encoding */
	char *charset;     /* lowercase, NULL when none */
	bool leaf;         /* a part with a body: size (and text) are set */
	size_t size;       /* decoded bytes */
	bool is_text;      /* text/ *: text is set */
	char *text;        /* UTF-8, text_len bytes, NUL-terminated */
	size_t text_len;
	bool truncated;    /* text was cut at a limit */
	bool container;    /* multipart or message/rfc822: parts is set */
	struct mime_part *parts;
	size_t nparts;
};

struct mime_header {
	char *name;
	char *value; /* unfolded, RFC 2047 decoded, UTF-8 */
	char *raw;   /* as sent, without leading blanks and the final line end */
};

struct mime_msg {
	struct mime_header *headers;
	size_t nheaders;
	struct mime_part root;
	char **defects;
	size_t ndefects;
};

/* Once per process, before anything else here. */
void mime_tree_init(void);

/* Reads the message in len bytes at data (not copied: they must stay as
 * they are until this returns) into *msg, which mime_msg_free releases. */
void mime_tree_parse_buffer(const char *data, size_t len, const struct mime_limits *lim, struct mime_msg *msg);
/* The same from a seekable GMime stream (the caller keeps its reference). */
void mime_tree_parse_stream(struct _GMimeStream *stream, const struct mime_limits *lim, struct mime_msg *msg);
void mime_msg_free(struct mime_msg *msg);

/* An address list field's raw value (From, To, Cc, ...) read into
 * mailboxes, groups flattened: *n of them in a new array, each name
 * (NULL when none, RFC 2047 decoded) and address; mime_addresses_free
 * releases it. */
struct mime_address {
	char *name;
	char *address;
};
struct mime_address *mime_addresses_parse(const char *raw, size_t *n);
void mime_addresses_free(struct mime_address *a, size_t n);

#endif
