#include "base/log.h"

#include "base/byte_table.h"

#include <errno.h>
#include <ev.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Several hundred summary lines: one write per loop turn of a busy worker
 * rather than one per line (a write costs more than the formatting). */
#define LOG_BUF_SIZE (64 * 1024)
/* Whole lines wait for a write until there are this many bytes of them,
 * or the oldest is this old: one write a loop turn cost a new connection's
 * three lines 4 us each on a pipe (the reader is woken on every write). */
#define LOG_WRITE_BYTES (16 * 1024)
#define LOG_WRITE_DELAY 0.02
/* What log_fatal writes of its own line at most. */
#define LOG_FATAL_LINE 2048

enum log_level log_min_level = LOG_INFO;
enum log_flush_mode log_flush_mode = LOG_FLUSH_BATCH;

static const char *const log_names[] = {"debug", "info", "warn", "error"};
static const char *const log_flush_names[] = {"batch", "line"};

/* Where a line is made: the process's buffer, or log_fatal's own. */
struct log_out {
	char *buf;
	size_t cap;
	size_t pos;  /* the whole lines, then the line being made */
	bool grows;  /* the process's buffer: written out or grown when full */
	bool cut;    /* the line did not fit (no memory): it is dropped */
};

static char log_static[LOG_BUF_SIZE];
static struct log_out log_main = {.buf = log_static, .cap = sizeof log_static, .grows = true};
/* The whole lines of log_main: [0, log_done). Atomic because the
 * fatal-signal handler reads it; it is 0 whenever log_main.buf moves. */
static atomic_size_t log_done;
static struct ev_loop *log_loop;
static ev_prepare log_prepare;
static ev_timer log_late;     /* writes the lines waiting when the loop is idle */
static ev_tstamp log_waiting; /* loop time of the oldest line not written; 0: none */
static int log_stderr_kind = -1; /* 1: a regular file; 0: a pipe, socket, tty; -1: not looked at */
static char log_pid[24];         /* " pid=1234", made again after a fork */
static size_t log_pid_len;

static bool log_parse_name(const char *const *names, int n, const char *name, int *out)
{
	for (int i = 0; i < n; i++) {
		if (strcmp(name, names[i]) == 0) {
			*out = i;
			return true;
		}
	}
	return false;
}

bool log_parse_level(const char *name, enum log_level *out)
{
	int i;
	if (!log_parse_name(log_names, LOG_ERROR + 1, name, &i))
		return false;
	*out = (enum log_level)i;
	return true;
}

bool log_parse_flush_mode(const char *name, enum log_flush_mode *out)
{
	int i;
	if (!log_parse_name(log_flush_names, LOG_FLUSH_LINE + 1, name, &i))
		return false;
	*out = (enum log_flush_mode)i;
	return true;
}

const char *log_level_name(enum log_level level) { return log_names[level]; }

/* Writes len bytes of whole lines to stderr; async-signal-safe (write,
 * poll, fstat). What holds when the workers of `--workers N` share stderr:
 *  - a regular file: each write is a run of whole lines, and Linux writes
 *    to a regular file under its inode lock, at the end (O_APPEND) or at
 *    the offset of the one open file description the processes inherited,
 *    so the lines of two processes never mix;
 *  - a pipe or a socket (journald, a supervisor): the writes are cut at
 *    line ends into pieces of at most PIPE_BUF bytes, which POSIX makes
 *    atomic on a pipe (nor does a Unix stream socket split such a write).
 *    A single line longer than PIPE_BUF is written on its own and can be
 *    mixed with another process's lines on a pipe; on a file it cannot. */
static void log_write_out(const char *p, size_t len)
{
	if (log_stderr_kind < 0) {
		struct stat st;
		log_stderr_kind = fstat(STDERR_FILENO, &st) == 0 && S_ISREG(st.st_mode);
	}
	while (len > 0) {
		size_t n = len;
		if (!log_stderr_kind && n > PIPE_BUF) {
			const char *nl = memrchr(p, '\n', PIPE_BUF);
			if (!nl)
				nl = memchr(p + PIPE_BUF, '\n', len - PIPE_BUF);
			n = nl ? (size_t)(nl - p) + 1 : len;
		}
		ssize_t w = write(STDERR_FILENO, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN) {
			/* Someone made our stderr non-blocking: wait as a blocking
			 * write would. */
			struct pollfd pfd = {.fd = STDERR_FILENO, .events = POLLOUT};
			poll(&pfd, 1, -1);
			continue;
		}
		if (w <= 0)
			return; /* closed or broken: the lines have nowhere to go */
		p += w;
		len -= (size_t)w;
	}
}

