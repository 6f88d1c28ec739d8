/* replies — the reply catalogue: every reply the core gives with a fixed
 * code, enhanced code (RFC 3463) and text, the default code of each hook's
 * rejection, and the enhanced code that goes with a bare reply code. One
 * constant C table: the core sends from it, core/lua/api_replies.c exports
 * it to scripts as smtp.replies, core/tools/replies_lua.c renders it as
 * lua/smtp/replies.lua for the testing kit outside the server, and
 * tests/e2e/test_docs.py checks it against docs/replies.md. No I/O. */
#ifndef LUASMTPD_PROTO_REPLIES_H
#define LUASMTPD_PROTO_REPLIES_H

#include <stdbool.h>
#include <stddef.h>

enum smtp_reply_id {
	REPLY_INTERNAL_ERROR,
	REPLY_AUTH_ACCEPTED,
	REPLY_AUTH_NO_USER,
	REPLY_MAIL_ACCEPTED,
	REPLY_RCPT_ACCEPTED,
	REPLY_MESSAGE_QUEUED,
	REPLY_MESSAGE_ACCEPTED,
	REPLY_RECIPIENT_NOT_ACCEPTED,
	REPLY_COUNT
};

struct smtp_reply {
	const char *name; /* its key in smtp.replies ("mailAccepted") */
	int code;
	const char *enhanced;
	const char *text; /* printable ASCII: sent as is */
	size_t text_len;
};

extern const struct smtp_reply smtp_replies[REPLY_COUNT];
/* The enhanced code smtp-server gives a reply code: code_enhanced[i] for
 * i < SMTP_ENHANCED_CODES, in increasing order of code. */
struct smtp_code_enhanced {
	int code;
	const char *enhanced;
};
#define SMTP_ENHANCED_CODES 30
extern const struct smtp_code_enhanced smtp_code_enhanced[SMTP_ENHANCED_CODES];

/* The code of a hook's rejection that names none. */
struct smtp_hook_reject {
	const char *hook; /* the hook's name in the script ("onMailFrom") */
	int code;
};
#define SMTP_HOOK_REJECTS 9
extern const struct smtp_hook_reject smtp_hook_rejects[SMTP_HOOK_REJECTS];

/* The text of a rejection that gives none. */
extern const char smtp_rejected_text[];

/* The enhanced status code for a reply code: the table's, else X.0.0 of
 * its class. */
const char *smtp_enhanced_for(int code);
/* The default rejection code of the hook named hook; 0 for no such hook. */
int smtp_reject_code(const char *hook);
/* Does text start with an enhanced status code ("5.1.1 ", RFC 3463)? */
bool smtp_has_enhanced(const char *text);

#endif
