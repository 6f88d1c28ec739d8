/*
 * test_log.c — the exact bytes of log lines (core/base/log.c): the head
 * (ts, level, pid), plain values as they are, values needing quotes,
 * every escape (", \, \n, the other control bytes, 0x7f), bytes >= 0x80
 * quoted but kept, empty values, numbers and milliseconds, and a value
 * longer than the buffer. Each value is logged twice: through the fast
 * path (the buffer has room for its worst case, so it is written in one
 * go) and through the piecewise fallback (a filler field first leaves
 * too little room for that, down to none, so the buffer grows); both must
 * give the same bytes. stderr is a temporary file the lines are read
 * back from; with no event loop attached every line is written at once.
 * The Makefile builds it twice: build/test_log, and build/test_log_scalar
 * with log.c compiled without SSE2 (its byte loop, as on other CPUs).
 */
#include "base/log.h"
#include "unit.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* log.c's buffer (LOG_BUF_SIZE): the filler is sized from it. */
#define BUF 65536

static int saved_stderr = -1, cap_fd = -1;
static char got[4 * BUF];
static size_t head_len; /* of the head of a line, up to " msg=" */

static void capture_start(void)
{
	char path[] = "/tmp/test_log.XXXXXX";
	cap_fd = mkstemp(path);
	unlink(path);
	saved_stderr = dup(STDERR_FILENO);
	dup2(cap_fd, STDERR_FILENO);
}

static void capture_end(void)
{
	dup2(saved_stderr, STDERR_FILENO);
	close(saved_stderr);
	close(cap_fd);
}

/* What was logged since the last call (NUL-terminated for printing). */
static size_t logged(void)
{
	ssize_t n = pread(cap_fd, got, sizeof got - 1, 0);
	if (n < 0)
		n = 0;
	got[n] = '\0';
	/* Emptied for the next line: the filler lines are 64 KiB each. */
	if (ftruncate(cap_fd, 0) == 0)
		lseek(cap_fd, 0, SEEK_SET);
	return (size_t)n;
}

/* The head is "ts=YYYY-MM-DDTHH:MM:SS.mmmZ level=LEVEL pid=PID", the
 * date within a few seconds of now; returns its length, 0 if it is not. */
static size_t check_head(const char *line, size_t len, const char *level)
{
	struct tm tm = {0};
	int ms = -1, end = 0;
	if (len < 28 || memcmp(line, "ts=", 3) != 0 ||
	    sscanf(line + 3, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
	           &tm.tm_min, &tm.tm_sec, &ms, &end) != 7 ||
	    end != 24 || ms < 0 || ms > 999)
		return 0;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	long skew = (long)(timegm(&tm) - time(NULL));
	if (skew < -5 || skew > 5)
		return 0;
	char rest[64];
	int n = snprintf(rest, sizeof rest, " level=%s pid=%ld", level, (long)getpid());
	if (len < 27 + (size_t)n || memcmp(line + 27, rest, (size_t)n) != 0)
		return 0;
	return 27 + (size_t)n;
}

/* The line just logged, whole, is a head of LEVEL then want. */
static void check_line(const char *level, const char *want, size_t want_len, int line)
{
	size_t n = logged();
	size_t h = check_head(got, n, level);
	unit_check(h > 0, __FILE__, line, "the head: ts=... level=... pid=...");
	if (!h) {
		unit_print_bytes("got ", got, n < 120 ? n : 120);
		return;
	}
	unit_check_mem(got + h, n - h, want, want_len, __FILE__, line, "the line after the head");
}
#define CHECK_LINE(level, lit) check_line(level, lit, sizeof(lit) - 1, __LINE__)

/* Logs "msg=t [f=FILLER] k=VALUE" with the filler sized so that ROOM
 * bytes of the buffer are left for " k=VALUE" (no filler: SIZE_MAX),
 * and checks that the field came out as want. */
static void check_field(const char *v, size_t len, const char *want, size_t want_len, size_t room, int line)
{
	static char filler[BUF];
	size_t flen = 0;
	if (room != (size_t)-1) {
		flen = BUF - room - (head_len + sizeof " msg=t" - 1) - (sizeof " f=" - 1);
		memset(filler, 'x', flen);
	}
	log_begin(LOG_INFO, NULL, "t");
	if (room != (size_t)-1)
		log_field("f", filler, flen);
	log_field("k", v, len);
	log_end();
	size_t n = logged();
	size_t at = head_len + sizeof " msg=t" - 1 + (room != (size_t)-1 ? sizeof " f=" - 1 + flen : 0);
	unit_check(n > at && memcmp(got + head_len, " msg=t", 6) == 0, __FILE__, line, "the line up to the field");
	if (n <= at)
		return;
	char expect[512];
	int e = snprintf(expect, sizeof expect, " k=%.*s\n", (int)want_len, want);
	unit_check_mem(got + at, n - at, expect, (size_t)e, __FILE__, line,
	               room == (size_t)-1 ? "the field (fast path)" : "the field (piecewise)");
}

