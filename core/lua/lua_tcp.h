/* lua_tcp — smtp.tcp(), a non-blocking TCP (and TLS) client for hooks, in
 * the manner of OpenResty's cosockets: calls read as blocking code but
 * suspend only the calling hook while the loop serves everyone else.
 * Failures and timeouts return nil, err; timeouts are in seconds. */
#ifndef LUASMTPD_LUA_TCP_H
#define LUASMTPD_LUA_TCP_H

#include <lua.h>

/* Adds tcp() to the smtp.core table at the top of L. */
void lua_tcp_register(lua_State *L);

#endif
