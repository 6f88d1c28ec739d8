#include "smtp/smtp_log.h"
#include "smtp/session.h"

#include "base/buf.h"
#include "net/conn.h"
#include "lua/lua_runtime.h"
#include "lua/lua_session.h"

#include <stdio.h>
#include <string.h>

/* A reply's text is at most ~1 KiB; a log line need not carry more than
 * this of it (queue ids come early). */
#define LOG_REPLY_MAX 512

/* The reply line at *p (without its CRLF), bounded; *p moves past it. */
static void log_next_reply(const char **p, const char *end, char *out, size_t outlen)
{
	const char *eol = memchr(*p, '\r', (size_t)(end - *p));
	size_t n = (size_t)((eol ? eol : end) - *p);
	snprintf(out, outlen, "%.*s", (int)(n < outlen - 1 ? n : outlen - 1), *p);
	*p = eol && eol + 2 <= end ? eol + 2 : end;
}

/* Pushes the string field at path "a.b" of the table at idx, or nil. */
static const char *log_field_at(lua_State *L, int idx, const char *a, const char *b)
{
	lua_getfield(L, idx, a);
	if (b && lua_type(L, -1) == LUA_TTABLE)
		lua_getfield(L, -1, b);
	else if (b)
		lua_pushnil(L);
	return lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
}

/* The recipients' addresses, comma-separated: all of them (first = 0), or
 * only the first-th (LMTP, one line per recipient). */
static void log_recipients(lua_State *L, int rcpts, int first, struct buf *to)
{
	to->len = 0;
	int n = lua_type(L, rcpts) == LUA_TTABLE ? (int)lua_objlen(L, rcpts) : 0;
	for (int i = first ? first : 1; i <= (first ? first : n) && i <= n; i++) {
		lua_rawgeti(L, rcpts, i);
		lua_getfield(L, -1, "address");
		size_t len;
		const char *a = lua_tolstring(L, -1, &len);
		if (a && to->len)
			buf_append(to, ",", 1);
		if (a)
			buf_append(to, a, len);
		lua_pop(L, 2);
	}
	buf_append(to, "", 1);
}

void smtp_log_message(struct conn *c, const char *replies, size_t len)
{
	struct smtp_session *s = conn_session(c);
	if (!log_enabled(LOG_INFO))
		return;
	lua_State *L = lua_main;
	int top = lua_gettop(L);
	lua_session_push(L, c);
	int session = lua_gettop(L);
	lua_getfield(L, session, "envelope");
	int envelope = lua_gettop(L);
	lua_getfield(L, envelope, "rcptTo");
	int rcpts = lua_gettop(L);
	const char *from = log_field_at(L, envelope, "mailFrom", "address");
	const char *user = log_field_at(L, session, "user", NULL);
	const char *tls = log_field_at(L, session, "tlsOptions", "version");
	const char *cipher = log_field_at(L, session, "tlsOptions", "name");
	char size[24], ms[32], reply[LOG_REPLY_MAX + 1];
	snprintf(size, sizeof size, "%llu", (unsigned long long)s->body->byte_length);
	snprintf(ms, sizeof ms, "%.3f", s->hook_seconds * 1000);
	/* LMTP: RFC 2033 gives a reply per recipient, each its own verdict. */
	int lines = smtp_opt(c)->lmtp ? (int)s->tx.nrcpt : 1;
	struct buf to = {0};
	const char *p = replies, *end = replies + len;
	for (int i = 1; i <= lines && p < end; i++) {
		log_recipients(L, rcpts, smtp_opt(c)->lmtp ? i : 0, &to);
		log_next_reply(&p, end, reply, sizeof reply);
		conn_log(c, LOG_INFO, "message", "client", c->remote_addr, "tls", tls, "cipher", cipher, "user",
		         user, "from", from, "to", to.data, "size", size, "reply", reply, "hook_ms", ms, NULL);
	}
	buf_free(&to);
	lua_settop(L, top);
}

void smtp_log_refused(struct conn *c, bool rcpt, const char *address, const char *reply, size_t len)
{
	if (!log_enabled(LOG_INFO))
		return;
	lua_State *L = lua_main;
	int top = lua_gettop(L);
	const char *from = address;
	if (rcpt) {
		lua_session_push(L, c);
		lua_getfield(L, -1, "envelope");
		from = log_field_at(L, lua_gettop(L), "mailFrom", "address");
	}
	char line[LOG_REPLY_MAX + 1];
	log_next_reply(&reply, reply + len, line, sizeof line);
	conn_log(c, LOG_INFO, rcpt ? "recipient refused" : "sender refused", "client", c->remote_addr, "from",
	         from, "to", rcpt ? address : NULL, "reply", line, NULL);
	lua_settop(L, top);
}
