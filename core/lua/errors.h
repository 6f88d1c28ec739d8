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
/* onData's stream once its message is over (the header edits'
 * own refusals are smtp/message.h's: "header already read", ...). */
#define LUA_ERR_GONE "the message is no longer available"

#endif
