/* lua_uthread — ngx.thread's light threads (lua-nginx-module's "user
 * threads"): coroutines of one hook run that the runner resumes itself, so
 * that each waits on its own pending operation while the others go on.
 * spawn runs the new thread at once until it first waits; wait(t, ...)
 * suspends its caller until the first of them ends; kill stops one and
 * runs its pending operation's cleanup. The hook's own coroutine is the
 * "entry thread": its return value is the verdict, and, as in
 * lua-nginx-module's content phase, the hook ends only once it has
 * returned and every light thread has ended; if it raises, the light
 * threads are killed with it. */
#ifndef LUASMTPD_LUA_UTHREAD_H
#define LUASMTPD_LUA_UTHREAD_H

#include "lua/lua_hook.h"

#include <ev.h>
#include <lua.h>
#include <stdbool.h>

/* lua-nginx-module's co_status: running (possibly suspended), ended but
 * not yet waited for (its results kept), waited for or killed. */
enum uthread_status { UT_RUNNING, UT_ZOMBIE, UT_DEAD };

struct hook_uthread {
	lua_State *co;
	int ref;
	struct hook_uthread *parent; /* who spawned it, NULL: the entry thread */
	struct hook_uthread *next;   /* the run's list; freed as the run ends */
	struct hook_pending *pending; /* the operation it waits on, if any */
	enum uthread_status status;
	bool waiting; /* in ngx.thread.wait */
	bool waited;  /* its parent's ngx.thread.wait names it */
	unsigned gen;  /* a timer callback's (lua_timer.c): bumped as its record is reused */
	ev_timer sleep; /* its ngx.sleep, a pending operation like any other */
	struct hook_pending sleeping;
};

/* Light thread t's pending operation has completed with nres values
 * pushed on t's coroutine: resumes it, and each waiting parent in turn as
 * threads end. May end the hook (and free c, in onClose). */
void uthread_pending_done(struct conn *c, struct hook_uthread *t, int nres);
/* Readies a new record's ngx.sleep. */
void uthread_init(struct hook_uthread *t);
/* Suspends light thread (or timer callback) t for s seconds. */
int uthread_sleep(lua_State *L, struct hook_uthread *t, double s);
/* Some light thread of h has not ended. */
bool uthread_any_running(const struct hook_run *h);
/* Stops every light thread of h (each pending operation's cleanup runs,
 * nothing is resumed) and frees them: the run is over. */
void uthread_drop_all(struct hook_run *h);

/* ngx.thread.spawn, wait and kill (smtp.core.ngx). */
int uthread_spawn(lua_State *L);
int uthread_wait(lua_State *L);
int uthread_kill(lua_State *L);

#endif
