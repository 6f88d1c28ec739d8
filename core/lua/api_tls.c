/* api_tls — what Lua sees of TLS: smtp.tls.context(opts), the session
 * fields (secure, servername, tlsOptions) and the `conn` object onSecure
 * gets. */
#include "lua/api_tls.h"
#include "lua/lua_session_state.h"
#include "smtp/session.h"

#include "lua/lua_api.h"
#include "lua/lua_runtime.h"
#include "lua/lua_session.h"
#include "lua/tls_options.h"
#include "lua/modules.h"
#include "net/conn.h"
#include "tls/tls_context.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <string.h>

#define TLS_CONN_CLASS "TLS conn"

static struct lua_api_class tls_conn_class = LUA_API_CLASS_NONE;

struct lua_tls_conn {
	struct conn *c; /* NULL once the connection is gone */
	int authorized;
	char authorization_error[96];
	char protocol[16];
	char cipher[64];
	char standard_cipher[96];
	int cert_ref; /* the peer certificate table, made once */
};

static void tls_push_name(lua_State *L, X509_NAME *name)
{
	lua_newtable(L);
	for (int i = 0; i < X509_NAME_entry_count(name); i++) {
		X509_NAME_ENTRY *e = X509_NAME_get_entry(name, i);
		int nid = OBJ_obj2nid(X509_NAME_ENTRY_get_object(e));
		const char *key = nid != NID_undef ? OBJ_nid2sn(nid) : "unknown";
		ASN1_STRING *v = X509_NAME_ENTRY_get_data(e);
		unsigned char *utf8 = NULL;
		int n = ASN1_STRING_to_UTF8(&utf8, v);
		if (n < 0)
			continue;
		lua_pushlstring(L, (const char *)utf8, (size_t)n);
		lua_setfield(L, -2, key);
		OPENSSL_free(utf8);
	}
}

static void tls_push_time(lua_State *L, const ASN1_TIME *t)
{
	BIO *b = BIO_new(BIO_s_mem());
	ASN1_TIME_print(b, t); /* "Nov 22 20:00:00 2026 GMT", Node's format */
	char *p;
	long n = BIO_get_mem_data(b, &p);
	lua_pushlstring(L, p, (size_t)n);
	BIO_free(b);
}

static void tls_push_fingerprint(lua_State *L, X509 *x)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned len = 0;
	X509_digest(x, EVP_sha256(), md, &len);
	char hex[EVP_MAX_MD_SIZE * 3];
	for (unsigned i = 0; i < len; i++)
		snprintf(hex + 3 * i, 4, "%02X:", md[i]);
	lua_pushlstring(L, hex, len ? len * 3 - 1 : 0);
}

static void tls_push_serial(lua_State *L, X509 *x)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	char *hex = bn ? BN_bn2hex(bn) : NULL;
	lua_pushstring(L, hex ? hex : "");
	OPENSSL_free(hex);
	BN_free(bn);
}

static void tls_push_pem(lua_State *L, X509 *x)
{
	BIO *b = BIO_new(BIO_s_mem());
	PEM_write_bio_X509(b, x);
	char *p;
	long n = BIO_get_mem_data(b, &p);
	lua_pushlstring(L, p, (size_t)n);
	BIO_free(b);
}

void lua_tls_push_peer_certificate(lua_State *L, struct conn *c)
{
	X509 *x = c->ssl ? SSL_get1_peer_certificate(c->ssl) : NULL;
	if (!x) {
		lua_pushnil(L);
		return;
	}
	lua_createtable(L, 0, 7);
	tls_push_name(L, X509_get_subject_name(x));
	lua_setfield(L, -2, "subject");
	tls_push_name(L, X509_get_issuer_name(x));
	lua_setfield(L, -2, "issuer");
	tls_push_time(L, X509_get0_notBefore(x));
	lua_setfield(L, -2, "valid_from");
	tls_push_time(L, X509_get0_notAfter(x));
	lua_setfield(L, -2, "valid_to");
	tls_push_fingerprint(L, x);
	lua_setfield(L, -2, "fingerprint256");
	tls_push_serial(L, x);
	lua_setfield(L, -2, "serialNumber");
	tls_push_pem(L, x);
	lua_setfield(L, -2, "pem");
	X509_free(x);
}

