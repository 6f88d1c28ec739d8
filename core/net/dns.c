#include "net/dns.h"

#include "net/server.h"

#include <arpa/inet.h>
#include <ares.h>
#include <arpa/nameser.h>
#include <ev.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DNS_MAX_SOCKETS 16

struct dns_query {
	dns_callback cb;
	void *arg;
	bool cancelled;
	/* An answer c-ares gave outside dns_on_io/dns_on_timer (inside
	 * ares_query, or ares_destroy), kept for the next loop turn. */
	ev_timer later;
	int status;
	unsigned char *abuf;
	int alen;
};

struct dns_socket {
	ev_io io;
	bool used;
};

static struct {
	ares_channel channel;
	pid_t pid; /* the process the channel belongs to */
	struct dns_socket socks[DNS_MAX_SOCKETS];
	ev_timer timer;
	bool driving; /* inside ares_process_fd, called from the loop */
	char servers[512];
	double timeout;
	int tries;
} dns = {.timeout = 2.0, .tries = 2};

static struct ev_loop *dns_loop(void)
{
	return server_current ? server_current->loop : EV_DEFAULT;
}

static void dns_arm_timer(void)
{
	struct timeval tv, *next = ares_timeout(dns.channel, NULL, &tv);
	ev_timer_stop(dns_loop(), &dns.timer);
	if (next) {
		ev_timer_set(&dns.timer, (double)next->tv_sec + next->tv_usec / 1e6, 0.);
		ev_timer_start(dns_loop(), &dns.timer);
	}
}

/* Answers c-ares gives while the loop drives it go to their callbacks at
 * once; any other answer waits for the next loop turn (dns_answer). */
static void dns_process(ares_socket_t rfd, ares_socket_t wfd)
{
	dns.driving = true;
	ares_process_fd(dns.channel, rfd, wfd);
	dns.driving = false;
	dns_arm_timer();
}

static void dns_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
	dns_process(revents & EV_READ ? w->fd : ARES_SOCKET_BAD, revents & EV_WRITE ? w->fd : ARES_SOCKET_BAD);
}

static void dns_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	dns_process(ARES_SOCKET_BAD, ARES_SOCKET_BAD);
}

