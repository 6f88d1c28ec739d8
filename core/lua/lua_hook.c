#include "lua/lua_hook.h"
#include "lua/lua_api.h"
#include "proto/replies.h"
#include "lua/lua_session_state.h"
#include "lua/lua_timer.h"
#include "lua/lua_uthread.h"

#include "net/conn.h"
#include "lua/lua_guard.h"
#include "lua/lua_runtime.h"
#include "base/metrics.h"
#include "net/server.h"

#include <lauxlib.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The connection whose hook is executing right now (resumes nest only
 * through our own calls, so one pointer saved and restored suffices). */
static struct conn *hook_running;

struct conn *hook_current(lua_State *L)
{
	return hook_running && lua_state_of(hook_running)->hook.co == L ? hook_running : NULL;
}

bool hook_in_progress(void)
{
	return hook_running != NULL;
}

/* Any coroutine but the main thread that runs while a hook runs was
 * resumed, directly or not, by that hook's coroutine or one of its light
 * threads. */
struct conn *hook_of(lua_State *L)
{
	return L != lua_main ? hook_running : NULL;
}

static void hook_set_text(struct hook_outcome *o, const char *s, size_t len)
{
	if (len >= sizeof o->text)
		len = sizeof o->text - 1;
	/* A reply line must never carry a control byte (response splitting). */
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		o->text[i] = ch < ' ' || ch == 0x7f ? ' ' : (char)ch;
	}
	o->text[len] = '\0';
	if (smtp_has_enhanced(o->text))
		o->enhanced[0] = '\0';
	else
		snprintf(o->enhanced, sizeof o->enhanced, "%s", smtp_enhanced_for(o->code));
}

bool hook_outcome_from_value(lua_State *L, int idx, int default_code, struct hook_outcome *o)
{
	o->kind = HOOK_REJECT;
	o->code = default_code;
	size_t len = 0;
	const char *msg = NULL;
	if (lua_type(L, idx) == LUA_TTABLE) {
		if (!lua_api_getfield(L, idx, "code"))
			goto raised;
		lua_Integer code = lua_tointeger(L, -1);
		if (code >= 400 && code <= 599)
			o->code = (int)code;
		lua_pop(L, 1);
		if (!lua_api_getfield(L, idx, "message"))
			goto raised;
		msg = lua_tolstring(L, -1, &len);
		if (msg)
			hook_set_text(o, msg, len);
		lua_pop(L, 1);
	} else {
		msg = lua_tolstring(L, idx, &len);
		if (msg)
			hook_set_text(o, msg, len);
	}
	if (!msg)
		hook_set_text(o, smtp_rejected_text, strlen(smtp_rejected_text));
	return true;
raised:
	hook_internal_error(o);
	return false;
}

void hook_internal_error(struct hook_outcome *o)
{
	const struct smtp_reply *r = &smtp_replies[REPLY_INTERNAL_ERROR];
	o->kind = HOOK_FAILED;
	o->code = r->code;
	hook_set_text(o, r->text, r->text_len);
	snprintf(o->enhanced, sizeof o->enhanced, "%s", r->enhanced);
}

lua_State *hook_prepare(struct conn *c, enum hook_id id)
{
	struct lua_session_state *s = lua_state_of(c);
	int fn = listener_config_of(c)->hook_ref[id];
	if (fn == LUA_NOREF)
		return NULL;
	struct hook_run *h = &s->hook;
	h->co = lua_thread_acquire(&h->co_ref);
	h->id = id;
	h->wait = WAIT_NONE;
	h->pending = NULL;
	h->gen++;
	h->active = true;
	h->started = 0; /* set by the first resume */
	h->first_result = 1;
	lua_rawgeti(h->co, LUA_REGISTRYINDEX, fn);
	return h->co;
}

static void hook_log_error(struct conn *c, lua_State *co, const char *what)
{
	struct lua_session_state *s = lua_state_of(c);
	const char *err = lua_tostring(co, -1);
	luaL_traceback(co, co, err ? err : "(error object is not a string)", 0);
	conn_log(c, LOG_ERROR, "hook failed", "hook", hook_name(s->hook.id), "error", what,
	         "traceback", lua_tostring(co, -1), NULL);
	lua_pop(co, 1);
}

/* The timers of a suspended hook: smtp.sleep's (a pending operation like
 * any other), and hookTimeout's for the time it spends suspended. */
struct hook_timers {
	ev_timer sleep;
	ev_timer deadline;
	struct hook_pending sleeping;
};

static void hook_deadline_passed(struct ev_loop *loop, ev_timer *w, int revents);
static void hook_sleep_done(struct ev_loop *loop, ev_timer *w, int revents);
static void hook_sleep_cleanup(struct hook_pending *p);

