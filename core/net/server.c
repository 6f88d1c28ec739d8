#include "net/server.h"

#include "net/conn.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/sd_notify.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <grp.h>
#include <pwd.h>
#include <unistd.h>

struct server *server_current;

/* Splits "host:port", "[v6]:port" or ":port" (all addresses). */
static bool server_split_addr(const char *spec, char *host, size_t hostlen, char *port,
                              size_t portlen)
{
	const char *colon = strrchr(spec, ':');
	if (!colon || colon[1] == '\0')
		return false;
	const char *h = spec;
	size_t hl = (size_t)(colon - spec);
	if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	if (hl >= hostlen || strlen(colon + 1) >= portlen)
		return false;
	memcpy(host, h, hl);
	host[hl] = '\0';
	snprintf(port, portlen, "%s", colon + 1);
	return true;
}

static int server_bind(const char *spec, char *err, size_t errlen)
{
	char host[80], port[16];
	if (!server_split_addr(spec, host, sizeof host, port, sizeof port)) {
		snprintf(err, errlen, "listen \"%s\": expected host:port", spec);
		return -1;
	}
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res;
	int rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
	if (rc != 0) {
		snprintf(err, errlen, "listen \"%s\": %s", spec, gai_strerror(rc));
		return -1;
	}
	int fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd >= 0) {
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		/* Lets a second instance (a binary upgrade) bind beside this one. */
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
		if (res->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
		/* Replies go out as written, not held for an ACK (Nagle). The
		 * connections accepted from it inherit this (Linux): one call
		 * here instead of one a connection. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	}
	if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 511) != 0) {
		snprintf(err, errlen, "listen \"%s\": %s", spec, strerror(errno));
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return fd;
}

static void server_resume_accepting(struct server *srv)
{
	if (!srv->accept_paused)
		return;
	srv->accept_paused = false;
	ev_timer_stop(srv->loop, &srv->accept_pause);
	for (struct listener *l = srv->listeners; l; l = l->next)
		if (l->fd >= 0 && srv->accepting)
			ev_io_start(srv->loop, &l->io);
}

static void server_accept_pause_over(struct ev_loop *loop, ev_timer *w, int revents)
{
	server_resume_accepting((struct server *)((char *)w - offsetof(struct server, accept_pause)));
}

/* Out of descriptors or kernel memory: a level-triggered listener would
 * spin on accept(2). Accepting pauses until a session ends or a second has
 * passed, as in nginx; the listen backlog holds the clients meanwhile. */
static void server_pause_accepting(struct server *srv, const char *addr, int err)
{
	ev_tstamp now = ev_now(srv->loop);
	if (now - srv->accept_pause_logged >= 10) { /* each ended session resumes: no log flood */
		srv->accept_pause_logged = now;
		log_kv(LOG_WARN, NULL, "accept paused", "listen", addr, "error", strerror(err), NULL);
	}
	for (struct listener *l = srv->listeners; l; l = l->next)
		ev_io_stop(srv->loop, &l->io);
	srv->accept_paused = true;
	ev_timer_set(&srv->accept_pause, 1., 0.);
	ev_timer_start(srv->loop, &srv->accept_pause);
}

static void server_accept(struct ev_loop *loop, ev_io *w, int revents)
{
	struct listener *l = (struct listener *)w;
	struct server *srv = l->srv;
	/* Bounded so one busy listener cannot starve the sessions. */
	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage peer;
		socklen_t plen = sizeof peer;
		int fd = accept4(l->fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				server_pause_accepting(srv, l->addr, errno);
			else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
			         errno != ECONNABORTED)
				log_kv(LOG_ERROR, NULL, "accept failed", "listen", l->addr, "error",
				       strerror(errno), NULL);
			return;
		}
		struct conn *c = conn_new(srv, l->opt, fd, (struct sockaddr *)&peer,
		                          l->local.ss_family == AF_UNSPEC ? NULL : (struct sockaddr *)&l->local);
		srv->accept_conn(c);
		c->next = srv->conns;
		if (srv->conns)
			srv->conns->prev = c;
		srv->conns = c;
		srv->nconns++;
		conn_start(c, l->addr);
	}
}

static bool server_is_wildcard(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ((const struct sockaddr_in *)ss)->sin_addr.s_addr == htonl(INADDR_ANY);
	if (ss->ss_family == AF_INET6)
		return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)ss)->sin6_addr);
	return true;
}

