/* tls_options — the TLS options of a Lua table (key, cert, ca, pfx,
 * minVersion, ...) read into tls/'s struct tls_options, and the
 * smtp.tls.context objects that hold the contexts built from them. The one
 * place where a Lua value becomes a TLS setting: the listener's options,
 * sniOptions, smtp.tls.context{}, updateSecureContext and a cosocket's
 * sslhandshake{ca = ...} all come through here. */
#ifndef LUASMTPD_LUA_TLS_OPTIONS_H
#define LUASMTPD_LUA_TLS_OPTIONS_H

#include "tls/tls_context.h"

#include <lua.h>

/* Reads the options table at idx into o. The strings stay the table's
 * (o is good while the table is unchanged); the ca list is allocated:
 * tls_options_lua_free(o) releases it. false and err naming the option
 * ("option 'ciphers': expected a string, got number") on a wrong type. */
bool tls_options_from_lua(lua_State *L, int idx, struct tls_options *o, char *err, size_t errlen);
void tls_options_lua_free(struct tls_options *o);

/* A context from the options table at idx (already merged with the
 * defaults); NULL and err. */
SSL_CTX *tls_context_from_lua(lua_State *L, int idx, char *err, size_t errlen);
/* A trust store from a ca value at idx (PEM text or a path, or a list of
 * them); NULL and err. */
X509_STORE *tls_ca_store_from_lua(lua_State *L, int idx, char *err, size_t errlen);

/* smtp.tls.context(opts) objects: a userdata owning an SSL_CTX reference. */
void tls_context_push(lua_State *L, SSL_CTX *ctx);
SSL_CTX *tls_context_check(lua_State *L, int idx); /* NULL if not one */
void tls_context_register(lua_State *L);

#endif