static struct hook_timers *hook_timers(struct conn *c)
{
	struct lua_session_state *s = lua_state_of(c);
	struct hook_run *h = &s->hook;
	if (!h->timers) {
		if (!(h->timers = malloc(sizeof *h->timers)))
			abort();
		ev_init(&h->timers->sleep, hook_sleep_done);
		ev_init(&h->timers->deadline, hook_deadline_passed);
		h->timers->sleep.data = h->timers->deadline.data = c;
		h->timers->sleeping.cleanup = hook_sleep_cleanup;
	}
	return h->timers;
}

static void hook_timers_free(struct conn *c)
{
	struct lua_session_state *s = lua_state_of(c);
	struct hook_timers *t = s->hook.timers;
	if (!t)
		return;
	ev_timer_stop(c->srv->loop, &t->sleep);
	ev_timer_stop(c->srv->loop, &t->deadline);
	free(t);
	s->hook.timers = NULL;
}

/* The hook has returned or raised: tell the connection, free the coroutine. */
static void hook_finish(struct conn *c, int status, double now)
{
	struct lua_session_state *s = lua_state_of(c);
	struct hook_run *h = &s->hook;
	lua_State *co = h->co;
	/* Not zeroed whole: over 500 bytes, on every hook; the texts are strings. */
	struct hook_outcome o;
	o.kind = HOOK_ACCEPT;
	o.code = 0;
	o.enhanced[0] = o.text[0] = '\0';
	int nres = 0;
	if (status == 0) {
		nres = lua_gettop(co);
		int r = h->first_result, n = nres - r + 1; /* the hook's own */
		bool read = true;
		if (n >= 2 && !lua_toboolean(co, r) && !lua_isnil(co, r + 1))
			read = hook_outcome_from_value(co, r + 1, smtp_reject_code(hook_name(h->id)), &o);
		else if (n >= 1 && lua_is_reject(co, r))
			read = hook_outcome_from_value(co, r, smtp_reject_code(hook_name(h->id)), &o);
		if (!read) /* its rejection could not be read: a failure, as a raise */
			hook_log_error(c, co, "runtime error");
	} else if (status == LUA_YIELD) {
		/* A bare coroutine.yield() nobody will resume: a script bug. */
		lua_pushstring(co, "hook yielded outside the smtp API (coroutine.yield in a hook?)");
		hook_log_error(c, co, "yield");
		hook_internal_error(&o);
	} else if (lua_is_reject(co, -1)) {
		if (!hook_outcome_from_value(co, lua_gettop(co), smtp_reject_code(hook_name(h->id)), &o))
			hook_log_error(c, co, "runtime error");
	} else {
		hook_log_error(c, co, status == LUA_ERRMEM ? "out of memory" : "runtime error");
		hook_internal_error(&o);
	}
	hook_timers_free(c);
	/* Light threads still running end with their hook (one that raised). */
	uthread_drop_all(h);
	metrics_hook(h->id, now - h->started, o.kind == HOOK_FAILED);
	/* done() may start the next hook on this connection: clear first. */
	int ref = h->co_ref;
	hook_done_fn done = h->done;
	h->active = false;
	h->wait = WAIT_NONE;
	h->gen++;
	h->done = NULL;
	h->co = NULL;
	h->co_ref = LUA_NOREF;
	done(c, &o, co, nres);
	lua_thread_release(co, ref, status == 0);
	/* What filled the heap to its ceiling is garbage now: reclaim it before
	 * the next hook, which would otherwise meet the ceiling at once. */
	if (status == LUA_ERRMEM)
		lua_gc(lua_main, LUA_GCCOLLECT, 0);
}

/* The hook waits (on the network, or for its light threads): hookTimeout
 * runs for the time it spends so. */
static void hook_arm_deadline(struct conn *c)
{
	double timeout = listener_config_of(c)->hook_timeout;
	if (timeout > 0 && !ev_is_active(&hook_timers(c)->deadline)) {
		ev_timer_set(&hook_timers(c)->deadline, timeout, 0.);
		ev_timer_start(c->srv->loop, &hook_timers(c)->deadline);
	}
}

/* When the last resume in this loop iteration ended: the next one starts
 * then. The clock is read once per resume, not twice (a read costs more
 * than a short hook on a virtual machine); what runs between two resumes
 * of one iteration, a command's parsing, is counted as the hook's time. */
static struct {
	double at;
	unsigned iteration;
	bool valid;
} hook_clock;

static double hook_resume_start(struct ev_loop *loop)
{
	if (hook_clock.valid && hook_clock.iteration == ev_iteration(loop))
		return hook_clock.at;
	return lua_guard_now();
}