void log_flush(void)
{
	log_waiting = 0;
	size_t done = atomic_load(&log_done);
	if (done == 0)
		return;
	log_write_out(log_main.buf, done);
	atomic_store(&log_done, 0);
	size_t open = log_main.pos - done;
	memmove(log_main.buf, log_main.buf + done, open);
	log_main.pos = open;
	if (log_main.buf != log_static && open <= sizeof log_static) {
		memcpy(log_static, log_main.buf, open);
		free(log_main.buf);
		log_main.buf = log_static;
		log_main.cap = sizeof log_static;
	}
}

/* Room for n more bytes of the line being made: the whole lines before it
 * are written out; a line longer than the buffer (a script logging a large
 * value) gets a larger one from the heap until it is written. */
static bool log_make_room(struct log_out *o, size_t n)
{
	if (o->cut)
		return false;
	if (o->grows) {
		log_flush();
		if (o->cap - o->pos >= n)
			return true;
		size_t cap = o->cap;
		while (cap - o->pos < n)
			cap *= 2;
		char *p = o->buf == log_static ? malloc(cap) : realloc(o->buf, cap);
		if (p) {
			if (o->buf == log_static)
				memcpy(p, log_static, o->pos);
			o->buf = p;
			o->cap = cap;
			return true;
		}
	}
	o->cut = true;
	return false;
}

static inline void log_put(struct log_out *o, const char *s, size_t n)
{
	if (o->cap - o->pos < n && !log_make_room(o, n))
		return;
	memcpy(o->buf + o->pos, s, n);
	o->pos += n;
}

/* What each byte needs in a value, from a table built at compile time
 * (every value of every line is scanned): PLAIN may stand unquoted; ESC
 * must be escaped even inside quotes. */
enum { LOG_PLAIN = 1, LOG_ESC = 2 };
#define LOG_CC(c)                                                                                   \
	(((c) > ' ' && (c) < 0x7f && (c) != '"' && (c) != '=' && (c) != '\\' ? LOG_PLAIN : 0) |     \
	 ((c) < ' ' || (c) == 0x7f || (c) == '"' || (c) == '\\' ? LOG_ESC : 0))
static const unsigned char log_cc[256] = BYTE_TABLE(LOG_CC);

/* value as is when it can be; else quoted, with ", \ and control bytes
 * escaped so that no value can end the line or fake a field. */
static void log_value(struct log_out *o, const char *v, size_t len)
{
	size_t i = 0;
	while (i < len && (log_cc[(unsigned char)v[i]] & LOG_PLAIN))
		i++;
	if (i == len && len > 0) {
		log_put(o, v, len);
		return;
	}
	log_put(o, "\"", 1);
	size_t from = 0;
	for (; i < len; i++) {
		unsigned char c = (unsigned char)v[i];
		if (!(log_cc[c] & LOG_ESC))
			continue;
		char esc[4] = {'\\', (char)c};
		size_t n = 2;
		if (c == '\n') {
			esc[1] = 'n';
		} else if (c < ' ' || c == 0x7f) {
			static const char hex[] = "0123456789abcdef";
			esc[1] = 'x';
			esc[2] = hex[c >> 4];
			esc[3] = hex[c & 15];
			n = 4;
		} /* else '"' or '\\', after a backslash */
		log_put(o, v + from, i - from);
		log_put(o, esc, n);
		from = i + 1;
	}
	log_put(o, v + from, len - from);
	log_put(o, "\"", 1);
}

static void log_put_field(struct log_out *o, const char *key, const char *value, size_t len)
{
	log_put(o, " ", 1);
	log_put(o, key, strlen(key));
	log_put(o, "=", 1);
	log_value(o, value, len);
}

