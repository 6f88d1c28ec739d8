#include "lua/lua_guard.h"

#include "base/log.h"
#include "base/smallblock.h"

#include <lauxlib.h>

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A hook still running this long after its deadline is stuck in compiled
 * code, which no debug hook reaches. */
#define GUARD_GRACE 5.0
#define GUARD_TICK_NS 100000000L
#define GUARD_SIGNAL SIGALRM

static size_t guard_used;
static size_t guard_limit;
static bool guard_armed; /* the ceiling applies only inside hooks */

/* The watchdog is a timer whose signal is delivered to the loop's own
 * thread, not a thread of its own: a second thread in the process makes
 * the kernel take and drop a reference on the file at every read and write
 * of a socket (fdget on a shared file table), which was 3% of a pipelined
 * message's CPU. The handler interrupts the loop's thread between two of
 * its instructions, so what it shares with it needs only to be read and
 * written in program order (volatile), not locked; lua_sethook may be
 * called from a signal handler (LuaJIT's own luajit.c does). The timer
 * ticks while hooks run and stops itself after a tick with none, so an
 * idle server is not woken. */
static struct {
	lua_State *L;
	timer_t timer;
	bool started;
	volatile sig_atomic_t ticking;  /* the timer is set */
	volatile sig_atomic_t running;  /* a watched run is on */
	volatile sig_atomic_t hook_set; /* the debug hook is on */
	volatile unsigned long runs;    /* counts the runs (lua_guard_enter) */
	unsigned long runs_at_tick;     /* the handler's: runs at its last tick */
	volatile double deadline;       /* of the run that is on */
	volatile double timeout;        /* of that run, for the messages */
	/* timeout as "%g" writes it, for the handler, which may not call
	 * printf: written when a run's timeout differs from the last one's,
	 * before the run is on. */
	char timeout_text[32];
} guard;

static void guard_clear_hook(void)
{
	lua_sethook(guard.L, NULL, 0, 0);
	guard.hook_set = 0;
}

static void *guard_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	(void)ud;
	if (nsize == 0) {
		smallblock_realloc(ptr, osize, 0);
		guard_used -= osize;
		return NULL;
	}
	/* Outside hooks the core itself allocates (session tables...): failing
	 * there would be an unprotected error, so the ceiling is for hooks. */
	if (guard_armed && guard_limit && nsize > osize && guard_used + (nsize - osize) > guard_limit)
		return NULL;
	void *p = smallblock_realloc(ptr, osize, nsize);
	if (p)
		guard_used = guard_used - osize + nsize;
	return p;
}

lua_State *lua_guard_newstate(void)
{
	return lua_newstate(guard_alloc, NULL);
}

void lua_guard_set_memory_limit(size_t bytes)
{
	guard_limit = bytes;
}

size_t lua_guard_memory_used(void)
{
	return guard_used;
}

double lua_guard_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void guard_timeout_hook(lua_State *L, lua_Debug *ar)
{
	(void)ar;
	if (!guard.running) {
		/* Not this code's business: the run it was set for has ended. */
		guard_clear_hook();
		return;
	}
	luaL_error(L, "hook ran longer than hookTimeout (%f s): interrupted", guard.timeout);
}

static void guard_on_tick(int sig)
{
	(void)sig;
	int saved_errno = errno;
	if (guard.running) {
		double now = lua_guard_now();
		double deadline = guard.deadline;
		if (now > deadline && !guard.hook_set) {
			/* The interpreter checks it at its next instruction. */
			lua_sethook(guard.L, guard_timeout_hook, LUA_MASKCOUNT, 1);
			guard.hook_set = 1;
		}
		if (now > deadline + GUARD_GRACE) {
			log_fatal("a hook is stuck in compiled Lua code past hookTimeout: ending this process so that a "
			          "fresh one serves (the master restarts a worker)",
			          "hookTimeout", guard.timeout_text, NULL);
			_exit(70);
		}
	} else if (guard.runs == guard.runs_at_tick) {
		struct itimerspec off = {0};
		timer_settime(guard.timer, 0, &off, NULL);
		guard.ticking = 0;
	}
	guard.runs_at_tick = guard.runs;
	errno = saved_errno;
}

void lua_guard_start(lua_State *L)
{
	/* Timers do not survive fork: each serving process starts its own. */
	if (guard.started)
		return;
	guard.L = L;
	struct sigaction sa = {.sa_handler = guard_on_tick, .sa_flags = SA_RESTART};
	sigemptyset(&sa.sa_mask);
	struct sigevent ev = {.sigev_notify = SIGEV_THREAD_ID, .sigev_signo = GUARD_SIGNAL};
	ev._sigev_un._tid = gettid(); /* sigev_notify_thread_id, which glibc 2.36 does not name */
	if (sigaction(GUARD_SIGNAL, &sa, NULL) != 0 || timer_create(CLOCK_MONOTONIC, &ev, &guard.timer) != 0) {
		log_kv(LOG_WARN, NULL, "no hook watchdog: hookTimeout does not interrupt a hook that runs", "error",
		       strerror(errno), NULL);
		return;
	}
	guard.started = true;
}

void lua_guard_enter(double timeout, double now)
{
	guard_armed = true;
	if (!guard.started || timeout <= 0)
		return;
	if (timeout != guard.timeout)
		snprintf(guard.timeout_text, sizeof guard.timeout_text, "%g", timeout);
	guard.timeout = timeout;
	guard.deadline = now + timeout;
	guard.runs++;
	guard.running = 1;
	/* After running is set: a tick between the two cannot stop the timer. */
	if (!guard.ticking) {
		guard.ticking = 1;
		struct itimerspec tick = {{0, GUARD_TICK_NS}, {0, GUARD_TICK_NS}};
		timer_settime(guard.timer, 0, &tick, NULL);
	}
}

void lua_guard_leave(void)
{
	guard_armed = false;
	if (!guard.started)
		return;
	guard.running = 0;
	if (guard.hook_set)
		guard_clear_hook();
}
