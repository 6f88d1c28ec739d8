/* lua_timer — ngx.timer.at and ngx.timer.every, lua-nginx-module's timers:
 * a callback run later, outside any session, in a coroutine of its own
 * that may wait like a hook (cosockets, ngx.sleep, lookups) while the
 * worker serves. The callback gets `premature` first: true when the worker
 * stops, drains or reloads its script, as nginx runs its pending timers at
 * once when a worker exits. Timers made while the script loads start when
 * a worker serves (nginx's init_worker_by_lua). An error in a callback is
 * logged; it never reaches a session. */
#ifndef LUASMTPD_LUA_TIMER_H
#define LUASMTPD_LUA_TIMER_H

#include "lua/lua_uthread.h"

#include <lua.h>
#include <stdbool.h>

/* lua_max_pending_timers and lua_max_running_timers' defaults. */
#define TIMER_MAX_PENDING 1024
#define TIMER_MAX_RUNNING 256

/* The timer callback running now, NULL when none is. */
extern struct hook_uthread *timer_running;

/* Timer callback t's pending operation completed, nres values on its
 * coroutine: resumes it. */
void timer_pending_done(struct hook_uthread *t, int nres);

/* Around each load of the script: the timers it makes replace the last
 * load's once it succeeds (lua_runtime_load). */
void lua_timer_load_begin(void);
void lua_timer_load_end(bool ok);
/* The worker serves: the timers the script made start. */
void lua_timer_serving(void);
/* The worker stops or drains: each pending timer runs now, premature. */
void lua_timer_exiting(void);
/* The runtime closes: timers and callbacks in flight end here. */
void lua_timer_close(void);

/* ngx.timer.at, every, running_count, pending_count; ngx.worker.exiting. */
int lua_timer_at(lua_State *L);
int lua_timer_every(lua_State *L);
int lua_timer_running_count(lua_State *L);
int lua_timer_pending_count(lua_State *L);
int lua_timer_exiting_now(lua_State *L);

#endif
