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
	/* The fixed replies of the session, in docs/replies.md's order. */
	REPLY_NEED_HELO,
	REPLY_NESTED_MAIL,
	REPLY_NEED_MAIL,
	REPLY_NEED_RCPT,
	REPLY_BAD_SENDER,
	REPLY_BAD_RECIPIENT,
	REPLY_BAD_SIZE,
	REPLY_BAD_BODY,
	REPLY_SMTPUTF8_VALUE,
	REPLY_REQUIRETLS_NOT_TLS,
	REPLY_REQUIRETLS_VALUE,
	REPLY_NEED_SMTPUTF8,
	REPLY_TOO_MANY_RECIPIENTS,
	REPLY_AUTH_REQUIRED, /* authRequiredMessage's default */
	REPLY_DATA_GO_AHEAD,
	REPLY_BARE_LINE_ENDING,
	REPLY_BDAT_SYNTAX,
	REPLY_RCPT_AFTER_BDAT,
	REPLY_DATA_AFTER_BDAT,
	REPLY_BINARYMIME_NEEDS_BDAT,
	REPLY_LMTP_NO_EHLO,
	REPLY_LMTP_NO_HELO,
	REPLY_RSET,
	REPLY_OK,
	REPLY_BYE,
	REPLY_HELP,
	REPLY_VRFY,
	REPLY_VRFY_SYNTAX,
	REPLY_UNKNOWN_COMMAND,
	REPLY_CONTROL_CHARACTER,
	REPLY_LINE_TOO_LONG,
	REPLY_HTTP_REQUEST,
	REPLY_TOO_MANY_UNRECOGNIZED,
	REPLY_TOO_MANY_ERRORS,
	REPLY_TOO_MANY_UNAUTHENTICATED,
	REPLY_AUTH_NEEDS_TLS,
	REPLY_STARTTLS_READY,
	REPLY_STARTTLS_SYNTAX,
	REPLY_TLS_ACTIVE,
	REPLY_MUST_STARTTLS,
	REPLY_AUTH_UNKNOWN_MECHANISM,
	REPLY_AUTH_AGAIN,
	REPLY_AUTH_THROTTLED,
	REPLY_AUTH_BAD_BASE64,
	REPLY_AUTH_ABORTED,
	REPLY_TOO_MANY_CONNECTIONS,
	REPLY_TOO_MANY_CLIENTS,
	REPLY_CONNECTION_RATE,
	REPLY_SHUTTING_DOWN,
	REPLY_TIMEOUT,
	REPLY_LINE_UNTERMINATED,
	REPLY_BAD_HOSTNAME,
	REPLY_BAD_PARAMETER,
	REPLY_TOO_MANY_PARAMETERS,
	REPLY_BAD_RET,
	REPLY_BAD_ENVID,
	REPLY_BAD_NOTIFY,
	REPLY_BAD_ORCPT,
	REPLY_DATA_SYNTAX,
	REPLY_AUTH_SYNTAX,
	REPLY_AUTH_DURING_MAIL,
	REPLY_AUTH_NOT_IMPLEMENTED,
	REPLY_AUTH_TOO_MANY_FAILURES,
	REPLY_XCLIENT_NOT_ALLOWED,
	REPLY_XCLIENT_DURING_MAIL,
	REPLY_XCLIENT_SYNTAX,
	REPLY_COUNT
};

struct smtp_reply {
	const char *name; /* its key in smtp.replies ("mailAccepted") */
	int code;
	const char *enhanced; /* "" for a 3xx continuation: it has none */
	const char *text;     /* printable ASCII: sent as is */
	size_t text_len;
	const char *line; /* "code enhanced text\r\n" */
	size_t line_len;
	const char *bare; /* "code text\r\n", for hideENHANCEDSTATUSCODES */
	size_t bare_len;
};

extern const struct smtp_reply smtp_replies[REPLY_COUNT];
/* A catalogue reply as the (code, enhanced, text) arguments of a call:
 * conn_end(c, SMTP_REPLY_ARGS(REPLY_BYE)). */
#define SMTP_REPLY_ARGS(id) smtp_replies[id].code, smtp_replies[id].enhanced, smtp_replies[id].text

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
