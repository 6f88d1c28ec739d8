/* errors — the short strings an expected failure returns to Lua as
 * nil, err: one spelling each, for every module of the core (README,
 * "Errors"). A failure none of them names passes on the system's own
 * message (strerror, OpenSSL's reason, an option's error). */
#ifndef LUASMTPD_LUA_ERRORS_H
#define LUASMTPD_LUA_ERRORS_H

#define LUA_ERR_TIMEOUT "timeout"
#define LUA_ERR_CLOSED "closed"
#define LUA_ERR_REFUSED "connection refused"
#define LUA_ERR_NOT_FOUND "not found"
#define LUA_ERR_BAD_NAME "bad name"
#define LUA_ERR_BAD_ANSWER "bad answer"
#define LUA_ERR_TLS_ACTIVE "already using TLS"
/* the cosockets' own, spelled as lua-nginx-module spells them */
#define LUA_ERR_UNREAD "unread data in buffer"
#define LUA_ERR_DUBIOUS "connection in dubious state"
#define LUA_ERR_PATH_TOO_LONG "path too long"
#define LUA_ERR_HANDSHAKE "handshake failed"
#define LUA_ERR_VERIFY "certificate verify failed"
#define LUA_ERR_HOST_MISMATCH "certificate host mismatch"
#define LUA_ERR_BAD_OPTION "unsupported option"
#define LUA_ERR_BACKLOG "too many waiting connect operations"
/* onData's stream once its message is over (the header edits'
 * own refusals are smtp/message.h's: "header already read", ...). */
#define LUA_ERR_GONE "the message is no longer available"

#endif
