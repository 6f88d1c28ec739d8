/*
 * test_pool.c — the idle connection pools (core/net/pool.c) on real
 * socketpairs, no Lua: a connection put back is taken again by its key
 * (newest first, its reuse counted), a peer's close or unexpected bytes
 * take an idle one out at once, the idle timeout expires it, and a full
 * pool closes its oldest.
 */
#include "net/pool.h"
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
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

int main(void)
{
	loop = ev_default_loop(0);
	RUN(test_put_and_get);
	RUN(test_peer_close_and_junk);
	RUN(test_idle_timeout);
	RUN(test_bounded);
	pool_close_all(loop);
	return unit_summary();
}
