#include "lua/config.h"

#include "base/log.h"
#include "lua/tls_options.h"
#include "proto/replies.h"
#include "tls/tls_sni_cache.h"

#include <lauxlib.h>
#include <lua.h>

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pwd.h>
#include <unistd.h>

enum opt_kind {
	OPT_BOOL,
	OPT_STRING,
	OPT_DURATION,
	OPT_SIZE,
	OPT_COUNT,
	OPT_LISTEN,
	OPT_AUTH_METHODS,
	OPT_DISABLED_COMMANDS,
	OPT_BARE_MODE,
	OPT_HOOK,
	OPT_TLS, /* read by tls_context_from_lua once the table is complete */
	OPT_SNI,
	OPT_TRUSTED, /* true, or a list of addresses/CIDRs */
};

struct option_def {
	const char *name;
	enum opt_kind kind;
	size_t offset; /* into struct listener_config; the hook id for OPT_HOOK */
};

#define OPT(name, kind, field) {name, kind, offsetof(struct listener_config, field)}
#define SMTP_OPT(name, kind, field) OPT(name, kind, smtp.field)
#define NET_OPT(name, kind, field) OPT(name, kind, smtp.listener.field)
#define HOOK(name, id) {name, OPT_HOOK, id}

static const struct option_def option_defs[] = {
	NET_OPT("listen", OPT_LISTEN, listen),
	SMTP_OPT("name", OPT_STRING, name),
	SMTP_OPT("banner", OPT_STRING, banner),
	SMTP_OPT("heloResponse", OPT_STRING, helo_response),
	SMTP_OPT("authRequiredMessage", OPT_STRING, auth_required_message),
	NET_OPT("user", OPT_STRING, user),
	OPT("metrics", OPT_STRING, metrics),
	SMTP_OPT("authMethods", OPT_AUTH_METHODS, auth_methods),
	SMTP_OPT("authOptional", OPT_BOOL, auth_optional),
	SMTP_OPT("allowInsecureAuth", OPT_BOOL, allow_insecure_auth),
	SMTP_OPT("maxAllowedUnauthenticatedCommands", OPT_COUNT, max_unauth_commands),
	SMTP_OPT("maxAuthFailures", OPT_COUNT, max_auth_failures),
	SMTP_OPT("maxAuthFailuresPerIp", OPT_COUNT, max_auth_failures_per_ip),
	SMTP_OPT("authFailureWindow", OPT_DURATION, auth_failure_window),
	SMTP_OPT("maxJunkCommands", OPT_COUNT, max_junk_commands),
	SMTP_OPT("size", OPT_SIZE, size),
	SMTP_OPT("hideSize", OPT_BOOL, hide_size),
	NET_OPT("maxClients", OPT_COUNT, max_clients),
	NET_OPT("maxConnectionsPerIp", OPT_COUNT, max_connections_per_ip),
	NET_OPT("maxConnectionRate", OPT_COUNT, max_connection_rate),
	SMTP_OPT("maxRecipients", OPT_COUNT, max_recipients),
	NET_OPT("sniCacheSize", OPT_COUNT, sni_cache_size),
	SMTP_OPT("maxCommandLength", OPT_SIZE, max_command_length),
	SMTP_OPT("maxLineLength", OPT_SIZE, max_line_length),
	NET_OPT("socketTimeout", OPT_DURATION, socket_timeout),
	NET_OPT("handshakeTimeout", OPT_DURATION, handshake_timeout),
	NET_OPT("closeTimeout", OPT_DURATION, close_timeout),
	OPT("hookTimeout", OPT_DURATION, hook_timeout),
	SMTP_OPT("greetingDelay", OPT_DURATION, greeting_delay),
	NET_OPT("minDataRate", OPT_DURATION, min_data_rate),
	OPT("luaMemoryLimit", OPT_SIZE, lua_memory_limit),
	SMTP_OPT("disabledCommands", OPT_DISABLED_COMMANDS, disabled_commands),
	SMTP_OPT("hidePIPELINING", OPT_BOOL, hide_pipelining),
	SMTP_OPT("hide8BITMIME", OPT_BOOL, hide_8bitmime),
	SMTP_OPT("hideSMTPUTF8", OPT_BOOL, hide_smtputf8),
	SMTP_OPT("hideENHANCEDSTATUSCODES", OPT_BOOL, hide_enhanced),
	SMTP_OPT("hideCHUNKING", OPT_BOOL, hide_chunking),
	SMTP_OPT("lmtp", OPT_BOOL, lmtp),
	SMTP_OPT("hideDSN", OPT_BOOL, hide_dsn),
	SMTP_OPT("hideREQUIRETLS", OPT_BOOL, hide_requiretls),
	SMTP_OPT("lenientAddressParsing", OPT_BOOL, lenient_address_parsing),
	SMTP_OPT("disableReverseLookup", OPT_BOOL, disable_reverse_lookup),
	SMTP_OPT("resolveClientHostname", OPT_BOOL, resolve_client_hostname),
	SMTP_OPT("bareLineEndings", OPT_BARE_MODE, bare_line_endings),
	HOOK("onConnect", HOOK_CONNECT),
	HOOK("onSecure", HOOK_SECURE),
	HOOK("SNICallback", HOOK_SNI),
	HOOK("onAuth", HOOK_AUTH),
	HOOK("onMailFrom", HOOK_MAIL_FROM),
	HOOK("onRcptTo", HOOK_RCPT_TO),
	HOOK("onData", HOOK_DATA),
	HOOK("onClose", HOOK_CLOSE),
	HOOK("onError", HOOK_ERROR),
	SMTP_OPT("secure", OPT_BOOL, secure),
	SMTP_OPT("needsUpgrade", OPT_BOOL, needs_upgrade),
	SMTP_OPT("hideSTARTTLS", OPT_BOOL, hide_starttls),
	NET_OPT("sniOptions", OPT_SNI, tls),
	{"key", OPT_TLS, 0}, {"cert", OPT_TLS, 0}, {"ca", OPT_TLS, 0}, {"pfx", OPT_TLS, 0},
	{"passphrase", OPT_TLS, 0}, {"minVersion", OPT_TLS, 0}, {"maxVersion", OPT_TLS, 0},
	{"ciphers", OPT_TLS, 0}, {"ciphersuites", OPT_TLS, 0}, {"honorCipherOrder", OPT_TLS, 0},
	{"ecdhCurve", OPT_TLS, 0}, {"requestCert", OPT_TLS, 0}, {"rejectUnauthorized", OPT_TLS, 0},
	{"sessionIdContext", OPT_TLS, 0}, {"sessionTimeout", OPT_TLS, 0}, {"ticketKeys", OPT_TLS, 0},
	{"requestOCSP", OPT_TLS, 0},
	NET_OPT("useProxy", OPT_TRUSTED, use_proxy),
	SMTP_OPT("useXClient", OPT_TRUSTED, use_xclient),
	SMTP_OPT("useXForward", OPT_TRUSTED, use_xforward),
};

