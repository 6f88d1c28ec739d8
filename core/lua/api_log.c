/* api_log — smtp.log.debug/info/warn/error(msg, fields): a logfmt line on
 * the core's log, with the session's id when a hook (or a light thread or
 * coroutine of it) writes it. */
#include "base/log.h"
#include "lua/lua_api.h"
#include "lua/lua_hook.h"
#include "lua/modules.h"
#include "net/conn.h"

/* write(level, msg [, fields]) */
static int log_write(lua_State *L)
{
	enum log_level level;
	if (!log_parse_level(luaL_checkstring(L, 1), &level))
		return luaL_argerror(L, 1, "expected debug, info, warn or error");
	if (!log_enabled(level))
		return 0;
	const char *msg = luaL_checkstring(L, 2);
	struct conn *c = hook_of(L);
	struct buf line = {0};
	log_begin(&line, level, c ? conn_session_id(c) : NULL, msg);
	if (lua_type(L, 3) == LUA_TTABLE) {
		lua_pushnil(L);
		while (lua_next(L, 3)) {
			if (lua_type(L, -2) == LUA_TSTRING) {
				lua_getglobal(L, "tostring");
				lua_pushvalue(L, -2);
				lua_call(L, 1, 1);
				size_t len;
				const char *v = lua_tolstring(L, -1, &len);
				log_field(&line, lua_tostring(L, -3), v ? v : "", v ? len : 0);
				lua_pop(L, 1);
			}
			lua_pop(L, 1);
		}
	}
	log_end(&line);
	return 0;
}

int luaopen_smtp_log(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{"write", log_write},
		{NULL, NULL},
	};
	return lua_api_module(L, fns);
}
