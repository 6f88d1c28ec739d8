#include "net/conn.h"

#include "net/conn_tls.h"
#include "base/metrics.h"
#include "proto/proxy_parse.h"
#include "net/server.h"

#include <arpa/inet.h>
#include "base/byte_table.h"
#include "base/cidr.h"
#include "base/freelist.h"
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* Input beyond this stays in the kernel until the peer reads its replies:
 * back-pressure instead of unbounded buffers. */
#define CONN_OUT_HIGH (256 * 1024)
#define CONN_READ_CMD 16384
#define CONN_READ_DATA 65536

static void conn_make_id(char id[17])
{
	static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
	static uint64_t state;
	if (state == 0 && getrandom(&state, sizeof state, 0) != sizeof state)
		state = (uint64_t)getpid() ^ (uint64_t)time(NULL) << 20;
	/* splitmix64: ids must be unique and unguessable enough for logs,
	 * not secret. */
	uint64_t z = (state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	z ^= z >> 31;
	uint64_t y = z * 0xff51afd7ed558ccdull;
	/* Twelve characters from z's low 60 bits, four from y's low 20. */
	for (int i = 0; i < 12; i++, z >>= 5)
		id[i] = alphabet[z & 31];
	for (int i = 12; i < 16; i++, y >>= 5)
		id[i] = alphabet[y & 31];
	id[16] = '\0';
}

/* Each byte value's decimal digits, left-aligned, and how many there are. */
#define CONN_OCTET(c)                                                                   \
	{{(char)((c) >= 100 ? '0' + (c) / 100 : (c) >= 10 ? '0' + (c) / 10 : '0' + (c)), \
	  (char)((c) >= 100 ? '0' + (c) / 10 % 10 : (c) >= 10 ? '0' + (c) % 10 : 0),      \
	  (char)((c) >= 100 ? '0' + (c) % 10 : 0)},                                        \
	 (c) >= 100 ? 3 : (c) >= 10 ? 2 : 1}
static const struct {
	char digits[3];
	unsigned char n;
} conn_octets[256] = BYTE_TABLE(CONN_OCTET);

/* Dotted quad without inet_ntop, whose sprintf cost a connection about
 * 1,700 instructions per address, and from a table rather than by
 * division (about 100 instructions an address). Three bytes are copied
 * for every octet, of which the next one overwrites what is not a digit:
 * out holds at least INET_ADDRSTRLEN (16), and "255.255.255." is 12. */
static void conn_ipv4_string(const unsigned char *b, char *out)
{
	for (int i = 0; i < 4; i++) {
		memcpy(out, conn_octets[b[i]].digits, 3);
		out += conn_octets[b[i]].n;
		*out++ = '.';
	}
	out[-1] = '\0';
}

static void conn_addr_string(const struct sockaddr *sa, char *out, size_t len, int *port)
{
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
			conn_ipv4_string(&s6->sin6_addr.s6_addr[12], out);
		else
			inet_ntop(AF_INET6, &s6->sin6_addr, out, (socklen_t)len);
		*port = ntohs(s6->sin6_port);
	} else if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
		conn_ipv4_string((const unsigned char *)&s4->sin_addr, out);
		*port = ntohs(s4->sin_port);
	} else {
		snprintf(out, len, "unknown");
		*port = 0;
	}
}

/* Connections closed, kept for the next ones: calloc and free of a block
 * this size were about 500 instructions a connection (base/freelist.h). */
static struct freelist conn_spare = FREELIST_INIT(sizeof(struct conn), 16);

static void conn_on_io(struct ev_loop *loop, ev_io *w, int revents);
static void conn_on_timer(struct ev_loop *loop, ev_timer *w, int revents);
static void conn_open(struct conn *c, const struct proxy_info *pi);
static void conn_proxy_start(struct conn *c);
static void conn_proxy_read(struct conn *c);
static void conn_proxy_timer(struct conn *c);