static const char *const hook_names[HOOK_COUNT] = {
	"onConnect", "onSecure", "SNICallback", "onAuth", "onMailFrom",
	"onRcptTo", "onData", "onClose", "onError",
};

const char *hook_name(enum hook_id id) { return hook_names[id]; }

struct cfg_err {
	char *buf;
	size_t len;
};

static bool cfg_fail(struct cfg_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool cfg_fail(struct cfg_err *e, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->buf, e->len, fmt, ap);
	va_end(ap);
	return false;
}

static bool cfg_expect(lua_State *L, struct cfg_err *e, const char *name, int type)
{
	if (lua_type(L, -1) == type)
		return true;
	return cfg_fail(e, "option '%s': expected a %s, got %s", name, lua_typename(L, type),
	                luaL_typename(L, -1));
}

static char *cfg_strdup(const char *s)
{
	char *d = strdup(s);
	if (!d)
		abort();
	return d;
}

/* "host:port", "[v6]:port" or ":port", port 0 to 65535 (0: any free one). */
bool config_valid_listen(const char *spec)
{
	const char *colon = strrchr(spec, ':');
	if (!colon || colon[1] == '\0' || strlen(colon + 1) > 5)
		return false;
	long port = 0;
	for (const char *p = colon + 1; *p; p++) {
		if (*p < '0' || *p > '9')
			return false;
		port = port * 10 + (*p - '0');
	}
	if (port > 65535)
		return false;
	for (const char *p = spec; p < colon; p++)
		if ((unsigned char)*p <= ' ')
			return false;
	return true;
}

