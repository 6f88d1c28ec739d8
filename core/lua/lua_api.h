/* lua_api — the one idiom of the core's Lua modules (api_*.c): a module is
 * one luaL_Reg table returned by one luaopen_smtp_<module>, listed once in
 * modules.c; arguments are checked with luaL_check*, and misuse raises;
 * an expected failure returns nil, err with err from errors.h; a userdata's
 * class is its metatable, held by registry reference and told by its
 * address. */
#ifndef LUASMTPD_LUA_API_H
#define LUASMTPD_LUA_API_H

#include "lua/errors.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdbool.h>
#include <stddef.h>

/* A luaopen_smtp_<module>'s body: pushes a new table of fns, returns 1. */
int lua_api_module(lua_State *L, const luaL_Reg *fns);
/* Pushes nil, err and returns 2: `return lua_api_fail(L, LUA_ERR_CLOSED);`. */
int lua_api_fail(lua_State *L, const char *err);
/* The errors.h string for errno e, else strerror(e). */
const char *lua_api_errno(int e);
/* A class of userdata: its metatable, which the registry keeps (ref), and
 * that table's address, which tells the class of a value without a fetch
 * from the registry (lua_has_metatable). */
struct lua_api_class {
	int ref;
	const void *mt;
};
#define LUA_API_CLASS_NONE {LUA_NOREF, NULL}
/* A new class: a metatable whose __index is a table of methods, with the
 * metamethods of meta (either may be NULL). */
struct lua_api_class lua_api_class(lua_State *L, const luaL_Reg *methods, const luaL_Reg *meta);
/* The class of the table on top of L (popped), kept in the registry. */
struct lua_api_class lua_api_class_of(lua_State *L);
/* Pushes a zeroed userdata of size bytes and class cls. */
void *lua_api_newudata(lua_State *L, size_t size, const struct lua_api_class *cls);
/* The userdata at idx if its class is cls, else raises a bad argument
 * error naming the class expected (name). */
void *lua_api_checkudata(lua_State *L, int idx, const struct lua_api_class *cls, const char *name);

/* Pushes t.key, t the table at idx, with its metamethods as Lua would
 * run them, but protected: a table a hook gives back to the core may be
 * an object whose __index raises (a "strict" one). False, with the error
 * pushed instead of the value, when the lookup raised. */
bool lua_api_getfield(lua_State *L, int idx, const char *key);
/* t[key] = the value on top (popped), t at idx, without metamethods: the
 * core's writes to the script's tables (the session's) go through no
 * __newindex of the script's. */
void lua_api_rawsetfield(lua_State *L, int idx, const char *key);

/* One field of a table written from C by lua_api_set_fields: a string
 * (NULL sets nil), an integer or a boolean. */
struct lua_api_field {
	const char *key;
	enum lua_api_field_type { LUA_API_STRING, LUA_API_INTEGER, LUA_API_BOOLEAN } type;
	const char *s;
	lua_Integer i; /* the integer; a boolean's 0 or 1 */
};
#define LUA_API_FIELD_STRING(k, v) {(k), LUA_API_STRING, (v), 0}
#define LUA_API_FIELD_INTEGER(k, v) {(k), LUA_API_INTEGER, NULL, (v)}
#define LUA_API_FIELD_BOOLEAN(k, v) {(k), LUA_API_BOOLEAN, NULL, (v) ? 1 : 0}
/* Sets the n fields f, in order, in the table at idx (raw, as
 * lua_api_rawsetfield). */
void lua_api_set_fields(lua_State *L, int idx, const struct lua_api_field *f, size_t n);

#endif
