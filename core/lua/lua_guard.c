#include "lua/lua_guard.h"

#include "base/log.h"
#include "base/smallblock.h"

#include <lauxlib.h>

#include <pthread.h>
#include <stdatomic.h>
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

static size_t guard_used;
static size_t guard_limit;
static bool guard_armed; /* the ceiling applies only inside hooks */

/* Shared by the loop's thread and the watchdog without a lock on the way
 * in and out of every hook (two lock pairs per resume were a tenth of the
 * server's own time per message): the loop publishes each run with a
 * generation, odd while it runs; only lua_sethook is serialised (lock),
 * and a debug hook that fires for a run that has ended just removes
 * itself (guard_timeout_hook). */
static struct {
	pthread_mutex_t lock; /* around lua_sethook, from either thread */
	lua_State *L;
	bool started;
	_Atomic uint64_t run;        /* odd: the generation of the hook running; 0: none */
	_Atomic double deadline;     /* of that run */
	_Atomic double timeout;      /* of that run, for the messages */
	_Atomic bool hook_set;       /* the debug hook is on */
	_Atomic uint64_t hooked_run; /* the run it was set for */
} guard = {.lock = PTHREAD_MUTEX_INITIALIZER};
static uint64_t guard_runs; /* the loop's thread only */

/* Under guard.lock. */
static void guard_clear_hook(void)
{
	lua_sethook(guard.L, NULL, 0, 0);
	atomic_store(&guard.hook_set, false);
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
	if (atomic_load(&guard.run) != atomic_load(&guard.hooked_run)) {
		/* Set for a run that ended meanwhile: not this code's business. */
		pthread_mutex_lock(&guard.lock);
		if (atomic_load(&guard.run) != atomic_load(&guard.hooked_run))
			guard_clear_hook();
		pthread_mutex_unlock(&guard.lock);
		return;
	}
	luaL_error(L, "hook ran longer than hookTimeout (%f s): interrupted", atomic_load(&guard.timeout));
}

static void guard_log_stuck(void)
{
	char timeout[32];
	snprintf(timeout, sizeof timeout, "%g", atomic_load(&guard.timeout));
	/* This thread is not the one that logs: log_fatal writes at once. */
	log_fatal("a hook is stuck in compiled Lua code past hookTimeout: ending this process so that a "
	          "fresh one serves (the master restarts a worker)",
	          "hookTimeout", timeout, NULL);
}

static void *guard_watch(void *arg)
{
	(void)arg;
	for (;;) {
		struct timespec tick = {0, GUARD_TICK_NS};
		nanosleep(&tick, NULL);
		uint64_t run = atomic_load(&guard.run);
		double deadline = atomic_load(&guard.deadline);
		double now = lua_guard_now();
		bool late = run && now > deadline;
		if (late && !atomic_load(&guard.hook_set)) {
			pthread_mutex_lock(&guard.lock);
			/* Asynchronous, as lua_sethook allows: the interpreter checks it
			 * at its next instruction. */
			atomic_store(&guard.hooked_run, run);
			lua_sethook(guard.L, guard_timeout_hook, LUA_MASKCOUNT, 1);
			atomic_store(&guard.hook_set, true);
			/* The run may have ended before the hook was on, without seeing
			 * it on (lua_guard_leave): then it is taken off here. */
			if (atomic_load(&guard.run) != run)
				guard_clear_hook();
			pthread_mutex_unlock(&guard.lock);
		}
		if (late && now > deadline + GUARD_GRACE && atomic_load(&guard.run) == run) {
			guard_log_stuck();
			_exit(70);
		}
	}
	return NULL;
}

void lua_guard_start(lua_State *L)
{
	/* Threads do not survive fork: each serving process starts its own. */
	if (guard.started)
		return;
	guard.L = L;
	pthread_t t;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	if (pthread_create(&t, &attr, guard_watch, NULL) == 0)
		guard.started = true;
	pthread_attr_destroy(&attr);
}

void lua_guard_enter(double timeout, double now)
{
	guard_armed = true;
	if (!guard.started || timeout <= 0)
		return;
	atomic_store_explicit(&guard.timeout, timeout, memory_order_relaxed);
	atomic_store_explicit(&guard.deadline, now + timeout, memory_order_relaxed);
	guard_runs++;
	atomic_store_explicit(&guard.run, guard_runs << 1 | 1, memory_order_release);
}

void lua_guard_leave(void)
{
	guard_armed = false;
	if (!guard.started)
		return;
	/* Sequentially consistent with the watchdog's store of hook_set and
	 * load of run: one of the two sees the other, and takes the hook off. */
	atomic_store(&guard.run, 0);
	if (atomic_load(&guard.hook_set)) {
		pthread_mutex_lock(&guard.lock);
		if (atomic_load(&guard.hook_set))
			guard_clear_hook();
		pthread_mutex_unlock(&guard.lock);
	}
}