static bool cfg_add_listen(struct listener_options *o, const char *spec, struct cfg_err *e)
{
	if (!config_valid_listen(spec))
		return cfg_fail(e, "option 'listen': \"%s\" is not host:port (port 0 to 65535)", spec);
	o->listen[o->nlisten++] = cfg_strdup(spec);
	return true;
}

static bool cfg_listen(lua_State *L, struct listener_options *o, struct cfg_err *e)
{
	if (lua_type(L, -1) == LUA_TSTRING)
		return cfg_add_listen(o, lua_tostring(L, -1), e);
	if (!cfg_expect(L, e, "listen", LUA_TTABLE))
		return false;
	size_t n = lua_objlen(L, -1);
	if (n == 0 || n > CONFIG_MAX_LISTEN)
		return cfg_fail(e, "option 'listen': expected 1 to %d addresses", CONFIG_MAX_LISTEN);
	for (size_t i = 1; i <= n; i++) {
		lua_rawgeti(L, -1, (int)i);
		if (lua_type(L, -1) != LUA_TSTRING)
			return cfg_fail(e, "option 'listen': entry %zu is not a \"host:port\" string", i);
		if (!cfg_add_listen(o, lua_tostring(L, -1), e))
			return false;
		lua_pop(L, 1);
	}
	return true;
}

/* useProxy, useXClient, useXForward: true (every peer) or a list of the
 * trusted front ends' addresses/CIDRs ("*" for all). */
static bool cfg_trusted(lua_State *L, const struct option_def *d, struct listener_config *lc,
                        struct cfg_err *e)
{
	struct smtp_options *o = &lc->smtp;
	struct listener_options *l = &o->listener;
	bool *on = (bool *)((char *)lc + d->offset);
	struct cidr *list = on == &l->use_proxy ? l->proxy_trusted
	                    : on == &o->use_xclient ? o->xclient_trusted : o->xforward_trusted;
	size_t *n = on == &l->use_proxy ? &l->nproxy_trusted
	            : on == &o->use_xclient ? &o->nxclient_trusted : &o->nxforward_trusted;
	if (lua_type(L, -1) == LUA_TBOOLEAN) {
		*on = lua_toboolean(L, -1);
		return true;
	}
	if (!cfg_expect(L, e, d->name, LUA_TTABLE))
		return false;
	*on = true;
	size_t len = lua_objlen(L, -1);
	for (size_t i = 1; i <= len; i++) {
		lua_rawgeti(L, -1, (int)i);
		const char *s = lua_tostring(L, -1);
		lua_pop(L, 1);
		if (s && strcmp(s, "*") == 0) {
			*n = 0;
			return true;
		}
		if (!s || *n == CONFIG_MAX_TRUSTED || !cidr_parse(s, &list[*n]))
			return cfg_fail(e, "option '%s': entry %zu is not an address or CIDR (or too many)",
			                d->name, i);
		(*n)++;
	}
	if (len == 0)
		return cfg_fail(e, "option '%s': an empty list trusts nobody; use false", d->name);
	return true;
}

/* Calls fn(word) for each string of a string-or-array value. */
static bool cfg_words(lua_State *L, struct cfg_err *e, const char *name,
                      bool (*fn)(struct smtp_options *, const char *, struct cfg_err *, const char *),
                      struct smtp_options *o)
{
	if (!cfg_expect(L, e, name, LUA_TTABLE))
		return false;
	size_t n = lua_objlen(L, -1);
	for (size_t i = 1; i <= n; i++) {
		lua_rawgeti(L, -1, (int)i);
		if (lua_type(L, -1) != LUA_TSTRING)
			return cfg_fail(e, "option '%s': entry %zu is not a string", name, i);
		bool ok = fn(o, lua_tostring(L, -1), e, name);
		lua_pop(L, 1);
		if (!ok)
			return false;
	}
	return true;
}

