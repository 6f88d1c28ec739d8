/* config — the options a script returns, checked and turned into C. Names
 * are smtp-server's; an unknown name or a value of the wrong kind is an
 * error that names the option, so `luasmtpd -t` catches typos. */
#ifndef LUASMTPD_CONFIG_H
#define LUASMTPD_CONFIG_H

#include "base/cidr.h"
#include "proto/smtp_parse.h"

#include <openssl/ssl.h>
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

enum auth_method {
	AUTH_PLAIN = 1 << 0,
	AUTH_LOGIN = 1 << 1,
	AUTH_CRAM_MD5 = 1 << 2,
	AUTH_XOAUTH2 = 1 << 3,
};

#define CONFIG_MAX_LISTEN 16
#define CONFIG_MAX_AUTH_METHODS 4

/* A certificate chosen by the name the client asks for (sniOptions). */
struct sni_entry {
	char *name; /* lower-case */
	SSL_CTX *ctx;
};

#define CONFIG_MAX_WATCH 32
#define CONFIG_MAX_TRUSTED 32

/* A listener's TLS: its contexts and the files they were read from (watched
 * for renewals). Rebuilt as a whole, swapped as a whole. */
struct tls_set {
	SSL_CTX *ctx; /* NULL: no TLS on this listener */
	struct sni_entry *sni;
	size_t nsni;
	char *watch[CONFIG_MAX_WATCH];
	size_t nwatch;
};

/* One listener's options (a script may return several). */
struct smtp_options {
	char *listen[CONFIG_MAX_LISTEN];
	size_t nlisten;
	char *name;
	char *banner;
	char *helo_response; /* printf-free template: first %s name, second %s client */
	char *auth_required_message;
	char *user; /* run as this user once the ports are bound (root only) */
	char *metrics; /* "host:port" of the Prometheus endpoint (process-wide: first listener) */

	enum auth_method auth_methods[CONFIG_MAX_AUTH_METHODS]; /* advertised in this order */
	size_t nauth_methods;
	bool auth_optional;
	bool allow_insecure_auth;
	unsigned max_unauth_commands; /* 0: no limit */
	unsigned max_auth_failures;   /* failed AUTH attempts before 421; 0: no limit */
	unsigned max_auth_failures_per_ip; /* per client address within auth_failure_window; 0: none */
	double auth_failure_window;
	unsigned max_junk_commands; /* NOOP, RSET, VRFY, HELP before each counts as an error; 0: none */

	uint64_t size; /* 0: no limit */
	bool hide_size;
	unsigned max_clients;    /* 0: no limit */
	unsigned max_connections_per_ip; /* 0: no limit */
	unsigned max_connection_rate;    /* per address per minute; 0: no limit */
	unsigned max_recipients; /* 0: no limit */
	size_t max_command_length;
	size_t max_line_length; /* message lines (DATA), CRLF excluded; 0: no limit */
	double socket_timeout;
	double handshake_timeout; /* a TLS handshake's deadline; < 0: socketTimeout, 0: none */
	double close_timeout;
	double hook_timeout;  /* a hook running longer fails with 451 */
	double min_data_rate; /* bytes/s a message must keep up (Postfix's smtpd_min_data_rate) */
	double greeting_delay; /* wait before the greeting; who speaks first is a pregreeter */
	uint64_t lua_memory_limit; /* the Lua heap ceiling while hooks run (process-wide: first listener) */

	uint32_t disabled_commands; /* bit per enum smtp_verb */
	bool hide_pipelining;
	bool hide_8bitmime;
	bool hide_smtputf8;
	bool hide_enhanced;
	bool hide_chunking;
	bool lmtp; /* RFC 2033: LHLO, one reply per recipient after the message */
	bool use_proxy; /* a PROXY protocol header comes first */
	struct cidr proxy_trusted[CONFIG_MAX_TRUSTED]; /* none: every peer */
	size_t nproxy_trusted;
	bool use_xclient, use_xforward;
	struct cidr xclient_trusted[CONFIG_MAX_TRUSTED], xforward_trusted[CONFIG_MAX_TRUSTED];
	size_t nxclient_trusted, nxforward_trusted;
	bool hide_dsn;        /* default true, as in smtp-server */
	bool hide_requiretls; /* default true */
	bool lenient_address_parsing;
	bool disable_reverse_lookup;
	bool resolve_client_hostname; /* forward-confirmed reverse DNS for clientHostname */
	enum smtp_bare_mode bare_line_endings;

	bool secure;        /* implicit TLS from the first byte */
	bool needs_upgrade; /* nothing but EHLO/STARTTLS/QUIT before TLS */
	bool hide_starttls;
	struct tls_set tls;

	struct tls_sni_cache *sni_cache; /* servername -> context, as SNICallback answered */
	unsigned sni_cache_size;         /* names it keeps; 0: no limit */
	int hook_ref[HOOK_COUNT]; /* Lua registry refs; LUA_NOREF when absent */
	int table_ref;            /* the options table itself */
};

/* A loaded script: its listeners' options. Sessions hold a reference, so a
 * reload replaces the config for new connections while open ones finish
 * on the one they started with. */
struct config {
	int refs;
	struct smtp_options *listeners;
	size_t nlisteners;
	char *script_path;
};

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
bool config_build_tls(struct lua_State *L, struct smtp_options *o, int extra_idx,
                      struct tls_set *out, char *err, size_t errlen);
void config_free_tls(struct tls_set *t);
/* The listen spec is valid ("host:port", port 0..65535). */
bool config_valid_listen(const char *spec);

const char *hook_name(enum hook_id id);
const char *auth_method_name(enum auth_method m);
bool config_verb_disabled(const struct smtp_options *o, enum smtp_verb v);

#endif
