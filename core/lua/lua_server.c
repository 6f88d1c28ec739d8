/* lua_server — smtp.server, the running server as scripts see it:
 * updateSecureContext(opts), connections, close(). */
#include "lua/lua_server.h"

#include "lua/server_ops.h"
#include "net/server.h"

#include <lauxlib.h>

static struct server *lua_server_check(lua_State *L)
{
	if (!server_current)
		luaL_error(L, "smtp.server: the server is not running yet (called while loading the script?)");
	return server_current;
}

static int lua_server_update_secure_context(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	struct server *srv = lua_server_check(L);
	char err[512];
	if (!lua_update_secure_context(srv, L, 1, err, sizeof err)) {
		lua_pushnil(L);
		lua_pushstring(L, err);
		return 2;
	}
	lua_pushboolean(L, 1);
	return 1;
}

static int lua_server_connections(lua_State *L)
{
	lua_pushinteger(L, server_current ? (lua_Integer)server_current->nconns : 0);
	return 1;
}

static int lua_server_close(lua_State *L)
{
	server_stop(lua_server_check(L), "smtp.server:close()");
	return 0;
}

void lua_server_register(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{"server_update_secure_context", lua_server_update_secure_context},
		{"server_connections", lua_server_connections},
		{"server_close", lua_server_close},
		{NULL, NULL},
	};
	luaL_register(L, NULL, fns);
}
