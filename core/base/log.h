/* log — one logfmt line per event on stderr: `ts=... level=info msg="..."
 * session=ID key=value`. Values are quoted and escaped when needed so a
 * client's bytes can never forge a log line.
 *
 * Lines are gathered in a per-process buffer (64 KiB) while an event loop
 * is attached and written once per loop turn, when the buffer fills, before
 * a fork, at exit and from the handler of a fatal signal (SEGV, BUS, ILL,
 * FPE, ABRT), which then lets the signal take its course. Each write holds
 * whole lines only (see log_write_out in log.c for what that guarantees
 * when workers share stderr). Outside a loop (start-up, shutdown) and with
 * LOG_FLUSH_LINE each line is written at once. */
#ifndef LUASMTPD_LOG_H
#define LUASMTPD_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
/* batch: once per loop turn (the default); line: every line at once. */
enum log_flush_mode { LOG_FLUSH_BATCH, LOG_FLUSH_LINE };

extern enum log_level log_min_level;
extern enum log_flush_mode log_flush_mode;

bool log_parse_level(const char *name, enum log_level *out);
bool log_parse_flush_mode(const char *name, enum log_flush_mode *out);
const char *log_level_name(enum log_level level);
static inline bool log_enabled(enum log_level level) { return level >= log_min_level; }

/* Once, early in main: the fatal-signal handlers, the flush at exit and
 * around fork. */
void log_init(void);
/* Buffer while LOOP runs: a prepare watcher writes what a turn logged
 * before the loop waits again. Idempotent; log_detach writes what is left
 * and goes back to writing each line at once. */
struct ev_loop;
void log_attach(struct ev_loop *loop);
void log_detach(void);
/* Writes the buffered lines now (before _exit, exec, or a blocking wait). */
void log_flush(void);

/* Logs msg with pairs of key/value strings after it, ending with NULL:
 * log_kv(LOG_INFO, "ABCD", "connection", "remote", addr, NULL). A NULL
 * session omits the field, as does a NULL value. */
void log_kv(enum log_level level, const char *session, const char *msg, ...)
	__attribute__((sentinel));
/* log_kv with the pairs as a va_list. */
void log_vkv(enum log_level level, const char *session, const char *msg, va_list pairs);

/* The building blocks, for callers whose fields are not literal pairs (the
 * Lua API, the per-message summary): log_begin returns false when the
 * level is filtered (then nothing else is called); no other log call may
 * come between log_begin and log_end. They are inline so that a literal
 * key's (or message's) length is a constant at the call, not a strlen
 * per field; the _sized functions take it. */
void log_begin_sized(enum log_level level, const char *session, const char *msg, size_t msg_len);
void log_field_sized(const char *key, size_t key_len, const char *value, size_t len);
void log_field_uint_sized(const char *key, size_t key_len, unsigned long long value);
void log_field_ms_sized(const char *key, size_t key_len, double seconds);

static inline bool log_begin(enum log_level level, const char *session, const char *msg)
{
	if (!log_enabled(level))
		return false;
	log_begin_sized(level, session, msg, strlen(msg));
	return true;
}
static inline void log_field(const char *key, const char *value, size_t len)
{
	log_field_sized(key, strlen(key), value, len);
}
static inline void log_field_uint(const char *key, unsigned long long value)
{
	log_field_uint_sized(key, strlen(key), value);
}
/* seconds as milliseconds with three decimals: hook_ms=0.042 */
static inline void log_field_ms(const char *key, double seconds)
{
	log_field_ms_sized(key, strlen(key), seconds);
}
void log_end(void);

/* From a thread other than the serving one, just before it ends the
 * process: what is buffered, then this line, written at once. */
void log_fatal(const char *msg, ...) __attribute__((sentinel));

#endif