/* Node's names for the verification failures people meet. */
static const char *tls_verify_code(long result)
{
	switch (result) {
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT: return "DEPTH_ZERO_SELF_SIGNED_CERT";
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN: return "SELF_SIGNED_CERT_IN_CHAIN";
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT: return "UNABLE_TO_GET_ISSUER_CERT";
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY: return "UNABLE_TO_GET_ISSUER_CERT_LOCALLY";
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE: return "UNABLE_TO_VERIFY_LEAF_SIGNATURE";
	case X509_V_ERR_CERT_HAS_EXPIRED: return "CERT_HAS_EXPIRED";
	case X509_V_ERR_CERT_NOT_YET_VALID: return "CERT_NOT_YET_VALID";
	case X509_V_ERR_CERT_SIGNATURE_FAILURE: return "CERT_SIGNATURE_FAILURE";
	case X509_V_ERR_CERT_REVOKED: return "CERT_REVOKED";
	case X509_V_ERR_INVALID_PURPOSE: return "INVALID_PURPOSE";
	default: return X509_verify_cert_error_string(result);
	}
}

static struct lua_tls_conn *tls_conn_check(lua_State *L)
{
	return lua_api_checkudata(L, 1, &tls_conn_class, TLS_CONN_CLASS);
}

static int tls_conn_peer_certificate(lua_State *L)
{
	struct lua_tls_conn *t = tls_conn_check(L);
	if (t->cert_ref == LUA_NOREF) {
		if (!t->c) {
			lua_pushnil(L);
			return 1;
		}
		lua_tls_push_peer_certificate(L, t->c);
		lua_pushvalue(L, -1);
		t->cert_ref = luaL_ref(L, LUA_REGISTRYINDEX);
		return 1;
	}
	lua_rawgeti(L, LUA_REGISTRYINDEX, t->cert_ref);
	return 1;
}

/* {name, standardName, version}: getCipher() and session.tlsOptions. */
static void tls_push_cipher(lua_State *L, const struct lua_tls_conn *t)
{
	const struct lua_api_field cipher[] = {
		LUA_API_FIELD_STRING("name", t->cipher),
		LUA_API_FIELD_STRING("standardName", t->standard_cipher),
		LUA_API_FIELD_STRING("version", t->protocol),
	};
	lua_createtable(L, 0, 3);
	lua_api_set_fields(L, -1, cipher, sizeof cipher / sizeof cipher[0]);
}

static int tls_conn_cipher(lua_State *L)
{
	tls_push_cipher(L, tls_conn_check(L));
	return 1;
}

static int tls_conn_protocol(lua_State *L)
{
	lua_pushstring(L, tls_conn_check(L)->protocol);
	return 1;
}

static int tls_conn_index(lua_State *L)
{
	struct lua_tls_conn *t = tls_conn_check(L);
	const char *key = luaL_checkstring(L, 2);
	if (strcmp(key, "authorized") == 0) {
		lua_pushboolean(L, t->authorized);
	} else if (strcmp(key, "authorizationError") == 0) {
		if (t->authorization_error[0])
			lua_pushstring(L, t->authorization_error);
		else
			lua_pushnil(L);
	} else {
		lua_getmetatable(L, 1);
		lua_getfield(L, -1, "methods");
		lua_getfield(L, -1, key);
	}
	return 1;
}

static int tls_conn_gc(lua_State *L)
{
	struct lua_tls_conn *t = tls_conn_check(L);
	luaL_unref(L, LUA_REGISTRYINDEX, t->cert_ref);
	t->cert_ref = LUA_NOREF;
	return 0;
}

/* The class, made on first use: the methods sit beside the properties
 * that __index answers. */
