/* api_timer — time for scripts: smtp.sleep(s), which suspends only the
 * calling hook, and smtp.now(). */
#include "lua/lua_api.h"
#include "lua/lua_hook.h"
#include "lua/modules.h"

#include <sys/time.h>

static int timer_sleep(lua_State *L)
{
	double s = luaL_checknumber(L, 1);
	if (!(s >= 0))
		return luaL_argerror(L, 1, "expected seconds >= 0");
	return hook_sleep(L, s);
}

static int timer_now(lua_State *L)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	lua_pushnumber(L, (double)tv.tv_sec + tv.tv_usec / 1e6);
	return 1;
}

int luaopen_smtp_timer(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{"sleep", timer_sleep},
		{"now", timer_now},
		{NULL, NULL},
	};
	return lua_api_module(L, fns);
}
