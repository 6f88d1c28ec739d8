/* api_client — smtp.client.proto, the parsing half of the relay client
 * (lua/smtp/client.lua does the talking on cosockets): a reply line read
 * against the reply it belongs to, the EHLO keywords as a table, and the
 * body writer that dot-stuffs (or, for BDAT, only ends lines) as chunks
 * stream through, from proto/smtp_client.c. */
#include "lua/lua_api.h"
#include "lua/modules.h"
#include "proto/smtp_client.h"

#include <stdlib.h>
#include <string.h>

static struct lua_api_class body_class = LUA_API_CLASS_NONE;

/* reply_line(line [, code, enhanced]) -> more, code, enhanced, text, or
 * nil, "bad answer". code and enhanced are what the reply's earlier lines
 * gave (nil for its first line). */
static int client_reply_line(lua_State *L)
{
	size_t len, elen = 0;
	const char *line = luaL_checklstring(L, 1, &len);
	struct smtp_client_reply r = {.code = (int)luaL_optinteger(L, 2, 0)};
	const char *enh = luaL_optlstring(L, 3, "", &elen);
	if (elen >= sizeof r.enhanced)
		return luaL_argerror(L, 3, "not an enhanced status code");
	memcpy(r.enhanced, enh, elen + 1);
	const char *text;
	size_t tl;
	enum smtp_client_status st = smtp_client_reply_line(&r, line, len, &text, &tl);
	if (st == SMTP_CLIENT_BAD)
		return lua_api_fail(L, LUA_ERR_BAD_ANSWER);
	lua_pushboolean(L, st == SMTP_CLIENT_MORE);
	lua_pushinteger(L, r.code);
	lua_pushstring(L, r.enhanced);
	lua_pushlstring(L, text, tl);
	return 4;
}

/* ehlo({line2, line3, ...}) -> {pipelining = true, size = n, auth = {PLAIN = true}, ...} */
static int client_ehlo(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	struct smtp_client_ext e = {0};
	for (int i = 1;; i++) {
		lua_rawgeti(L, 1, i);
		size_t len;
		const char *s = lua_tolstring(L, -1, &len);
		lua_pop(L, 1);
		if (!s)
			break;
		smtp_client_ehlo_line(&e, s, len);
	}
	lua_createtable(L, 0, 12);
	for (const struct smtp_client_flag *f = smtp_client_flags; f->keyword; f++) {
		lua_pushboolean(L, *(bool *)((char *)&e + f->offset));
		lua_setfield(L, -2, f->name);
	}
	if (e.size) {
		lua_pushnumber(L, (lua_Number)e.max_size); /* 0: no limit */
		lua_setfield(L, -2, "size");
	}
	lua_createtable(L, 0, 4);
	for (const struct smtp_client_mech *m = smtp_client_mechs; m->name; m++) {
		lua_pushboolean(L, (e.auth & m->bit) != 0);
		lua_setfield(L, -2, m->name);
	}
	lua_setfield(L, -2, "auth");
	return 1;
}

/* body(dots, normalize) -> a writer: w:feed(chunk) -> bytes to send,
 * w:finish() -> the end (CRLF if missing, ".\r\n" after DATA). */
static int client_body(lua_State *L)
{
	bool dots = lua_toboolean(L, 1), normalize = lua_toboolean(L, 2);
	struct smtp_client_body *b = lua_api_newudata(L, sizeof *b, &body_class);
	smtp_client_body_init(b, dots, normalize);
	return 1;
}

static struct smtp_client_body *check_body(lua_State *L)
{
	return lua_api_checkudata(L, 1, &body_class, "body writer");
}

static int body_feed(lua_State *L)
{
	struct smtp_client_body *b = check_body(L);
	size_t len;
	const char *in = luaL_checklstring(L, 2, &len);
	if (len > ((size_t)-1 - 2) / 2)
		return luaL_argerror(L, 2, "too long");
	bool held = b->cr;
	int top = lua_gettop(L);
	luaL_Buffer buf;
	luaL_buffinit(L, &buf);
	size_t total = 0;
	/* Through the buffer in pieces of at most LUAL_BUFFERSIZE output:
	 * SMTP_CLIENT_BODY_OUT of a piece of in must fit. */
	size_t step = (LUAL_BUFFERSIZE - 2) / 2;
	for (size_t off = 0; off < len; off += step) {
		size_t n = len - off < step ? len - off : step;
		char *out = luaL_prepbuffer(&buf);
		size_t o = smtp_client_body_feed(b, in + off, n, out);
		luaL_addsize(&buf, o);
		total += o;
	}
	if (!held && !b->cr && total == len) {
		/* nothing to stuff or mend (the usual message): the chunk itself
		 * goes out, with no second string made of it */
		lua_settop(L, top);
		lua_pushvalue(L, 2);
		return 1;
	}
	luaL_pushresult(&buf);
	return 1;
}

static int body_finish(lua_State *L)
{
	struct smtp_client_body *b = check_body(L);
	char out[SMTP_CLIENT_BODY_END];
	lua_pushlstring(L, out, smtp_client_body_end(b, out));
	return 1;
}

int luaopen_smtp_client_proto(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{"reply_line", client_reply_line},
		{"ehlo", client_ehlo},
		{"body", client_body},
		{NULL, NULL},
	};
	static const luaL_Reg methods[] = {
		{"feed", body_feed},
		{"finish", body_finish},
		{NULL, NULL},
	};
	if (body_class.ref == LUA_NOREF)
		body_class = lua_api_class(L, methods, NULL);
	return lua_api_module(L, fns);
}
