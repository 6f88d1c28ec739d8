#ifndef LUASMTPD_LUA_SERVER_H
#define LUASMTPD_LUA_SERVER_H

#include <lua.h>

/* Adds the server_* functions to the smtp.core table at the top of L. */
void lua_server_register(lua_State *L);

#endif
