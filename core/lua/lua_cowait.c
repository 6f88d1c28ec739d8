/* lua_cowait — lets a coroutine that a hook creates (lua-resty-http reads
 * a body in one, through coroutine.wrap) wait on a cosocket. A cosocket
 * call in such a coroutine yields a marker instead of the hook's own
 * coroutine; coroutine.resume and coroutine.wrap, replaced here before any
 * script runs, pass a marker on by yielding it from their own coroutine,
 * up to the hook, which the runner then keeps suspended; the values the
 * hook is resumed with go back down to the coroutine that waits. Ordinary
 * yields are untouched. (OpenResty does the same in its coroutine API.) */
#include "lua/lua_hook.h"
#include "lua/modules.h"

#include <lauxlib.h>

static char cowait_marker;

void hook_push_wait_marker(lua_State *L)
{
	lua_pushlightuserdata(L, &cowait_marker);
}

static const char cowait_source[] =
	"local marker, create, resume, yield, status, select = ...\n"
	"local function pass(co, ok, ...)\n"
	"  if ok and select('#', ...) == 1 and (...) == marker and status(co) == 'suspended' then\n"
	"    return pass(co, resume(co, yield(marker)))\n"
	"  end\n"
	"  return ok, ...\n"
	"end\n"
	"local function co_resume(co, ...) return pass(co, resume(co, ...)) end\n"
	"local function raise(ok, ...)\n"
	"  if not ok then error((...), 0) end\n"
	"  return ...\n"
	"end\n"
	"coroutine.resume = co_resume\n"
	"coroutine.wrap = function(f)\n"
	"  local co = create(f)\n"
	"  return function(...) return raise(co_resume(co, ...)) end\n"
	"end\n";

void lua_cowait_install(lua_State *L)
{
	if (luaL_loadbuffer(L, cowait_source, sizeof cowait_source - 1, "=cowait") != 0)
		luaL_error(L, "cowait: %s", lua_tostring(L, -1)); /* our own source: never */
	hook_push_wait_marker(L);
	lua_getglobal(L, "coroutine");
	lua_getfield(L, -1, "create");
	lua_getfield(L, -2, "resume");
	lua_getfield(L, -3, "yield");
	lua_getfield(L, -4, "status");
	lua_remove(L, -5);
	lua_getglobal(L, "select");
	lua_call(L, 6, 0);
}