struct conn *conn_new(struct server *srv, struct listener_options *opt, int fd, const struct sockaddr *peer,
                      const struct sockaddr *local)
{
	struct conn *c = freelist_calloc(&conn_spare);
	c->srv = srv;
	metrics_connection(+1);
	c->opt = opt;
	c->fd = fd;
	c->phase = PHASE_OPEN;
	conn_make_id(c->id);
	conn_addr_string(peer, c->remote_addr, sizeof c->remote_addr, &c->remote_port);
	struct sockaddr_storage asked;
	socklen_t llen = sizeof asked;
	if (!local && getsockname(fd, (struct sockaddr *)&asked, &llen) == 0)
		local = (struct sockaddr *)&asked;
	if (local)
		conn_addr_string(local, c->local_addr, sizeof c->local_addr, &c->local_port);
	ev_io_init(&c->io, conn_on_io, fd, EV_READ);
	ev_init(&c->timer, conn_on_timer);
	return c;
}

void conn_log(struct conn *c, enum log_level level, const char *msg, ...)
{
	va_list ap;
	va_start(ap, msg);
	log_vkv(level, c->id, msg, ap);
	va_end(ap);
}

/* maxConnectionRate: connections per minute from one address. A small
 * table indexed by a hash of the address; a collision only makes two
 * addresses share a budget for a minute. */