/* Resumes co, the hook's own coroutine (t NULL) or light thread t, timed
 * (hook_resume_start) and watched (the watchdog is armed). */
static int hook_resume_co(struct conn *c, struct hook_uthread *t, lua_State *co, int nargs, double *t1)
{
	struct hook_run *h = &lua_state_of(c)->hook;
	struct conn *outer = hook_running;
	struct hook_uthread *outer_thread = h->current;
	hook_running = c;
	h->current = t;
	double t0 = outer ? lua_guard_now() : hook_resume_start(c->srv->loop);
	if (!h->started)
		h->started = t0;
	lua_guard_enter(listener_config_of(c)->hook_timeout, t0);
	int status = lua_resume(co, nargs);
	*t1 = lua_guard_now();
	/* A nested resume (a hook resuming another connection's) ends inside
	 * this one: only the outermost end marks the iteration. */
	hook_clock.valid = !outer;
	hook_clock.at = *t1;
	hook_clock.iteration = ev_iteration(c->srv->loop);
	conn_session(c)->hook_seconds += *t1 - t0;
	lua_guard_leave();
	h->current = outer_thread;
	hook_running = outer;
	return status;
}

int hook_resume_uthread(struct conn *c, struct hook_uthread *t, lua_State *co, int nargs)
{
	double t1;
	return hook_resume_co(c, t, co, nargs, &t1);
}

static void hook_resume(struct conn *c, int nargs)
{
	struct hook_run *h = &lua_state_of(c)->hook;
	h->wait = WAIT_NONE;
	double t1;
	int status = hook_resume_co(c, NULL, h->co, nargs, &t1);
	if (status == LUA_YIELD && h->wait != WAIT_NONE) {
		/* Waiting on the client (the message body) is not the script's time. */
		if (h->wait == WAIT_STREAM) {
			if (h->timers)
				ev_timer_stop(c->srv->loop, &h->timers->deadline);
		} else {
			hook_arm_deadline(c);
		}
		return;
	}
	if (status == 0 && h->uthreads && uthread_any_running(h)) {
		/* Its verdict waits, on its coroutine, for the light threads. */
		h->entry_done = true;
		hook_arm_deadline(c);
		return;
	}
	hook_finish(c, status, t1);
}

void hook_entry_wake(struct conn *c, int nres)
{
	hook_resume(c, nres);
}

void hook_thread_ended(struct conn *c)
{
	struct hook_run *h = &lua_state_of(c)->hook;
	if (h->active && h->entry_done && !uthread_any_running(h))
		hook_finish(c, 0, lua_guard_now());
}

/* A suspended hook outlived hookTimeout: it is dropped and fails. */
static void hook_deadline_passed(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = w->data;
	struct hook_run *h = &lua_state_of(c)->hook;
	bool closing = h->id == HOOK_CLOSE;
	char timeout[32];
	snprintf(timeout, sizeof timeout, "%g", listener_config_of(c)->hook_timeout);
	luaL_traceback(lua_main, h->co, "hook timed out while suspended", 0);
	conn_log(c, LOG_ERROR, "hook failed", "hook", hook_name(h->id), "error", "hookTimeout",
	         "hookTimeout", timeout, "traceback", lua_tostring(lua_main, -1), NULL);
	lua_pop(lua_main, 1);
	hook_done_fn done = h->done;
	metrics_hook(h->id, lua_guard_now() - h->started, true);
	hook_cancel(c);
	struct hook_outcome o;
	hook_internal_error(&o);
	done(c, &o, NULL, 0);
	if (!closing)
		conn_resume(c);
}

void hook_results_after_one(struct conn *c)
{
	lua_state_of(c)->hook.first_result = 2;
}

void hook_start(struct conn *c, int nargs, hook_done_fn done)
{
	struct lua_session_state *s = lua_state_of(c);
	s->hook.done = done;
	hook_resume(c, nargs);
}

void hook_accept_now(struct conn *c, hook_done_fn done)
{
	static const struct hook_outcome accept = {.kind = HOOK_ACCEPT};
	done(c, &accept, NULL, 0);
}

void hook_wake(struct conn *c, int nres)
{
	hook_resume(c, nres);
}

/* Resumes a hook from the loop (a timer, a socket): afterwards the session
 * goes on with what it had buffered. */
static void hook_resume_async(struct conn *c, int nargs)
{
	struct lua_session_state *s = lua_state_of(c);
	/* onClose frees the connection when it ends: touch nothing after. */
	bool closing = s->hook.id == HOOK_CLOSE;
	hook_resume(c, nargs);
	if (!closing)
		conn_resume(c);
}

