/* log — one logfmt line per event on stderr: `ts=... level=info msg="..."
 * session=ID key=value`. Values are quoted and escaped when needed so a
 * client's bytes can never forge a log line. */
#ifndef LUASMTPD_LOG_H
#define LUASMTPD_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

extern enum log_level log_min_level;

bool log_parse_level(const char *name, enum log_level *out);
const char *log_level_name(enum log_level level);
static inline bool log_enabled(enum log_level level) { return level >= log_min_level; }

/* Logs msg with pairs of key/value strings after it, ending with NULL:
 * log_kv(LOG_INFO, "ABCD", "connection", "remote", addr, NULL). A NULL
 * session omits the field. */
void log_kv(enum log_level level, const char *session, const char *msg, ...)
	__attribute__((sentinel));

#include <stdarg.h>
/* log_kv with the pairs as a va_list. */
void log_vkv(enum log_level level, const char *session, const char *msg, va_list pairs);

/* The building blocks, for callers (the Lua API) whose pairs are not literal. */
struct buf;
void log_begin(struct buf *line, enum log_level level, const char *session, const char *msg);
void log_field(struct buf *line, const char *key, const char *value, size_t len);
void log_end(struct buf *line);

#endif
