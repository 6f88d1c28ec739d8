#include "base/log.h"

#include "base/byte_table.h"

#include <errno.h>
#include <ev.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Several hundred summary lines, written together rather than one write
 * per line (a write costs more than the formatting). */
#define LOG_BUF_SIZE (64 * 1024)
/* Whole lines wait for a write until there are this many bytes of them,
 * or the oldest is this old (a timer, not a check every loop turn: that
 * cost 70 instructions a turn): one write a loop turn cost a new
 * connection's three lines 4 us each on a pipe (the reader is woken on
 * every write). */
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
static ev_timer log_late; /* writes a batch LOG_WRITE_DELAY after its first line */
static bool log_waiting;  /* lines wait for log_late */
static int log_stderr_kind = -1; /* 1: a regular file; 0: a pipe, socket, tty; -1: not looked at */

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
	if (log_waiting && log_loop) {
		ev_ref(log_loop);
		ev_timer_stop(log_loop, &log_late);
	}
	log_waiting = false;
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

/* The end of the run at p[i, len) of bytes whose log_cc & mask is want:
 * of PLAIN bytes (mask = want = LOG_PLAIN), or of bytes that need no
 * escape inside quotes (mask = LOG_ESC, want = 0). */
static size_t log_scan(const char *p, size_t i, size_t len, unsigned char mask, unsigned char want)
{
	while (i < len && (log_cc[(unsigned char)p[i]] & mask) == want)
		i++;
	return i;
}

/* A value's copy in the log buffer is followed by this many plain bytes
 * (log_pad), so that log_plain_run and log_unescaped_run may read whole
 * blocks past its end: every load stays in written bytes of the buffer. */
#define LOG_PAD 16

#ifdef __SSE2__
static inline void log_pad(char *end)
{
	_mm_storeu_si128((__m128i *)(void *)end, _mm_set1_epi8('a'));
}

/* The first byte of p[i, len) that stop (0xff for each byte of 16 that
 * ends the run) finds, 16 bytes a step (every x86-64 has SSE2): a value
 * is ~15 bytes, which the byte loop took 5 instructions each for. */
static inline size_t log_run16(const char *p, size_t i, size_t len, __m128i (*stop)(__m128i))
{
	for (; i < len; i += 16) {
		int m = _mm_movemask_epi8(stop(_mm_loadu_si128((const __m128i *)(const void *)(p + i))));
		if (m)
			return i + (size_t)__builtin_ctz((unsigned)m);
	}
	return len;
}

/* 0xff for the bytes that are not PLAIN: outside 0x21..0x7e (moved to
 * -128..-35 by adding 0x5f, one signed compare finds the others, bytes
 * >= 0x80 among them), or '"', '=' or '\\'. */
static inline __m128i log_not_plain16(__m128i v)
{
	__m128i outside = _mm_cmpgt_epi8(_mm_add_epi8(v, _mm_set1_epi8(0x5f)), _mm_set1_epi8(-35));
	__m128i special = _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')), _mm_cmpeq_epi8(v, _mm_set1_epi8('=')));
	return _mm_or_si128(_mm_or_si128(outside, special), _mm_cmpeq_epi8(v, _mm_set1_epi8('\\')));
}

/* 0xff for the ESC bytes: below 0x20 (the unsigned minimum with 0x1f is
 * the byte itself), 0x7f, '"' or '\\'. */
static inline __m128i log_esc16(__m128i v)
{
	__m128i ctl = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
	__m128i special = _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')), _mm_cmpeq_epi8(v, _mm_set1_epi8('\\')));
	return _mm_or_si128(_mm_or_si128(ctl, special), _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f)));
}

/* log_scan of a padded copy: the run of PLAIN bytes from i. */
static inline size_t log_plain_run(const char *p, size_t i, size_t len)
{
	return log_run16(p, i, len, log_not_plain16);
}

/* log_scan of a padded copy: the run of bytes from i that need no escape. */
static inline size_t log_unescaped_run(const char *p, size_t i, size_t len)
{
	return log_run16(p, i, len, log_esc16);
}
#else
static inline void log_pad(char *end)
{
	(void)end;
}