static void hook_sleep_done(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = w->data;
	hook_pending_done(&lua_state_of(c)->hook.timers->sleeping, 0);
}

static void hook_sleep_cleanup(struct hook_pending *p)
{
	ev_timer_stop(p->c->srv->loop, &lua_state_of(p->c)->hook.timers->sleep);
}

/* A timer callback (lua_timer.c) runs L, or a coroutine it resumed. */
static struct hook_uthread *hook_timer_of(lua_State *L)
{
	return L != lua_main && !hook_running ? timer_running : NULL;
}

bool hook_can_wait(lua_State *L)
{
	return hook_of(L) || hook_timer_of(L);
}

/* Yields L up to root, the coroutine the runner resumes. */
static int hook_yield_to(lua_State *L, lua_State *root)
{
	if (L == root)
		return lua_yield(L, 0);
	hook_push_wait_marker(L);
	return lua_yield(L, 1);
}

int hook_yield(lua_State *L, struct conn *c)
{
	const struct hook_run *h = &lua_state_of(c)->hook;
	return hook_yield_to(L, h->current ? h->current->co : h->co);
}

int hook_wait(lua_State *L, struct hook_pending *p)
{
	struct conn *c = hook_of(L);
	struct hook_uthread *timer = hook_timer_of(L);
	if (timer) {
		p->c = NULL;
		p->thread = timer;
		p->gen = timer->gen;
		timer->pending = p;
		return hook_yield_to(L, timer->co);
	}
	if (!c)
		return luaL_error(L, "only a hook's own coroutine can wait for the network");
	struct hook_run *h = &lua_state_of(c)->hook;
	p->c = c;
	p->gen = h->gen;
	p->thread = h->current;
	if (h->current) {
		h->current->pending = p;
	} else {
		h->wait = WAIT_PENDING;
		h->pending = p;
	}
	return hook_yield(L, c);
}

lua_State *hook_pending_thread(const struct hook_pending *p)
{
	if (!p->c) /* a timer callback's, or never used */
		return p->thread && p->thread->gen == p->gen && p->thread->pending == p ? p->thread->co : NULL;
	const struct hook_run *h = &lua_state_of(p->c)->hook;
	if (!h->active || h->gen != p->gen)
		return NULL;
	if (p->thread) /* the run's light threads live as long as the run */
		return p->thread->pending == p ? p->thread->co : NULL;
	return h->pending == p ? h->co : NULL;
}

void hook_pending_done(struct hook_pending *p, int nres)
{
	if (!hook_pending_thread(p))
		return;
	struct conn *c = p->c;
	if (!c) {
		timer_pending_done(p->thread, nres);
		return;
	}
	/* p (a socket a script keeps) may outlive c and its light threads:
	 * tie it to them only while one waits on it (hook_wait ties it again). */
	struct hook_uthread *thread = p->thread;
	p->c = NULL;
	p->thread = NULL;
	if (!thread) {
		lua_state_of(c)->hook.pending = NULL;
		hook_resume_async(c, nres);
		return;
	}
	/* onClose frees the connection when it ends: touch nothing after. */
	bool closing = lua_state_of(c)->hook.id == HOOK_CLOSE;
	uthread_pending_done(c, thread, nres);
	if (!closing)
		conn_resume(c);
}

int hook_sleep(lua_State *L, double s)
{
	struct conn *c = hook_of(L);
	if (hook_timer_of(L))
		return uthread_sleep(L, hook_timer_of(L), s);
	if (!c)
		return luaL_error(L, "smtp.sleep: only a hook's own coroutine may sleep");
	struct hook_run *h = &lua_state_of(c)->hook;
	if (h->current)
		return uthread_sleep(L, h->current, s);
	struct hook_timers *t = hook_timers(c);
	ev_timer_set(&t->sleep, s, 0.);
	ev_timer_start(c->srv->loop, &t->sleep);
	return hook_wait(L, &t->sleeping);
}

void hook_cancel(struct conn *c)
{
	struct lua_session_state *s = lua_state_of(c);
	struct hook_run *h = &s->hook;
	if (!h->active)
		return;
	/* The operation first: the sleep's lives with the timers. */
	struct hook_pending *p = h->pending;
	h->pending = NULL;
	if (p)
		p->cleanup(p);
	uthread_drop_all(h);
	hook_timers_free(c);
	/* A suspended coroutine cannot be reused; the GC takes it. */
	lua_thread_release(h->co, h->co_ref, false);
	h->co = NULL;
	h->active = false;
	h->wait = WAIT_NONE;
	h->gen++;
	h->done = NULL;
}