static struct listener *server_new_listener(struct server *srv, struct listener_options *o,
                                            const char *addr, int fd)
{
	struct listener *l = calloc(1, sizeof *l);
	if (!l)
		abort();
	l->srv = srv;
	l->opt = o;
	l->fd = fd;
	snprintf(l->addr, sizeof l->addr, "%s", addr);
	socklen_t sl = sizeof l->local;
	if (getsockname(fd, (struct sockaddr *)&l->local, &sl) != 0 || server_is_wildcard(&l->local))
		l->local.ss_family = AF_UNSPEC;
	ev_io_init(&l->io, server_accept, fd, EV_READ);
	return l;
}

static void server_free_listener(struct server *srv, struct listener *l)
{
	if (l->fd >= 0) {
		ev_io_stop(srv->loop, &l->io);
		close(l->fd);
	}
	free(l);
}

static struct listener *server_find_listener(struct server *srv, const char *addr)
{
	for (struct listener *l = srv->listeners; l; l = l->next)
		if (l->fd >= 0 && strcmp(l->addr, addr) == 0)
			return l;
	return NULL;
}

/* Binds every address of cfg that srv does not listen on yet, into *fresh;
 * addresses it does listen on are noted in keep (parallel to listeners).
 * On a failure, what was bound is closed again. */
static bool server_bind_config(struct server *srv, struct listener_set *cfg, struct listener **fresh,
                               char *err, size_t errlen)
{
	*fresh = NULL;
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		struct listener_options *o = cfg->listeners[i];
		for (size_t j = 0; j < o->nlisten; j++) {
			if (server_find_listener(srv, o->listen[j]))
				continue;
			int fd = server_bind(o->listen[j], err, errlen);
			if (fd < 0) {
				while (*fresh) {
					struct listener *l = *fresh;
					*fresh = l->next;
					server_free_listener(srv, l);
				}
				return false;
			}
			struct listener *l = server_new_listener(srv, o, o->listen[j], fd);
			l->next = *fresh;
			*fresh = l;
		}
	}
	return true;
}

/* The options of cfg that listen on addr, or NULL. */
static struct listener_options *server_options_for(struct listener_set *cfg, const char *addr)
{
	for (size_t i = 0; i < cfg->nlisteners; i++)
		for (size_t j = 0; j < cfg->listeners[i]->nlisten; j++)
			if (strcmp(cfg->listeners[i]->listen[j], addr) == 0)
				return cfg->listeners[i];
	return NULL;
}

/* "host:port" as bound: the real port of a "127.0.0.1:0" listener. */
static void server_bound_address(int fd, char *out, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
		return;
	char host[INET6_ADDRSTRLEN] = "";
	int port = 0;
	if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
		port = ntohs(s6->sin6_port);
		snprintf(out, len, "[%s]:%d", host, port);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
		snprintf(out, len, "%s:%d", host, ntohs(s4->sin_port));
	}
}

/* Makes cfg current: kept listeners take its options, others close, fresh
 * ones open. */
static void server_adopt(struct server *srv, struct listener_set *cfg, struct listener *fresh)
{
	struct listener **pl = &srv->listeners;
	while (*pl) {
		struct listener *l = *pl;
		struct listener_options *o = server_options_for(cfg, l->addr);
		if (o) {
			l->opt = o;
			pl = &l->next;
			continue;
		}
		*pl = l->next;
		log_kv(LOG_INFO, NULL, "stopped listening", "listen", l->addr, NULL);
		server_free_listener(srv, l);
	}
	while (fresh) {
		struct listener *l = fresh;
		fresh = l->next;
		l->next = srv->listeners;
		srv->listeners = l;
		if (srv->accepting)
			ev_io_start(srv->loop, &l->io);
		char bound[80] = "";
		server_bound_address(l->fd, bound, sizeof bound);
		log_kv(LOG_INFO, NULL, "listening", "listen", l->addr, "address", bound, NULL);
	}
	struct listener_set *old = srv->cfg;
	srv->cfg = cfg;
	srv->ops->unref(old); /* sessions still on it keep it alive */
	srv->ops->adopt(cfg);
	if (srv->accepting)
		server_watch_certs(srv);
}

bool server_listen(struct server *srv, char *err, size_t errlen)
{
	struct listener *fresh;
	if (!server_bind_config(srv, srv->cfg, &fresh, err, errlen))
		return false;
	srv->ops->ref(srv->cfg); /* server_adopt drops the "old" one: the same */
	server_adopt(srv, srv->cfg, fresh);
	return true;
}

