#include "lua/tls_options.h"

#include <lauxlib.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TLS_CTX_MT "luasmtpd.tls.context"

static bool opt_fail(char *err, size_t errlen, const char *option, const char *what, lua_State *L, int t)
{
	snprintf(err, errlen, "option '%s': %s%s", option, what, t >= 0 ? lua_typename(L, t) : "");
	return false;
}

/* opts[name] as a string; false counts as absent, as nil does. */
static bool opt_string(lua_State *L, int idx, const char *name, struct tls_blob *out, char *err,
                       size_t errlen)
{
	lua_getfield(L, idx, name);
	int t = lua_type(L, -1);
	bool ok = true;
	if (t == LUA_TSTRING)
		out->data = lua_tolstring(L, -1, &out->len); /* stays alive: the table holds it */
	else if (t != LUA_TNIL && !(t == LUA_TBOOLEAN && !lua_toboolean(L, -1)))
		ok = opt_fail(err, errlen, name, "expected a string, got ", L, t);
	lua_pop(L, 1);
	return ok;
}

static bool opt_cstring(lua_State *L, int idx, const char *name, const char **out, char *err, size_t errlen)
{
	struct tls_blob b = {0};
	bool ok = opt_string(L, idx, name, &b, err, errlen);
	*out = b.data;
	return ok;
}

/* opts[name] as a boolean; absent, out keeps its default. */
static bool opt_bool(lua_State *L, int idx, const char *name, bool *out, bool *given, char *err, size_t errlen)
{
	lua_getfield(L, idx, name);
	int t = lua_type(L, -1);
	if (t != LUA_TNIL)
		*out = lua_toboolean(L, -1);
	if (given)
		*given = t != LUA_TNIL;
	lua_pop(L, 1);
	return t == LUA_TNIL || t == LUA_TBOOLEAN || opt_fail(err, errlen, name, "expected a boolean, got ", L, t);
}

static void ca_add(struct tls_options *o, const char *v, size_t len)
{
	/* Copied: a number in the list is converted to a string no table holds. */
	struct tls_blob *ca = realloc((void *)o->ca, (o->nca + 1) * sizeof *ca);
	char *copy = malloc(len + 1);
	if (!ca || !copy)
		abort();
	memcpy(copy, v, len);
	copy[len] = '\0';
	ca[o->nca++] = (struct tls_blob){copy, len};
	o->ca = ca;
}

/* A ca value at idx: PEM text or a path, or a list of them. */
static bool opt_ca_value(lua_State *L, int idx, struct tls_options *o, char *err, size_t errlen)
{
	int t = lua_type(L, idx);
	size_t len;
	if (t == LUA_TSTRING) {
		const char *v = lua_tolstring(L, idx, &len);
		ca_add(o, v, len);
	} else if (t == LUA_TTABLE) {
		for (int i = 1; i <= (int)lua_objlen(L, idx); i++) {
			lua_rawgeti(L, idx, i);
			const char *v = lua_tolstring(L, -1, &len);
			if (v)
				ca_add(o, v, len);
			lua_pop(L, 1);
			if (!v) {
				snprintf(err, errlen, "option 'ca': entry %d is not a string", i);
				return false;
			}
		}
	} else if (t != LUA_TNIL) {
		return opt_fail(err, errlen, "ca", "expected a string or a list of strings", L, -1);
	}
	return true;
}

static bool opt_ca(lua_State *L, int idx, struct tls_options *o, char *err, size_t errlen)
{
	lua_getfield(L, idx, "ca");
	o->has_ca = !lua_isnil(L, -1);
	bool ok = opt_ca_value(L, lua_gettop(L), o, err, errlen);
	lua_pop(L, 1);
	return ok;
}

static bool opt_session_timeout(lua_State *L, int idx, struct tls_options *o, char *err, size_t errlen)
{
	lua_getfield(L, idx, "sessionTimeout");
	int t = lua_type(L, -1);
	o->session_timeout = lua_tonumber(L, -1);
	lua_pop(L, 1);
	o->has_session_timeout = t == LUA_TNUMBER;
	if (t != LUA_TNIL && (t != LUA_TNUMBER || o->session_timeout < 0))
		return opt_fail(err, errlen, "sessionTimeout", "expected seconds >= 0", L, -1);
	return true;
}