static bool cfg_auth_word(struct smtp_options *o, const char *w, struct cfg_err *e, const char *name)
{
	for (size_t i = 0; i < CONFIG_MAX_AUTH_METHODS; i++) {
		enum auth_method m = (enum auth_method)(1u << i);
		if (strcasecmp(w, auth_method_name(m)) != 0)
			continue;
		for (size_t j = 0; j < o->nauth_methods; j++)
			if (o->auth_methods[j] == m)
				return true;
		o->auth_methods[o->nauth_methods++] = m;
		return true;
	}
	return cfg_fail(e, "option '%s': unknown method '%s' (PLAIN, LOGIN, CRAM-MD5, XOAUTH2)", name, w);
}

static bool cfg_command_word(struct smtp_options *o, const char *w, struct cfg_err *e,
                             const char *name)
{
	enum smtp_verb v = smtp_verb_from_name(w, strlen(w));
	if (v == SMTP_VERB_UNKNOWN)
		return cfg_fail(e, "option '%s': unknown command '%s'", name, w);
	o->disabled_commands |= 1u << v;
	return true;
}

static bool cfg_number(lua_State *L, struct cfg_err *e, const char *name, double max, double *out)
{
	if (!cfg_expect(L, e, name, LUA_TNUMBER))
		return false;
	double d = lua_tonumber(L, -1);
	if (!(d >= 0) || d > max || isinf(d))
		return cfg_fail(e, "option '%s': %g is out of range (0 to %.0f)", name, d, max);
	*out = d;
	return true;
}

static bool cfg_apply(lua_State *L, const struct option_def *d, struct listener_config *lc,
                      struct cfg_err *e)
{
	struct smtp_options *o = &lc->smtp;
	char *field = (char *)lc + d->offset;
	double num;
	switch (d->kind) {
	case OPT_BOOL:
		if (!cfg_expect(L, e, d->name, LUA_TBOOLEAN))
			return false;
		*(bool *)field = lua_toboolean(L, -1);
		return true;
	case OPT_STRING:
		if (!cfg_expect(L, e, d->name, LUA_TSTRING))
			return false;
		free(*(char **)field);
		*(char **)field = cfg_strdup(lua_tostring(L, -1));
		return true;
	case OPT_DURATION:
		if (!cfg_number(L, e, d->name, 86400.0 * 365, &num))
			return false;
		*(double *)field = num;
		return true;
	case OPT_SIZE:
		if (!cfg_number(L, e, d->name, 9007199254740992.0, &num))
			return false;
		if (d->offset == offsetof(struct listener_config, smtp.size) ||
		    d->offset == offsetof(struct listener_config, lua_memory_limit))
			*(uint64_t *)field = (uint64_t)num;
		else
			*(size_t *)field = (size_t)num;
		return true;
	case OPT_COUNT:
		if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
			*(unsigned *)field = 0; /* false: no limit, as in smtp-server */
			return true;
		}
		if (!cfg_number(L, e, d->name, 4294967295.0, &num))
			return false;
		*(unsigned *)field = (unsigned)num;
		return true;
	case OPT_LISTEN:
		return cfg_listen(L, &o->listener, e);
	case OPT_AUTH_METHODS:
		o->nauth_methods = 0;
		return cfg_words(L, e, d->name, cfg_auth_word, o);
	case OPT_DISABLED_COMMANDS:
		return cfg_words(L, e, d->name, cfg_command_word, o);
	case OPT_BARE_MODE: {
		if (!cfg_expect(L, e, d->name, LUA_TSTRING))
			return false;
		const char *s = lua_tostring(L, -1);
		if (strcmp(s, "reject") == 0)
			o->bare_line_endings = SMTP_BARE_REJECT;
		else if (strcmp(s, "normalize") == 0)
			o->bare_line_endings = SMTP_BARE_NORMALIZE;
		else
			return cfg_fail(e, "option '%s': expected \"reject\" or \"normalize\", got \"%s\"",
			                d->name, s);
		return true;
	}
	case OPT_HOOK:
		if (!cfg_expect(L, e, d->name, LUA_TFUNCTION))
			return false;
		lua_pushvalue(L, -1);
		lc->hook_ref[d->offset] = luaL_ref(L, LUA_REGISTRYINDEX);
		return true;
	case OPT_TLS:
		return true;
	case OPT_TRUSTED:
		return cfg_trusted(L, d, lc, e);
	case OPT_SNI:
		return cfg_expect(L, e, d->name, LUA_TTABLE);
	}
	return false;
}

