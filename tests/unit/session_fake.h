/*
 * session_fake.h — the SMTP session (core/smtp/) on a fake server, for the
 * tests that drive it with no Lua (tests/unit/test_session.c,
 * tests/fuzz/fuzz_session.c): one listener's options filled as a script
 * with no options would fill them, and a client on the other end of a
 * socket pair whose near end is a real struct conn (core/net/conn.c).
 * Decisions come from whatever policy smtp_policy_use() installed.
 */
#ifndef LUASMTPD_SESSION_FAKE_H
#define LUASMTPD_SESSION_FAKE_H

#include "base/log.h"
#include "net/conn.h"
#include "net/server.h"
#include "smtp/options.h"
#include "smtp/session.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void session_fake_cfg_ref(struct listener_set *cfg)
{
}

static const struct server_ops session_fake_ops = {.ref = session_fake_cfg_ref, .unref = session_fake_cfg_ref};

struct client {
	struct server srv;
	struct smtp_options opt;
	int peer;
};

/* A session on a new connection, greeted; false if no socket pair. */
static bool client_open(struct client *cl)
{
	memset(cl, 0, sizeof *cl);
	log_min_level = LOG_ERROR; /* a line per connection is noise here */
	cl->srv.loop = ev_default_loop(0);
	cl->srv.ops = &session_fake_ops;
	cl->opt.name = "mx.test";
	cl->opt.helo_response = "%s Nice to meet you, %s";
	cl->opt.auth_required_message = "Error: authentication Required";
	cl->opt.auth_methods[0] = AUTH_PLAIN;
	cl->opt.auth_methods[1] = AUTH_LOGIN;
	cl->opt.nauth_methods = 2;
	cl->opt.allow_insecure_auth = true;
	cl->opt.auth_optional = true;
	cl->opt.max_unauth_commands = 10;
	cl->opt.max_auth_failures = 5;
	cl->opt.max_junk_commands = 100;
	cl->opt.max_command_length = 4096;
	cl->opt.max_recipients = 100;
	cl->opt.hide_dsn = cl->opt.hide_requiretls = true;
	cl->opt.listener.socket_timeout = 60;
	cl->opt.listener.close_timeout = 5;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0)
		return false;
	struct sockaddr_storage none = {.ss_family = AF_UNSPEC};
	struct conn *c = conn_new(&cl->srv, &cl->opt.listener, sv[0], (struct sockaddr *)&none,
	                          (struct sockaddr *)&none);
	c->next = cl->srv.conns;
	cl->srv.conns = c;
	cl->srv.nconns++;
	cl->peer = sv[1];
	smtp_session_accept(c);
	conn_start(c, "test");
	return true;
}

/* Writes n bytes of what the client says, runs the loop, and returns what
 * came back (valid until the next call). */
static const char *client_say_bytes(struct client *cl, const char *bytes, size_t len)
{
	static char got[8192];
	size_t n = 0;
	/* MSG_NOSIGNAL: a session that has hung up must not kill the test. */
	if (len && send(cl->peer, bytes, len, MSG_NOSIGNAL) != (ssize_t)len)
		return NULL;
	for (int i = 0; i < 20; i++) {
		ev_run(cl->srv.loop, EVRUN_NOWAIT);
		ssize_t r;
		while ((r = read(cl->peer, got + n, sizeof got - 1 - n)) > 0)
			if ((n += (size_t)r) == sizeof got - 1)
				n = 0; /* only the last replies are kept */
	}
	got[n] = '\0';
	if (getenv("TEST_SESSION_TRACE")) /* the transcript, to see why a check failed */
		fprintf(stderr, "C: %.*s\nS: %s\n", (int)len, bytes, got);
	return got;
}

static const char *say(struct client *cl, const char *bytes)
{
	return client_say_bytes(cl, bytes, strlen(bytes));
}

/* The client hangs up; true once the session has freed its connection. */
static bool client_close(struct client *cl)
{
	close(cl->peer);
	client_say_bytes(cl, "", 0);
	return cl->srv.conns == NULL;
}

#endif
