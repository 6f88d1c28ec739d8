/*
 * test_conn.c — the transport seam (core/net/conn.c) with an owner that is
 * not the SMTP session and no Lua: bytes reach on_input, what the owner
 * queues is written, a close after the last write calls on_closed then
 * on_release (which frees the connection), a peer's close does the same,
 * a connection over maxClients is refused through on_refused, and
 * socketTimeout fires at its deadline, however late a line has moved it
 * (the timer is not re-armed per line: it re-arms itself when early);
 * peer and local IPv4 addresses read as inet_ntop writes them.
 */
#include "net/conn.h"
#include "net/server.h"
#include "unit.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

/* An echo owner: each input is written back, "quit" ends after the reply. */
struct echo {
	int opened, inputs, closed, released, refused, timeouts;
	double timed_out_at; /* ev_time() */
	char seen[64];
};

static void echo_open(struct conn *c, const struct proxy_info *pi)
{
	struct echo *e = c->owner;
	e->opened++;
}

static void echo_input(struct conn *c)
{
	struct echo *e = c->owner;
	size_t n = buf_used(&c->in);
	e->inputs++;
	conn_line_progress(c);
	snprintf(e->seen, sizeof e->seen, "%.*s", (int)n, buf_head(&c->in));
	buf_append(&c->out, buf_head(&c->in), n);
	buf_consume(&c->in, n);
	if (strncmp(e->seen, "quit", 4) == 0)
		conn_close_when_flushed(c, false);
}

static bool echo_wants_input(const struct conn *c)
{
	return true;
}

static bool echo_streaming(const struct conn *c)
{
	return false; /* lines, as far as the transport's deadlines go */
}

static void echo_refused(struct conn *c, enum conn_refusal why)
{
	((struct echo *)c->owner)->refused++;
	conn_send_now(c, "busy\r\n");
}

static void echo_timeout(struct conn *c)
{
	struct echo *e = c->owner;
	e->timeouts++;
	e->timed_out_at = ev_time();
	conn_close(c, "timeout");
}

static void echo_closed(struct conn *c)
{
	((struct echo *)c->owner)->closed++;
}

static void echo_release(struct conn *c)
{
	((struct echo *)c->owner)->released++;
	conn_free(c);
}

static const struct conn_owner_ops echo_ops = {
	.on_open = echo_open,
	.on_refused = echo_refused,
	.on_input = echo_input,
	.wants_input = echo_wants_input,
	.streaming = echo_streaming,
	.on_timeout = echo_timeout,
	.on_closed = echo_closed,
	.on_release = echo_release,
};

/* A connection on one end of a socket pair, owned by e; *peer: the other end. */
static struct conn *echo_conn(struct server *srv, struct listener_options *opt, struct echo *e, int *peer)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0)
		return NULL;
	struct sockaddr_storage none = {.ss_family = AF_UNSPEC};
	struct conn *c = conn_new(srv, opt, sv[0], (struct sockaddr *)&none, (struct sockaddr *)&none);
	c->ops = &echo_ops;
	c->owner = e;
	c->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = c;
	srv->conns = c;
	srv->nconns++;
	*peer = sv[1];
	return c;
}

static void spin(struct server *srv)
{
	for (int i = 0; i < 20; i++)
		ev_run(srv->loop, EVRUN_NOWAIT);
}

static void test_echo_then_close_after_reply(void)
{
	struct server srv = {.loop = ev_default_loop(0)};
	struct listener_options opt = {0};
	struct echo e = {0};
	int peer;
	struct conn *c = echo_conn(&srv, &opt, &e, &peer);
	CHECK(c != NULL);
	conn_start(c, "test");
	CHECK_INT(e.opened, 1);
	CHECK_INT(write(peer, "hello\r\n", 7), 7);
	spin(&srv);
	CHECK_INT(e.inputs, 1);
	CHECK_STR(e.seen, "hello\r\n");
	char got[64] = {0};
	CHECK_INT(read(peer, got, sizeof got - 1), 7);
	CHECK_STR(got, "hello\r\n");
	CHECK_INT(write(peer, "quit\r\n", 6), 6);
	spin(&srv);
	memset(got, 0, sizeof got);
	CHECK_INT(read(peer, got, sizeof got - 1), 6); /* the last reply, then the close */
	CHECK_INT(read(peer, got, sizeof got - 1), 0);
	CHECK_INT(e.closed, 1);
	CHECK_INT(e.released, 1);
	CHECK(srv.conns == NULL);
	close(peer);
}

static void test_peer_close(void)
{
	struct server srv = {.loop = ev_default_loop(0)};
	struct listener_options opt = {0};
	struct echo e = {0};
	int peer;
	struct conn *c = echo_conn(&srv, &opt, &e, &peer);
	conn_start(c, "test");
	close(peer);
	spin(&srv);
	CHECK_INT(e.inputs, 0);
	CHECK_INT(e.closed, 1);
	CHECK_INT(e.released, 1);
	CHECK(srv.conns == NULL);
}

