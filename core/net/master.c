#include "net/master.h"

#include "base/log.h"
#include "base/metrics.h"
#include "base/sd_notify.h"
#include "net/server.h"
#include "tls/tls_tickets.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MASTER_MAX_WORKERS 64
/* A worker that dies sooner than this after starting is restarted only
 * after the same delay, so a crash loop does not spin the CPU. */
#define MASTER_RESTART_DELAY 1.0

struct worker {
	ev_child child;
	ev_timer restart;
	struct master *m;
	unsigned slot;
	unsigned generation;
	ev_tstamp started;
	bool running;
	struct worker *next; /* every worker not yet freed, all generations */
};

struct master {
	struct server *srv;
	unsigned n;
	unsigned generation;
	bool stopping;
	unsigned alive; /* worker processes not yet reaped, every generation */
	struct worker *slots[MASTER_MAX_WORKERS]; /* the current generation */
	struct worker *all;
	ev_signal sig_term, sig_int, sig_hup;
};

static void master_spawn(struct master *m, unsigned slot);

static void master_forget(struct master *m, struct worker *wk)
{
	for (struct worker **p = &m->all; *p; p = &(*p)->next) {
		if (*p == wk) {
			*p = wk->next;
			break;
		}
	}
	if (m->slots[wk->slot] == wk)
		m->slots[wk->slot] = NULL;
	ev_timer_stop(m->srv->loop, &wk->restart);
	free(wk);
}

/* The child side of a fork: none of the master's watchers, the loop
 * re-armed for this process, the inherited listeners; then serve. */
static void master_become_worker(struct master *m, unsigned slot)
{
	struct server *srv = m->srv;
	struct ev_loop *loop = srv->loop;
	ev_signal_stop(loop, &m->sig_term);
	ev_signal_stop(loop, &m->sig_int);
	ev_signal_stop(loop, &m->sig_hup);
	for (struct worker *wk = m->all; wk; wk = wk->next) {
		ev_child_stop(loop, &wk->child);
		ev_timer_stop(loop, &wk->restart);
	}
	metrics_stop(loop); /* the master serves them */
	ev_loop_fork(loop);
	srv->worker = true;
	srv->worker_id = slot;
	srv->worker_count = m->n;
	metrics_use_slot(slot + 1);
	char err[512];
	if (!server_drop_privileges(srv, err, sizeof err)) {
		log_kv(LOG_ERROR, NULL, "worker cannot start", "error", err, NULL);
		log_flush(); /* _exit runs no atexit handler */
		_exit(1);
	}
	server_run(srv);
	server_free(srv);
	srv->ops->close();
	log_flush();
	_exit(0);
}

static void master_worker_exited(struct ev_loop *loop, ev_child *w, int revents)
{
	struct worker *wk = (struct worker *)w;
	struct master *m = wk->m;
	ev_child_stop(loop, w);
	wk->running = false;
	m->alive--;
	char pid[16], status[48];
	snprintf(pid, sizeof pid, "%d", w->rpid);
	if (WIFSIGNALED(w->rstatus))
		snprintf(status, sizeof status, "killed by signal %d", WTERMSIG(w->rstatus));
	else
		snprintf(status, sizeof status, "exit %d", WEXITSTATUS(w->rstatus));
	bool current = wk->generation == m->generation && m->slots[wk->slot] == wk;
	bool clean = WIFEXITED(w->rstatus) && WEXITSTATUS(w->rstatus) == 0;
	log_kv(current && !m->stopping && !clean ? LOG_ERROR : LOG_INFO, NULL, "worker exited",
	       "worker", pid, "status", status, NULL);
	if (current && !m->stopping) {
		/* Died on its own: another takes its place. */
		double delay = ev_now(loop) - wk->started < MASTER_RESTART_DELAY ? MASTER_RESTART_DELAY : 0;
		ev_timer_set(&wk->restart, delay, 0.);
		ev_timer_start(loop, &wk->restart);
		return;
	}
	master_forget(m, wk);
	if (m->stopping && m->alive == 0)
		ev_break(loop, EVBREAK_ALL);
}

static void master_restart(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct worker *wk = (struct worker *)((char *)w - offsetof(struct worker, restart));
	struct master *m = wk->m;
	unsigned slot = wk->slot;
	master_forget(m, wk);
	if (!m->stopping)
		master_spawn(m, slot);
}