static void cfg_defaults(struct listener_config *lc)
{
	memset(lc, 0, sizeof *lc);
	struct smtp_options *o = &lc->smtp;
	struct listener_options *l = &o->listener;
	char host[256] = "localhost";
	if (gethostname(host, sizeof host - 1) != 0)
		strcpy(host, "localhost");
	o->name = cfg_strdup(host);
	o->helo_response = cfg_strdup("%s Nice to meet you, %s");
	o->auth_required_message = cfg_strdup(smtp_replies[REPLY_AUTH_REQUIRED].text);
	o->auth_methods[0] = AUTH_PLAIN;
	o->auth_methods[1] = AUTH_LOGIN;
	o->nauth_methods = 2;
	o->max_unauth_commands = 10;
	o->max_auth_failures = 5;
	o->max_auth_failures_per_ip = 10; /* Postfix anvil spirit: 10 per 10 minutes */
	o->auth_failure_window = 600;
	o->max_junk_commands = 100;       /* Postfix's smtpd_junk_command_limit */
	o->max_recipients = 1000;         /* Postfix's smtpd_recipient_limit */
	o->max_command_length = 4096;
	l->socket_timeout = 60;
	l->handshake_timeout = -1;
	l->close_timeout = 30;
	lc->hook_timeout = 10;
	l->min_data_rate = 500;
	lc->lua_memory_limit = 1024ull * 1024 * 1024;
	o->bare_line_endings = SMTP_BARE_REJECT;
	o->hide_dsn = true;
	o->hide_requiretls = true;
	for (int i = 0; i < HOOK_COUNT; i++)
		lc->hook_ref[i] = LUA_NOREF;
	lc->table_ref = LUA_NOREF;
	l->sni_cache = NULL;
	l->sni_cache_size = 1000;
}

static const struct option_def *cfg_find(const char *name)
{
	for (size_t i = 0; i < sizeof option_defs / sizeof *option_defs; i++)
		if (strcmp(option_defs[i].name, name) == 0)
			return &option_defs[i];
	return NULL;
}

/* Pushes smtp.tls.options(the table at idx): the options over the defaults. */
static bool cfg_tls_merged(lua_State *L, int idx, struct cfg_err *e)
{
	idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
	lua_getglobal(L, "require");
	lua_pushstring(L, "smtp");
	if (lua_pcall(L, 1, 1, 0) != 0) {
		cfg_fail(e, "cannot load the smtp module: %s", lua_tostring(L, -1));
		lua_pop(L, 1);
		return false;
	}
	lua_getfield(L, -1, "tls");
	lua_getfield(L, -1, "options");
	lua_pushvalue(L, idx);
	if (lua_pcall(L, 1, 1, 0) != 0) {
		cfg_fail(e, "smtp.tls.options: %s", lua_tostring(L, -1));
		lua_pop(L, 3);
		return false;
	}
	lua_replace(L, -3);
	lua_pop(L, 1);
	return true;
}

static bool cfg_has(lua_State *L, int idx, const char *field)
{
	lua_getfield(L, idx, field);
	bool has = !lua_isnil(L, -1);
	lua_pop(L, 1);
	return has;
}

