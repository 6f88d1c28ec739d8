/* lua_runtime — the one LuaJIT state of the process: package paths, the
 * C modules preloaded (modules.c), loading a script. */
#ifndef LUASMTPD_LUA_RUNTIME_H
#define LUASMTPD_LUA_RUNTIME_H

#include "lua/config.h"

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>

extern lua_State *lua_main;

bool lua_runtime_init(int argc, char **argv, char *err, size_t errlen);
/* Runs the script (afresh: modules it required before are forgotten) and
 * reads its options. NULL and a message in err on failure. */
struct config *lua_runtime_load(const char *path, char **listen_override, size_t noverride,
                                char *err, size_t errlen);
void lua_runtime_close(void);
/* Has the value at idx the metatable mt (its address, lua_topointer's;
 * NULL: none can)? Compared by address: no lookup by name (which interns
 * the name) nor fetch from the registry on hot paths (a stream's read). */
bool lua_has_metatable(lua_State *L, int idx, const void *mt);
/* Is the value at idx an smtp.reject object? */
bool lua_is_reject(lua_State *L, int idx);
/* A coroutine from the pool, and its return. Only a coroutine that ended
 * normally is reusable; one that raised is dead and just unreferenced. */
lua_State *lua_thread_acquire(int *ref);
void lua_thread_release(lua_State *co, int ref, bool reusable);

#endif
