#include "lua/lua_uthread.h"

#include "lua/api_socket.h"
#include "lua/lua_runtime.h"
#include "lua/lua_session_state.h"
#include "net/conn.h"

#include <lauxlib.h>

#include <stdlib.h>

static struct hook_run *uthread_run_of(struct conn *c)
{
	return &lua_state_of(c)->hook;
}

bool uthread_any_running(const struct hook_run *h)
{
	for (const struct hook_uthread *t = h->uthreads; t; t = t->next)
		if (t->status == UT_RUNNING)
			return true;
	return false;
}

/* Runs its pending operation's cleanup: no completion comes. */
static void uthread_stop(struct hook_uthread *t)
{
	struct hook_pending *p = t->pending;
	t->pending = NULL;
	if (p)
		p->cleanup(p);
	t->waiting = false;
	t->status = UT_DEAD;
}

void uthread_drop_all(struct hook_run *h)
{
	struct hook_uthread *t = h->uthreads;
	h->uthreads = NULL;
	h->current = NULL;
	h->entry_done = false;
	while (t) {
		struct hook_uthread *next = t->next;
		if (t->status == UT_RUNNING)
			uthread_stop(t);
		/* Never back to the pool: the script may hold the thread still. */
		lua_thread_release(t->co, t->ref, false);
		free(t);
		t = next;
	}
}

static struct hook_uthread *uthread_find(const struct hook_run *h, const lua_State *co)
{
	for (struct hook_uthread *t = h->uthreads; t; t = t->next)
		if (t->co == co)
			return t;
	return NULL;
}

/* Its coroutine has returned or raised: what ngx.thread.wait will return
 * is left on it, true and the results, or false and the error (logged, as
 * lua-nginx-module logs "lua user thread aborted"). */
static void uthread_end(struct conn *c, struct hook_uthread *t, int status)
{
	lua_State *co = t->co;
	t->status = UT_ZOMBIE;
	if (status == 0) {
		lua_pushboolean(co, 1);
		lua_insert(co, 1);
		return;
	}
	if (status == LUA_YIELD) /* not waiting on anything we would resume */
		lua_pushstring(co, "light thread yielded outside the ngx API (coroutine.yield?)");
	const char *err = lua_tostring(co, -1);
	luaL_traceback(co, co, err ? err : "(error object is not a string)", 0);
	conn_log(c, LOG_ERROR, "light thread aborted", "hook", hook_name(uthread_run_of(c)->id), "error",
	         status == LUA_ERRMEM ? "out of memory" : "runtime error", "traceback", lua_tostring(co, -1),
	         NULL);
	lua_pop(co, 1);
	lua_pushboolean(co, 0);
	lua_insert(co, -2);
	while (lua_gettop(co) > 2)
		lua_remove(co, 1);
}

/* The wait of parent (NULL: the entry thread) is over: none of its
 * children is waited for any more. */
static void uthread_unwait(struct hook_run *h, const struct hook_uthread *parent)
{
	for (struct hook_uthread *t = h->uthreads; t; t = t->next)
		if (t->parent == parent)
			t->waited = false;
}

/* Moves zombie t's results onto to, for its parent's wait: t is dead. */
static int uthread_reap(struct hook_run *h, struct hook_uthread *t, lua_State *to)
{
	int n = lua_gettop(t->co);
	lua_xmove(t->co, to, n);
	t->status = UT_DEAD;
	uthread_unwait(h, t->parent);
	return n;
}

void uthread_pending_done(struct conn *c, struct hook_uthread *t, int nres)
{
	struct hook_run *h = uthread_run_of(c);
	t->pending = NULL;
	for (;;) {
		t->waiting = false;
		int status = hook_resume_uthread(c, t, t->co, nres);
		if (status == LUA_YIELD && (t->pending || t->waiting))
			return;
		uthread_end(c, t, status);
		struct hook_uthread *parent = t->parent;
		bool parent_waits = parent ? parent->status == UT_RUNNING && parent->waiting : h->wait == WAIT_THREADS;
		if (!t->waited || !parent_waits) {
			hook_thread_ended(c); /* last: it may end the hook */
			return;
		}
		nres = uthread_reap(h, t, parent ? parent->co : h->co);
		if (!parent) {
			hook_entry_wake(c, nres); /* last, likewise */
			return;
		}
		t = parent;
	}
}

static void uthread_sleep_done(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	struct hook_uthread *t = w->data;
	hook_pending_done(&t->sleeping, 0);
}

