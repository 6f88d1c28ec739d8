/* server_ops — the Lua runtime as the server's configurer. net/server.c
 * loads no script and knows no Lua: it reloads, holds and drops configs,
 * rebuilds TLS when certificate files change, and starts the runtime's
 * guard through the struct server_ops main.c gives it, which is this one. */
#ifndef LUASMTPD_LUA_SERVER_OPS_H
#define LUASMTPD_LUA_SERVER_OPS_H

#include "net/server.h"

#include <lua.h>

extern const struct server_ops lua_server_ops;

/* smtp.server:updateSecureContext(opts at idx of L): every listener's TLS
 * built again with opts over its own options, which they then become. */
bool lua_update_secure_context(struct server *srv, lua_State *L, int idx, char *err, size_t errlen);

#endif