/* c-ares says which sockets it wants watched, and for what. */
static void dns_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dns_socket *free_slot = NULL, *slot = NULL;
	for (int i = 0; i < DNS_MAX_SOCKETS; i++) {
		if (dns.socks[i].used && dns.socks[i].io.fd == fd)
			slot = &dns.socks[i];
		else if (!dns.socks[i].used && !free_slot)
			free_slot = &dns.socks[i];
	}
	if (slot)
		ev_io_stop(dns_loop(), &slot->io);
	if (!readable && !writable) {
		if (slot)
			slot->used = false;
		return;
	}
	if (!slot)
		slot = free_slot;
	if (!slot)
		return; /* more sockets than servers we allow: c-ares times them out */
	slot->used = true;
	ev_io_init(&slot->io, dns_on_io, fd, (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
	ev_io_start(dns_loop(), &slot->io);
}

static bool dns_apply(char *err, size_t errlen)
{
	if (dns.servers[0]) {
		int rc = ares_set_servers_ports_csv(dns.channel, dns.servers);
		if (rc != ARES_SUCCESS) {
			snprintf(err, errlen, "DNS servers \"%s\": %s", dns.servers, ares_strerror(rc));
			return false;
		}
	}
	return true;
}

static bool dns_channel(char *err, size_t errlen)
{
	if (dns.channel && dns.pid == getpid())
		return true;
	static bool library;
	if (!library && ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS) {
		snprintf(err, errlen, "cannot initialise c-ares");
		return false;
	}
	library = true;
	/* A channel inherited through fork shares sockets with the parent. */
	dns.channel = NULL;
	memset(dns.socks, 0, sizeof dns.socks);
	struct ares_options opts = {
		.sock_state_cb = dns_sock_state,
		.timeout = (int)(dns.timeout * 1000),
		.tries = dns.tries,
	};
	int rc = ares_init_options(&dns.channel, &opts,
	                           ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
	if (rc != ARES_SUCCESS) {
		snprintf(err, errlen, "cannot start the resolver: %s", ares_strerror(rc));
		dns.channel = NULL;
		return false;
	}
	dns.pid = getpid();
	ev_init(&dns.timer, dns_on_timer);
	return dns_apply(err, errlen);
}

bool dns_configure(const char *servers, double timeout, int tries, char *err, size_t errlen)
{
	snprintf(dns.servers, sizeof dns.servers, "%s", servers ? servers : "");
	if (timeout > 0)
		dns.timeout = timeout;
	if (tries > 0)
		dns.tries = tries;
	if (!dns.channel || dns.pid != getpid())
		return true;
	/* Timeouts are fixed at channel creation: start a fresh one. */
	ares_destroy(dns.channel);
	dns.channel = NULL;
	return dns_channel(err, errlen);
}

static void dns_free(struct dns_query *q)
{
	free(q->abuf);
	free(q);
}

static void dns_deliver_later(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct dns_query *q = (struct dns_query *)((char *)w - offsetof(struct dns_query, later));
	q->cb(q->arg, q->status, q->abuf, q->alen);
	dns_free(q);
}

static void dns_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	(void)timeouts;
	struct dns_query *q = arg;
	if (q->cancelled) {
		dns_free(q);
		return;
	}
	if (dns.driving) {
		q->cb(q->arg, status, abuf, alen);
		dns_free(q);
		return;
	}
	/* Called back inside ares_query (a name c-ares refuses, a cached
	 * answer) or ares_destroy: the caller may not hold the handle yet, or
	 * may be another session's hook. abuf is c-ares's only until we return. */
	q->status = status;
	if (abuf && alen > 0) {
		q->abuf = malloc((size_t)alen);
		if (!q->abuf)
			abort();
		memcpy(q->abuf, abuf, (size_t)alen);
		q->alen = alen;
	}
	ev_timer_init(&q->later, dns_deliver_later, 0., 0.);
	ev_timer_start(dns_loop(), &q->later);
}

struct dns_query *dns_query(const char *name, int type, dns_callback cb, void *arg, char *err,
                            size_t errlen)
{
	if (!dns_channel(err, errlen))
		return NULL;
	struct dns_query *q = calloc(1, sizeof *q);
	if (!q)
		abort();
	q->cb = cb;
	q->arg = arg;
	/* A callback that starts a query (rDNS's forward lookup) runs while
	 * the loop drives c-ares: this query's own answer must still wait. */
	bool driving = dns.driving;
	dns.driving = false;
	ares_query(dns.channel, name, ns_c_in, type, dns_answer, q);
	dns.driving = driving;
	dns_arm_timer();
	return q;
}

void dns_cancel(struct dns_query *q)
{
	if (ev_is_active(&q->later)) {
		ev_timer_stop(dns_loop(), &q->later);
		dns_free(q);
		return;
	}
	q->cancelled = true;
}

bool dns_reverse_name(const char *ip, char *out, size_t len)
{
	unsigned char a[16];
	if (inet_pton(AF_INET, ip, a) == 1) {
		snprintf(out, len, "%u.%u.%u.%u.in-addr.arpa", a[3], a[2], a[1], a[0]);
		return true;
	}
	if (inet_pton(AF_INET6, ip, a) != 1 || len < 74)
		return false;
	static const char hex[] = "0123456789abcdef";
	char *p = out;
	for (int i = 15; i >= 0; i--) {
		*p++ = hex[a[i] & 15];
		*p++ = '.';
		*p++ = hex[a[i] >> 4];
		*p++ = '.';
	}
	strcpy(p, "ip6.arpa");
	return true;
}
