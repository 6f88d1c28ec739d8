/* lua_guard — keeps a runaway script from taking the server down: a ceiling
 * on the Lua heap while hooks run (an allocation over it fails, so the hook
 * fails with 451), and a watchdog timer for hooks that run past
 * hookTimeout: it interrupts interpreted code with a debug hook, and ends
 * the process when compiled code cannot be interrupted (the master, or the
 * service manager, starts a fresh one). */
#ifndef LUASMTPD_LUA_GUARD_H
#define LUASMTPD_LUA_GUARD_H

#include <lua.h>
#include <stddef.h>

/* A Lua state whose allocations are counted. */
lua_State *lua_guard_newstate(void);
/* 0: no ceiling. */
void lua_guard_set_memory_limit(size_t bytes);
size_t lua_guard_memory_used(void);
/* Starts the watchdog (once a process). */
void lua_guard_start(lua_State *L);
/* The watchdog's clock, monotonic seconds; hooks are timed with it too. */
double lua_guard_now(void);
/* Around every resume of a hook's coroutine; now from lua_guard_now(). */
void lua_guard_enter(double timeout, double now);
void lua_guard_leave(void);

#endif
