/* api_shdict — ngx.shared.DICT: dictionaries shared by every worker, with
 * lua-nginx-module's methods, return values and error strings, on the
 * store of base/shm.c. Preloaded as "smtp.ngx.shdict" = {declare, shared}:
 * declare(name, bytes) runs while the script loads, so in the master
 * before it forks its workers, who all inherit the same mapping. A reload
 * that declares a dictionary of the same name and size keeps its region
 * and its contents; a new size starts an empty one (workers still serving
 * the old script keep the old region until they exit). */
#include "base/shm.h"
#include "lua/lua_api.h"
#include "lua/modules.h"

#include <stdlib.h>
#include <string.h>

#define SHDICT_CLASS "ngx.shared.DICT"
#define SHDICT_KEYS_DEFAULT 1024

/* Every region declared in this process across reloads, newest first. */
struct shdict_region {
	char *name;
	size_t size;
	struct shm_zone *zone;
	struct shdict_region *next;
};

static struct shdict_region *regions;
static struct lua_api_class shdict_class = LUA_API_CLASS_NONE;

struct lua_shdict {
	struct shm_zone *zone;
};

static struct shm_zone *shdict_check(lua_State *L)
{
	return ((struct lua_shdict *)lua_api_checkudata(L, 1, &shdict_class, SHDICT_CLASS))->zone;
}

/* The key at 2, or NULL with nil, err pushed (as lua-nginx-module). */
static const char *shdict_key(lua_State *L, size_t *klen)
{
	const char *key = luaL_checklstring(L, 2, klen);
	if (*klen == 0) {
		lua_api_fail(L, "empty key");
		return NULL;
	}
	if (*klen > SHM_MAX_KEY) {
		lua_api_fail(L, "key too long");
		return NULL;
	}
	return key;
}

/* A ttl argument in seconds: nil or 0 means never; negative raises. */
static double shdict_ttl(lua_State *L, int idx, const char *what)
{
	double ttl = luaL_optnumber(L, idx, 0);
	if (ttl < 0)
		luaL_argerror(L, idx, lua_pushfstring(L, "bad \"%s\" argument", what));
	return ttl;
}

static const char *shdict_status_text(enum shm_status st)
{
	switch (st) {
	case SHM_NOT_FOUND: return LUA_ERR_NOT_FOUND;
	case SHM_EXISTS: return "exists";
	case SHM_NO_MEMORY: return "no memory";
	case SHM_NOT_NUMBER: return "not a number";
	default: return NULL;
	}
}

static void shdict_push_value(lua_State *L, const struct shm_value *v)
{
	switch (v->type) {
	case SHM_STRING:
		lua_pushlstring(L, v->str, v->len);
		free((char *)v->str);
		break;
	case SHM_NUMBER:
		lua_pushnumber(L, v->num);
		break;
	case SHM_BOOLEAN:
		lua_pushboolean(L, v->boolean);
		break;
	default:
		lua_pushnil(L);
	}
}

/* value, flags [, stale]: flags only when non-zero, as lua-nginx-module
 * (get_stale pushes nil in their place). */
static int shdict_get_common(lua_State *L, bool stale_ok)
{
	struct shm_zone *z = shdict_check(L);
	size_t klen;
	const char *key = shdict_key(L, &klen);
	if (!key)
		return 2;
	struct shm_value v;
	bool stale = false;
	if (shm_get(z, key, klen, stale_ok, &v, &stale) != SHM_OK) {
		lua_pushnil(L);
		return 1;
	}
	shdict_push_value(L, &v);
	if (v.flags)
		lua_pushinteger(L, v.flags);
	else if (stale_ok)
		lua_pushnil(L);
	else
		return 1;
	if (!stale_ok)
		return 2;
	lua_pushboolean(L, stale);
	return 3;
}

static int shdict_get(lua_State *L)
{
	return shdict_get_common(L, false);
}

static int shdict_get_stale(lua_State *L)
{
	return shdict_get_common(L, true);
}

/* set/safe_set/add/safe_add/replace(key, value, exptime, flags):
 * ok, err, forcible. */
