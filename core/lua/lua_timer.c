#include "lua/lua_timer.h"

#include "base/log.h"
#include "lua/api_socket.h"
#include "lua/config.h"
#include "lua/lua_guard.h"
#include "lua/lua_runtime.h"
#include "net/server.h"

#include <lauxlib.h>

#include <stdio.h>
#include <stdlib.h>

/* One scheduled callback: ngx.timer.every's repeats (w.repeat). */
struct lua_timer {
	ev_timer w;    /* first: the watcher gets us back */
	int args_ref;  /* {callback, args...; n = 1 + #args} */
	bool premature;
	struct lua_timer *prev, *next;
};

struct timer_list {
	struct lua_timer *head;
	unsigned n;
};

/* started: armed in the loop; made: by the script loading now (or last),
 * started when a worker serves; kept: the last load's, while a new one
 * runs (restored if it fails). */
static struct timer_list started, made, kept;
static struct hook_uthread *runs;        /* callbacks in flight */
static struct hook_uthread *spare_runs;  /* never freed: see timer_run_get */
static unsigned nrunning;
static bool serving, exiting, loading;

struct hook_uthread *timer_running;

static void timer_link(struct timer_list *l, struct lua_timer *tm)
{
	tm->prev = NULL;
	tm->next = l->head;
	if (l->head)
		l->head->prev = tm;
	l->head = tm;
	l->n++;
}

static void timer_unlink(struct timer_list *l, struct lua_timer *tm)
{
	if (tm->prev)
		tm->prev->next = tm->next;
	else
		l->head = tm->next;
	if (tm->next)
		tm->next->prev = tm->prev;
	l->n--;
}

static void timer_free(struct lua_timer *tm)
{
	ev_timer_stop(sock_loop(), &tm->w);
	if (lua_main)
		luaL_unref(lua_main, LUA_REGISTRYINDEX, tm->args_ref);
	free(tm);
}

static void timer_free_list(struct timer_list *l)
{
	while (l->head) {
		struct lua_timer *tm = l->head;
		timer_unlink(l, tm);
		timer_free(tm);
	}
}

/* A callback's record is never freed, only reused with its generation
 * bumped: a socket it waited on may be checked (hook_pending_thread) long
 * after the callback ended. */
static struct hook_uthread *timer_run_get(void)
{
	struct hook_uthread *t = spare_runs;
	if (t) {
		spare_runs = t->next;
	} else {
		if (!(t = calloc(1, sizeof *t)))
			abort();
		uthread_init(t);
	}
	t->next = runs;
	runs = t;
	return t;
}

static void timer_run_put(struct hook_uthread *t, bool reusable)
{
	for (struct hook_uthread **pp = &runs; *pp; pp = &(*pp)->next)
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	lua_thread_release(t->co, t->ref, reusable);
	t->co = NULL;
	t->pending = NULL;
	t->gen++;
	t->next = spare_runs;
	spare_runs = t;
	nrunning--;
}

/* The watchdog's limit for a callback: the script's hookTimeout. */
static double timer_cpu_limit(void)
{
	if (server_current && server_current->cfg && config_of(server_current->cfg)->nlisteners)
		return config_of(server_current->cfg)->listeners[0].hook_timeout;
	return 10;
}

static void timer_end(struct hook_uthread *t, int status)
{
	lua_State *co = t->co;
	if (status != 0) {
		if (status == LUA_YIELD)
			lua_pushstring(co, "timer callback yielded outside the ngx API (coroutine.yield?)");
		const char *err = lua_tostring(co, -1);
		luaL_traceback(co, co, err ? err : "(error object is not a string)", 0);
		log_kv(LOG_ERROR, NULL, "timer callback failed", "error",
		       status == LUA_ERRMEM ? "out of memory" : "runtime error", "traceback", lua_tostring(co, -1),
		       NULL);
	}
	timer_run_put(t, status == 0);
}

static void timer_resume(struct hook_uthread *t, int nargs)
{
	struct hook_uthread *outer = timer_running;
	timer_running = t;
	lua_guard_enter(timer_cpu_limit(), lua_guard_now());
	int status = lua_resume(t->co, nargs);
	lua_guard_leave();
	timer_running = outer;
	if (status == LUA_YIELD && t->pending)
		return;
	timer_end(t, status);
}

void timer_pending_done(struct hook_uthread *t, int nres)
{
	t->pending = NULL;
	timer_resume(t, nres);
}

/* Runs tm's callback in a coroutine of its own: callback(premature, ...). */
static void timer_run(struct lua_timer *tm)
{
	if (nrunning >= TIMER_MAX_RUNNING) {
		char n[16];
		snprintf(n, sizeof n, "%d", TIMER_MAX_RUNNING);
		log_kv(LOG_ERROR, NULL, "lua_max_running_timers are not enough: a timer was dropped", "running", n,
		       NULL);
		return;
	}
	nrunning++;
	struct hook_uthread *t = timer_run_get();
	lua_State *co = t->co = lua_thread_acquire(&t->ref);
	lua_rawgeti(co, LUA_REGISTRYINDEX, tm->args_ref);
	lua_getfield(co, 1, "n");
	int n = (int)lua_tointeger(co, -1);
	lua_pop(co, 1);
	luaL_checkstack(co, n + 2, "timer arguments");
	lua_rawgeti(co, 1, 1);
	lua_pushboolean(co, tm->premature);
	for (int i = 2; i <= n; i++)
		lua_rawgeti(co, 1, i);
	lua_remove(co, 1);
	timer_resume(t, n);
}