static bool conn_rate_exceeded(const struct conn *c)
{
	unsigned max = c->opt->max_connection_rate;
	if (!max)
		return false;
	static struct conn_rate {
		char ip[64];
		ev_tstamp window;
		unsigned count;
	} rates[1024];
	unsigned h = 2166136261u;
	for (const char *p = c->remote_addr; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	ev_tstamp now = ev_now(c->srv->loop);
	struct conn_rate *r = &rates[h % 1024];
	if (strcmp(r->ip, c->remote_addr) != 0 || now - r->window >= 60) {
		snprintf(r->ip, sizeof r->ip, "%s", c->remote_addr);
		r->window = now;
		r->count = 0;
	}
	return ++r->count > max;
}

/* maxConnectionsPerIp: counted over the open connections (the new one is
 * among them). A linear walk: cheap next to an accept at the limits in use. */
bool conn_too_many_from_peer(const struct conn *c)
{
	unsigned max = c->opt->max_connections_per_ip;
	if (!max)
		return false;
	unsigned n = 0;
	for (const struct conn *o = c->srv->conns; o; o = o->next)
		if (o->phase != PHASE_CLOSED && strcmp(o->remote_addr, c->remote_addr) == 0 && ++n > max)
			return true;
	return false;
}

void conn_send_now(struct conn *c, const char *line)
{
	ssize_t w = send(c->fd, line, strlen(line), MSG_NOSIGNAL | MSG_DONTWAIT);
	(void)w;
}

void conn_start(struct conn *c, const char *listen_addr)
{
	/* Field by field: the port is formatted only for a line that is written,
	 * without printf. */
	if (log_begin(LOG_INFO, c->id, "connection")) {
		log_field("remote", c->remote_addr, strlen(c->remote_addr));
		log_field_uint("port", (unsigned long long)c->remote_port);
		if (listen_addr)
			log_field("listen", listen_addr, strlen(listen_addr));
		log_end();
	}
	/* The owner words the refusal; the log names the limit. */
	static const char *const limits[] = {
		[CONN_REFUSED_CLIENTS] = "maxClients",
		[CONN_REFUSED_PEER] = "maxConnectionsPerIp",
		[CONN_REFUSED_RATE] = "maxConnectionRate",
	};
	int busy = c->opt->max_clients && c->srv->nconns > c->opt->max_clients ? CONN_REFUSED_CLIENTS
	           : conn_too_many_from_peer(c)                               ? CONN_REFUSED_PEER
	           : conn_rate_exceeded(c)                                    ? CONN_REFUSED_RATE
	                                                                      : -1;
	if (busy >= 0) {
		c->ops->on_refused(c, (enum conn_refusal)busy);
		conn_close(c, limits[busy]);
		return;
	}
	if (c->opt->use_proxy) {
		conn_proxy_start(c);
		return;
	}
	conn_open(c, NULL);
}

/* The session proper: after accept, or after the PROXY header pi. */
static void conn_open(struct conn *c, const struct proxy_info *pi)
{
	c->phase = PHASE_OPEN;
	ev_io_start(c->srv->loop, &c->io);
	if (c->opt->socket_timeout > 0)
		conn_idle_arm(c, c->opt->socket_timeout);
	c->ops->on_open(c, pi);
}

/* ---- PROXY protocol ------------------------------------------------------ */

static void conn_proxy_start(struct conn *c)
{
	if (!cidr_list_match(c->opt->proxy_trusted, c->opt->nproxy_trusted, c->remote_addr)) {
		/* Behind a load balancer, a direct connection is not a client. */
		conn_close(c, "not a trusted PROXY peer");
		return;
	}
	c->phase = PHASE_PROXY;
	c->proxy_deadline = ev_now(c->srv->loop) + (c->opt->socket_timeout > 0 ? c->opt->socket_timeout : 60);
	ev_io_set(&c->io, c->fd, EV_READ);
	ev_io_start(c->srv->loop, &c->io);
	ev_timer_set(&c->timer, c->proxy_deadline - ev_now(c->srv->loop), 0.);
	ev_timer_start(c->srv->loop, &c->timer);
}

/* Takes the header's addresses; the owner gets the header itself. */
static void conn_proxy_apply(struct conn *c, const struct proxy_info *pi)
{
	char port[16];
	if (!pi->local) {
		snprintf(c->remote_addr, sizeof c->remote_addr, "%s", pi->src);
		c->remote_port = pi->src_port;
		snprintf(c->local_addr, sizeof c->local_addr, "%s", pi->dst);
		c->local_port = pi->dst_port;
	}
	snprintf(port, sizeof port, "%d", c->remote_port);
	conn_log(c, LOG_INFO, "proxy", "version", pi->version == 1 ? "1" : "2", "client", c->remote_addr,
	         "port", port, NULL);
	ev_timer_stop(c->srv->loop, &c->timer);
	ev_io_stop(c->srv->loop, &c->io);
	conn_open(c, pi);
}

/* The header is read with MSG_PEEK and then exactly its length, so the
 * bytes after it (a TLS ClientHello) stay in the socket for OpenSSL. */
static void conn_proxy_read(struct conn *c)
{
	unsigned char peek[PROXY_HEADER_MAX];
	ssize_t r = recv(c->fd, peek, sizeof peek, MSG_PEEK);
	if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
		conn_close(c, "closed before the PROXY header");
		return;
	}
	if (r < 0)
		return;
	struct proxy_info pi;
	enum proxy_status st = proxy_parse(peek, (size_t)r, &pi);
	if (st == PROXY_BAD || (st == PROXY_NEED_MORE && (size_t)r == sizeof peek)) {
		conn_log(c, LOG_WARN, "bad PROXY header", NULL);
		conn_close(c, "bad PROXY header");
		return;
	}
	if (st == PROXY_NEED_MORE) {
		/* Peeked bytes would wake the watcher at once: poll a little
		 * later instead, within the deadline. */
		ev_io_stop(c->srv->loop, &c->io);
		double left = c->proxy_deadline - ev_now(c->srv->loop);
		ev_timer_stop(c->srv->loop, &c->timer);
		ev_timer_set(&c->timer, left < 0.05 ? (left > 0 ? left : 0.) : 0.05, 0.);
		ev_timer_start(c->srv->loop, &c->timer);
		return;
	}
	unsigned char sink[PROXY_HEADER_MAX];
	if (recv(c->fd, sink, pi.length, 0) != (ssize_t)pi.length) {
		conn_close(c, "PROXY header read failed");
		return;
	}
	conn_proxy_apply(c, &pi);
}

static void conn_proxy_timer(struct conn *c)
{
	if (ev_now(c->srv->loop) >= c->proxy_deadline) {
		conn_close(c, "no PROXY header within socketTimeout");
		return;
	}
	conn_proxy_read(c);
	if (c->phase == PHASE_PROXY && !ev_is_active(&c->timer)) {
		ev_io_start(c->srv->loop, &c->io);
		ev_timer_set(&c->timer, c->proxy_deadline - ev_now(c->srv->loop), 0.);
		ev_timer_start(c->srv->loop, &c->timer);
	}
}