/* Decimal digits of v at the end of out[20]; returns where they start. */
static char *log_digits(char out[20], unsigned long long v)
{
	char *p = out + 20;
	do {
		*--p = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	return p;
}

/* "YYYY-MM-DDTHH:MM:SS" of sec into out[20]. */
static void log_format_second(time_t sec, char out[20])
{
	struct tm tm;
	gmtime_r(&sec, &tm);
	strftime(out, 20, "%Y-%m-%dT%H:%M:%S", &tm);
}

/* "ts=... level=... pid=..."; the serving thread keeps the date to the
 * second and its pid formatted (log_fatal's thread formats its own). */
static void log_put_head(struct log_out *o, enum log_level level, bool cached)
{
	static time_t cached_sec = -1;
	static char cached_text[20];
	char text[20], pid[24];
	const char *second = text, *pidp = pid;
	size_t pidlen;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	if (cached) {
		if (now.tv_sec != cached_sec) {
			log_format_second(now.tv_sec, cached_text);
			cached_sec = now.tv_sec;
		}
		second = cached_text;
		if (!log_pid_len) {
			char d[20], *p = log_digits(d, (unsigned long long)getpid());
			log_pid_len = (size_t)(d + 20 - p) + 5;
			memcpy(log_pid, " pid=", 5);
			memcpy(log_pid + 5, p, log_pid_len - 5);
		}
		pidp = log_pid;
		pidlen = log_pid_len;
	} else {
		log_format_second(now.tv_sec, text);
		char d[20], *p = log_digits(d, (unsigned long long)getpid());
		pidlen = (size_t)(d + 20 - p) + 5;
		memcpy(pid, " pid=", 5);
		memcpy(pid + 5, p, pidlen - 5);
	}
	long ms = now.tv_nsec / 1000000;
	char frac[5] = {'.', (char)('0' + ms / 100), (char)('0' + ms / 10 % 10), (char)('0' + ms % 10), 'Z'};
	log_put(o, "ts=", 3);
	log_put(o, second, 19);
	log_put(o, frac, sizeof frac);
	log_put(o, " level=", 7);
	log_put(o, log_names[level], strlen(log_names[level]));
	log_put(o, pidp, pidlen);
}

static void log_put_begin(struct log_out *o, enum log_level level, const char *session, const char *msg)
{
	log_put_head(o, level, o == &log_main);
	log_put_field(o, "msg", msg, strlen(msg));
	if (session)
		log_put_field(o, "session", session, strlen(session));
}

static void log_put_pairs(struct log_out *o, va_list pairs)
{
	const char *k;
	while ((k = va_arg(pairs, const char *)) != NULL) {
		const char *v = va_arg(pairs, const char *);
		if (v)
			log_put_field(o, k, v, strlen(v));
	}
}

bool log_begin(enum log_level level, const char *session, const char *msg)
{
	if (!log_enabled(level))
		return false;
	log_put_begin(&log_main, level, session, msg);
	return true;
}

void log_field(const char *key, const char *value, size_t len)
{
	log_put_field(&log_main, key, value, len);
}

void log_field_uint(const char *key, unsigned long long value)
{
	char d[20], *p = log_digits(d, value);
	log_put_field(&log_main, key, p, (size_t)(d + 20 - p));
}

void log_field_ms(const char *key, double seconds)
{
	unsigned long long us = seconds > 0 ? (unsigned long long)(seconds * 1e6 + 0.5) : 0;
	char d[24], *p = log_digits(d, us / 1000);
	memmove(d, p, (size_t)(d + 20 - p));
	size_t n = (size_t)(d + 20 - p);
	unsigned frac = (unsigned)(us % 1000);
	d[n] = '.';
	d[n + 1] = (char)('0' + frac / 100);
	d[n + 2] = (char)('0' + frac / 10 % 10);
	d[n + 3] = (char)('0' + frac % 10);
	log_put_field(&log_main, key, d, n + 4);
}

void log_end(void)
{
	struct log_out *o = &log_main;
	log_put(o, "\n", 1);
	if (o->cut) {
		o->pos = atomic_load(&log_done);
		o->cut = false;
		return;
	}
	if (log_loop && !log_waiting && atomic_load(&log_done) == 0)
		log_waiting = ev_now(log_loop);
	atomic_store(&log_done, o->pos);
	if (!log_loop || log_flush_mode == LOG_FLUSH_LINE)
		log_flush();
}

void log_vkv(enum log_level level, const char *session, const char *msg, va_list pairs)
{
	if (!log_begin(level, session, msg))
		return;
	log_put_pairs(&log_main, pairs);
	log_end();
}

void log_kv(enum log_level level, const char *session, const char *msg, ...)
{
	va_list ap;
	va_start(ap, msg);
	log_vkv(level, session, msg, ap);
	va_end(ap);
}

void log_fatal(const char *msg, ...)
{
	/* The serving thread may still be adding lines: this is a best effort
	 * for a process about to end. */
	log_write_out(log_main.buf, atomic_load(&log_done));
	char line[LOG_FATAL_LINE];
	struct log_out o = {.buf = line, .cap = sizeof line - 1};
	va_list ap;
	va_start(ap, msg);
	log_put_begin(&o, LOG_ERROR, NULL, msg);
	log_put_pairs(&o, ap);
	va_end(ap);
	line[o.pos++] = '\n';
	log_write_out(line, o.pos);
}

/* Before the loop waits: the lines go out once enough of them wait or
 * the oldest is LOG_WRITE_DELAY old; else a timer takes them then. */
static void log_on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
	if (!log_waiting)
		return;
	double age = ev_now(loop) - log_waiting;
	if (atomic_load(&log_done) >= LOG_WRITE_BYTES || age >= LOG_WRITE_DELAY) {
		log_flush();
		return;
	}
	if (!ev_is_active(&log_late)) {
		ev_timer_set(&log_late, LOG_WRITE_DELAY - age, 0.);
		ev_timer_start(loop, &log_late);
		ev_unref(loop); /* nor must the timer keep it running */
	}
}

