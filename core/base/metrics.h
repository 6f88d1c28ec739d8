/* metrics — counters for Prometheus. Every serving process counts into its
 * own slot of a page shared across fork; whoever serves the `metrics`
 * address (the single process, or the master) sums the slots, so a scrape
 * sees the whole server whatever process it reaches. */
#ifndef LUASMTPD_METRICS_H
#define LUASMTPD_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define METRICS_SLOTS 65 /* workers + the single process */
#define METRICS_CUSTOM 128
#define METRICS_BUCKETS 8
/* The hooks, in the order of enum hook_id (lua/config.h; main.c checks
 * the count): base/ counts them by number and names them itself. */
#define METRICS_HOOKS 9

enum metrics_result { METRICS_OK, METRICS_FAIL };

struct metrics_custom {
	char name[64];
	char labels[160]; /* rendered: a="x",b="y" */
	char help[96];
	double value;
};

struct metrics_slot {
	uint64_t connections_total;
	int64_t connections_current;
	uint64_t tls_sessions[4];      /* TLSv1, TLSv1.1, TLSv1.2, TLSv1.3 */
	uint64_t messages[3];          /* reply class 2xx, 4xx, 5xx */
	uint64_t auth[4][2];           /* method x success/failure */
	uint64_t hook_calls[METRICS_HOOKS];
	uint64_t hook_errors[METRICS_HOOKS];
	uint64_t hook_buckets[METRICS_HOOKS][METRICS_BUCKETS];
	double hook_seconds[METRICS_HOOKS];
	uint64_t reloads[2];           /* done, failed */
	uint64_t lua_memory;
	int pid;
	struct metrics_custom custom[METRICS_CUSTOM];
};

/* Maps the shared page (before any fork). */
void metrics_init(void);
/* This process counts into slot (0: single process; 1..: workers). */
void metrics_use_slot(unsigned slot);
struct metrics_slot *metrics_mine(void);

void metrics_connection(int delta);
void metrics_tls(const char *version);
void metrics_message(int reply_code);
/* m: one AUTH_* bit of enum auth_method (PLAIN, LOGIN, CRAM-MD5, XOAUTH2). */
void metrics_auth(unsigned m, bool ok);
void metrics_hook(unsigned hook, double seconds, bool failed);
/* Where metrics_hook reads the Lua heap in use (luasmtpd_lua_memory_bytes):
 * the runtime installs its counter, so base/ needs no Lua. */
void metrics_count_memory(size_t (*used)(void));
void metrics_reload(bool ok);
/* smtp.metrics counters: adds v to name{labels}; false when full. */
bool metrics_custom_add(const char *name, const char *help, const char *labels, double v);

/* Serves the text exposition on addr ("host:port"); false and err. */
struct ev_loop;
bool metrics_listen(struct ev_loop *loop, const char *addr, char *err, size_t errlen);
void metrics_stop(struct ev_loop *loop);

#endif
