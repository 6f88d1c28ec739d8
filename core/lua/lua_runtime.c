#include "lua/lua_runtime.h"
#include "lua/lua_timer.h"

#include "lua/lua_api.h"
#include "lua/lua_guard.h"
#include "lua/modules.h"
#include "base/log.h"
#include "base/metrics.h"
#include "lua/lua_session.h"
#include "lua/lua_stream.h"
#include "tls/tls_context.h"
#include "lua/tls_options.h"
#include "net/conn.h"

#include <lauxlib.h>
#include <lualib.h>

#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef LUASMTPD_LUA_DIR
#define LUASMTPD_LUA_DIR "/usr/local/share/luasmtpd/lua"
#endif

lua_State *lua_main;

static void lua_remember_base_modules(lua_State *L, const char *list);
static struct lua_api_class reject_class = LUA_API_CLASS_NONE;

#define THREAD_POOL_MAX 1024
static struct {
	lua_State *co;
	int ref;
} thread_pool[THREAD_POOL_MAX];
static size_t thread_pool_len;

lua_State *lua_thread_acquire(int *ref)
{
	if (thread_pool_len > 0) {
		thread_pool_len--;
		*ref = thread_pool[thread_pool_len].ref;
		return thread_pool[thread_pool_len].co;
	}
	lua_State *co = lua_newthread(lua_main);
	*ref = luaL_ref(lua_main, LUA_REGISTRYINDEX);
	return co;
}

void lua_thread_release(lua_State *co, int ref, bool reusable)
{
	if (reusable && thread_pool_len < THREAD_POOL_MAX) {
		lua_settop(co, 0);
		thread_pool[thread_pool_len].co = co;
		thread_pool[thread_pool_len].ref = ref;
		thread_pool_len++;
		return;
	}
	luaL_unref(lua_main, LUA_REGISTRYINDEX, ref);
}

bool lua_has_metatable(lua_State *L, int idx, const void *mt)
{
	if (!mt || !lua_getmetatable(L, idx))
		return false;
	bool is = lua_topointer(L, -1) == mt;
	lua_pop(L, 1);
	return is;
}

bool lua_is_reject(lua_State *L, int idx)
{
	return lua_type(L, idx) == LUA_TTABLE && lua_has_metatable(L, idx, reject_class.mt);
}

static int lua_core_pid(lua_State *L)
{
	lua_pushinteger(L, getpid());
	return 1;
}

static int lua_core_set_reject_metatable(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	luaL_unref(L, LUA_REGISTRYINDEX, reject_class.ref);
	lua_pushvalue(L, 1);
	reject_class = lua_api_class_of(L);
	return 0;
}

/* core.metrics_add(name, help, labels, n): labels already rendered. */
static int lua_core_metrics_add(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	const char *help = luaL_optstring(L, 2, "");
	const char *labels = luaL_optstring(L, 3, "");
	double n = luaL_optnumber(L, 4, 1);
	lua_pushboolean(L, metrics_custom_add(name, help, labels, n));
	return 1;
}

static char lua_dir[PATH_MAX];
static char session_id_context[33];

/* smtp.core: the facts of this process the public module needs. */
int luaopen_smtp_core(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{"pid", lua_core_pid},
		{"set_reject_metatable", lua_core_set_reject_metatable},
		{"metrics_add", lua_core_metrics_add},
		{NULL, NULL},
	};
	lua_api_module(L, fns);
	lua_pushfstring(L, "%s/../certs/dev/localhost.key", lua_dir);
	lua_setfield(L, -2, "dev_key");
	lua_pushfstring(L, "%s/../certs/dev/localhost.crt", lua_dir);
	lua_setfield(L, -2, "dev_cert");
	lua_pushstring(L, session_id_context);
	lua_setfield(L, -2, "session_id_context");
	return 1;
}

/* Does dir/smtp/init.lua exist? */
static bool lua_dir_ok(const char *dir)
{
	char probe[PATH_MAX + 32];
	struct stat st;
	snprintf(probe, sizeof probe, "%s/smtp/init.lua", dir);
	return stat(probe, &st) == 0;
}