static void log_on_late(struct ev_loop *loop, ev_timer *w, int revents)
{
	ev_ref(loop);
	log_flush();
}

void log_attach(struct ev_loop *loop)
{
	if (log_loop == loop)
		return;
	log_detach();
	ev_prepare_init(&log_prepare, log_on_prepare);
	ev_prepare_start(loop, &log_prepare);
	ev_unref(loop); /* it must not keep the loop running on its own */
	ev_init(&log_late, log_on_late);
	log_loop = loop;
}

void log_detach(void)
{
	if (log_loop) {
		ev_ref(log_loop);
		ev_prepare_stop(log_loop, &log_prepare);
		if (ev_is_active(&log_late)) {
			ev_ref(log_loop);
			ev_timer_stop(log_loop, &log_late);
		}
		log_loop = NULL;
	}
	log_flush();
}

static const int log_fatal_signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
static struct sigaction log_saved_actions[sizeof log_fatal_signals / sizeof *log_fatal_signals];

/* Writes the whole lines buffered, puts back what handled sig before
 * (the default, or a sanitizer's handler) and lets it act: a signal that
 * was sent (kill, abort) is sent again; a fault happens again when the
 * faulting instruction runs again on return. */
static void log_on_fatal_signal(int sig, siginfo_t *si, void *uc)
{
	int saved = errno;
	size_t done = atomic_exchange(&log_done, 0);
	if (done)
		log_write_out(log_main.buf, done);
	for (size_t i = 0; i < sizeof log_fatal_signals / sizeof *log_fatal_signals; i++)
		if (log_fatal_signals[i] == sig)
			sigaction(sig, &log_saved_actions[i], NULL);
	if (si->si_code <= 0)
		raise(sig);
	errno = saved;
}

static void log_forked(void)
{
	log_pid_len = 0;
}

void log_init(void)
{
	struct sigaction sa = {.sa_sigaction = log_on_fatal_signal, .sa_flags = SA_SIGINFO | SA_ONSTACK};
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof log_fatal_signals / sizeof *log_fatal_signals; i++)
		sigaction(log_fatal_signals[i], &sa, &log_saved_actions[i]);
	atexit(log_flush);
	/* Flushed before a fork, the child cannot write the parent's lines
	 * a second time. */
	pthread_atfork(log_flush, NULL, log_forked);
}