bool server_reload(struct server *srv, char *err, size_t errlen)
{
	struct listener_set *cfg = srv->ops->load(srv, err, errlen);
	if (!cfg)
		return false;
	struct listener *fresh;
	if (!server_bind_config(srv, cfg, &fresh, err, errlen)) {
		srv->ops->unref(cfg);
		return false;
	}
	server_adopt(srv, cfg, fresh);
	return true;
}

/* ---- certificates ------------------------------------------------------- */

static void server_cert_settled(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct server *srv = (struct server *)((char *)w - offsetof(struct server, cert_settle));
	char err[512];
	if (srv->ops->rebuild_tls(srv->cfg, err, sizeof err)) {
		server_watch_certs(srv);
		log_kv(LOG_INFO, NULL, "certificates reloaded", NULL);
	} else {
		log_kv(LOG_ERROR, NULL, "certificate reload failed, the old ones keep serving", "error",
		       err, NULL);
	}
}

static void server_cert_changed(struct ev_loop *loop, ev_stat *w, int revents)
{
	struct cert_watch *cw = (struct cert_watch *)w;
	log_kv(LOG_INFO, NULL, "certificate file changed", "path", w->path, NULL);
	ev_timer_stop(loop, &cw->srv->cert_settle);
	ev_timer_set(&cw->srv->cert_settle, 0.3, 0.);
	ev_timer_start(loop, &cw->srv->cert_settle);
}

static void server_unwatch_certs(struct server *srv)
{
	for (size_t i = 0; i < srv->nwatches; i++)
		ev_stat_stop(srv->loop, &srv->watches[i].stat);
	free(srv->watches);
	srv->watches = NULL;
	srv->nwatches = 0;
}

/* Watches every file the current TLS contexts were read from: renewals
 * written in place or renamed over (certbot) are picked up without HUP. */
void server_watch_certs(struct server *srv)
{
	server_unwatch_certs(srv);
	size_t n = 0;
	for (size_t i = 0; i < srv->cfg->nlisteners; i++)
		n += srv->cfg->listeners[i]->tls.nwatch;
	if (n == 0)
		return;
	srv->watches = calloc(n, sizeof *srv->watches);
	if (!srv->watches)
		abort();
	for (size_t i = 0; i < srv->cfg->nlisteners; i++) {
		const struct tls_set *t = &srv->cfg->listeners[i]->tls;
		for (size_t j = 0; j < t->nwatch; j++) {
			struct cert_watch *cw = &srv->watches[srv->nwatches++];
			cw->srv = srv;
			/* The path string lives in the config, as long as the watch. */
			ev_stat_init(&cw->stat, server_cert_changed, t->watch[j], 1.0);
			ev_stat_start(srv->loop, &cw->stat);
		}
	}
}

/* ---- stopping ----------------------------------------------------------- */

static void server_maybe_done(struct server *srv)
{
	if ((srv->stopping || srv->draining) && srv->conns == NULL) {
		ev_timer_stop(srv->loop, &srv->close_timer);
		ev_break(srv->loop, EVBREAK_ALL);
	}
}

void server_conn_gone(struct server *srv, struct conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	srv->nconns--;
	server_resume_accepting(srv);
	server_maybe_done(srv);
}

static void server_close_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct server *srv = (struct server *)((char *)w - offsetof(struct server, close_timer));
	for (struct conn *c = srv->conns; c; c = c->next)
		if (c->phase != PHASE_CLOSED && c->phase != PHASE_CLOSING)
			conn_stop_now(c);
}

static double server_close_timeout_value(const struct server *srv)
{
	double t = 0;
	for (size_t i = 0; i < srv->cfg->nlisteners; i++)
		if (srv->cfg->listeners[i]->close_timeout > t)
			t = srv->cfg->listeners[i]->close_timeout;
	return t;
}

void server_stop_listening(struct server *srv)
{
	for (struct listener *l = srv->listeners; l; l = l->next) {
		if (l->fd < 0)
			continue;
		ev_io_stop(srv->loop, &l->io);
		close(l->fd);
		l->fd = -1;
	}
	server_unwatch_certs(srv);
	ev_timer_stop(srv->loop, &srv->cert_settle);
	ev_timer_stop(srv->loop, &srv->accept_pause);
}

