/* api_replies — smtp.replies inside the server: the reply catalogue of
 * proto/replies.c exported to scripts (and to the testing kit's recorder),
 * preloaded so that require "smtp.replies" never reads a copy. */
#ifndef LUASMTPD_API_REPLIES_H
#define LUASMTPD_API_REPLIES_H

#include <lua.h>

int luaopen_smtp_replies(lua_State *L);

#endif
