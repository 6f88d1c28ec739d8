/* api_spool — smtp.core.spool, the Lua face of base/spool.c: the one
 * copy of a message that declared milters (lua/smtp/milters.lua) and
 * smtp.mime's stream parsing keep while they read it. */
#ifndef LUASMTPD_LUA_API_SPOOL_H
#define LUASMTPD_LUA_API_SPOOL_H

#include "base/spool.h"

#include <lua.h>

/* The spool of the smtp.core.spool userdata at idx (raises if it is not
 * one, or is closed). */
struct spool *lua_spool_check(lua_State *L, int idx);

#endif
