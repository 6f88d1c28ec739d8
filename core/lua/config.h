/* config — the options a script returns, checked and turned into C. Names
 * are smtp-server's; an unknown name or a value of the wrong kind is an
 * error that names the option, so `luasmtpd -t` catches typos. The values
 * land in the plain structs of the layers that read them
 * (net/listener_options.h, smtp/options.h); the Lua references stay here. */
#ifndef LUASMTPD_CONFIG_H
#define LUASMTPD_CONFIG_H

#include "net/listener_options.h"
#include "smtp/options.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lua_State;

enum hook_id {
	HOOK_CONNECT,
	HOOK_SECURE,
	HOOK_SNI,
	HOOK_AUTH,
	HOOK_MAIL_FROM,
	HOOK_RCPT_TO,
	HOOK_DATA,
	HOOK_CLOSE,
	HOOK_ERROR,
	HOOK_COUNT
};

/* One listener's options (a script may return several): the SMTP
 * session's (smtp/options.h), which embed the transport's
 * (net/listener_options.h), and what only the Lua layer reads. */
struct listener_config {
	struct smtp_options smtp;
	char *metrics; /* "host:port" of the Prometheus endpoint (process-wide: first listener) */
	double hook_timeout;  /* a hook running longer fails with 451 */
	uint64_t lua_memory_limit; /* the Lua heap ceiling while hooks run (process-wide: first listener) */
	int hook_ref[HOOK_COUNT]; /* Lua registry refs; LUA_NOREF when absent */
	int table_ref;            /* the options table itself */
};

/* The listener c came in on. */
static inline struct listener_config *listener_config_of(const struct conn *c)
{
	return (struct listener_config *)((char *)c->opt - offsetof(struct listener_config, smtp.listener));
}

/* A loaded script: its listeners' options. Sessions hold a reference, so a
 * reload replaces the config for new connections while open ones finish
 * on the one they started with. */
struct config {
	struct listener_set set; /* the transport's view: each listener's smtp.listener */
	int refs;
	struct listener_config *listeners;
	size_t nlisteners;
	char *script_path;
};

static inline struct config *config_of(struct listener_set *set)
{
	return (struct config *)((char *)set - offsetof(struct config, set));
}

/* Reads the value on top of L (an options table, or an array of them).
 * listen_override (may be NULL/0) replaces the scripts' listen per the
 * command line rules. On error returns NULL and writes a message naming
 * the option into err. The result holds one reference. */
struct config *config_from_lua(struct lua_State *L, char **listen_override, size_t noverride,
                               char *err, size_t errlen);
void config_ref(struct config *cfg);
void config_unref(struct lua_State *L, struct config *cfg);
/* Builds o's TLS afresh from its options table (and extra, a table of
 * options over them, at index extra_idx, or 0) into out. */
bool config_build_tls(struct lua_State *L, struct listener_config *o, int extra_idx,
                      struct tls_set *out, char *err, size_t errlen);
void config_free_tls(struct tls_set *t);
/* The listen spec is valid ("host:port", port 0..65535). */
bool config_valid_listen(const char *spec);

const char *hook_name(enum hook_id id);

#endif