/* The lua/ folder: $LUASMTPD_LUA_DIR; else next to the binary, as a build
 * tree (build/../lua) or an installed tree, wherever it was copied
 * (sbin/../share/luasmtpd/lua); else the compiled-in install path. */
static void lua_find_dir(char *out, size_t len)
{
	const char *env = getenv("LUASMTPD_LUA_DIR");
	if (env && *env) {
		snprintf(out, len, "%s", env);
		return;
	}
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	char *slash = n > 0 ? memrchr(exe, '/', (size_t)n) : NULL;
	if (slash) {
		*slash = '\0';
		static const char *const rel[] = {"/../lua", "/../share/luasmtpd/lua"};
		for (size_t i = 0; i < sizeof rel / sizeof *rel; i++) {
			char cand[PATH_MAX];
			if ((size_t)snprintf(cand, sizeof cand, "%.*s%s", (int)(PATH_MAX - 64), exe, rel[i]) <
			        sizeof cand && lua_dir_ok(cand)) {
				snprintf(out, len, "%s", cand);
				return;
			}
		}
	}
	snprintf(out, len, "%s", LUASMTPD_LUA_DIR);
}

/* smtp-server's default: the first 32 hex digits of sha1(argv joined by
 * " "), so restarts of one command line share TLS sessions. */
static void lua_session_id_context(int argc, char **argv)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	EVP_DigestInit_ex(md, EVP_sha1(), NULL);
	for (int i = 0; i < argc; i++) {
		if (i)
			EVP_DigestUpdate(md, " ", 1);
		EVP_DigestUpdate(md, argv[i], strlen(argv[i]));
	}
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned len = 0;
	EVP_DigestFinal_ex(md, digest, &len);
	EVP_MD_CTX_free(md);
	for (unsigned i = 0; i < 16 && i < len; i++)
		snprintf(session_id_context + 2 * i, 3, "%02x", digest[i]);
}

/* A finalizer (__gc) runs when the collector reaches its object, which
 * may be during the core's own Lua calls between hooks: there an error has
 * no protected call to unwind to, and LuaJIT passes a finalizer's error
 * on, so the process panicked. The finalizers a script can set (ffi.gc,
 * ffi.metatype, a newproxy's metatable, debug.setmetatable) are wrapped:
 * their errors are logged instead. */
static const char finalizers_lua[] =
	"local pcall, type, rawset, setmetatable, getmetatable, tostring = pcall, type, rawset, setmetatable, getmetatable, tostring\n"
	"local log = require('smtp').log.error\n"
	"local function guarded(f)\n"
	"  return function(...)\n"
	"    local ok, err = pcall(f, ...)\n"
	"    if not ok then log('a __gc finalizer raised', {error = tostring(err)}) end\n"
	"  end\n"
	"end\n"
	"local ffi = require('ffi')\n"
	"local gc = ffi.gc\n"
	"ffi.gc = function(cdata, f)\n"
	"  if type(f) == 'function' then f = guarded(f) end\n"
	"  return gc(cdata, f)\n"
	"end\n"
	/* A metatable given a __gc by ffi.metatype or debug.setmetatable gets
	 * the guarded one in its place. */
	"local function guard_mt(mt)\n"
	"  if type(mt) == 'table' then\n"
	"    local f = rawget(mt, '__gc')\n"
	"    if type(f) == 'function' then rawset(mt, '__gc', guarded(f)) end\n"
	"  end\n"
	"  return mt\n"
	"end\n"
	"local metatype = ffi.metatype\n"
	"ffi.metatype = function(ct, mt) return metatype(ct, guard_mt(mt)) end\n"
	"local dsetmt = debug.setmetatable\n"
	"debug.setmetatable = function(o, mt) return dsetmt(o, guard_mt(mt)) end\n"
	/* newproxy(true)'s metatable is new: the first __gc put in it goes
	 * through this __newindex. */
	"local wrap_gc = {__newindex = function(mt, k, v)\n"
	"  if k == '__gc' and type(v) == 'function' then v = guarded(v) end\n"
	"  rawset(mt, k, v)\n"
	"end}\n"
	"local newproxy = newproxy\n"
	"_G.newproxy = function(arg)\n"
	"  local p = newproxy(arg)\n"
	"  if arg == true then setmetatable(getmetatable(p), wrap_gc) end\n"
	"  return p\n"
	"end\n";