/* One send through TLS or the socket; -1 with errno EAGAIN to wait. */
static ssize_t conn_send(struct conn *c, const char *p, size_t n)
{
	if (c->ssl && c->secure) {
		ssize_t w = conn_tls_send(c, p, n, &c->tls_write_wants_read);
		return w;
	}
	/* The last reply of a closing connection (221, 421...) is held back
	 * (MSG_MORE) for the close that follows as soon as it is all
	 * written: the FIN then goes in the same segment, and the client is
	 * woken once, not twice (a wake-up is a good part of what the kernel
	 * charges a connection). Closing sends what is held at once. */
	return send(c->fd, p, n, MSG_NOSIGNAL | (c->phase == PHASE_CLOSING ? MSG_MORE : 0));
}

bool conn_flush(struct conn *c)
{
	while (buf_used(&c->out) > 0) {
		ssize_t w = conn_send(c, buf_head(&c->out), buf_used(&c->out));
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			conn_close(c, strerror(errno));
			return false;
		}
		buf_consume(&c->out, (size_t)w);
	}
	buf_release_if_empty(&c->out);
	if (c->phase == PHASE_CLOSING && buf_used(&c->out) == 0) {
		conn_close(c, NULL);
		return false;
	}
	if (c->starttls_pending && buf_used(&c->out) == 0) {
		/* The 220 is on the wire in plaintext: from here on, TLS. */
		c->starttls_pending = false;
		conn_tls_begin(c);
		return c->phase != PHASE_CLOSED;
	}
	conn_update_io(c);
	return true;
}

void conn_close_when_flushed(struct conn *c, bool drain)
{
	c->phase = PHASE_CLOSING;
	c->drain_on_close = drain;
	/* Whatever the peer pipelined after the last reply is not executed. */
	buf_free(&c->in);
	conn_flush(c);
}

void conn_close_pending(struct conn *c)
{
	c->phase = PHASE_CLOSING;
}

/* The connections read in this loop turn whose input waits to be acted
 * on, in the order they were read. Reading every ready socket first and
 * then acting on what each sent runs the same code (the parser, the
 * hooks' machinery, LuaJIT, the log) for one connection after another,
 * where reading and acting by turns had the kernel's receive path evict
 * it from the processor's caches at every connection: 2-3% of a
 * pipelined message's CPU in a paired run; and acting on all of them
 * before writing any reply (the kernel's send path the same way, once
 * for all) another 4%. A plain connection's only: TLS reads go on as
 * they were. conn_batch_run runs at the lowest priority, so after every
 * other callback of the turn. Until the replies are written the
 * connections stay dispatching, so one closed meanwhile is released
 * here, after its replies. */
static struct conn *batch_head, **batch_tail = &batch_head;
static ev_watcher batch_w; /* never started: only fed (ev_feed_event) */

static void conn_batch_unlink(struct conn *c)
{
	struct conn **p = &batch_head;
	while (*p != c)
		p = &(*p)->batch_next;
	*p = c->batch_next;
	if (!*p)
		batch_tail = p;
	c->batched = false;
}

static void conn_batch_run(struct ev_loop *loop, ev_watcher *w, int revents)
{
	struct conn *done = NULL;
	while (batch_head) {
		struct conn *c = batch_head;
		conn_batch_unlink(c);
		/* Closed since it was read (a timer): its release is on the way. */
		if (c->phase == PHASE_CLOSED)
			continue;
		c->dispatching = true;
		c->ops->on_input(c);
		c->batch_next = done;
		done = c;
	}
	while (done) {
		struct conn *c = done;
		done = c->batch_next;
		if (c->phase != PHASE_CLOSED)
			conn_flush(c);
		c->dispatching = false;
		if (c->phase == PHASE_CLOSED)
			c->ops->on_release(c);
	}
}

static void conn_batch_add(struct conn *c)
{
	if (c->batched)
		return;
	if (!batch_head) {
		if (!ev_cb(&batch_w)) {
			ev_init(&batch_w, conn_batch_run);
			ev_set_priority(&batch_w, EV_MINPRI);
		}
		ev_feed_event(c->srv->loop, &batch_w, EV_CUSTOM);
	}
	c->batched = true;
	c->batch_next = NULL;
	*batch_tail = c;
	batch_tail = &c->batch_next;
}