static inline size_t log_plain_run(const char *p, size_t i, size_t len)
{
	return log_scan(p, i, len, LOG_PLAIN, LOG_PLAIN);
}

static inline size_t log_unescaped_run(const char *p, size_t i, size_t len)
{
	return log_scan(p, i, len, LOG_ESC, 0);
}
#endif

/* Writes the escape of c (which log_cc marks ESC) at out; returns its
 * length: \n, \x1f for the other control bytes and 0x7f, \" and \\. */
static size_t log_escape(char *out, unsigned char c)
{
	static const char hex[] = "0123456789abcdef";
	out[0] = '\\';
	if (c == '\n') {
		out[1] = 'n';
		return 2;
	}
	if (c < ' ' || c == 0x7f) {
		out[1] = 'x';
		out[2] = hex[c >> 4];
		out[3] = hex[c & 15];
		return 4;
	}
	out[1] = (char)c; /* '"' or '\\', after a backslash */
	return 2;
}

/* value as is when it can be; else quoted, with ", \ and control bytes
 * escaped so that no value can end the line or fake a field. */
static void log_value(struct log_out *o, const char *v, size_t len)
{
	size_t i = log_scan(v, 0, len, LOG_PLAIN, LOG_PLAIN);
	if (i == len && len > 0) {
		log_put(o, v, len);
		return;
	}
	log_put(o, "\"", 1);
	size_t from = 0;
	while ((i = log_scan(v, i, len, LOG_ESC, 0)) < len) {
		char esc[4];
		size_t n = log_escape(esc, (unsigned char)v[i]);
		log_put(o, v + from, i - from);
		log_put(o, esc, n);
		from = ++i;
	}
	log_put(o, v + from, len - from);
	log_put(o, "\"", 1);
}

/* memcpy of a key or value of a few bytes, inline: the library call and
 * its dispatch on the size cost as much as the rest of a field. Moves of
 * 16, 8 or 4 bytes that overlap at the end; a long value goes to memcpy. */
static inline void log_copy(char *d, const char *s, size_t n)
{
	char x[16], y[16];
	if (n > 64) {
		memcpy(d, s, n);
	} else if (n >= 16) {
		for (size_t i = 0; i + 16 < n; i += 16) {
			memcpy(x, s + i, 16);
			memcpy(d + i, x, 16);
		}
		memcpy(y, s + n - 16, 16);
		memcpy(d + n - 16, y, 16);
	} else if (n >= 8) {
		memcpy(x, s, 8);
		memcpy(y, s + n - 8, 8);
		memcpy(d, x, 8);
		memcpy(d + n - 8, y, 8);
	} else if (n >= 4) {
		memcpy(x, s, 4);
		memcpy(y, s + n - 4, 4);
		memcpy(d, x, 4);
		memcpy(d + n - 4, y, 4);
	} else if (n > 0) {
		d[0] = s[0];
		d[n / 2] = s[n / 2];
		d[n - 1] = s[n - 1];
	}
}

/* " key=value" piece by piece through log_put, which makes room: it
 * writes out the whole lines, grows the buffer for a long line, or cuts
 * the line when it cannot. Out of line, so that log_put_field's common
 * case has none of its weight. */
__attribute__((noinline)) static void log_put_field_pieces(struct log_out *o, const char *key, size_t klen,
                                                           const char *v, size_t len)
{
	log_put(o, " ", 1);
	log_put(o, key, klen);
	log_put(o, "=", 1);
	log_value(o, v, len);
}

/* The value v copied at d, whose first i bytes are plain but not all:
 * copied again a byte further for its opening quote, and escaped from its
 * first ESC byte on. Returns the end. */
__attribute__((noinline)) static char *log_quote_copy(char *d, const char *v, size_t i, size_t len)
{
	*d++ = '"';
	log_copy(d, v, len);
	log_pad(d + len);
	i = log_unescaped_run(d, i, len);
	d += i;
	for (; i < len; i++) {
		unsigned char c = (unsigned char)v[i];
		if (log_cc[c] & LOG_ESC)
			d += log_escape(d, c);
		else
			*d++ = (char)c;
	}
	*d++ = '"';
	return d;
}