/* The last resort: a Lua error with no protected call to unwind to (the
 * core's own calls are written not to raise; a script's debug library can
 * still get one there). The process ends, as LuaJIT would end it, with a
 * line that says why, where the exit alone said nothing; under --workers
 * the master starts a new worker. _exit: nothing is left to flush (the
 * line is written at once), and the exit handlers would only report the
 * state the error left as leaks. */
static int lua_panic(lua_State *L)
{
	const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "(error object is not a string)";
	log_fatal("a Lua error outside any hook: this process ends", "error", msg, NULL);
	_exit(EXIT_FAILURE);
}

bool lua_runtime_init(int argc, char **argv, char *err, size_t errlen)
{
	lua_session_id_context(argc, argv);
	lua_main = lua_guard_newstate();
	if (!lua_main) {
		snprintf(err, errlen, "cannot create the Lua state");
		return false;
	}
	lua_atpanic(lua_main, lua_panic);
	luaL_openlibs(lua_main);
	/* LuaJIT's own libraries that load on first require (ffi, jit.util,
	 * string.buffer...) belong to the state, not to a script: see
	 * lua_forget_script_modules. */
	lua_remember_base_modules(lua_main, "preload");
	char *dir = lua_dir;
	lua_find_dir(lua_dir, sizeof lua_dir);
	lua_getglobal(lua_main, "package");
	lua_getfield(lua_main, -1, "path");
	lua_pushfstring(lua_main, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(lua_main, -1));
	lua_setfield(lua_main, -3, "path");
	lua_pop(lua_main, 2);
	lua_modules_preload(lua_main);
	lua_stream_register(lua_main);
	if (!lua_session_register(lua_main)) {
		snprintf(err, errlen, "cannot load the envelope functions");
		return false;
	}
	tls_context_register(lua_main);
	/* Load the public module now so smtp.reject objects are recognised
	 * even in a script that never requires it. */
	lua_getglobal(lua_main, "require");
	lua_pushstring(lua_main, "smtp");
	if (lua_pcall(lua_main, 1, 0, 0) != 0) {
		snprintf(err, errlen, "cannot load the smtp module from %s: %s", dir,
		         lua_tostring(lua_main, -1));
		return false;
	}
	if (luaL_loadbuffer(lua_main, finalizers_lua, sizeof finalizers_lua - 1, "=finalizers") ||
	    lua_pcall(lua_main, 0, 0, 0)) {
		snprintf(err, errlen, "cannot guard the finalizers: %s", lua_tostring(lua_main, -1));
		return false;
	}
	lua_remember_base_modules(lua_main, "loaded");
	return true;
}

static int lua_traceback_handler(lua_State *L)
{
	luaL_traceback(L, L, lua_tostring(L, 1), 1);
	return 1;
}

/* Forgets the modules loaded since start-up (the script's own), so that
 * a reload reads them again and no script state outlives it. LuaJIT's own
 * libraries stay loaded even when the script was the first to require
 * them: running luaopen_ffi again would give the state a new C type table
 * and drop the old one without freeing it (LeakSanitizer saw it), while
 * cdata still alive in open sessions would name their types by numbers
 * of the old table. */
static void lua_forget_script_modules(lua_State *L)
{
	lua_getglobal(L, "package");
	lua_getfield(L, -1, "loaded");
	lua_getfield(L, LUA_REGISTRYINDEX, "luasmtpd.base_modules");
	lua_pushnil(L);
	while (lua_next(L, -3)) {
		lua_pop(L, 1);
		lua_pushvalue(L, -1);
		lua_rawget(L, -3);
		bool base = !lua_isnil(L, -1);
		lua_pop(L, 1);
		if (!base) {
			lua_pushvalue(L, -1);
			lua_pushnil(L);
			lua_rawset(L, -5); /* clearing a field during lua_next is allowed */
		}
	}
	lua_pop(L, 3);
}

/* Adds the names in package[list] ("loaded", "preload") to the modules a
 * reload keeps. */