void conn_free(struct conn *c)
{
	struct server *srv = c->srv;
	if (c->batched)
		conn_batch_unlink(c);
	ev_timer_stop(srv->loop, &c->timer);
	conn_tls_free(c);
	buf_free(&c->in);
	buf_free(&c->out);
	metrics_connection(-1);
	server_conn_gone(srv, c);
	freelist_free(&conn_spare, c);
}

/* Closing with unread input makes the kernel send a reset, which can
 * destroy our last reply (a 421, a 554) before the client reads it: read
 * what is already there first. Bounded: no waiting for more. */
static void conn_drain_before_close(int fd)
{
	char sink[4096];
	for (int i = 0; i < 16; i++)
		if (recv(fd, sink, sizeof sink, MSG_DONTWAIT) <= 0)
			break;
	shutdown(fd, SHUT_WR);
}

void conn_close(struct conn *c, const char *reason)
{
	if (c->phase == PHASE_CLOSED)
		return;
	c->phase = PHASE_CLOSED;
	conn_log(c, LOG_INFO, "closed", "reason", reason ? reason : "done", NULL);
	c->ops->on_closed(c);
	ev_io_stop(c->srv->loop, &c->io);
	if (c->ssl && c->secure)
		SSL_shutdown(c->ssl); /* close_notify, best effort, never waited for */
	if (c->drain_on_close)
		conn_drain_before_close(c->fd);
	close(c->fd);
	c->fd = -1;
	ev_timer_stop(c->srv->loop, &c->timer);
	/* Released from the loop, with nothing of c on the stack: by
	 * conn_on_io when it returns, if this is its doing (most closes, and
	 * a timer started and stopped again was ~140 instructions), else by
	 * the timer, at once. */
	if (!c->dispatching) {
		ev_timer_set(&c->timer, 0., 0.);
		ev_timer_start(c->srv->loop, &c->timer);
	}
}

bool conn_input_paused(const struct conn *c)
{
	return c->starttls_pending || buf_used(&c->out) > CONN_OUT_HIGH;
}

void conn_update_io(struct conn *c)
{
	if (c->phase == PHASE_CLOSED)
		return;
	int want;
	if (c->phase == PHASE_HANDSHAKE)
		want = conn_tls_waiting(c) ? 0 : c->tls_want_write ? EV_WRITE : EV_READ;
	else if (c->phase == PHASE_CLOSING || conn_input_paused(c) || !c->ops->wants_input(c))
		want = 0;
	else
		want = c->tls_want_write ? EV_WRITE : EV_READ;
	if (buf_used(&c->out) > 0)
		want |= c->tls_write_wants_read ? EV_READ : EV_WRITE;
	if (want != (c->io.events & (EV_READ | EV_WRITE)) || !ev_is_active(&c->io)) {
		ev_io_stop(c->srv->loop, &c->io);
		ev_io_set(&c->io, c->fd, want);
		if (want)
			ev_io_start(c->srv->loop, &c->io);
	}
	/* Bytes OpenSSL has already decrypted will not wake the socket watcher. */
	if ((want & EV_READ) && c->ssl && c->secure && SSL_has_pending(c->ssl))
		ev_feed_event(c->srv->loop, &c->io, EV_READ);
}

void conn_resume(struct conn *c)
{
	if (c->phase == PHASE_CLOSED)
		return;
	c->ops->on_input(c);
	conn_flush(c);
}

void conn_stop(struct conn *c)
{
	c->ops->on_stop(c, false);
}

void conn_stop_now(struct conn *c)
{
	c->ops->on_stop(c, true);
}

void conn_idle_arm(struct conn *c, double t)
{
	c->timer.repeat = t > 0 ? t : 0;
	c->idle_deadline = ev_now(c->srv->loop) + c->timer.repeat;
	ev_timer_again(c->srv->loop, &c->timer);
}

