/* api_replies — smtp.replies inside the server: the reply catalogue of
 * proto/replies.c exported to scripts (and to the testing kit's recorder). */
#include "lua/modules.h"

#include "proto/replies.h"

/* smtp.replies: the catalogue of proto/replies.c as a table,
 * {enhanced = {[code] = "x.y.z"}, rejectCode = {[hook] = code},
 * rejected = text, [name] = {code, enhanced, text}}, the shape
 * lua/smtp/replies.lua has outside the server. */
int luaopen_smtp_replies(lua_State *L)
{
	lua_newtable(L);
	lua_newtable(L);
	for (size_t i = 0; i < SMTP_ENHANCED_CODES; i++) {
		lua_pushstring(L, smtp_code_enhanced[i].enhanced);
		lua_rawseti(L, -2, smtp_code_enhanced[i].code);
	}
	lua_setfield(L, -2, "enhanced");
	lua_newtable(L);
	for (size_t i = 0; i < SMTP_HOOK_REJECTS; i++) {
		lua_pushinteger(L, smtp_hook_rejects[i].code);
		lua_setfield(L, -2, smtp_hook_rejects[i].hook);
	}
	lua_setfield(L, -2, "rejectCode");
	lua_pushstring(L, smtp_rejected_text);
	lua_setfield(L, -2, "rejected");
	for (size_t id = 0; id < REPLY_COUNT; id++) {
		const struct smtp_reply *r = &smtp_replies[id];
		lua_createtable(L, 3, 0);
		lua_pushinteger(L, r->code);
		lua_rawseti(L, -2, 1);
		lua_pushstring(L, r->enhanced);
		lua_rawseti(L, -2, 2);
		lua_pushlstring(L, r->text, r->text_len);
		lua_rawseti(L, -2, 3);
		lua_setfield(L, -2, r->name);
	}
	return 1;
}