static void lua_remember_base_modules(lua_State *L, const char *list)
{
	lua_getfield(L, LUA_REGISTRYINDEX, "luasmtpd.base_modules");
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		lua_newtable(L);
		lua_pushvalue(L, -1);
		lua_setfield(L, LUA_REGISTRYINDEX, "luasmtpd.base_modules");
	}
	lua_getglobal(L, "package");
	lua_getfield(L, -1, list);
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		lua_pop(L, 1);
		lua_pushvalue(L, -1);
		lua_pushboolean(L, 1);
		lua_rawset(L, -6);
	}
	lua_pop(L, 3);
}

static int lua_global_write(lua_State *L)
{
	return luaL_error(L, "assignment to global '%s' while serving: globals are read-only after the "
	                     "script has loaded; keep per-session data on the session",
	                  lua_tostring(L, 2));
}

/* A script's top level may define globals; hooks may only read them, so no
 * state leaks from one session into another through them. The globals move
 * into a table behind an empty _G, so that assigning an existing one is
 * caught as well as creating a new one. */
static void lua_protect_globals(lua_State *L)
{
	lua_newtable(L); /* the real globals */
	lua_pushnil(L);
	while (lua_next(L, LUA_GLOBALSINDEX)) {
		lua_pushvalue(L, -2);
		lua_insert(L, -2);
		lua_rawset(L, -4);
	}
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		lua_pop(L, 1);
		lua_pushvalue(L, -1);
		lua_pushnil(L);
		lua_rawset(L, LUA_GLOBALSINDEX);
	}
	lua_createtable(L, 0, 2);
	lua_insert(L, -2);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, lua_global_write);
	lua_setfield(L, -2, "__newindex");
	lua_setmetatable(L, LUA_GLOBALSINDEX);
}

/* Puts the globals back in _G, writable, for a script being (re)loaded. */
static void lua_unprotect_globals(lua_State *L)
{
	if (!lua_getmetatable(L, LUA_GLOBALSINDEX))
		return;
	lua_getfield(L, -1, "__index");
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		lua_pushvalue(L, -2);
		lua_insert(L, -2);
		lua_rawset(L, LUA_GLOBALSINDEX);
	}
	lua_pop(L, 2);
	lua_pushnil(L);
	lua_setmetatable(L, LUA_GLOBALSINDEX);
}

struct config *lua_runtime_load(const char *path, char **listen_override, size_t noverride,
                                char *err, size_t errlen)
{
	lua_State *L = lua_main;
	int top = lua_gettop(L);
	lua_unprotect_globals(L); /* the script being loaded may define globals */
	lua_forget_script_modules(L);
	lua_pushcfunction(L, lua_traceback_handler);
	if (luaL_loadfile(L, path) != 0) {
		snprintf(err, errlen, "%s", lua_tostring(L, -1));
		lua_settop(L, top);
		return NULL;
	}
	if (lua_pcall(L, 0, 1, top + 1) != 0) {
		snprintf(err, errlen, "%s", lua_tostring(L, -1));
		lua_settop(L, top);
		return NULL;
	}
	/* Milters the script declares become wrapped hooks (lua/smtp/milters.lua)
	 * before the options are read. */
	lua_getglobal(L, "require");
	lua_pushliteral(L, "smtp.milters");
	lua_call(L, 1, 1); /* a module of ours: loading it cannot fail */
	lua_getfield(L, -1, "declare");
	lua_remove(L, -2);
	lua_pushvalue(L, -2);
	if (lua_pcall(L, 1, 0, 0) != 0) { /* a bad milter option: its message alone */
		snprintf(err, errlen, "%s: %s", path, lua_tostring(L, -1));
		lua_settop(L, top);
		return NULL;
	}
	char cfgerr[512];
	struct config *cfg = config_from_lua(L, listen_override, noverride, cfgerr, sizeof cfgerr);
	lua_protect_globals(L);
	if (!cfg)
		snprintf(err, errlen, "%s: %s", path, cfgerr);
	else
		cfg->script_path = strdup(path);
	lua_settop(L, top);
	return cfg;
}

void lua_runtime_close(void)
{
	lua_timer_close(); /* callbacks in flight end before their state */
	if (lua_main)
		lua_close(lua_main);
	lua_main = NULL;
	thread_pool_len = 0;
	reject_class = (struct lua_api_class)LUA_API_CLASS_NONE;
}