/* Progress only ever moves the deadline later, so the timer is left where
 * it is: ev_timer_again on every line and every read of a message was
 * about 200 instructions a message. conn_on_timer re-arms it for the rest
 * when it fires before the deadline (libev's "be smart about timeouts",
 * method 4). repeat is what it is with the timer armed at every step: the
 * time a connection that has timed out has to close. */
static void conn_idle_extend(struct conn *c, ev_tstamp deadline, double repeat)
{
	c->idle_deadline = deadline;
	c->timer.repeat = repeat;
}

/* A command line: the idle timer starts over, and so does the deadline a
 * message that may follow must keep up with. */
void conn_line_progress(struct conn *c)
{
	double t = c->opt->socket_timeout;
	if (t <= 0)
		return;
	c->data_deadline = ev_now(c->srv->loop) + t;
	conn_idle_extend(c, c->data_deadline, t);
}

/* n message bytes: each buys n / minDataRate seconds, never more than
 * socketTimeout ahead (Postfix's smtpd_min_data_rate). */
static void conn_data_progress(struct conn *c, size_t n)
{
	double t = c->opt->socket_timeout, rate = c->opt->min_data_rate;
	if (t <= 0)
		return;
	ev_tstamp now = ev_now(c->srv->loop);
	if (rate <= 0) {
		c->data_deadline = now + t;
	} else {
		c->data_deadline += (double)n / rate;
		if (c->data_deadline > now + t)
			c->data_deadline = now + t;
	}
	double left = c->data_deadline - now;
	conn_idle_extend(c, c->data_deadline, left > 0.001 ? left : 0.001);
}

static void conn_read(struct conn *c)
{
	bool stream = c->ops->streaming(c);
	size_t want = stream ? CONN_READ_DATA : CONN_READ_CMD;
	char *dst = buf_reserve(&c->in, want);
	ssize_t r = c->ssl ? conn_tls_recv(c, dst, want) : recv(c->fd, dst, want, 0);
	if (r == 0) {
		conn_close(c, "client closed the connection");
		return;
	}
	if (r < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			conn_close(c, strerror(errno));
		buf_release_if_empty(&c->in);
		return;
	}
	c->in.len += (size_t)r;
	/* For commands only a whole line is progress, and a message must keep
	 * up minDataRate: a client dripping bytes (slowloris) times out. */
	if (stream)
		conn_data_progress(c, (size_t)r);
	if (c->ssl)
		c->ops->on_input(c);
	else
		conn_batch_add(c);
}

static void conn_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = (struct conn *)w;
	if (c->phase == PHASE_PROXY) {
		conn_proxy_read(c);
		return;
	}
	if (c->phase == PHASE_HANDSHAKE) {
		conn_tls_handshake(c);
		return;
	}
	if (c->ssl && c->tls_want_write && (revents & EV_WRITE))
		revents |= EV_READ; /* the read OpenSSL was writing for */
	c->dispatching = true;
	if (revents & EV_READ)
		conn_read(c);
	if (c->phase != PHASE_CLOSED)
		conn_flush(c);
	c->dispatching = false;
	/* Closed meanwhile (the watcher is stopped at a close, so not before),
	 * and nothing else holds c now: free it without another loop turn. */
	if (c->phase == PHASE_CLOSED)
		c->ops->on_release(c);
}

static void conn_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = (struct conn *)((char *)w - offsetof(struct conn, timer));
	if (c->phase == PHASE_CLOSED) {
		c->ops->on_release(c);
		return;
	}
	if (c->phase == PHASE_PROXY) {
		conn_proxy_timer(c);
		return;
	}
	ev_tstamp left = c->idle_deadline - ev_now(loop);
	if (left > 0) {
		/* Early: there was progress since it was armed (conn_idle_extend). */
		ev_timer_stop(loop, w);
		ev_timer_set(w, left, w->repeat);
		ev_timer_start(loop, w);
		return;
	}
	if (c->phase == PHASE_CLOSING) {
		conn_log(c, LOG_INFO, "timeout", NULL);
		conn_close(c, "timeout while closing");
		return;
	}
	c->ops->on_timeout(c);
}

void conn_idle_restart(struct conn *c)
{
	conn_idle_arm(c, c->opt->socket_timeout);
	c->data_deadline = c->idle_deadline;
}