void server_stop(struct server *srv, const char *why)
{
	if (srv->stopping)
		return;
	srv->stopping = true;
	log_kv(LOG_INFO, NULL, "stopping", "reason", why, NULL);
	if (!srv->draining && srv->ops->stopping)
		srv->ops->stopping();
	if (!srv->worker)
		sd_notify_state("STOPPING=1");
	server_stop_listening(srv);
	metrics_stop(srv->loop);
	for (struct conn *c = srv->conns, *next; c; c = next) {
		next = c->next;
		conn_stop(c);
	}
	ev_timer_init(&srv->close_timer, server_close_timeout, server_close_timeout_value(srv), 0.);
	ev_timer_start(srv->loop, &srv->close_timer);
	server_maybe_done(srv);
}

static void server_on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	server_stop(w->data, w->signum == SIGTERM ? "TERM" : "INT");
}

void server_drain(struct server *srv)
{
	if (srv->draining || srv->stopping)
		return;
	srv->draining = true;
	log_kv(LOG_INFO, NULL, "draining: no new sessions, open ones go on", NULL);
	if (srv->ops->stopping)
		srv->ops->stopping();
	server_stop_listening(srv);
	server_maybe_done(srv);
}

static void server_on_quit(struct ev_loop *loop, ev_signal *w, int revents)
{
	server_drain(w->data);
}

static void server_on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct server *srv = w->data;
	if (srv->stopping || srv->draining)
		return;
	if (srv->worker) {
		log_kv(LOG_WARN, NULL, "HUP ignored: send it to the master process", NULL);
		return;
	}
	char err[1024];
	sd_notify_state("RELOADING=1");
	bool ok = server_reload(srv, err, sizeof err);
	sd_notify_state("READY=1");
	metrics_reload(ok);
	if (ok)
		log_kv(LOG_INFO, NULL, "reloaded", "script", srv->script, NULL);
	else
		log_kv(LOG_ERROR, NULL, "reload failed, the old script keeps serving", "error", err, NULL);
}

bool server_drop_privileges(struct server *srv, char *err, size_t errlen)
{
	const char *user = srv->cfg->nlisteners ? srv->cfg->listeners[0]->user : NULL;
	if (!user && getuid() == 0)
		log_kv(LOG_WARN, NULL, "running as root: set user = \"...\" in the script to drop root after binding", NULL);
	if (!user || getuid() != 0)
		return true;
	struct passwd *pw = getpwnam(user);
	if (!pw) {
		snprintf(err, errlen, "option 'user': no such user \"%s\"", user);
		return false;
	}
	if (setgroups(1, &pw->pw_gid) != 0 || setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid) != 0 ||
	    setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) != 0) {
		snprintf(err, errlen, "cannot become %s: %s", user, strerror(errno));
		return false;
	}
	log_kv(LOG_INFO, NULL, "running as", "user", user, NULL);
	return true;
}

void server_run(struct server *srv)
{
	server_current = srv;
	srv->accepting = true;
	srv->ops->serving();
	for (struct listener *l = srv->listeners; l; l = l->next)
		if (l->fd >= 0)
			ev_io_start(srv->loop, &l->io);
	server_watch_certs(srv);
	ev_init(&srv->cert_settle, server_cert_settled);
	ev_init(&srv->accept_pause, server_accept_pause_over);
	heap_trim_init(&srv->handshake_trim, srv->loop);
	ev_signal_init(&srv->sig_term, server_on_stop_signal, SIGTERM);
	ev_signal_init(&srv->sig_int, server_on_stop_signal, SIGINT);
	ev_signal_init(&srv->sig_hup, server_on_hup, SIGHUP);
	ev_signal_init(&srv->sig_quit, server_on_quit, SIGQUIT);
	srv->sig_term.data = srv->sig_int.data = srv->sig_hup.data = srv->sig_quit.data = srv;
	ev_signal_start(srv->loop, &srv->sig_term);
	ev_signal_start(srv->loop, &srv->sig_int);
	ev_signal_start(srv->loop, &srv->sig_hup);
	ev_signal_start(srv->loop, &srv->sig_quit);
	if (!srv->worker)
		sd_notify_state("READY=1");
	log_attach(srv->loop);
	ev_run(srv->loop, 0);
	log_kv(LOG_INFO, NULL, "stopped", NULL);
	log_detach();
}

void server_free(struct server *srv)
{
	server_stop_listening(srv);
	while (srv->listeners) {
		struct listener *l = srv->listeners;
		srv->listeners = l->next;
		server_free_listener(srv, l);
	}
	srv->ops->unref(srv->cfg);
	srv->cfg = NULL;
	server_current = NULL;
}