static void master_spawn(struct master *m, unsigned slot)
{
	struct ev_loop *loop = m->srv->loop;
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0)
		master_become_worker(m, slot);
	struct worker *wk = calloc(1, sizeof *wk);
	if (!wk)
		abort();
	wk->m = m;
	wk->slot = slot;
	wk->generation = m->generation;
	wk->started = ev_now(loop);
	ev_init(&wk->restart, master_restart);
	wk->next = m->all;
	m->all = wk;
	if (pid < 0) {
		log_kv(LOG_ERROR, NULL, "cannot start a worker", "error", strerror(errno), NULL);
		m->slots[slot] = wk;
		ev_timer_set(&wk->restart, MASTER_RESTART_DELAY, 0.);
		ev_timer_start(loop, &wk->restart);
		return;
	}
	wk->running = true;
	m->alive++;
	m->slots[slot] = wk;
	ev_child_init(&wk->child, master_worker_exited, pid, 0);
	ev_child_start(loop, &wk->child);
	char p[16];
	snprintf(p, sizeof p, "%d", pid);
	log_kv(LOG_INFO, NULL, "worker started", "worker", p, NULL);
}

static void master_on_stop(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct master *m = w->data;
	if (m->stopping)
		return;
	m->stopping = true;
	sd_notify_state("STOPPING=1");
	log_kv(LOG_INFO, NULL, "stopping workers", "signal", w->signum == SIGTERM ? "TERM" : "INT", NULL);
	for (struct worker *wk = m->all, *next; wk; wk = next) {
		next = wk->next;
		if (wk->running)
			kill(wk->child.pid, SIGTERM); /* old generations too */
		else
			master_forget(m, wk); /* waiting for a restart that will not come */
	}
	/* The master's copies of the listening sockets must go too, or the
	 * kernel would keep accepting connections nobody serves. */
	server_stop_listening(m->srv);
	if (m->alive == 0)
		ev_break(loop, EVBREAK_ALL);
}

static void master_on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct master *m = w->data;
	if (m->stopping)
		return;
	char err[1024];
	sd_notify_state("RELOADING=1");
	bool ok = server_reload(m->srv, err, sizeof err);
	sd_notify_state("READY=1");
	if (!ok) {
		metrics_reload(false);
		log_kv(LOG_ERROR, NULL, "reload failed, the old script keeps serving", "error", err, NULL);
		return;
	}
	metrics_reload(true);
	/* The old workers finish their sessions on the old script; the new
	 * ones, forked from the reloaded master, take every new connection. */
	for (unsigned i = 0; i < m->n; i++) {
		struct worker *wk = m->slots[i];
		m->slots[i] = NULL;
		if (wk && wk->running)
			kill(wk->child.pid, SIGQUIT);
		else if (wk)
			master_forget(m, wk);
	}
	m->generation++;
	for (unsigned i = 0; i < m->n; i++)
		master_spawn(m, i);
	log_kv(LOG_INFO, NULL, "reloaded", "script", m->srv->script, NULL);
}

int master_run(struct server *srv, unsigned nworkers)
{
	struct master m = {.srv = srv, .n = nworkers};
	if (m.n > MASTER_MAX_WORKERS)
		m.n = MASTER_MAX_WORKERS;
	struct ev_loop *loop = srv->loop;
	ev_signal_init(&m.sig_term, master_on_stop, SIGTERM);
	ev_signal_init(&m.sig_int, master_on_stop, SIGINT);
	ev_signal_init(&m.sig_hup, master_on_hup, SIGHUP);
	m.sig_term.data = m.sig_int.data = m.sig_hup.data = &m;
	ev_signal_start(loop, &m.sig_term);
	ev_signal_start(loop, &m.sig_int);
	ev_signal_start(loop, &m.sig_hup);
	log_attach(loop); /* the workers keep it: the same loop, forked */
	/* Every worker, of every generation, inherits the one ticket secret:
	 * sessions resume on any worker, and across reloads. */
	tls_tickets_init();
	for (unsigned i = 0; i < m.n; i++)
		master_spawn(&m, i);
	sd_notify_state("READY=1");
	ev_run(loop, 0);
	metrics_stop(loop);
	while (m.all)
		master_forget(&m, m.all);
	log_kv(LOG_INFO, NULL, "stopped", NULL);
	log_detach();
	return 0;
}
