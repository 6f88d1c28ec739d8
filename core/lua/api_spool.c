/* api_spool — smtp.core.spool (internal: luasmtpd's own Lua modules use
 * it, scripts have no need to):
 *
 *   local sp = spool.new()        -- memory up to 256 KiB, then a file in $TMPDIR
 *   sp:write(s)                   -- true, or nil, err ("No space left on device")
 *   sp:size()                     -- bytes written
 *   sp:read(offset, n)            -- up to n bytes from offset (0-based), nil at the end
 *   sp:close()                    -- frees it now (else the GC does)
 *
 * A closed spool's read and write give nil, "closed". */
#include "lua/api_spool.h"

#include "lua/lua_api.h"
#include "lua/modules.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

/* A message over this many bytes goes to a temporary file. */
#define SPOOL_MEMORY_MAX (256 * 1024)

struct lua_spool {
	struct spool sp;
	bool closed;
};

static struct lua_api_class spool_class = LUA_API_CLASS_NONE;

static struct lua_spool *check(lua_State *L, int idx)
{
	return lua_api_checkudata(L, idx, &spool_class, "spool");
}

struct spool *lua_spool_check(lua_State *L, int idx)
{
	struct lua_spool *s = check(L, idx);
	luaL_argcheck(L, !s->closed, idx, "closed spool");
	return &s->sp;
}

/* new() -> spool */
static int spool_new(lua_State *L)
{
	struct lua_spool *s = lua_api_newudata(L, sizeof *s, &spool_class);
	spool_init(&s->sp, SPOOL_MEMORY_MAX, NULL);
	return 1;
}

/* sp:write(s) -> true | nil, err */
static int spool_write_lua(lua_State *L)
{
	struct lua_spool *s = check(L, 1);
	size_t len;
	const char *data = luaL_checklstring(L, 2, &len);
	if (s->closed)
		return lua_api_fail(L, LUA_ERR_CLOSED);
	int err = spool_write(&s->sp, data, len);
	if (err)
		return lua_api_fail(L, lua_api_errno(err));
	lua_pushboolean(L, 1);
	return 1;
}

/* sp:size() -> bytes written */
static int spool_size_lua(lua_State *L)
{
	struct lua_spool *s = check(L, 1);
	lua_pushnumber(L, (lua_Number)s->sp.size);
	return 1;
}

/* sp:read(offset, n) -> up to n bytes | nil at the end | nil, err */
static int spool_read_lua(lua_State *L)
{
	struct lua_spool *s = check(L, 1);
	lua_Number offset = luaL_checknumber(L, 2);
	lua_Number n = luaL_checknumber(L, 3);
	luaL_argcheck(L, offset >= 0, 2, "offset must be >= 0");
	luaL_argcheck(L, n >= 1 && n <= (lua_Number)(1u << 30), 3, "n out of range");
	if (s->closed)
		return lua_api_fail(L, LUA_ERR_CLOSED);
	if (offset >= (lua_Number)s->sp.size) {
		lua_pushnil(L);
		return 1;
	}
	uint64_t at = (uint64_t)offset;
	size_t len = (size_t)n;
	if (len > s->sp.size - at)
		len = (size_t)(s->sp.size - at);
	const char *mem = spool_memory(&s->sp);
	if (mem) { /* no copy but Lua's own */
		lua_pushlstring(L, mem + at, len);
		return 1;
	}
	char *buf = malloc(len);
	if (!buf)
		return lua_api_fail(L, lua_api_errno(ENOMEM));
	ssize_t got = spool_read(&s->sp, at, buf, len);
	int err = errno;
	if (got >= 0)
		lua_pushlstring(L, buf, (size_t)got);
	free(buf);
	if (got < 0)
		return lua_api_fail(L, lua_api_errno(err));
	return 1;
}

static int spool_close_lua(lua_State *L)
{
	struct lua_spool *s = check(L, 1);
	spool_free(&s->sp);
	s->closed = true;
	lua_pushboolean(L, 1);
	return 1;
}

static int spool_gc(lua_State *L)
{
	spool_free(&check(L, 1)->sp);
	return 0;
}

int luaopen_smtp_spool(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{"new", spool_new},
		{NULL, NULL},
	};
	static const luaL_Reg methods[] = {
		{"write", spool_write_lua},
		{"size", spool_size_lua},
		{"read", spool_read_lua},
		{"close", spool_close_lua},
		{NULL, NULL},
	};
	static const luaL_Reg meta[] = {
		{"__gc", spool_gc},
		{NULL, NULL},
	};
	if (spool_class.ref == LUA_NOREF)
		spool_class = lua_api_class(L, methods, meta);
	return lua_api_module(L, fns);
}