static const struct lua_api_class *tls_conn_class_of(lua_State *L)
{
	static const luaL_Reg methods[] = {
		{"getPeerCertificate", tls_conn_peer_certificate},
		{"getCipher", tls_conn_cipher},
		{"getProtocol", tls_conn_protocol},
		{NULL, NULL},
	};
	static const luaL_Reg meta[] = {
		{"__index", tls_conn_index},
		{"__gc", tls_conn_gc},
		{NULL, NULL},
	};
	if (tls_conn_class.ref != LUA_NOREF)
		return &tls_conn_class;
	tls_conn_class = lua_api_class(L, NULL, meta);
	lua_rawgeti(L, LUA_REGISTRYINDEX, tls_conn_class.ref);
	lua_newtable(L);
	luaL_register(L, NULL, methods);
	lua_setfield(L, -2, "methods");
	lua_pop(L, 1);
	return &tls_conn_class;
}

static void tls_conn_fill(struct lua_tls_conn *t, struct conn *c)
{
	const SSL_CIPHER *cipher = SSL_get_current_cipher(c->ssl);
	snprintf(t->protocol, sizeof t->protocol, "%s", SSL_get_version(c->ssl));
	snprintf(t->cipher, sizeof t->cipher, "%s", cipher ? SSL_CIPHER_get_name(cipher) : "");
	snprintf(t->standard_cipher, sizeof t->standard_cipher, "%s",
	         cipher ? SSL_CIPHER_standard_name(cipher) : "");
	X509 *peer = SSL_get1_peer_certificate(c->ssl);
	long result = SSL_get_verify_result(c->ssl);
	t->authorized = peer && result == X509_V_OK;
	if (!(SSL_get_verify_mode(c->ssl) & SSL_VERIFY_PEER))
		t->authorization_error[0] = '\0';
	else if (!peer)
		snprintf(t->authorization_error, sizeof t->authorization_error,
		         "PEER_DID_NOT_RETURN_A_CERTIFICATE");
	else if (result != X509_V_OK)
		snprintf(t->authorization_error, sizeof t->authorization_error, "%s",
		         tls_verify_code(result));
	X509_free(peer);
}

void lua_tls_push_conn(lua_State *L, struct conn *c)
{
	struct lua_session_state *s = lua_state_of(c);
	if (s->tls_obj_ref != LUA_NOREF) {
		lua_rawgeti(L, LUA_REGISTRYINDEX, s->tls_obj_ref);
		return;
	}
	struct lua_tls_conn *t = lua_api_newudata(L, sizeof *t, tls_conn_class_of(L));
	t->c = c;
	t->cert_ref = LUA_NOREF;
	tls_conn_fill(t, c);
	lua_pushvalue(L, -1);
	s->tls_obj_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

void lua_tls_detach(struct conn *c)
{
	struct lua_session_state *s = lua_state_of(c);
	if (s->tls_obj_ref == LUA_NOREF)
		return;
	lua_State *L = lua_main;
	lua_rawgeti(L, LUA_REGISTRYINDEX, s->tls_obj_ref);
	struct lua_tls_conn *t = lua_touserdata(L, -1);
	t->c = NULL;
	lua_pop(L, 1);
	luaL_unref(L, LUA_REGISTRYINDEX, s->tls_obj_ref);
	s->tls_obj_ref = LUA_NOREF;
}

void lua_tls_session_fields(struct conn *c)
{
	lua_State *L = lua_main;
	/* Not the conn object: that lives as long as the session, and only
	 * onSecure needs one. */
	struct lua_tls_conn t;
	tls_conn_fill(&t, c);
	const struct lua_api_field secured[] = {
		LUA_API_FIELD_BOOLEAN("secure", true),
		LUA_API_FIELD_STRING("servername", c->servername),
	};
	lua_session_push(L, c);
	lua_api_set_fields(L, -1, secured, sizeof secured / sizeof secured[0]);
	tls_push_cipher(L, &t);
	lua_api_rawsetfield(L, -2, "tlsOptions");
	lua_pop(L, 1);
}

/* context(opts) -> an OpenSSL context for SNICallback | nil, err */
static int tls_lua_context(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	char err[512];
	SSL_CTX *ctx = tls_context_from_lua(L, 1, err, sizeof err);
	if (!ctx)
		return lua_api_fail(L, err);
	tls_context_push(L, ctx);
	return 1;
}

int luaopen_smtp_tls(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{"context", tls_lua_context},
		{NULL, NULL},
	};
	return lua_api_module(L, fns);
}