static void timer_fire(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct lua_timer *tm = (struct lua_timer *)w;
	bool once = tm->w.repeat == 0;
	if (once) /* every's stays: libev has armed its next round already */
		timer_unlink(&started, tm);
	timer_run(tm);
	if (once)
		timer_free(tm);
}

static void timer_start(struct lua_timer *tm)
{
	timer_link(&started, tm);
	ev_timer_start(sock_loop(), &tm->w);
}

static int timer_new(lua_State *L, bool every)
{
	int n = lua_gettop(L);
	if (n < 2)
		return luaL_error(L, "expecting at least 2 arguments but got %d", n);
	double delay = luaL_checknumber(L, 1);
	luaL_argcheck(L, delay >= 0, 1, "delay cannot be negative");
	if (every && delay < 0.001)
		return luaL_error(L, "delay cannot be zero");
	luaL_argcheck(L, lua_isfunction(L, 2) && !lua_iscfunction(L, 2), 2, "Lua function expected");
	if (exiting && delay > 0) {
		lua_pushnil(L);
		lua_pushliteral(L, "process exiting");
		return 2;
	}
	if (started.n + made.n >= TIMER_MAX_PENDING) {
		lua_pushnil(L);
		lua_pushliteral(L, "too many pending timers");
		return 2;
	}
	lua_createtable(L, n - 1, 1);
	for (int i = 2; i <= n; i++) {
		lua_pushvalue(L, i);
		lua_rawseti(L, -2, i - 1);
	}
	lua_pushinteger(L, n - 1);
	lua_setfield(L, -2, "n");
	struct lua_timer *tm = calloc(1, sizeof *tm);
	if (!tm)
		return luaL_error(L, "no memory");
	tm->args_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	ev_timer_init(&tm->w, timer_fire, delay, every ? delay : 0.);
	if (serving && !loading)
		timer_start(tm);
	else
		timer_link(&made, tm);
	lua_pushinteger(L, 1);
	return 1;
}

int lua_timer_at(lua_State *L)
{
	return timer_new(L, false);
}

int lua_timer_every(lua_State *L)
{
	return timer_new(L, true);
}

int lua_timer_running_count(lua_State *L)
{
	lua_pushinteger(L, nrunning);
	return 1;
}

int lua_timer_pending_count(lua_State *L)
{
	lua_pushinteger(L, started.n + made.n);
	return 1;
}

int lua_timer_exiting_now(lua_State *L)
{
	lua_pushboolean(L, exiting);
	return 1;
}

void lua_timer_load_begin(void)
{
	timer_free_list(&kept);
	kept = made;
	made = (struct timer_list){0};
	loading = true;
}

/* Every armed timer runs now with premature = true, once (every's too):
 * from the loop at once, or, when Lua runs now (smtp.server:close() in a
 * hook), as the loop's next event. */
static void timer_expire_started(void)
{
	struct timer_list due = started;
	started = (struct timer_list){0};
	bool now = !timer_running && !hook_in_progress();
	while (due.head) {
		struct lua_timer *tm = due.head;
		timer_unlink(&due, tm);
		ev_timer_stop(sock_loop(), &tm->w);
		tm->premature = true;
		ev_timer_set(&tm->w, 0., 0.);
		if (now) {
			timer_run(tm);
			timer_free(tm);
		} else {
			timer_start(tm);
		}
	}
}

void lua_timer_load_end(bool ok)
{
	loading = false;
	if (!ok) {
		timer_free_list(&made);
		made = kept;
		kept = (struct timer_list){0};
		return;
	}
	timer_free_list(&kept);
	if (!serving)
		return; /* a master, or the first load: started as a worker serves */
	/* A reload in a serving process: the old script's timers end as
	 * nginx's old workers' do, the new script's start. */
	timer_expire_started();
	lua_timer_serving();
}

void lua_timer_serving(void)
{
	serving = true;
	while (made.head) {
		struct lua_timer *tm = made.head;
		timer_unlink(&made, tm);
		timer_start(tm);
	}
}

void lua_timer_exiting(void)
{
	exiting = true;
	timer_expire_started();
}

void lua_timer_close(void)
{
	timer_free_list(&started);
	timer_free_list(&made);
	timer_free_list(&kept);
	while (runs) {
		struct hook_uthread *t = runs;
		struct hook_pending *p = t->pending;
		t->pending = NULL;
		if (p)
			p->cleanup(p);
		timer_run_put(t, false);
	}
	while (spare_runs) {
		struct hook_uthread *t = spare_runs;
		spare_runs = t->next;
		free(t);
	}
	serving = exiting = loading = false;
}
