#include "lua/lua_guard.h"

#include "base/log.h"

#include <lauxlib.h>

#include <pthread.h>
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

static struct {
	pthread_mutex_t lock;
	lua_State *L;
	bool started;
	bool running;
	bool hook_set;
	double deadline;
	double timeout;
} guard = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* The allocator under the count: LuaJIT's own (a dlmalloc for its small
 * objects, about three times cheaper per call than glibc's realloc, which
 * was an eighth of the server's instructions per message). Under
 * AddressSanitizer the C library's, so that a use after free of a Lua
 * object is still reported. */
#if defined(__SANITIZE_ADDRESS__)
#define GUARD_OWN_ALLOCATOR 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GUARD_OWN_ALLOCATOR 0
#endif
#endif
#ifndef GUARD_OWN_ALLOCATOR
#define GUARD_OWN_ALLOCATOR 1
#endif

struct guard_inner {
	lua_Alloc f;
	void *ud;
};

static void *guard_inner_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	const struct guard_inner *in = ud;
	if (in)
		return in->f(in->ud, ptr, osize, nsize);
	if (nsize)
		return realloc(ptr, nsize);
	free(ptr);
	return NULL;
}

static void *guard_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	if (nsize == 0) {
		guard_used -= osize;
		return guard_inner_alloc(ud, ptr, osize, 0);
	}
	/* Outside hooks the core itself allocates (session tables...): failing
	 * there would be an unprotected error, so the ceiling is for hooks. */
	if (guard_armed && guard_limit && nsize > osize && guard_used + (nsize - osize) > guard_limit)
		return NULL;
	void *p = guard_inner_alloc(ud, ptr, osize, nsize);
	if (p)
		guard_used = guard_used - osize + nsize;
	return p;
}

lua_State *lua_guard_newstate(void)
{
	if (!GUARD_OWN_ALLOCATOR)
		return lua_newstate(guard_alloc, NULL);
	struct guard_inner *in = malloc(sizeof *in);
	lua_State *L = in ? luaL_newstate() : NULL;
	if (!L) {
		free(in);
		return NULL;
	}
	in->f = lua_getallocf(L, &in->ud);
	/* What the state allocated before the count began is counted too. */
	guard_used += (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
	lua_setallocf(L, guard_alloc, in);
	return L;
}

void lua_guard_close(lua_State *L)
{
	void *ud;
	lua_getallocf(L, &ud);
	struct guard_inner *in = ud;
	/* LuaJIT frees its whole heap at once only under its own allocator. */
	if (in) {
		guard_used -= (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
		lua_setallocf(L, in->f, in->ud);
	}
	lua_close(L);
	free(in);
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
	luaL_error(L, "hook ran longer than hookTimeout (%f s): interrupted", guard.timeout);
}

static void guard_log_stuck(void)
{
	char timeout[32];
	snprintf(timeout, sizeof timeout, "%g", guard.timeout);
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
		pthread_mutex_lock(&guard.lock);
		double now = lua_guard_now();
		bool late = guard.running && now > guard.deadline;
		if (late && !guard.hook_set) {
			/* Asynchronous, as lua_sethook allows: the interpreter checks it
			 * at its next instruction. */
			lua_sethook(guard.L, guard_timeout_hook, LUA_MASKCOUNT, 1);
			guard.hook_set = true;
		}
		bool stuck = late && now > guard.deadline + GUARD_GRACE;
		pthread_mutex_unlock(&guard.lock);
		if (stuck) {
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
	pthread_mutex_lock(&guard.lock);
	guard.running = true;
	guard.timeout = timeout;
	guard.deadline = now + timeout;
	pthread_mutex_unlock(&guard.lock);
}

void lua_guard_leave(void)
{
	guard_armed = false;
	if (!guard.started)
		return;
	pthread_mutex_lock(&guard.lock);
	guard.running = false;
	if (guard.hook_set) {
		lua_sethook(guard.L, NULL, 0, 0);
		guard.hook_set = false;
	}
	pthread_mutex_unlock(&guard.lock);
}