/* " key=value". Every line is some ten of these, so the common case is
 * made in one go: when the buffer already has room for the worst case
 * (each value byte escaped to 4, the quotes, the padding), the field is
 * written straight into it with no room check per piece: the value is
 * copied whole and scanned there; only a value with a byte that needs
 * quoting is moved to make room for its opening quote, and rewritten
 * from its first byte that needs escaping. What it costs: a field is
 * only taken this way when 4x its value fits, else (a value of more than
 * a quarter of what is free: rare, as the buffer is written out long
 * before it fills) it goes piece by piece as it always did, so a long
 * line is kept, grown or dropped exactly as before. */
static inline __attribute__((always_inline)) void log_put_field(struct log_out *o, const char *key, size_t klen,
                                                                 const char *v, size_t len, bool digits)
{
	size_t room = o->cap - o->pos;
	if (room < klen + 4 + LOG_PAD || (room - klen - 4 - LOG_PAD) / 4 < len) {
		log_put_field_pieces(o, key, klen, v, len);
		return;
	}
	char *d = o->buf + o->pos;
	*d++ = ' ';
	log_copy(d, key, klen);
	d += klen;
	*d++ = '=';
	log_copy(d, v, len);
	if (digits) { /* a number we formatted: plain, never empty */
		o->pos = (size_t)(d + len - o->buf);
		return;
	}
	log_pad(d + len);
	size_t i = log_plain_run(d, 0, len);
	d = i == len && len > 0 ? d + len : log_quote_copy(d, v, i, len);
	o->pos = (size_t)(d - o->buf);
}

/* "00" to "99": numbers are written two digits a division. */
static const char log_pairs[] =
	"0001020304050607080910111213141516171819"
	"2021222324252627282930313233343536373839"
	"4041424344454647484950515253545556575859"
	"6061626364656667686970717273747576777879"
	"8081828384858687888990919293949596979899";

/* Decimal digits of v, written backwards to end at end; returns where
 * they start (at most 20 before end). */
static char *log_digits(char *end, unsigned long long v)
{
	char *p = end;
	for (; v >= 100; v /= 100) {
		p -= 2;
		memcpy(p, log_pairs + v % 100 * 2, 2);
	}
	if (v < 10) {
		*--p = (char)('0' + v);
	} else {
		p -= 2;
		memcpy(p, log_pairs + v * 2, 2);
	}
	return p;
}

/* "Z level=debug pid=" and 20 digits, rounded up: a tail is copied whole. */
#define LOG_TAIL 48

/* A line's head, "ts=2024-05-01T12:00:00.123Z level=info pid=42", is
 * made of two pieces kept formatted: the date to the second, and per
 * level the rest after the milliseconds. */
struct log_head {
	time_t sec;
	char second[24];            /* "ts=YYYY-MM-DDTHH:MM:SS." */
	char tail[4][LOG_TAIL];     /* "Z level=info pid=42", zero-padded */
	unsigned char tail_len[4];  /* 0: not made (a new process) */
};
/* The serving thread's; log_fatal's thread makes its own. */
static struct log_head log_head_main = {.sec = -1};

/* A new second, or a new process: out of line, once a second at most. */
__attribute__((noinline)) static void log_head_update(struct log_head *h, time_t sec)
{
	if (sec != h->sec) {
		struct tm tm;
		gmtime_r(&sec, &tm);
		memcpy(h->second, "ts=", 3);
		strftime(h->second + 3, sizeof h->second - 3, "%Y-%m-%dT%H:%M:%S.", &tm);
		h->sec = sec;
	}
	if (!h->tail_len[0]) {
		char d[20], *p = log_digits(d + 20, (unsigned long long)getpid());
		for (int l = LOG_DEBUG; l <= LOG_ERROR; l++) {
			memset(h->tail[l], 0, LOG_TAIL);
			int n = snprintf(h->tail[l], LOG_TAIL, "Z level=%s pid=%.*s", log_names[l], (int)(d + 20 - p), p);
			h->tail_len[l] = (unsigned char)n;
		}
	}
}