/* Remembers a file the context was read from (not PEM or PKCS#12 bytes). */
static void cfg_watch_value(struct tls_set *t, const char *v, size_t len)
{
	if (t->nwatch == CONFIG_MAX_WATCH || memchr(v, '\0', len) || memmem(v, len, "-----BEGIN", 10) ||
	    len > 1024)
		return;
	for (size_t i = 0; i < t->nwatch; i++)
		if (strcmp(t->watch[i], v) == 0)
			return;
	t->watch[t->nwatch++] = cfg_strdup(v);
}

static void cfg_watch_blob(struct tls_set *t, const struct tls_blob *b)
{
	if (b->data)
		cfg_watch_value(t, b->data, b->len);
}

static void cfg_watch_files(const struct tls_options *o, struct tls_set *t)
{
	cfg_watch_blob(t, &o->key);
	cfg_watch_blob(t, &o->cert);
	for (size_t i = 0; i < o->nca; i++)
		cfg_watch_blob(t, &o->ca[i]);
	cfg_watch_blob(t, &o->pfx);
}

/* Do the merged options' key and cert (the development ones) exist? */
static bool cfg_files_exist(lua_State *L)
{
	bool ok = true;
	for (int i = 0; i < 2; i++) {
		lua_getfield(L, -1, i ? "cert" : "key");
		const char *path = lua_tostring(L, -1);
		ok = ok && path && access(path, R_OK) == 0;
		lua_pop(L, 1);
	}
	return ok;
}

/* One context from the merged options at the top of L. */
static SSL_CTX *cfg_context(lua_State *L, struct tls_set *t, struct cfg_err *e)
{
	char err[400];
	struct tls_options opts;
	SSL_CTX *ctx = NULL;
	if (tls_options_from_lua(L, -1, &opts, err, sizeof err)) {
		ctx = tls_context_new(&opts, err, sizeof err);
		if (ctx)
			cfg_watch_files(&opts, t);
		tls_options_lua_free(&opts);
	}
	if (!ctx)
		cfg_fail(e, "%s", err);
	return ctx;
}

static bool cfg_sni(lua_State *L, int idx, struct tls_set *t, struct cfg_err *e)
{
	lua_getfield(L, idx, "sniOptions");
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		return true;
	}
	size_t n = 0;
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		n++;
		lua_pop(L, 1);
	}
	t->sni = calloc(n ? n : 1, sizeof *t->sni);
	if (!t->sni)
		abort();
	bool ok = true;
	lua_pushnil(L);
	while (ok && lua_next(L, -2)) {
		int top = lua_gettop(L);
		if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TTABLE) {
			ok = cfg_fail(e, "option 'sniOptions': expected servername = {key = ..., cert = ...}");
			lua_pop(L, 2);
			break;
		}
		char *name = cfg_strdup(lua_tostring(L, -2));
		for (char *p = name; *p; p++)
			*p = (char)tolower((unsigned char)*p);
		/* Each entry over the defaults only, as smtp-server does. */
		SSL_CTX *ctx = cfg_tls_merged(L, -1, e) ? cfg_context(L, t, e) : NULL;
		if (ctx) {
			t->sni[t->nsni].name = name;
			t->sni[t->nsni++].ctx = ctx;
		} else {
			size_t l = strlen(e->buf);
			snprintf(e->buf + l, e->len - l, " (sniOptions[\"%s\"])", name);
			free(name);
			ok = false;
		}
		lua_settop(L, top - 1);
		if (!ok)
			lua_pop(L, 1);
	}
	lua_pop(L, 1);
	return ok;
}

void config_free_tls(struct tls_set *t)
{
	SSL_CTX_free(t->ctx);
	for (size_t i = 0; i < t->nsni; i++) {
		free(t->sni[i].name);
		SSL_CTX_free(t->sni[i].ctx);
	}
	free(t->sni);
	for (size_t i = 0; i < t->nwatch; i++)
		free(t->watch[i]);
	memset(t, 0, sizeof *t);
}

/* The listener's TLS from the options table at idx. Without a key of its
 * own, a STARTTLS listener falls back to the development certificate, and
 * without that it simply does not offer STARTTLS. */
