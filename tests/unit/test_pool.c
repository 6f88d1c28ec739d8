/*
 * test_pool.c — the idle connection pools (core/net/pool.c) on real
 * socketpairs, no Lua: a connection put back is taken again by its key
 * (newest first, its reuse counted), a peer's close or unexpected bytes
 * take an idle one out at once, the idle timeout expires it, a full
 * pool closes its oldest, and a backlog's slots queue the connects that
 * find them all taken.
 */
#include "net/pool.h"
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct ev_loop *loop;

/* Our end of a fresh socketpair in *ours, the peer's end returned. */
static int pair(int *ours)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0)
		return -1;
	*ours = sv[0];
	return sv[1];
}

static bool fd_is_open(int fd)
{
	return fcntl(fd, F_GETFD) != -1 || errno != EBADF;
}

static void put(const char *key, int fd, double idle, int size)
{
	char err[64];
	struct pool_conn pc = {.fd = fd};
	CHECK(pool_put(loop, key, &pc, idle, size, err, sizeof err) == 0);
}

static void test_put_and_get(void)
{
	int a = -1, b = -1;
	int pa = pair(&a), pb = pair(&b);
	put("h:1", a, 10, 5);
	put("h:1", b, 10, 5);
	CHECK_INT(pool_count("h:1"), 2);
	CHECK_INT(pool_count("h:2"), 0);
	struct pool_conn pc;
	CHECK(!pool_get(loop, "h:2", &pc));
	CHECK(pool_get(loop, "h:1", &pc));
	CHECK_INT(pc.fd, b); /* the newest first */
	CHECK_INT(pc.reused, 1);
	char err[64];
	CHECK(pool_put(loop, "h:1", &pc, 10, 5, err, sizeof err) == 0); /* keeps its count */
	CHECK(pool_get(loop, "h:1", &pc));
	CHECK_INT(pc.reused, 2);
	close(pc.fd);
	CHECK(pool_get(loop, "h:1", &pc));
	CHECK_INT(pc.fd, a);
	close(pc.fd);
	CHECK_INT(pool_count("h:1"), 0);
	close(pa);
	close(pb);
}

static void test_peer_close_and_junk(void)
{
	int a = -1, b = -1;
	int pa = pair(&a), pb = pair(&b);
	put("p", a, 10, 5);
	put("p", b, 10, 5);
	close(pa);
	CHECK(write(pb, "x", 1) == 1);
	ev_run(loop, EVRUN_NOWAIT);
	ev_run(loop, EVRUN_NOWAIT);
	CHECK_INT(pool_count("p"), 0);
	CHECK(!fd_is_open(a));
	CHECK(!fd_is_open(b));
	close(pb);
}

static void test_idle_timeout(void)
{
	int a = -1;
	int pa = pair(&a);
	put("t", a, 0.05, 5);
	ev_run(loop, EVRUN_ONCE); /* the timer is the only watcher that fires */
	CHECK_INT(pool_count("t"), 0);
	CHECK(!fd_is_open(a));
	char c;
	CHECK(read(pa, &c, 1) == 0); /* the peer sees the close */
	close(pa);
}

static void test_bounded(void)
{
	int fds[3] = {-1, -1, -1}, peers[3];
	for (int i = 0; i < 3; i++) {
		peers[i] = pair(&fds[i]);
		put("b", fds[i], 10, 2);
	}
	CHECK_INT(pool_count("b"), 2);
	CHECK(!fd_is_open(fds[0])); /* the oldest went */
	CHECK(fd_is_open(fds[1]) && fd_is_open(fds[2]));
	pool_close_all(loop);
	CHECK_INT(pool_count("b"), 0);
	CHECK(!fd_is_open(fds[2]));
	for (int i = 0; i < 3; i++)
		close(peers[i]);
}

static int woken[3];

static void on_wake(struct ev_loop *l, ev_timer *w, int revents)
{
	woken[(int)(intptr_t)w->data]++;
}

/* Slots (a backlog's limit): a full pool queues waiters in order; a
 * counted connection going idle, or its slot given back, wakes the first
 * one; one taken off the queue is never woken. */
static void test_slots_and_waiters(void)
{
	struct pool_waiter w[3];
	for (int i = 0; i < 3; i++) {
		memset(&w[i], 0, sizeof w[i]);
		ev_init(&w[i].wake, on_wake);
		w[i].wake.data = (void *)(intptr_t)i;
	}
	memset(woken, 0, sizeof woken);
	CHECK(pool_reserve("s", 2));
	CHECK(pool_reserve("s", 2));
	CHECK(!pool_reserve("s", 2));
	CHECK(pool_wait("s", &w[0]) && pool_wait("s", &w[1]) && pool_wait("s", &w[2]));
	CHECK_INT(pool_waiting("s"), 3);
	pool_unwait(&w[1]);
	CHECK_INT(pool_waiting("s"), 2);
	int fd = -1, peer = pair(&fd);
	char err[64];
	struct pool_conn pc = {.fd = fd, .counted = true};
	CHECK(pool_put(loop, "s", &pc, 10, 2, err, sizeof err) == 0); /* idle: w[0] may take it */
	ev_run(loop, EVRUN_NOWAIT);
	CHECK_INT(woken[0], 1);
	CHECK_INT(pool_waiting("s"), 1);
	CHECK(pool_get(loop, "s", &pc) && pc.counted);
	close(pc.fd);
	pool_release(loop, "s"); /* its slot back: w[2] next, w[1] left the queue */
	ev_run(loop, EVRUN_NOWAIT);
	CHECK_INT(woken[1], 0);
	CHECK_INT(woken[2], 1);
	CHECK_INT(pool_waiting("s"), 0);
	CHECK(pool_reserve("s", 2));
	CHECK(!pool_reserve("s", 2));
	close(peer);
}

int main(void)
{
	loop = ev_default_loop(0);
	RUN(test_put_and_get);
	RUN(test_peer_close_and_junk);
	RUN(test_idle_timeout);
	RUN(test_bounded);
	RUN(test_slots_and_waiters);
	pool_close_all(loop);
	return unit_summary();
}