/* "ts=... level=... pid=...": the pieces and three digits of
 * milliseconds, copied in place when the buffer has room for the longest
 * head, else from a local array through log_put (which makes room). */
static void log_put_head(struct log_out *o, enum log_level level)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	struct log_head *h = &log_head_main, own;
	if (o != &log_main) {
		own.sec = -1;
		own.tail_len[0] = 0;
		h = &own;
	}
	if (now.tv_sec != h->sec || !h->tail_len[0])
		log_head_update(h, now.tv_sec);
	unsigned ms = (unsigned)(now.tv_nsec / 1000000);
	char local[23 + 3 + LOG_TAIL];
	bool in_place = o->cap - o->pos >= sizeof local;
	char *d = in_place ? o->buf + o->pos : local;
	memcpy(d, h->second, 23);
	d[23] = (char)('0' + ms / 100);
	memcpy(d + 24, log_pairs + ms % 100 * 2, 2);
	memcpy(d + 26, h->tail[level], LOG_TAIL);
	size_t n = 26 + h->tail_len[level];
	if (in_place)
		o->pos += n;
	else
		log_put(o, local, n);
}

static void log_put_begin(struct log_out *o, enum log_level level, const char *session, const char *msg,
                          size_t msg_len)
{
	log_put_head(o, level);
	log_put_field(o, "msg", 3, msg, msg_len, false);
	if (session)
		log_put_field(o, "session", 7, session, strlen(session), false);
}

static void log_put_pairs(struct log_out *o, va_list pairs)
{
	const char *k;
	while ((k = va_arg(pairs, const char *)) != NULL) {
		const char *v = va_arg(pairs, const char *);
		if (v)
			log_put_field(o, k, strlen(k), v, strlen(v), false);
	}
}

void log_begin_sized(enum log_level level, const char *session, const char *msg, size_t msg_len)
{
	log_put_begin(&log_main, level, session, msg, msg_len);
}

void log_field_sized(const char *key, size_t key_len, const char *value, size_t len)
{
	log_put_field(&log_main, key, key_len, value, len, false);
}

void log_field_uint_sized(const char *key, size_t key_len, unsigned long long value)
{
	char d[20], *p = log_digits(d + 20, value);
	log_put_field(&log_main, key, key_len, p, (size_t)(d + 20 - p), true);
}

void log_field_ms_sized(const char *key, size_t key_len, double seconds)
{
	unsigned long long us = seconds > 0 ? (unsigned long long)(seconds * 1e6 + 0.5) : 0;
	unsigned frac = (unsigned)(us % 1000);
	char d[24], *end = d + sizeof d;
	end[-1] = (char)('0' + frac % 10);
	memcpy(end - 3, log_pairs + frac / 10 * 2, 2);
	end[-4] = '.';
	char *p = log_digits(end - 4, us / 1000);
	log_put_field(&log_main, key, key_len, p, (size_t)(end - p), true);
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
	bool first = log_loop && !log_waiting;
	atomic_store(&log_done, o->pos);
	if (!log_loop || log_flush_mode == LOG_FLUSH_LINE || o->pos >= LOG_WRITE_BYTES) {
		log_flush();
	} else if (first) {
		/* The batch's first line: it goes out LOG_WRITE_DELAY from now at
		 * the latest, with those after it. */
		log_waiting = true;
		ev_timer_set(&log_late, LOG_WRITE_DELAY, 0.);
		ev_timer_start(log_loop, &log_late);
		ev_unref(log_loop); /* the timer must not keep the loop running */
	}
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
	log_put_begin(&o, LOG_ERROR, NULL, msg, strlen(msg));
	log_put_pairs(&o, ap);
	va_end(ap);
	line[o.pos++] = '\n';
	log_write_out(line, o.pos);
}

static void log_on_late(struct ev_loop *loop, ev_timer *w, int revents)
{
	log_flush();
}

void log_attach(struct ev_loop *loop)
{
	if (log_loop == loop)
		return;
	log_detach();
	ev_init(&log_late, log_on_late);
	log_loop = loop;
}

void log_detach(void)
{
	log_flush();
	log_loop = NULL;
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
	log_head_main.tail_len[0] = 0;
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