static bool cfg_tls(lua_State *L, int idx, const struct smtp_options *o, struct tls_set *t,
                    struct cfg_err *e)
{
	memset(t, 0, sizeof *t);
	bool own_identity = cfg_has(L, idx, "key") || cfg_has(L, idx, "cert") || cfg_has(L, idx, "pfx");
	if (!cfg_tls_merged(L, idx, e))
		return false;
	if (!own_identity && !cfg_files_exist(L)) {
		lua_pop(L, 1);
		if (o->secure || o->needs_upgrade)
			return cfg_fail(e, "option 'key': TLS needs a key and a certificate "
			                   "(the development certificate is missing: run make certs)");
		log_kv(LOG_WARN, NULL, "STARTTLS is not offered: no certificate (set key and cert)", NULL);
	} else {
		t->ctx = cfg_context(L, t, e);
		lua_pop(L, 1);
		if (!t->ctx)
			return false;
	}
	if (cfg_sni(L, idx, t, e))
		return true;
	config_free_tls(t);
	return false;
}

bool config_build_tls(lua_State *L, struct listener_config *lc, int extra_idx, struct tls_set *out,
                      char *errbuf, size_t errlen)
{
	struct cfg_err e = {errbuf, errlen};
	int top = lua_gettop(L);
	extra_idx = extra_idx < 0 ? top + extra_idx + 1 : extra_idx;
	/* A copy of the options with the extra ones over them. */
	lua_newtable(L);
	for (int src = 0; src < 2; src++) {
		if (src == 0)
			lua_rawgeti(L, LUA_REGISTRYINDEX, lc->table_ref);
		else if (extra_idx)
			lua_pushvalue(L, extra_idx);
		else
			break;
		lua_pushnil(L);
		while (lua_next(L, -2)) {
			lua_pushvalue(L, -2);
			lua_insert(L, -2);
			lua_rawset(L, -5);
		}
		lua_pop(L, 1);
	}
	bool ok = cfg_tls(L, lua_gettop(L), &lc->smtp, out, &e);
	lua_settop(L, top);
	return ok;
}

/* Reads the options table at the top of L. */
static bool cfg_listener(lua_State *L, struct listener_config *lc, struct cfg_err *e)
{
	cfg_defaults(lc);
	struct smtp_options *o = &lc->smtp;
	struct listener_options *l = &o->listener;
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		if (lua_type(L, -2) != LUA_TSTRING) {
			lua_pop(L, 2);
			return cfg_fail(e, "options table has a key that is not a name (%s)",
			                luaL_typename(L, -1));
		}
		const char *name = lua_tostring(L, -2);
		const struct option_def *d = cfg_find(name);
		if (!d) {
			cfg_fail(e, "unknown option '%s'", name);
			lua_pop(L, 2);
			return false;
		}
		int top = lua_gettop(L);
		bool ok = cfg_apply(L, d, lc, e);
		lua_settop(L, top - 1);
		if (!ok) {
			lua_pop(L, 1);
			return false;
		}
	}
	if (l->nlisten == 0) {
		l->listen[0] = cfg_strdup("127.0.0.1:2525");
		l->nlisten = 1;
	}
	if (l->user && !getpwnam(l->user))
		return cfg_fail(e, "option 'user': no such user \"%s\"", l->user);
	if (o->max_command_length < 512)
		return cfg_fail(e, "option 'maxCommandLength': must be at least 512 (RFC 5321 4.5.3.1.4)");
	lua_pushvalue(L, -1);
	lc->table_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return cfg_tls(L, lua_gettop(L), o, &l->tls, e);
}

static bool cfg_is_listener_array(lua_State *L)
{
	lua_rawgeti(L, -1, 1);
	bool arr = lua_type(L, -1) == LUA_TTABLE;
	lua_pop(L, 1);
	return arr;
}

