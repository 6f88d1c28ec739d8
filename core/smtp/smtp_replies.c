#include "smtp/smtp_replies.h"

#include "lua/lua_hook.h"

#include <stdio.h>
#include <string.h>

struct smtp_reply smtp_replies[REPLY_COUNT];
int smtp_reject_codes[HOOK_COUNT];
char smtp_rejected_text[128];

/* Reply codes are 3 digits; an empty entry means "X.0.0 of its class". */
static char enhanced_by_code[1000][16];

static const char *const reply_names[REPLY_COUNT] = {
	[REPLY_INTERNAL_ERROR] = "internalError",
	[REPLY_AUTH_ACCEPTED] = "authAccepted",
	[REPLY_AUTH_NO_USER] = "authNoUser",
	[REPLY_MAIL_ACCEPTED] = "mailAccepted",
	[REPLY_RCPT_ACCEPTED] = "rcptAccepted",
	[REPLY_MESSAGE_QUEUED] = "messageQueued",
	[REPLY_MESSAGE_ACCEPTED] = "messageAccepted",
	[REPLY_RECIPIENT_NOT_ACCEPTED] = "recipientNotAccepted",
};

const char *smtp_enhanced_for(int code)
{
	if (code >= 0 && code < 1000 && enhanced_by_code[code][0])
		return enhanced_by_code[code];
	return code >= 500 ? "5.0.0" : code >= 400 ? "4.0.0" : "2.0.0";
}

/* Replies go on the wire unformatted: only printable ASCII fits. */
static bool replies_copy_text(lua_State *L, int idx, char *out, size_t outlen)
{
	size_t len;
	const char *s = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &len) : NULL;
	if (!s || len == 0 || len >= outlen)
		return false;
	for (size_t i = 0; i < len; i++)
		if (s[i] < ' ' || s[i] > '~')
			return false;
	memcpy(out, s, len + 1);
	return true;
}

static bool replies_enhanced_ok(const char *e, int code)
{
	return e[0] == '0' + code / 100 && smtp_has_enhanced(e);
}

/* {code, enhanced, text} at the top of L into r. */
static bool replies_read_one(lua_State *L, struct smtp_reply *r)
{
	if (lua_type(L, -1) != LUA_TTABLE)
		return false;
	lua_rawgeti(L, -1, 1);
	r->code = (int)lua_tointeger(L, -1);
	lua_rawgeti(L, -2, 2);
	lua_rawgeti(L, -3, 3);
	bool ok = r->code >= 200 && r->code <= 599 && replies_copy_text(L, -2, r->enhanced, sizeof r->enhanced) &&
	          replies_enhanced_ok(r->enhanced, r->code) && replies_copy_text(L, -1, r->text, sizeof r->text);
	r->text_len = strlen(r->text);
	lua_pop(L, 3);
	return ok;
}

static bool replies_read_codes(lua_State *L, int t, char *err, size_t errlen)
{
	lua_getfield(L, t, "enhanced");
	if (lua_type(L, -1) != LUA_TTABLE) {
		snprintf(err, errlen, "smtp.replies: enhanced must be a table");
		return false;
	}
	for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1)) {
		int code = lua_type(L, -2) == LUA_TNUMBER ? (int)lua_tointeger(L, -2) : 0;
		if (code < 200 || code > 599 || !replies_copy_text(L, -1, enhanced_by_code[code], 16) ||
		    !replies_enhanced_ok(enhanced_by_code[code], code)) {
			snprintf(err, errlen, "smtp.replies: enhanced[%d] must be an enhanced code of its class", code);
			return false; /* the caller restores the stack */
		}
	}
	lua_pop(L, 1);
	lua_getfield(L, t, "rejectCode");
	for (int id = 0; id < HOOK_COUNT; id++) {
		lua_getfield(L, -1, hook_name((enum hook_id)id));
		smtp_reject_codes[id] = (int)lua_tointeger(L, -1);
		lua_pop(L, 1);
		if (smtp_reject_codes[id] < 400 || smtp_reject_codes[id] > 599) {
			snprintf(err, errlen, "smtp.replies: rejectCode.%s must be a code from 400 to 599",
			         hook_name((enum hook_id)id));
			return false;
		}
	}
	lua_pop(L, 1);
	return true;
}

bool smtp_replies_load(lua_State *L, char *err, size_t errlen)
{
	int top = lua_gettop(L);
	lua_getglobal(L, "require");
	lua_pushstring(L, "smtp.replies");
	if (lua_pcall(L, 1, 1, 0) != 0 || lua_type(L, -1) != LUA_TTABLE) {
		snprintf(err, errlen, "cannot load smtp.replies: %s",
		         lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "not a table");
		lua_settop(L, top);
		return false;
	}
	int t = lua_gettop(L);
	bool ok = replies_read_codes(L, t, err, errlen);
	for (int id = 0; ok && id < REPLY_COUNT; id++) {
		lua_getfield(L, t, reply_names[id]);
		ok = replies_read_one(L, &smtp_replies[id]);
		lua_pop(L, 1);
		if (!ok)
			snprintf(err, errlen, "smtp.replies: %s must be {code, enhanced code, printable text}",
			         reply_names[id]);
	}
	lua_getfield(L, t, "rejected");
	if (ok && !replies_copy_text(L, -1, smtp_rejected_text, sizeof smtp_rejected_text)) {
		snprintf(err, errlen, "smtp.replies: rejected must be a printable text");
		ok = false;
	}
	lua_settop(L, top);
	return ok;
}