/* The rooms a field is tried with: plenty, and just enough for its
 * worst case (4 bytes a value byte and 20 more): the fast path; then one
 * byte less, down to none at all: the piecewise path, which grows the
 * buffer. The first n of them. */
static void check_value_n(const char *v, size_t len, const char *want, size_t want_len, size_t n, int line)
{
	const size_t rooms[] = {(size_t)-1, 4 * len + 21, 4 * len + 20, 4 * len, len + 3, 3, 1, 0};
	for (size_t i = 0; i < n && i < sizeof rooms / sizeof *rooms; i++)
		check_field(v, len, want, want_len, rooms[i], line);
}
#define CHECK_VALUE(v, want) check_value_n(v, sizeof(v) - 1, want, sizeof(want) - 1, 99, __LINE__)

/* First: how long the head is, from a line with nothing else. */
static void test_head(void)
{
	log_kv(LOG_INFO, NULL, "t", NULL);
	size_t n = logged();
	head_len = check_head(got, n, "info");
	CHECK(head_len > 0);
	CHECK_MEM(got + head_len, n - head_len, " msg=t\n");
	log_min_level = LOG_DEBUG;
	log_kv(LOG_DEBUG, "s1", "d", NULL);
	CHECK_LINE("debug", " msg=d session=s1\n");
	log_kv(LOG_WARN, NULL, "w", NULL);
	CHECK_LINE("warn", " msg=w\n");
	log_kv(LOG_ERROR, NULL, "e", NULL);
	CHECK_LINE("error", " msg=e\n");
	log_min_level = LOG_INFO;
	log_kv(LOG_DEBUG, NULL, "filtered", NULL);
	CHECK_INT(logged(), 0);
	CHECK(!log_begin(LOG_DEBUG, NULL, "filtered"));
}

static void test_plain(void)
{
	CHECK_VALUE("abc", "abc");
	CHECK_VALUE("x", "x");
	CHECK_VALUE("127.0.0.1", "127.0.0.1");
	CHECK_VALUE("bench@example.com", "bench@example.com");
	CHECK_VALUE("!#$%&'()*+,-./0123456789:;<>?@[]^_`{|}~", "!#$%&'()*+,-./0123456789:;<>?@[]^_`{|}~");
	CHECK_VALUE("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz");
}

/* Quoted, nothing escaped: a space, '=', bytes >= 0x80 kept as they are. */
static void test_quoted(void)
{
	CHECK_VALUE("", "\"\"");
	CHECK_VALUE(" ", "\" \"");
	CHECK_VALUE("a b", "\"a b\"");
	CHECK_VALUE("a=b", "\"a=b\"");
	CHECK_VALUE("=", "\"=\"");
	CHECK_VALUE("250 2.6.0 OK: message queued", "\"250 2.6.0 OK: message queued\"");
	CHECK_VALUE("caf\xc3\xa9", "\"caf\xc3\xa9\"");
	CHECK_VALUE("\x80", "\"\x80\"");
	CHECK_VALUE("\xff", "\"\xff\"");
}

static void test_escapes(void)
{
	CHECK_VALUE("\"", "\"\\\"\"");
	CHECK_VALUE("\\", "\"\\\\\"");
	CHECK_VALUE("a\"b", "\"a\\\"b\"");
	CHECK_VALUE("a\\b", "\"a\\\\b\"");
	CHECK_VALUE("a\nb", "\"a\\nb\"");
	CHECK_VALUE("a\rb", "\"a\\x0db\"");
	CHECK_VALUE("\t", "\"\\x09\"");
	CHECK_VALUE("\x01\x1f", "\"\\x01\\x1f\"");
	CHECK_VALUE("\x7f", "\"\\x7f\"");
	CHECK_VALUE("a\0b", "\"a\\x00b\"");
	CHECK_VALUE("x\r\nmsg=forged", "\"x\\x0d\\nmsg=forged\"");
	CHECK_VALUE("\"\\\n\x7f \xc3\xa9=", "\"\\\"\\\\\\n\\x7f \xc3\xa9=\"");
}

/* One byte that needs quoting (a space) or escaping ("\n") at each
 * place of values around the 16-byte steps of the scan. */
