/* api_tls — what Lua sees of TLS: smtp.tls.context(opts), a connection's
 * session fields (secure, servername, tlsOptions) and the `conn` object
 * onSecure gets (getPeerCertificate, getCipher, getProtocol, authorized,
 * authorizationError), as Node's TLSSocket offers them. */
#ifndef LUASMTPD_LUA_API_TLS_H
#define LUASMTPD_LUA_API_TLS_H

#include <lua.h>

struct conn;

/* After a handshake: fills session.secure/servername/tlsOptions. */
void lua_tls_session_fields(struct conn *c);
/* Pushes c's TLS conn object (made on first use). */
void lua_tls_push_conn(lua_State *L, struct conn *c);
/* The connection is going: the object keeps answering from its copies. */
void lua_tls_detach(struct conn *c);
/* Pushes the certificate table of getPeerCertificate() for c, or nil. */
void lua_tls_push_peer_certificate(lua_State *L, struct conn *c);

#endif
