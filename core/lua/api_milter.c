/* api_milter — smtp.milter.proto, the packet half of the milter client
 * (lua/smtp/milter.lua does the talking on cosockets): each command's
 * packet written, a reply's length read from its header and the reply
 * decoded into a table, from proto/milter.c. */
#include "lua/lua_api.h"
#include "lua/modules.h"
#include "proto/milter.h"

#include <stdlib.h>

/* The packet writers' bound: the data plus the header and a NUL a string. */
#define PACKET_CAP(data_len, strings) ((data_len) + MILTER_HEADER + (strings) + 16)

static struct milter_str check_str(lua_State *L, int idx)
{
	struct milter_str s;
	s.s = luaL_checklstring(L, idx, &s.len);
	return s;
}

/* Pushes the packet out[0..n), or raises when a string held a NUL. */
static int push_packet(lua_State *L, char *out, size_t n)
{
	if (n == 0) {
		free(out);
		return luaL_error(L, "a milter string holds a NUL");
	}
	lua_pushlstring(L, out, n);
	free(out);
	return 1;
}

static char *alloc(lua_State *L, size_t cap)
{
	char *out = malloc(cap);
	if (!out)
		luaL_error(L, "out of memory");
	return out;
}

/* optneg(actions, protocol) -> packet (version 6) */
static int milter_optneg(lua_State *L)
{
	char out[MILTER_HEADER + 12];
	size_t n = milter_encode_optneg(out, sizeof out, MILTER_VERSION,
	                                (uint32_t)luaL_checknumber(L, 1), (uint32_t)luaL_checknumber(L, 2));
	lua_pushlstring(L, out, n);
	return 1;
}

/* connect(host, family, port, addr) -> packet; family "4", "6", "L" or "U" */
static int milter_connect(lua_State *L)
{
	struct milter_str host = check_str(L, 1), addr = {"", 0};
	const char *family = luaL_checkstring(L, 2);
	lua_Integer port = luaL_optinteger(L, 3, 0);
	if (family[0] != 'U')
		addr = check_str(L, 4);
	luaL_argcheck(L, port >= 0 && port <= 65535, 3, "not a port");
	size_t cap = PACKET_CAP(host.len + addr.len, 2) + 3;
	char *out = alloc(L, cap);
	return push_packet(L, out, milter_encode_connect(out, cap, host, family[0], (uint16_t)port, addr));
}

/* command(cmd, string...) -> packet: HELO, MAIL, RCPT, HEADER, EOH, ... */
static int milter_command(lua_State *L)
{
	size_t clen;
	const char *cmd = luaL_checklstring(L, 1, &clen);
	luaL_argcheck(L, clen == 1, 1, "not a command byte");
	int n = lua_gettop(L) - 1;
	struct milter_str *s = lua_newuserdata(L, sizeof *s * (size_t)(n > 0 ? n : 1));
	size_t total = 0;
	for (int i = 0; i < n; i++) {
		s[i] = check_str(L, i + 2);
		total += s[i].len;
	}
	size_t cap = PACKET_CAP(total, (size_t)n);
	char *out = alloc(L, cap);
	return push_packet(L, out, milter_encode_strings(out, cap, cmd[0], s, (size_t)n));
}

/* macro(cmd, {name1, value1, name2, value2, ...}) -> packet */
static int milter_macro(lua_State *L)
{
	const char *cmd = luaL_checkstring(L, 1);
	luaL_checktype(L, 2, LUA_TTABLE);
	size_t n = lua_objlen(L, 2) / 2, total = 0;
	struct milter_str *nv = lua_newuserdata(L, sizeof *nv * (2 * n + 1));
	for (size_t i = 0; i < 2 * n; i++) {
		lua_rawgeti(L, 2, (int)i + 1);
		nv[i].s = lua_tolstring(L, -1, &nv[i].len);
		if (!nv[i].s)
			return luaL_argerror(L, 2, "macro names and values are strings");
		total += nv[i].len;
		lua_pop(L, 1); /* the string stays in the table */
	}
	size_t cap = PACKET_CAP(total, 2 * n) + 1;
	char *out = alloc(L, cap);
	return push_packet(L, out, milter_encode_macro(out, cap, cmd[0], nv, n));
}

/* body(chunk) -> packet; the chunk is at most 65535 bytes */
static int milter_body(lua_State *L)
{
	size_t len;
	const char *chunk = luaL_checklstring(L, 1, &len);
	luaL_argcheck(L, len <= MILTER_CHUNK_MAX, 1, "a body chunk is at most 65535 bytes");
	size_t cap = PACKET_CAP(len, 0);
	char *out = alloc(L, cap);
	return push_packet(L, out, milter_encode_body(out, cap, chunk, len));
}

/* length(header) -> bytes that follow, or nil, "bad answer" */
static int milter_length(lua_State *L)
{
	size_t len;
	const char *hdr = luaL_checklstring(L, 1, &len);
	luaL_argcheck(L, len == 4, 1, "not a 4-byte header");
	uint32_t n = milter_packet_len((const unsigned char *)hdr);
	if (n == 0)
		return lua_api_fail(L, LUA_ERR_BAD_ANSWER);
	lua_pushinteger(L, n);
	return 1;
}

static void set_str(lua_State *L, const char *key, struct milter_str s)
{
	if (!s.s)
		return;
	lua_pushlstring(L, s.s, s.len);
	lua_setfield(L, -2, key);
}

/* decode(packet) -> {code, index, version, actions, protocol, a, b,
 * smtp_code, symlist = {[stage] = "macros"}} or nil, "bad answer" */
static int milter_decode_reply(lua_State *L)
{
	size_t len;
	const char *pkt = luaL_checklstring(L, 1, &len);
	struct milter_reply r;
	if (milter_decode(&r, pkt, len) != 0)
		return lua_api_fail(L, LUA_ERR_BAD_ANSWER);
	lua_createtable(L, 0, 8);
	lua_pushlstring(L, &r.code, 1);
	lua_setfield(L, -2, "code");
	set_str(L, "a", r.a);
	set_str(L, "b", r.b);
	const struct lua_api_field f[] = {
		LUA_API_FIELD_INTEGER("index", r.index),
		LUA_API_FIELD_INTEGER("smtp_code", r.smtp_code),
		LUA_API_FIELD_INTEGER("version", r.version),
		LUA_API_FIELD_INTEGER("actions", r.actions),
		LUA_API_FIELD_INTEGER("protocol", r.protocol),
	};
	lua_api_set_fields(L, -1, f, sizeof f / sizeof f[0]);
	if (r.code == MILTER_R_OPTNEG) {
		lua_createtable(L, MILTER_STAGES, 0);
		for (int i = 0; i < MILTER_STAGES; i++)
			if (r.symlist[i].s) {
				lua_pushlstring(L, r.symlist[i].s, r.symlist[i].len);
				lua_rawseti(L, -2, i);
			}
		lua_setfield(L, -2, "symlist");
	}
	return 1;
}

int luaopen_smtp_milter_proto(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{"optneg", milter_optneg},
		{"connect", milter_connect},
		{"command", milter_command},
		{"macro", milter_macro},
		{"body", milter_body},
		{"length", milter_length},
		{"decode", milter_decode_reply},
		{NULL, NULL},
	};
	return lua_api_module(L, fns);
}