static void test_refused_over_max_clients(void)
{
	struct server srv = {.loop = ev_default_loop(0)};
	struct listener_options opt = {.max_clients = 1};
	struct echo first = {0}, second = {0};
	int peer1, peer2;
	struct conn *c1 = echo_conn(&srv, &opt, &first, &peer1);
	conn_start(c1, "test");
	struct conn *c2 = echo_conn(&srv, &opt, &second, &peer2);
	conn_start(c2, "test");
	CHECK_INT(first.opened, 1);
	CHECK_INT(second.opened, 0);
	CHECK_INT(second.refused, 1);
	CHECK_INT(second.closed, 1);
	char got[16] = {0};
	CHECK_INT(read(peer2, got, sizeof got - 1), 6);
	CHECK_STR(got, "busy\r\n");
	spin(&srv);
	CHECK_INT(second.released, 1);
	close(peer1);
	spin(&srv);
	CHECK_INT(first.released, 1);
	CHECK(srv.conns == NULL);
	close(peer2);
}

/* Runs the loop until c has timed out or `seconds` have passed. */
static void run_until_timeout(struct server *srv, struct echo *e, double seconds)
{
	double end = ev_time() + seconds;
	while (!e->timeouts && ev_time() < end) {
		ev_now_update(srv->loop);
		ev_run(srv->loop, EVRUN_ONCE);
	}
}

/* A connection with socketTimeout 0.2 s, a line after `line_after` seconds
 * (< 0: none): seconds from the last activity (the open or the line) to
 * the timeout; the connection is released. */
static double idle_timeout_after(double line_after)
{
	struct server srv = {.loop = ev_default_loop(0)};
	struct listener_options opt = {.socket_timeout = 0.2};
	struct echo e = {0};
	int peer;
	struct conn *c = echo_conn(&srv, &opt, &e, &peer);
	ev_now_update(srv.loop);
	double active_at = ev_time();
	conn_start(c, "test");
	if (line_after >= 0) {
		struct timespec pause = {0, (long)(line_after * 1e9)};
		nanosleep(&pause, NULL);
		CHECK_INT(write(peer, "hello\r\n", 7), 7);
		ev_now_update(srv.loop);
		active_at = ev_time();
		ev_run(srv.loop, EVRUN_NOWAIT);
		CHECK_INT(e.inputs, 1);
	}
	run_until_timeout(&srv, &e, 3.0);
	CHECK_INT(e.timeouts, 1);
	spin(&srv);
	CHECK_INT(e.released, 1);
	close(peer);
	return e.timed_out_at - active_at;
}

/* No progress: the timer armed at open fires once, at socketTimeout. */
static void test_idle_timeout_without_progress(void)
{
	CHECK(idle_timeout_after(-1) >= 0.2 - 0.002);
}

/* A line at 0.15 s moves the deadline to 0.35 s: the timer armed at open
 * fires at 0.2 s, early, and re-arms itself for the rest. */
static void test_idle_timeout_after_progress(void)
{
	CHECK(idle_timeout_after(0.15) >= 0.2 - 0.002);
}

/* Every byte value in every position of an address, as inet_ntop has it. */
static void test_ipv4_addresses_as_inet_ntop(void)
{
	struct server srv = {.loop = ev_default_loop(0)};
	struct listener_options opt = {0};
	int bad = 0;
	for (unsigned v = 0; v < 256; v++) {
		struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(25)};
		struct sockaddr_in local = {.sin_family = AF_INET, .sin_port = htons(587)};
		unsigned char *p = (unsigned char *)&peer.sin_addr, *l = (unsigned char *)&local.sin_addr;
		p[0] = (unsigned char)v, p[1] = (unsigned char)(255 - v), p[2] = (unsigned char)(v * 7);
		p[3] = (unsigned char)(v / 3);
		l[0] = (unsigned char)(v / 3), l[1] = (unsigned char)(v * 7), l[2] = 255, l[3] = (unsigned char)v;
		char want_peer[INET_ADDRSTRLEN], want_local[INET_ADDRSTRLEN];
		inet_ntop(AF_INET, &peer.sin_addr, want_peer, sizeof want_peer);
		inet_ntop(AF_INET, &local.sin_addr, want_local, sizeof want_local);
		struct conn *c = conn_new(&srv, &opt, -1, (struct sockaddr *)&peer, (struct sockaddr *)&local);
		if (strcmp(c->remote_addr, want_peer) != 0 || strcmp(c->local_addr, want_local) != 0 ||
		    c->remote_port != 25 || c->local_port != 587) {
			fprintf(stderr, "%s:%d / %s:%d, not %s / %s\n", c->remote_addr, c->remote_port, c->local_addr,
			        c->local_port, want_peer, want_local);
			bad++;
		}
		conn_free(c);
	}
	CHECK_INT(bad, 0);
}

int main(void)
{
	RUN(test_echo_then_close_after_reply);
	RUN(test_peer_close);
	RUN(test_refused_over_max_clients);
	RUN(test_idle_timeout_without_progress);
	RUN(test_idle_timeout_after_progress);
	RUN(test_ipv4_addresses_as_inet_ntop);
	return unit_summary();
}
