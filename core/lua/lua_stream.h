/* lua_stream — the message body as onData sees it: stream:read(),
 * stream:chunks(), stream:save(path [, prefix]), stream.byteLength,
 * stream.sizeExceeded. The stream reads from its connection while the
 * message is in flight and keeps its final figures once detached. Once the
 * core refuses the message (body_verdict) it hands out nothing more and
 * reports the refusal where the end would have been. */
#ifndef LUASMTPD_LUA_STREAM_H
#define LUASMTPD_LUA_STREAM_H

#include <lua.h>
#include <stddef.h>

struct conn;

void lua_stream_register(lua_State *L);
/* Pushes a new stream for c's current message onto L. */
void lua_stream_push(lua_State *L, struct conn *c);
/* New body bytes are pending or the body ended: wake a waiting reader/saver. */
void lua_stream_feed(struct conn *c);
/* n new body bytes at p, valid only during the call: a reader or saver
 * waiting for them takes them from there, else they join the pending ones. */
void lua_stream_feed_bytes(struct conn *c, const char *p, size_t n);
/* The message is over or the connection is gone: cut the stream loose and
 * drop an unfinished stream:save() file. */
void lua_stream_detach(struct conn *c);
/* The session ends: its stream slot goes. */
void lua_stream_free(struct conn *c);

#endif