static bool cfg_override_listen(struct config *cfg, char **addrs, size_t n, struct cfg_err *e)
{
	if (n == 0)
		return true;
	for (size_t i = 0; i < n; i++)
		if (!config_valid_listen(addrs[i]))
			return cfg_fail(e, "--listen \"%s\" is not host:port (port 0 to 65535)", addrs[i]);
	if (cfg->nlisteners == 1) {
		struct listener_options *o = &cfg->listeners[0].smtp.listener;
		if (n > CONFIG_MAX_LISTEN)
			return cfg_fail(e, "too many --listen addresses");
		for (size_t i = 0; i < o->nlisten; i++)
			free(o->listen[i]);
		for (size_t i = 0; i < n; i++)
			o->listen[i] = cfg_strdup(addrs[i]);
		o->nlisten = n;
		return true;
	}
	if (n > cfg->nlisteners)
		return cfg_fail(e, "%zu --listen addresses for %zu listeners", n, cfg->nlisteners);
	for (size_t k = 0; k < n; k++) {
		struct listener_options *o = &cfg->listeners[k].smtp.listener;
		for (size_t i = 0; i < o->nlisten; i++)
			free(o->listen[i]);
		o->listen[0] = cfg_strdup(addrs[k]);
		o->nlisten = 1;
	}
	return true;
}

struct config *config_from_lua(lua_State *L, char **listen_override, size_t noverride,
                               char *errbuf, size_t errlen)
{
	struct cfg_err e = {errbuf, errlen};
	struct config *cfg = calloc(1, sizeof *cfg);
	if (!cfg)
		abort();
	cfg->refs = 1;
	if (lua_type(L, -1) != LUA_TTABLE) {
		cfg_fail(&e, "the script must return an options table (or an array of them), not %s",
		         luaL_typename(L, -1));
		free(cfg);
		return NULL;
	}
	size_t n = cfg_is_listener_array(L) ? lua_objlen(L, -1) : 1;
	cfg->listeners = calloc(n, sizeof *cfg->listeners);
	cfg->set.listeners = calloc(n, sizeof *cfg->set.listeners);
	if (!cfg->listeners || !cfg->set.listeners)
		abort();
	for (size_t i = 0; i < n; i++)
		cfg->set.listeners[i] = &cfg->listeners[i].smtp.listener;
	bool ok = true;
	if (n == 1 && !cfg_is_listener_array(L)) {
		ok = cfg_listener(L, &cfg->listeners[0], &e);
		cfg->nlisteners = 1;
	} else {
		for (size_t i = 1; ok && i <= n; i++) {
			lua_rawgeti(L, -1, (int)i);
			if (lua_type(L, -1) != LUA_TTABLE)
				ok = cfg_fail(&e, "listener %zu is not an options table", i);
			else
				ok = cfg_listener(L, &cfg->listeners[i - 1], &e);
			cfg->nlisteners = i;
			lua_pop(L, 1);
			if (!ok) {
				size_t l = strlen(errbuf);
				snprintf(errbuf + l, errlen - l, " (listener %zu)", i);
			}
		}
	}
	cfg->set.nlisteners = cfg->nlisteners;
	if (ok)
		ok = cfg_override_listen(cfg, listen_override, noverride, &e);
	if (!ok) {
		config_unref(L, cfg);
		return NULL;
	}
	return cfg;
}

void config_ref(struct config *cfg)
{
	cfg->refs++;
}

void config_unref(lua_State *L, struct config *cfg)
{
	if (!cfg || --cfg->refs > 0)
		return;
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		struct listener_config *lc = &cfg->listeners[i];
		struct smtp_options *o = &lc->smtp;
		struct listener_options *l = &o->listener;
		for (size_t j = 0; j < l->nlisten; j++)
			free(l->listen[j]);
		free(o->name);
		free(o->banner);
		free(o->helo_response);
		free(o->auth_required_message);
		free(l->user);
		free(lc->metrics);
		for (int h = 0; h < HOOK_COUNT; h++)
			luaL_unref(L, LUA_REGISTRYINDEX, lc->hook_ref[h]);
		luaL_unref(L, LUA_REGISTRYINDEX, lc->table_ref);
		tls_sni_cache_free(l->sni_cache);
		config_free_tls(&l->tls);
	}
	free(cfg->listeners);
	free(cfg->set.listeners);
	free(cfg->script_path);
	free(cfg);
}
