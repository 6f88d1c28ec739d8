/* lua_hook — runs a script's hook in its own coroutine. A hook that calls a
 * yielding function (smtp.sleep, stream:read) suspends only its own
 * session; the loop resumes it when the awaited event comes. */
#ifndef LUASMTPD_LUA_HOOK_H
#define LUASMTPD_LUA_HOOK_H

#include "lua/config.h"
#include "base/log.h"
#include "smtp/policy.h"

#include <ev.h>
#include <lua.h>
#include <stdbool.h>

struct conn;

/* What a finished hook said is a struct hook_outcome (smtp/policy.h),
 * reduced to an SMTP reply for the non-accept cases. The hook's return
 * values stay on the coroutine for the done callback (onAuth's table,
 * onData's text). */
typedef void (*hook_done_fn)(struct conn *c, const struct hook_outcome *o, lua_State *co, int nres);
/* hook_prepare's function runs inside another that returns one value of
 * its own before the hook's: set after hook_prepare. */
void hook_results_after_one(struct conn *c);

/* WAIT_THREADS: in ngx.thread.wait, until a light thread it waits on ends. */
enum hook_wait { WAIT_NONE, WAIT_PENDING, WAIT_STREAM, WAIT_THREADS };

struct hook_uthread; /* a light thread of the hook (lua_uthread.h) */

/* The one operation a suspended hook waits on (a socket, a lookup, a
 * sleep), registered as it yields. Its completion resumes the hook only
 * if the hook run that yielded is still the one on the connection (the
 * generation matches); if the hook goes first (the connection dies,
 * hookTimeout), cleanup runs instead: it stops the operation (watchers,
 * query) so that no completion comes, and must not resume anything. */
struct hook_pending {
	void (*cleanup)(struct hook_pending *p);
	struct conn *c; /* whose hook yielded on it */
	unsigned gen;   /* that hook run's generation */
	struct hook_uthread *thread; /* the light thread that waits, NULL: the hook's own coroutine */
};

struct hook_run {
	lua_State *co;
	int co_ref;
	enum hook_id id;
	hook_done_fn done;
	struct hook_timers *timers; /* only once the hook suspends: most never do */
	enum hook_wait wait;
	unsigned gen;                 /* bumped as each run starts and ends */
	struct hook_pending *pending; /* with WAIT_PENDING */
	double started; /* lua_guard_now() at its first resume */
	/* Where the hook's return values start on its coroutine: 1, or 2 when
	 * it runs inside a function that returns a value of its own first
	 * (the address a MAIL/RCPT hook judged, lua_session_judge_push). */
	int first_result;
	/* ngx.thread: the run's light threads (lua_uthread.c), the one running
	 * now (NULL: the hook's own coroutine), and whether the hook's own
	 * coroutine has returned while some of them still run. */
	struct hook_uthread *uthreads;
	struct hook_uthread *current;
	bool entry_done;
	bool active; /* (the bools last: an idle session's state stays small) */
};

/* Readies hook id of c's options: returns the coroutine with the function
 * pushed (push the arguments next), or NULL when the script has no such hook. */
lua_State *hook_prepare(struct conn *c, enum hook_id id);
/* Runs it. done is called once, possibly before hook_start returns. */
void hook_start(struct conn *c, int nargs, hook_done_fn done);
/* For a hook the script does not define: done(accept), at once. */
void hook_accept_now(struct conn *c, hook_done_fn done);
/* Resumes a hook waiting on its message stream, with nres values pushed. */
void hook_wake(struct conn *c, int nres);
/* Drops a hook in flight (the connection is gone). */
void hook_cancel(struct conn *c);
/* A hook's coroutine (or a light thread) is being resumed now. */
bool hook_in_progress(void);
/* The connection whose hook is running on L, or NULL (wrong coroutine). */
struct conn *hook_current(lua_State *L);
/* True when L may wait on the network: the running hook's coroutine, one
 * of its light threads, a timer callback's (lua_timer.h), or a coroutine
 * one of them resumed (lua_cowait.c passes the wait up). */
bool hook_can_wait(lua_State *L);
/* lua_cowait.c: pushes the value such a nested coroutine yields to wait. */
void hook_push_wait_marker(lua_State *L);
/* Suspends the running hook for s seconds (smtp.sleep). */
int hook_sleep(lua_State *L, double s);
/* Suspends the running hook until p's operation completes (p->cleanup
 * set by the caller). Returns what lua_yield returns, or raises when L is
 * not a hook's own coroutine. */
int hook_wait(lua_State *L, struct hook_pending *p);
/* The coroutine to push p's results on, or NULL when p's hook run is over
 * (the completion is stale: drop it, resume nothing). */
lua_State *hook_pending_thread(const struct hook_pending *p);
/* p has completed with nres results pushed on hook_pending_thread(p):
 * resumes the hook. */
void hook_pending_done(struct hook_pending *p, int nres);

/* For lua_uthread.c. The connection whose hook runs L (its own coroutine,
 * a light thread, or a coroutine one of them resumed), or NULL. */
struct conn *hook_of(lua_State *L);
/* Yields L up to the hook's own coroutine or light thread it runs under
 * (L itself, or through lua_cowait.c's marker), once what it waits on is
 * registered. */
int hook_yield(lua_State *L, struct conn *c);
/* The hook's own coroutine, waiting in ngx.thread.wait,
 * resumed with nres values pushed on it (from the loop). */
void hook_entry_wake(struct conn *c, int nres);
/* A light thread has ended: the hook ends too when its own coroutine has
 * returned and no light thread runs. Call last: it may free c. */
void hook_thread_ended(struct conn *c);
/* Resumes light thread t's coroutine co from the loop, under the hook's
 * watchdog and clock; returns lua_resume's status. */
int hook_resume_uthread(struct conn *c, struct hook_uthread *t, lua_State *co, int nargs);

/* Turns a rejection value (a string or an smtp.reject table) at idx into
 * o. False when reading the table raised (an __index of the script's):
 * o is then the internal error, and the error is pushed on L. */
bool hook_outcome_from_value(lua_State *L, int idx, int default_code, struct hook_outcome *o);
/* The outcome of a hook that raised: 451 4.3.0, internal error. */
void hook_internal_error(struct hook_outcome *o);

#endif
