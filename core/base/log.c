#include "base/log.h"

#include "base/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum log_level log_min_level = LOG_INFO;

static const char *const log_names[] = {"debug", "info", "warn", "error"};

bool log_parse_level(const char *name, enum log_level *out)
{
	for (int i = 0; i <= LOG_ERROR; i++) {
		if (strcmp(name, log_names[i]) == 0) {
			*out = (enum log_level)i;
			return true;
		}
	}
	return false;
}

const char *log_level_name(enum log_level level) { return log_names[level]; }

static bool log_needs_quotes(const char *v, size_t len)
{
	if (len == 0)
		return true;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c >= 0x7f)
			return true;
	}
	return false;
}

static void log_value(struct buf *line, const char *v, size_t len)
{
	if (!log_needs_quotes(v, len)) {
		buf_append(line, v, len);
		return;
	}
	buf_append(line, "\"", 1);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c == '"' || c == '\\') {
			char esc[2] = {'\\', (char)c};
			buf_append(line, esc, 2);
		} else if (c == '\n') {
			buf_append(line, "\\n", 2);
		} else if (c < ' ' || c == 0x7f) {
			buf_appendf(line, "\\x%02x", c);
		} else {
			buf_append(line, &v[i], 1);
		}
	}
	buf_append(line, "\"", 1);
}

void log_field(struct buf *line, const char *key, const char *value, size_t len)
{
	buf_append(line, " ", 1);
	buf_append(line, key, strlen(key));
	buf_append(line, "=", 1);
	log_value(line, value, len);
}

void log_begin(struct buf *line, enum log_level level, const char *session, const char *msg)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	struct tm tm;
	gmtime_r(&tv.tv_sec, &tm);
	char ts[40];
	size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(ts + n, sizeof ts - n, ".%03ldZ", (long)(tv.tv_usec / 1000));
	buf_appendf(line, "ts=%s level=%s pid=%ld", ts, log_names[level], (long)getpid());
	log_field(line, "msg", msg, strlen(msg));
	if (session)
		log_field(line, "session", session, strlen(session));
}

void log_end(struct buf *line)
{
	buf_append(line, "\n", 1);
	/* One write per line keeps lines whole when workers share stderr. */
	ssize_t r = write(STDERR_FILENO, buf_head(line), buf_used(line));
	(void)r;
	buf_free(line);
}

void log_vkv(enum log_level level, const char *session, const char *msg, va_list pairs)
{
	if (!log_enabled(level))
		return;
	struct buf line = {0};
	log_begin(&line, level, session, msg);
	const char *k;
	while ((k = va_arg(pairs, const char *)) != NULL) {
		const char *v = va_arg(pairs, const char *);
		if (v)
			log_field(&line, k, v, strlen(v));
	}
	log_end(&line);
}

void log_kv(enum log_level level, const char *session, const char *msg, ...)
{
	va_list ap;
	va_start(ap, msg);
	log_vkv(level, session, msg, ap);
	va_end(ap);
}