static int shdict_store(lua_State *L, enum shm_set_mode mode)
{
	struct shm_zone *z = shdict_check(L);
	size_t klen;
	const char *key = shdict_key(L, &klen);
	if (!key)
		return 2;
	struct shm_value v = {0};
	switch (lua_type(L, 3)) {
	case LUA_TSTRING:
		v.type = SHM_STRING;
		v.str = lua_tolstring(L, 3, &v.len);
		break;
	case LUA_TNUMBER:
		v.type = SHM_NUMBER;
		v.num = lua_tonumber(L, 3);
		break;
	case LUA_TBOOLEAN:
		v.type = SHM_BOOLEAN;
		v.boolean = lua_toboolean(L, 3);
		break;
	case LUA_TNIL:
	case LUA_TNONE:
		v.type = SHM_NIL;
		break;
	default:
		return lua_api_fail(L, "bad value type");
	}
	double ttl = shdict_ttl(L, 4, "exptime");
	v.flags = (uint32_t)luaL_optinteger(L, 5, 0);
	bool forcible = false;
	enum shm_status st = shm_set(z, key, klen, &v, ttl, mode, &forcible);
	lua_pushboolean(L, st == SHM_OK);
	if (st == SHM_OK)
		lua_pushnil(L);
	else
		lua_pushstring(L, shdict_status_text(st));
	lua_pushboolean(L, forcible);
	return 3;
}

static int shdict_set(lua_State *L)
{
	return shdict_store(L, SHM_SET);
}

static int shdict_safe_set(lua_State *L)
{
	return shdict_store(L, SHM_SAFE_SET);
}

static int shdict_add(lua_State *L)
{
	return shdict_store(L, SHM_ADD);
}

static int shdict_safe_add(lua_State *L)
{
	return shdict_store(L, SHM_SAFE_ADD);
}

static int shdict_replace(lua_State *L)
{
	return shdict_store(L, SHM_REPLACE);
}

static int shdict_delete(lua_State *L)
{
	lua_settop(L, 2);
	lua_pushnil(L);
	return shdict_store(L, SHM_SET);
}

/* incr(key, value, init, init_ttl): new value (with init: nil, forcible
 * too) or nil, err. */
static int shdict_incr(lua_State *L)
{
	struct shm_zone *z = shdict_check(L);
	size_t klen;
	const char *key = shdict_key(L, &klen);
	if (!key)
		return 2;
	if (!lua_isnumber(L, 3))
		return lua_api_fail(L, "value not a number");
	double by = lua_tonumber(L, 3), init = 0;
	bool has_init = !lua_isnoneornil(L, 4);
	if (has_init) {
		if (!lua_isnumber(L, 4))
			return lua_api_fail(L, "init not a number");
		init = lua_tonumber(L, 4);
	} else if (!lua_isnoneornil(L, 5)) {
		return luaL_error(L, "must provide \"init\" when providing \"init_ttl\"");
	}
	double init_ttl = shdict_ttl(L, 5, "init_ttl");
	double result = 0;
	bool forcible = false;
	enum shm_status st = shm_incr(z, key, klen, by, has_init ? &init : NULL, init_ttl, &result, &forcible);
	if (st != SHM_OK) {
		lua_api_fail(L, shdict_status_text(st));
	} else {
		lua_pushnumber(L, result);
		lua_pushnil(L);
	}
	if (!has_init)
		return st == SHM_OK ? 1 : 2; /* forcible only with init, as lua-nginx-module */
	lua_pushboolean(L, forcible);
	return 3;
}

static int shdict_ttl_method(lua_State *L)
{
	struct shm_zone *z = shdict_check(L);
	size_t klen;
	const char *key = shdict_key(L, &klen);
	if (!key)
		return 2;
	double ttl;
	if (shm_ttl(z, key, klen, &ttl) != SHM_OK)
		return lua_api_fail(L, LUA_ERR_NOT_FOUND);
	lua_pushnumber(L, ttl);
	return 1;
}

static int shdict_expire(lua_State *L)
{
	struct shm_zone *z = shdict_check(L);
	size_t klen;
	const char *key = shdict_key(L, &klen);
	if (!key)
		return 2;
	luaL_checknumber(L, 3);
	if (shm_expire(z, key, klen, shdict_ttl(L, 3, "exptime")) != SHM_OK)
		return lua_api_fail(L, LUA_ERR_NOT_FOUND);
	lua_pushboolean(L, 1);
	return 1;
}

static int shdict_flush_all(lua_State *L)
{
	shm_flush_all(shdict_check(L));
	return 0;
}

static int shdict_flush_expired(lua_State *L)
{
	struct shm_zone *z = shdict_check(L);
	lua_Integer max = luaL_optinteger(L, 2, 0);
	lua_pushinteger(L, (lua_Integer)shm_flush_expired(z, max > 0 ? (size_t)max : 0));
	return 1;
}

static void shdict_append_key(const char *key, size_t klen, void *ctx)
{
	lua_State *L = ctx;
	lua_pushlstring(L, key, klen);
	lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
}

