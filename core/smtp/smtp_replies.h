/* smtp_replies — the replies the core gives around hooks (default codes
 * and texts, the enhanced code of a reply code), copied once at start-up
 * from lua/smtp/replies.lua: the catalogue the testing kit simulates hooks
 * with, so that the kit and the core give the same replies. */
#ifndef LUASMTPD_SMTP_REPLIES_H
#define LUASMTPD_SMTP_REPLIES_H

#include "lua/config.h"

#include <lua.h>
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
	int code;
	char enhanced[16];
	char text[128]; /* printable ASCII: sent as is */
	size_t text_len;
};

extern struct smtp_reply smtp_replies[REPLY_COUNT];
/* The code of a hook's rejection that names none, by hook. */
extern int smtp_reject_codes[HOOK_COUNT];
/* The text of a rejection that gives none. */
extern char smtp_rejected_text[128];

/* require("smtp.replies") into the tables above; false with err on a
 * missing or malformed entry. */
bool smtp_replies_load(lua_State *L, char *err, size_t errlen);
/* The enhanced status code (RFC 3463) the catalogue gives a reply code. */
const char *smtp_enhanced_for(int code);

#endif
