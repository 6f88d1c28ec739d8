/* server — the listening sockets, the set of connections, signals and the
 * graceful stop. */
#ifndef LUASMTPD_SERVER_H
#define LUASMTPD_SERVER_H

#include "config.h"

#include <ev.h>
#include <stdbool.h>

struct conn;

struct listener {
	ev_io io;
	struct server *srv;
	const struct smtp_options *opt;
	int fd;
	char addr[96];
	int sni_cache_ref; /* servername -> context, as SNICallback answered */
	struct listener *next;
};

struct server {
	struct ev_loop *loop;
	struct config cfg;
	struct listener *listeners;
	struct conn *conns;
	unsigned nconns;
	bool stopping;
	ev_signal sig_term, sig_int, sig_hup;
	ev_timer close_timer;
};

bool server_listen(struct server *srv, char *err, size_t errlen);
void server_run(struct server *srv);
void server_conn_gone(struct server *srv, struct conn *c);
void server_free(struct server *srv);

#endif
