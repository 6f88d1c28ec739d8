/* api_server — smtp.server, the running server as scripts see it:
 * updateSecureContext(opts), connections, close(). */
#include "lua/lua_api.h"
#include "lua/modules.h"
#include "lua/server_ops.h"
#include "net/server.h"

static struct server *server_check(lua_State *L)
{
	if (!server_current)
		luaL_error(L, "smtp.server: the server is not running yet (called while loading the script?)");
	return server_current;
}

/* update_secure_context(opts) -> true | nil, err */
static int server_lua_update_secure_context(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	struct server *srv = server_check(L);
	char err[512];
	if (!lua_update_secure_context(srv, L, 1, err, sizeof err))
		return lua_api_fail(L, err);
	lua_pushboolean(L, 1);
	return 1;
}

static int server_lua_connections(lua_State *L)
{
	lua_pushinteger(L, server_current ? (lua_Integer)server_current->nconns : 0);
	return 1;
}

static int server_lua_close(lua_State *L)
{
	server_stop(server_check(L), "smtp.server:close()");
	return 0;
}

/* worker_id() -> 0 .. count - 1; worker_count() -> the number of workers
 * (1 in a single process): what ngx.worker.id/count answer. */
static int server_lua_worker_id(lua_State *L)
{
	lua_pushinteger(L, server_current ? (lua_Integer)server_current->worker_id : 0);
	return 1;
}

static int server_lua_worker_count(lua_State *L)
{
	unsigned n = server_current ? server_current->worker_count : 0;
	lua_pushinteger(L, n ? (lua_Integer)n : 1);
	return 1;
}

int luaopen_smtp_server(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{"update_secure_context", server_lua_update_secure_context},
		{"connections", server_lua_connections},
		{"close", server_lua_close},
		{"worker_id", server_lua_worker_id},
		{"worker_count", server_lua_worker_count},
		{NULL, NULL},
	};
	return lua_api_module(L, fns);
}