static int shdict_get_keys(lua_State *L)
{
	struct shm_zone *z = shdict_check(L);
	lua_Integer max = luaL_optinteger(L, 2, SHDICT_KEYS_DEFAULT);
	if (max < 0)
		return luaL_argerror(L, 2, "bad \"max_count\" argument");
	lua_newtable(L);
	shm_keys(z, (size_t)max, shdict_append_key, L);
	return 1;
}

static int shdict_capacity(lua_State *L)
{
	lua_pushnumber(L, (lua_Number)shm_capacity(shdict_check(L)));
	return 1;
}

static int shdict_free_space(lua_State *L)
{
	lua_pushnumber(L, (lua_Number)shm_free_space(shdict_check(L)));
	return 1;
}

/* bytes as a number or as nginx writes sizes: "64k", "10m". */
static size_t shdict_bytes(lua_State *L, int idx)
{
	if (lua_type(L, idx) == LUA_TNUMBER)
		return (size_t)lua_tonumber(L, idx);
	const char *s = luaL_checkstring(L, idx);
	char *end;
	double n = strtod(s, &end);
	if (*end == 'k' || *end == 'K')
		n *= 1024, end++;
	else if (*end == 'm' || *end == 'M')
		n *= 1024 * 1024, end++;
	if (*end || n < 0)
		luaL_argerror(L, idx, "expected bytes (a number, or a size such as \"10m\")");
	return (size_t)n;
}

/* The region named name: the newest of that name when its size matches,
 * else a new one. A region of another size stays listed and mapped, since
 * sessions of the script being replaced may still use it. */
static struct shm_zone *shdict_region(lua_State *L, const char *name, size_t size)
{
	struct shdict_region *r = regions;
	while (r && strcmp(r->name, name) != 0)
		r = r->next;
	if (r && r->size == size)
		return r->zone;
	char err[128];
	struct shm_zone *z = shm_create(size, err, sizeof err);
	if (!z)
		luaL_error(L, "shared_dict %s: %s", name, err);
	r = calloc(1, sizeof *r);
	if (!r || !(r->name = strdup(name)))
		abort();
	r->size = size;
	r->zone = z;
	r->next = regions;
	regions = r;
	return z;
}

/* declare(name, bytes): the dictionary, also set as shared[name]. */
static int shdict_declare(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	size_t size = shdict_bytes(L, 2);
	if (!*name)
		return luaL_argerror(L, 1, "empty name");
	/* Only the script's main chunk runs on the main thread: hooks and
	 * timers run in coroutines, in workers, after the fork. */
	if (!lua_pushthread(L))
		return luaL_error(L, "shared_dict %s: declare it at the top of the script, while it loads", name);
	lua_pop(L, 1);
	struct lua_shdict *d = lua_api_newudata(L, sizeof *d, &shdict_class);
	d->zone = shdict_region(L, name, size);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_pushvalue(L, 1);
	lua_pushvalue(L, -3);
	lua_rawset(L, -3);
	lua_pop(L, 1);
	return 1;
}

static int shdict_tostring(lua_State *L)
{
	lua_pushfstring(L, SHDICT_CLASS ": %p", lua_touserdata(L, 1));
	return 1;
}

int luaopen_smtp_shdict(lua_State *L)
{
	static const luaL_Reg methods[] = {
		{"get", shdict_get},
		{"get_stale", shdict_get_stale},
		{"set", shdict_set},
		{"safe_set", shdict_safe_set},
		{"add", shdict_add},
		{"safe_add", shdict_safe_add},
		{"replace", shdict_replace},
		{"delete", shdict_delete},
		{"incr", shdict_incr},
		{"ttl", shdict_ttl_method},
		{"expire", shdict_expire},
		{"flush_all", shdict_flush_all},
		{"flush_expired", shdict_flush_expired},
		{"get_keys", shdict_get_keys},
		{"capacity", shdict_capacity},
		{"free_space", shdict_free_space},
		{NULL, NULL},
	};
	static const luaL_Reg meta[] = {
		{"__tostring", shdict_tostring},
		{NULL, NULL},
	};
	if (shdict_class.ref == LUA_NOREF)
		shdict_class = lua_api_class(L, methods, meta);
	lua_newtable(L);
	lua_newtable(L); /* shared: name -> dictionary, for this load of the script */
	lua_pushvalue(L, -1);
	lua_pushcclosure(L, shdict_declare, 1);
	lua_setfield(L, -3, "declare");
	lua_setfield(L, -2, "shared");
	return 1;
}
