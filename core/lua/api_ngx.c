/* api_ngx — what lua/smtp/ngx.lua needs from the core beyond regexes and
 * digests: the session whose hook is running, so that ngx.ctx is one
 * table per session (and fresh for each), ngx.null, the NULL light
 * userdata (equal to cjson.null, as libraries expect), ngx.thread's
 * light threads (lua_uthread.c) and ngx.timer (lua_timer.c). */
#include "lua/lua_api.h"
#include "lua/lua_hook.h"
#include "lua/lua_session.h"
#include "lua/lua_timer.h"
#include "lua/lua_uthread.h"
#include "lua/modules.h"

#include <stddef.h>

/* session(): the running hook's session table (in its own coroutine, a
 * light thread or a coroutine they made), or nil outside a hook (at load
 * time). */
static int ngx_session(lua_State *L)
{
	struct conn *c = hook_of(L);
	if (!c)
		lua_pushnil(L);
	else
		lua_session_push(L, c);
	return 1;
}

int luaopen_smtp_ngx(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{"session", ngx_session},
		{"spawn", uthread_spawn},
		{"wait", uthread_wait},
		{"kill", uthread_kill},
		{"timer_at", lua_timer_at},
		{"timer_every", lua_timer_every},
		{"timer_running_count", lua_timer_running_count},
		{"timer_pending_count", lua_timer_pending_count},
		{"exiting", lua_timer_exiting_now},
		{NULL, NULL},
	};
	lua_api_module(L, fns);
	lua_pushlightuserdata(L, NULL);
	lua_setfield(L, -2, "null");
	return 1;
}