bool tls_options_from_lua(lua_State *L, int idx, struct tls_options *o, char *err, size_t errlen)
{
	idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
	tls_options_init(o);
	bool ocsp = false;
	/* In each group the last wrong option is the one reported, as when
	 * the context builder read them itself. */
	bool ok = opt_string(L, idx, "cert", &o->cert, err, errlen) &&
	          opt_string(L, idx, "key", &o->key, err, errlen) &&
	          opt_string(L, idx, "pfx", &o->pfx, err, errlen) &&
	          opt_cstring(L, idx, "passphrase", &o->passphrase, err, errlen) &&
	          opt_cstring(L, idx, "ecdhCurve", &o->ecdh_curve, err, errlen) &&
	          opt_cstring(L, idx, "ciphersuites", &o->ciphersuites, err, errlen) &&
	          opt_cstring(L, idx, "ciphers", &o->ciphers, err, errlen) &&
	          opt_cstring(L, idx, "maxVersion", &o->max_version, err, errlen) &&
	          opt_cstring(L, idx, "minVersion", &o->min_version, err, errlen) &&
	          opt_string(L, idx, "ticketKeys", &o->ticket_keys, err, errlen) &&
	          opt_string(L, idx, "sessionIdContext", &o->session_id_context, err, errlen) &&
	          opt_session_timeout(L, idx, o, err, errlen) &&
	          opt_bool(L, idx, "requestCert", &o->request_cert, &o->has_request_cert, err, errlen) &&
	          opt_bool(L, idx, "rejectUnauthorized", &o->reject_unauthorized, &o->has_reject_unauthorized,
	                   err, errlen) &&
	          opt_bool(L, idx, "honorCipherOrder", &o->honor_cipher_order, NULL, err, errlen) &&
	          /* requestOCSP concerns a client's view of the server: accepted, no effect. */
	          opt_bool(L, idx, "requestOCSP", &ocsp, NULL, err, errlen) &&
	          opt_ca(L, idx, o, err, errlen);
	if (!ok)
		tls_options_lua_free(o);
	return ok;
}

void tls_options_lua_free(struct tls_options *o)
{
	for (size_t i = 0; i < o->nca; i++)
		free((void *)o->ca[i].data);
	free((void *)o->ca);
	o->ca = NULL;
	o->nca = 0;
}

SSL_CTX *tls_context_from_lua(lua_State *L, int idx, char *err, size_t errlen)
{
	struct tls_options o;
	if (!tls_options_from_lua(L, idx, &o, err, errlen))
		return NULL;
	SSL_CTX *ctx = tls_context_new(&o, err, errlen);
	tls_options_lua_free(&o);
	return ctx;
}

X509_STORE *tls_ca_store_from_lua(lua_State *L, int idx, char *err, size_t errlen)
{
	struct tls_options o = {0};
	if (!opt_ca_value(L, idx, &o, err, errlen)) {
		tls_options_lua_free(&o);
		return NULL;
	}
	X509_STORE *store = tls_ca_store(o.ca, o.nca, err, errlen);
	tls_options_lua_free(&o);
	return store;
}

/* ---- smtp.tls.context objects ------------------------------------------ */

void tls_context_push(lua_State *L, SSL_CTX *ctx)
{
	SSL_CTX **ud = lua_newuserdata(L, sizeof *ud);
	*ud = ctx;
	luaL_getmetatable(L, TLS_CTX_MT);
	lua_setmetatable(L, -2);
}

SSL_CTX *tls_context_check(lua_State *L, int idx)
{
	SSL_CTX **ud = luaL_testudata(L, idx, TLS_CTX_MT);
	return ud ? *ud : NULL;
}

static int tls_context_gc(lua_State *L)
{
	SSL_CTX **ud = luaL_checkudata(L, 1, TLS_CTX_MT);
	SSL_CTX_free(*ud);
	*ud = NULL;
	return 0;
}

static int tls_context_tostring(lua_State *L)
{
	lua_pushfstring(L, "smtp.tls.context (%p)", lua_touserdata(L, 1));
	return 1;
}

void tls_context_register(lua_State *L)
{
	luaL_newmetatable(L, TLS_CTX_MT);
	lua_pushcfunction(L, tls_context_gc);
	lua_setfield(L, -2, "__gc");
	lua_pushcfunction(L, tls_context_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pop(L, 1);
}
