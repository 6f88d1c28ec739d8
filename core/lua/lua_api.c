#include "lua/lua_api.h"

#include "lua/lua_runtime.h"

#include <errno.h>
#include <string.h>

int lua_api_module(lua_State *L, const luaL_Reg *fns)
{
	lua_newtable(L);
	luaL_register(L, NULL, fns);
	return 1;
}

int lua_api_fail(lua_State *L, const char *err)
{
	lua_pushnil(L);
	lua_pushstring(L, err);
	return 2;
}

const char *lua_api_errno(int e)
{
	switch (e) {
	case ECONNREFUSED: return LUA_ERR_REFUSED;
	case ETIMEDOUT: return LUA_ERR_TIMEOUT;
	default: return strerror(e);
	}
}

struct lua_api_class lua_api_class_of(lua_State *L)
{
	const void *mt = lua_topointer(L, -1);
	return (struct lua_api_class){.ref = luaL_ref(L, LUA_REGISTRYINDEX), .mt = mt};
}

struct lua_api_class lua_api_class(lua_State *L, const luaL_Reg *methods, const luaL_Reg *meta)
{
	lua_newtable(L);
	if (methods) {
		lua_newtable(L);
		luaL_register(L, NULL, methods);
		lua_setfield(L, -2, "__index");
	}
	if (meta)
		luaL_register(L, NULL, meta);
	return lua_api_class_of(L);
}

void *lua_api_newudata(lua_State *L, size_t size, const struct lua_api_class *cls)
{
	void *p = lua_newuserdata(L, size);
	memset(p, 0, size);
	lua_rawgeti(L, LUA_REGISTRYINDEX, cls->ref);
	lua_setmetatable(L, -2);
	return p;
}

void *lua_api_checkudata(lua_State *L, int idx, const struct lua_api_class *cls, const char *name)
{
	void *p = lua_touserdata(L, idx);
	if (!p || !lua_has_metatable(L, idx, cls->mt))
		luaL_typerror(L, idx, name);
	return p;
}

static int lua_api_index(lua_State *L)
{
	lua_gettable(L, 1);
	return 1;
}

bool lua_api_getfield(lua_State *L, int idx, const char *key)
{
	idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
	if (!lua_getmetatable(L, idx)) { /* a plain table: its own fields, nothing can raise */
		lua_pushstring(L, key);
		lua_rawget(L, idx);
		return true;
	}
	lua_pop(L, 1);
	static int index_ref = LUA_NOREF;
	if (index_ref == LUA_NOREF) {
		lua_pushcfunction(L, lua_api_index);
		index_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	}
	lua_rawgeti(L, LUA_REGISTRYINDEX, index_ref);
	lua_pushvalue(L, idx);
	lua_pushstring(L, key);
	return lua_pcall(L, 2, 1, 0) == 0;
}

void lua_api_rawsetfield(lua_State *L, int idx, const char *key)
{
	idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
	lua_pushstring(L, key);
	lua_insert(L, -2);
	lua_rawset(L, idx);
}

void lua_api_set_fields(lua_State *L, int idx, const struct lua_api_field *f, size_t n)
{
	idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
	for (size_t i = 0; i < n; i++) {
		switch (f[i].type) {
		case LUA_API_STRING:
			if (f[i].s)
				lua_pushstring(L, f[i].s);
			else
				lua_pushnil(L);
			break;
		case LUA_API_INTEGER:
			lua_pushinteger(L, f[i].i);
			break;
		case LUA_API_BOOLEAN:
			lua_pushboolean(L, (int)f[i].i);
			break;
		}
		lua_api_rawsetfield(L, idx, f[i].key);
	}
}