static void test_every_position(void)
{
	for (size_t len = 1; len <= 40; len++) {
		for (size_t at = 0; at < len; at++) {
			for (int kind = 0; kind < 2; kind++) {
				char v[48], want[64];
				memset(v, 'a', len);
				v[at] = kind ? '\n' : ' ';
				size_t w = 0;
				want[w++] = '"';
				memcpy(want + w, v, at);
				w += at;
				if (kind) {
					memcpy(want + w, "\\n", 2);
					w += 2;
				} else {
					want[w++] = ' ';
				}
				memcpy(want + w, v + at + 1, len - at - 1);
				w += len - at - 1;
				want[w++] = '"';
				check_value_n(v, len, want, w, 3, __LINE__);
			}
		}
		char plain[48];
		memset(plain, 'p', len);
		check_value_n(plain, len, plain, len, 3, __LINE__);
	}
}

/* The line just logged is "msg=t KEY=TEXT". */
static void check_t_field(const char *key, const char *text, int line)
{
	char want[96];
	int n = snprintf(want, sizeof want, " msg=t %s=%s\n", key, text);
	size_t got_len = logged();
	unit_check_mem(got + head_len, got_len - head_len, want, (size_t)n, __FILE__, line, text);
}

static void test_numbers(void)
{
	const struct {
		unsigned long long v;
		const char *text;
	} uints[] = {{0, "0"}, {7, "7"}, {10, "10"}, {99, "99"}, {100, "100"}, {954, "954"}, {1001, "1001"},
	             {123456789, "123456789"}, {18446744073709551615ULL, "18446744073709551615"}};
	for (size_t i = 0; i < sizeof uints / sizeof *uints; i++) {
		log_begin(LOG_INFO, NULL, "t");
		log_field_uint("size", uints[i].v);
		log_end();
		check_t_field("size", uints[i].text, __LINE__);
	}
	const struct {
		double s;
		const char *text;
	} ms[] = {{0, "0.000"},           {-1, "0.000"},       {0.0000004, "0.000"}, {0.0000006, "0.001"},
	          {0.0424, "42.400"},     {1.5, "1500.000"},   {0.007454, "7.454"},  {12.0009994, "12000.999"},
	          {3600, "3600000.000"}};
	for (size_t i = 0; i < sizeof ms / sizeof *ms; i++) {
		log_begin(LOG_INFO, NULL, "t");
		log_field_ms("hook_ms", ms[i].s);
		log_end();
		check_t_field("hook_ms", ms[i].text, __LINE__);
	}
}

/* log_kv: the session, a NULL value leaves its field out, keys of any
 * length; the message is a value like any other. */
static void test_pairs(void)
{
	log_kv(LOG_INFO, "ABCD", "connection", "remote", "::1", "gone", (const char *)NULL, "listen",
	       "127.0.0.1:2525", NULL);
	CHECK_LINE("info", " msg=connection session=ABCD remote=::1 listen=127.0.0.1:2525\n");
	log_kv(LOG_INFO, NULL, "recipient refused", "a_rather_long_key_name_of_thirty", "", NULL);
	CHECK_LINE("info", " msg=\"recipient refused\" a_rather_long_key_name_of_thirty=\"\"\n");
}

/* A value longer than the buffer: the buffer grows for the line, and the
 * lines after it are made as before. */
static void test_longer_than_the_buffer(void)
{
	size_t len = BUF + 4000;
	char *v = malloc(len);
	char *want = malloc(2 * len + 16);
	size_t w = 0;
	want[w++] = '"';
	for (size_t i = 0; i < len; i++) {
		v[i] = i % 1000 == 999 ? '\n' : i % 100 == 50 ? ' ' : (char)('a' + i % 26);
		if (v[i] == '\n') {
			memcpy(want + w, "\\n", 2);
			w += 2;
		} else {
			want[w++] = v[i];
		}
	}
	want[w++] = '"';
	log_begin(LOG_INFO, NULL, "t");
	log_field("big", v, len);
	log_end();
	size_t n = logged();
	size_t at = head_len + sizeof " msg=t big=" - 1;
	CHECK(n == at + w + 1);
	CHECK(n == at + w + 1 && memcmp(got + at, want, w) == 0 && got[n - 1] == '\n');
	CHECK_VALUE("after", "after");
	free(v);
	free(want);
}

/* log_fatal makes its head and line on its own stack. */
static void test_fatal(void)
{
	log_fatal("worker died", "signal", "SEGV", "detail", "a \"b\"\n", NULL);
	CHECK_LINE("error", " msg=\"worker died\" signal=SEGV detail=\"a \\\"b\\\"\\n\"\n");
}

int main(void)
{
	capture_start();
	RUN(test_head);
	if (head_len) {
		RUN(test_plain);
		RUN(test_quoted);
		RUN(test_escapes);
		RUN(test_every_position);
		RUN(test_numbers);
		RUN(test_pairs);
		RUN(test_longer_than_the_buffer);
		RUN(test_fatal);
	}
	capture_end();
	return unit_summary();
}
