#include "base/metrics.h"

#include "base/buf.h"
#include "base/log.h"

#include <errno.h>
#include <ev.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

static struct metrics_slot *slots;
static struct metrics_slot local; /* before metrics_init, or if mmap failed */
static struct metrics_slot *mine = &local;
static size_t (*memory_used)(void); /* the policy runtime's heap, if told */

static const double bucket_bounds[METRICS_BUCKETS - 1] = {0.0001, 0.001, 0.01, 0.1, 1, 10, 60};
static const char *const hook_names_m[METRICS_HOOKS] = {
	"onConnect", "onSecure", "SNICallback", "onAuth", "onMailFrom",
	"onRcptTo", "onData", "onClose", "onError",
};
static const char *const auth_names_m[4] = {"PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2"};
static const char *const tls_names[4] = {"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"};

void metrics_init(void)
{
	void *p = mmap(NULL, sizeof(struct metrics_slot) * METRICS_SLOTS, PROT_READ | PROT_WRITE,
	               MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return;
	slots = p;
	mine = &slots[0];
	mine->pid = getpid();
}

void metrics_use_slot(unsigned slot)
{
	if (!slots || slot >= METRICS_SLOTS)
		return;
	/* A restarted worker starts from zero counts for its slot's gauges
	 * but keeps the totals of its predecessor (counters never go back). */
	mine = &slots[slot];
	mine->connections_current = 0;
	mine->pid = getpid();
}

struct metrics_slot *metrics_mine(void)
{
	return mine;
}

void metrics_connection(int delta)
{
	if (delta > 0)
		mine->connections_total++;
	mine->connections_current += delta;
}

void metrics_tls(const char *version)
{
	for (int i = 0; i < 4; i++)
		if (strcmp(version, tls_names[i]) == 0)
			mine->tls_sessions[i]++;
}

void metrics_message(int code)
{
	mine->messages[code < 400 ? 0 : code < 500 ? 1 : 2]++;
}

void metrics_auth(unsigned m, bool ok)
{
	for (int i = 0; i < 4; i++)
		if (m == 1u << i)
			mine->auth[i][ok ? 0 : 1]++;
}

void metrics_hook(unsigned id, double seconds, bool failed)
{
	mine->hook_calls[id]++;
	if (failed)
		mine->hook_errors[id]++;
	mine->hook_seconds[id] += seconds;
	int b = 0;
	while (b < METRICS_BUCKETS - 1 && seconds > bucket_bounds[b])
		b++;
	mine->hook_buckets[id][b]++;
	mine->lua_memory = memory_used ? memory_used() : 0;
}

void metrics_count_memory(size_t (*used)(void))
{
	memory_used = used;
}

void metrics_reload(bool ok)
{
	mine->reloads[ok ? 0 : 1]++;
}

bool metrics_custom_add(const char *name, const char *help, const char *labels, double v)
{
	struct metrics_custom *free_slot = NULL;
	for (int i = 0; i < METRICS_CUSTOM; i++) {
		struct metrics_custom *m = &mine->custom[i];
		if (!m->name[0]) {
			if (!free_slot)
				free_slot = m;
			continue;
		}
		if (strcmp(m->name, name) == 0 && strcmp(m->labels, labels) == 0) {
			m->value += v;
			return true;
		}
	}
	if (!free_slot || strlen(name) >= sizeof free_slot->name || strlen(labels) >= sizeof free_slot->labels)
		return false;
	snprintf(free_slot->help, sizeof free_slot->help, "%s", help ? help : "");
	snprintf(free_slot->labels, sizeof free_slot->labels, "%s", labels);
	free_slot->value = v;
	snprintf(free_slot->name, sizeof free_slot->name, "%s", name); /* last: it marks the entry used */
	return true;
}

/* ---- exposition --------------------------------------------------------- */

static void m_head(struct buf *b, const char *name, const char *type, const char *help)
{
	buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The sum over the slots in use of one field, given by its place in
 * all[0]: a 64-bit counter or gauge, or a double. */
static double m_sum(const struct metrics_slot *all, int n, const void *field0, bool is_double)
{
	size_t off = (size_t)((const char *)field0 - (const char *)all);
	double sum = 0;
	for (int i = 0; i < n; i++) {
		const char *p = (const char *)&all[i] + off;
		if (is_double) {
			double d;
			memcpy(&d, p, sizeof d);
			sum += d;
		} else {
			int64_t v;
			memcpy(&v, p, sizeof v);
			sum += (double)v;
		}
	}
	return sum;
}

#define M_SUM(field) m_sum(all, n, &all[0].field, _Generic(all[0].field, double: true, default: false))

static void m_custom(struct buf *b, const struct metrics_slot *all, int n)
{
	for (int i = 0; i < n; i++) {
		for (int j = 0; j < METRICS_CUSTOM; j++) {
			const struct metrics_custom *m = &all[i].custom[j];
			if (!m->name[0])
				continue;
			/* Print each name/labels once, summed over the slots; the
			 * first slot holding a name prints its header. */
			bool seen = false, named = false;
			for (int k = 0; k <= i && !seen; k++)
				for (int l = 0; l < METRICS_CUSTOM && !seen; l++) {
					const struct metrics_custom *o = &all[k].custom[l];
					if ((k < i || l < j) && strcmp(o->name, m->name) == 0) {
						named = true;
						seen = strcmp(o->labels, m->labels) == 0;
					}
				}
			if (seen)
				continue;
			double v = 0;
			for (int k = 0; k < n; k++)
				for (int l = 0; l < METRICS_CUSTOM; l++)
					if (strcmp(all[k].custom[l].name, m->name) == 0 &&
					    strcmp(all[k].custom[l].labels, m->labels) == 0)
						v += all[k].custom[l].value;
			if (!named)
				m_head(b, m->name, "counter", m->help[0] ? m->help : "a counter of the policy");
			buf_appendf(b, "%s%s%s%s %.17g\n", m->name, m->labels[0] ? "{" : "", m->labels,
			            m->labels[0] ? "}" : "", v);
		}
	}
}

static void metrics_render(struct buf *b)
{
	const struct metrics_slot *all = slots ? slots : &local;
	int n = slots ? METRICS_SLOTS : 1;
	m_head(b, "luasmtpd_connections_total", "counter", "Connections accepted.");
	buf_appendf(b, "luasmtpd_connections_total %.0f\n", M_SUM(connections_total));
	m_head(b, "luasmtpd_connections", "gauge", "Connections open now.");
	buf_appendf(b, "luasmtpd_connections %.0f\n", M_SUM(connections_current));
	m_head(b, "luasmtpd_tls_sessions_total", "counter", "TLS handshakes completed, by protocol version.");
	for (int v = 0; v < 4; v++)
		buf_appendf(b, "luasmtpd_tls_sessions_total{version=\"%s\"} %.0f\n", tls_names[v], M_SUM(tls_sessions[v]));
	m_head(b, "luasmtpd_messages_total", "counter", "Messages answered after their data, by reply class.");
	static const char *const cls[3] = {"2xx", "4xx", "5xx"};
	for (int k = 0; k < 3; k++)
		buf_appendf(b, "luasmtpd_messages_total{class=\"%s\"} %.0f\n", cls[k], M_SUM(messages[k]));
	m_head(b, "luasmtpd_auth_total", "counter", "AUTH attempts, by mechanism and result.");
	for (int a = 0; a < 4; a++)
		for (int r = 0; r < 2; r++)
			buf_appendf(b, "luasmtpd_auth_total{method=\"%s\",result=\"%s\"} %.0f\n", auth_names_m[a],
			            r ? "failure" : "success", M_SUM(auth[a][r]));
	m_head(b, "luasmtpd_hook_errors_total", "counter", "Hooks that raised an error or ran out of time or memory.");
	for (int h = 0; h < METRICS_HOOKS; h++)
		buf_appendf(b, "luasmtpd_hook_errors_total{hook=\"%s\"} %.0f\n", hook_names_m[h], M_SUM(hook_errors[h]));
	m_head(b, "luasmtpd_hook_duration_seconds", "histogram", "Hook calls and their wall time.");
	for (int h = 0; h < METRICS_HOOKS; h++) {
		double cum = 0;
		for (int k = 0; k < METRICS_BUCKETS; k++) {
			cum += M_SUM(hook_buckets[h][k]);
			if (k < METRICS_BUCKETS - 1)
				buf_appendf(b, "luasmtpd_hook_duration_seconds_bucket{hook=\"%s\",le=\"%g\"} %.0f\n",
				            hook_names_m[h], bucket_bounds[k], cum);
			else
				buf_appendf(b, "luasmtpd_hook_duration_seconds_bucket{hook=\"%s\",le=\"+Inf\"} %.0f\n",
				            hook_names_m[h], cum);
		}
		buf_appendf(b, "luasmtpd_hook_duration_seconds_sum{hook=\"%s\"} %.9g\n", hook_names_m[h],
		            M_SUM(hook_seconds[h]));
		buf_appendf(b, "luasmtpd_hook_duration_seconds_count{hook=\"%s\"} %.0f\n", hook_names_m[h],
		            M_SUM(hook_calls[h]));
	}
	m_head(b, "luasmtpd_reloads_total", "counter", "Reloads, by result.");
	buf_appendf(b, "luasmtpd_reloads_total{result=\"success\"} %.0f\n", M_SUM(reloads[0]));
	buf_appendf(b, "luasmtpd_reloads_total{result=\"failure\"} %.0f\n", M_SUM(reloads[1]));
	m_head(b, "luasmtpd_lua_memory_bytes", "gauge", "Lua heap in use, by process.");
	for (int i = 0; i < n; i++)
		if (all[i].pid && (i == 0 || all[i].connections_total || all[i].lua_memory))
			buf_appendf(b, "luasmtpd_lua_memory_bytes{pid=\"%d\"} %llu\n", all[i].pid,
			            (unsigned long long)all[i].lua_memory);
	m_custom(b, all, n);
}

/* ---- the HTTP side: one request per connection, bounded and brief ------- */

struct metrics_client {
	ev_io io;
	ev_timer timer;
	struct buf in;
	int fd;
};

static ev_io metrics_listener;
static int metrics_fd = -1;

static void metrics_client_free(struct ev_loop *loop, struct metrics_client *m)
{
	ev_io_stop(loop, &m->io);
	ev_timer_stop(loop, &m->timer);
	close(m->fd);
	buf_free(&m->in);
	free(m);
}

static void metrics_respond(struct metrics_client *m)
{
	struct buf body = {0}, out = {0};
	const char *req = buf_head(&m->in);
	bool ok = strncmp(req, "GET /metrics", 12) == 0 && (req[12] == ' ' || req[12] == '?');
	if (ok)
		metrics_render(&body);
	else
		buf_appendf(&body, "try GET /metrics\n");
	buf_appendf(&out, "HTTP/1.0 %s\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
	                  "Content-Length: %zu\r\nConnection: close\r\n\r\n",
	            ok ? "200 OK" : "404 Not Found", buf_used(&body));
	buf_append(&out, buf_head(&body), buf_used(&body));
	/* A scrape is small: written blocking-free in a few tries, or dropped. */
	size_t off = 0;
	for (int tries = 0; off < buf_used(&out) && tries < 64; tries++) {
		ssize_t w = send(m->fd, buf_head(&out) + off, buf_used(&out) - off, MSG_NOSIGNAL);
		if (w > 0)
			off += (size_t)w;
		else if (w < 0 && errno != EAGAIN && errno != EINTR)
			break;
		else
			usleep(1000);
	}
	buf_free(&body);
	buf_free(&out);
}

static void metrics_client_read(struct ev_loop *loop, ev_io *w, int revents)
{
	struct metrics_client *m = (struct metrics_client *)w;
	char *dst = buf_reserve(&m->in, 1024);
	ssize_t r = recv(m->fd, dst, 1023, 0);
	if (r <= 0 || buf_used(&m->in) + (size_t)r > 8192) {
		metrics_client_free(loop, m);
		return;
	}
	m->in.len += (size_t)r;
	*buf_reserve(&m->in, 1) = '\0';
	if (!strstr(buf_head(&m->in), "\r\n\r\n") && !strstr(buf_head(&m->in), "\n\n"))
		return;
	metrics_respond(m);
	metrics_client_free(loop, m);
}

static void metrics_client_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	metrics_client_free(loop, (struct metrics_client *)((char *)w - offsetof(struct metrics_client, timer)));
}

static void metrics_accept(struct ev_loop *loop, ev_io *w, int revents)
{
	int fd = accept4(metrics_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	struct metrics_client *m = calloc(1, sizeof *m);
	if (!m) {
		close(fd);
		return;
	}
	m->fd = fd;
	ev_io_init(&m->io, metrics_client_read, fd, EV_READ);
	ev_io_start(loop, &m->io);
	ev_timer_init(&m->timer, metrics_client_timeout, 5., 0.);
	ev_timer_start(loop, &m->timer);
}

bool metrics_listen(struct ev_loop *loop, const char *addr, char *err, size_t errlen)
{
	char host[80], port[16];
	const char *colon = strrchr(addr, ':');
	if (!colon || (size_t)(colon - addr) >= sizeof host || strlen(colon + 1) >= sizeof port) {
		snprintf(err, errlen, "option 'metrics': expected host:port, got \"%s\"", addr);
		return false;
	}
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = '\0';
	snprintf(port, sizeof port, "%s", colon + 1);
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res;
	if (getaddrinfo(host[0] ? host : NULL, port, &hints, &res) != 0) {
		snprintf(err, errlen, "option 'metrics': cannot resolve \"%s\"", addr);
		return false;
	}
	int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 64) != 0) {
		snprintf(err, errlen, "option 'metrics': %s: %s", addr, strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(res);
		return false;
	}
	freeaddrinfo(res);
	metrics_fd = fd;
	ev_io_init(&metrics_listener, metrics_accept, fd, EV_READ);
	ev_io_start(loop, &metrics_listener);
	log_kv(LOG_INFO, NULL, "metrics listening", "metrics", addr, NULL);
	return true;
}

void metrics_stop(struct ev_loop *loop)
{
	if (metrics_fd < 0)
		return;
	ev_io_stop(loop, &metrics_listener);
	close(metrics_fd);
	metrics_fd = -1;
}