static void uthread_sleep_cleanup(struct hook_pending *p)
{
	ev_timer_stop(sock_loop(), &p->thread->sleep);
}

void uthread_init(struct hook_uthread *t)
{
	ev_init(&t->sleep, uthread_sleep_done);
	t->sleep.data = t;
	t->sleeping.cleanup = uthread_sleep_cleanup;
}

int uthread_sleep(lua_State *L, struct hook_uthread *t, double s)
{
	ev_timer_set(&t->sleep, s, 0.);
	ev_timer_start(sock_loop(), &t->sleep);
	return hook_wait(L, &t->sleeping);
}

static struct conn *uthread_conn(lua_State *L)
{
	struct conn *c = hook_of(L);
	if (!c)
		luaL_error(L, "no request found"); /* lua-nginx-module's words outside a request */
	return c;
}

/* ngx.thread.spawn(func, ...): the new thread runs at once, in this
 * resume, until it first waits or ends; its parent goes on after. */
int uthread_spawn(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TFUNCTION);
	struct conn *c = uthread_conn(L);
	struct hook_run *h = uthread_run_of(c);
	struct hook_uthread *t = calloc(1, sizeof *t);
	if (!t)
		return luaL_error(L, "no memory");
	t->co = lua_thread_acquire(&t->ref);
	t->parent = h->current;
	t->status = UT_RUNNING;
	uthread_init(t);
	t->next = h->uthreads;
	h->uthreads = t;
	int n = lua_gettop(L);
	lua_xmove(L, t->co, n);
	/* Nested in the caller's resume, so under its watchdog and clock. */
	h->current = t;
	int status = lua_resume(t->co, n - 1);
	h->current = t->parent;
	if (!(status == LUA_YIELD && (t->pending || t->waiting)))
		uthread_end(c, t, status);
	lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
	return 1;
}

/* ngx.thread.wait(t1, t2, ...): the results of the first to end, true and
 * its values or false and its error; nil, "already waited or killed" when
 * the last one named is. Misuse raises, with lua-nginx-module's words. */
int uthread_wait(lua_State *L)
{
	struct conn *c = uthread_conn(L);
	struct hook_run *h = uthread_run_of(c);
	struct hook_uthread *self = h->current;
	int n = lua_gettop(L);
	luaL_argcheck(L, n > 0, 1, "lua thread expected");
	for (int i = 1; i <= n; i++) {
		lua_State *co = lua_tothread(L, i);
		luaL_argcheck(L, co, i, "lua thread expected");
		struct hook_uthread *t = uthread_find(h, co);
		if (!t)
			return luaL_error(L, "attempt to wait on a coroutine that is not a user thread");
		if (t->parent != self)
			return luaL_error(L, "only the parent coroutine can wait on the thread");
	}
	for (int i = 1; i <= n; i++) {
		struct hook_uthread *t = uthread_find(h, lua_tothread(L, i));
		if (t->status == UT_ZOMBIE) {
			lua_settop(L, 0);
			return uthread_reap(h, t, L);
		}
		if (t->status == UT_DEAD) {
			if (i < n)
				continue;
			uthread_unwait(h, self);
			lua_pushnil(L);
			lua_pushliteral(L, "already waited or killed");
			return 2;
		}
		t->waited = true;
	}
	lua_settop(L, 0);
	if (self)
		self->waiting = true;
	else
		h->wait = WAIT_THREADS;
	return hook_yield(L, c);
}

/* ngx.thread.kill(t): 1, or nil and why not; its pending operation is
 * cleaned up (a socket it waits on is closed), its children go on. */
int uthread_kill(lua_State *L)
{
	lua_State *co = lua_tothread(L, 1);
	luaL_argcheck(L, co, 1, "lua thread expected");
	struct hook_run *h = uthread_run_of(uthread_conn(L));
	struct hook_uthread *t = uthread_find(h, co);
	const char *err = NULL;
	if (!t)
		err = "not user thread";
	else if (t->parent != h->current)
		err = "killer not parent";
	else if (t->status == UT_ZOMBIE)
		err = "already terminated";
	else if (t->status == UT_DEAD)
		err = "already waited or killed";
	if (t && t->status == UT_ZOMBIE) {
		lua_settop(t->co, 0);
		t->status = UT_DEAD;
	}
	if (err) {
		lua_pushnil(L);
		lua_pushstring(L, err);
		return 2;
	}
	uthread_stop(t);
	lua_pushinteger(L, 1);
	return 1;
}
