#include "server.h"

#include "conn.h"
#include "conn_tls.h"
#include "log.h"
#include "lua_runtime.h"

#include <arpa/inet.h>
#include <lauxlib.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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
		if (res->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
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
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
			    errno != ECONNABORTED)
				log_kv(LOG_ERROR, NULL, "accept failed", "listen", l->addr, "error",
				       strerror(errno), NULL);
			return;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		struct conn *c = conn_new(srv, l, fd, (struct sockaddr *)&peer, plen);
		c->next = srv->conns;
		if (srv->conns)
			srv->conns->prev = c;
		srv->conns = c;
		srv->nconns++;
		conn_start(c);
	}
}

bool server_listen(struct server *srv, char *err, size_t errlen)
{
	for (size_t i = 0; i < srv->cfg.nlisteners; i++) {
		const struct smtp_options *o = &srv->cfg.listeners[i];
		if (o->tls_ctx)
			conn_tls_prepare_context(o->tls_ctx);
		for (size_t j = 0; j < o->nlisten; j++) {
			int fd = server_bind(o->listen[j], err, errlen);
			if (fd < 0)
				return false;
			struct listener *l = calloc(1, sizeof *l);
			if (!l)
				abort();
			l->srv = srv;
			l->opt = o;
			l->fd = fd;
			l->sni_cache_ref = LUA_NOREF;
			snprintf(l->addr, sizeof l->addr, "%s", o->listen[j]);
			ev_io_init(&l->io, server_accept, fd, EV_READ);
			ev_io_start(srv->loop, &l->io);
			l->next = srv->listeners;
			srv->listeners = l;
			log_kv(LOG_INFO, NULL, "listening", "listen", l->addr, NULL);
		}
	}
	return true;
}

/* Stops accepting; the structs stay until server_free, since sessions
 * still open refer to their listener. */
static void server_stop_listening(struct server *srv)
{
	for (struct listener *l = srv->listeners; l; l = l->next) {
		if (l->fd < 0)
			continue;
		ev_io_stop(srv->loop, &l->io);
		close(l->fd);
		l->fd = -1;
	}
}

static void server_free_listeners(struct server *srv)
{
	server_stop_listening(srv);
	while (srv->listeners) {
		struct listener *l = srv->listeners;
		srv->listeners = l->next;
		luaL_unref(lua_main, LUA_REGISTRYINDEX, l->sni_cache_ref);
		free(l);
	}
}

static void server_maybe_done(struct server *srv)
{
	if (srv->stopping && srv->conns == NULL) {
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
	server_maybe_done(srv);
}

static void server_close_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct server *srv = (struct server *)((char *)w - offsetof(struct server, close_timer));
	for (struct conn *c = srv->conns; c; c = c->next)
		if (c->phase != PHASE_CLOSED && c->phase != PHASE_CLOSING)
			conn_end(c, 421, "4.4.2", "Server shutting down");
}

static double server_close_timeout_value(const struct server *srv)
{
	double t = 0;
	for (size_t i = 0; i < srv->cfg.nlisteners; i++)
		if (srv->cfg.listeners[i].close_timeout > t)
			t = srv->cfg.listeners[i].close_timeout;
	return t;
}

static void server_on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct server *srv = w->data;
	if (srv->stopping)
		return;
	srv->stopping = true;
	log_kv(LOG_INFO, NULL, "stopping", "signal", w->signum == SIGTERM ? "TERM" : "INT",
	       NULL);
	server_stop_listening(srv);
	for (struct conn *c = srv->conns, *next; c; c = next) {
		next = c->next;
		conn_stop(c);
	}
	ev_timer_init(&srv->close_timer, server_close_timeout, server_close_timeout_value(srv), 0.);
	ev_timer_start(loop, &srv->close_timer);
	server_maybe_done(srv);
}

static void server_on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
	log_kv(LOG_WARN, NULL, "reload requested, but this build does not reload yet", NULL);
}

void server_run(struct server *srv)
{
	ev_signal_init(&srv->sig_term, server_on_stop_signal, SIGTERM);
	ev_signal_init(&srv->sig_int, server_on_stop_signal, SIGINT);
	ev_signal_init(&srv->sig_hup, server_on_hup, SIGHUP);
	srv->sig_term.data = srv->sig_int.data = srv;
	ev_signal_start(srv->loop, &srv->sig_term);
	ev_signal_start(srv->loop, &srv->sig_int);
	ev_signal_start(srv->loop, &srv->sig_hup);
	ev_run(srv->loop, 0);
	log_kv(LOG_INFO, NULL, "stopped", NULL);
}

void server_free(struct server *srv)
{
	server_free_listeners(srv);
	config_free(lua_main, &srv->cfg);
}
