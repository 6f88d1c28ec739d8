#include "lua/modules.h"

#include <lauxlib.h>

static const luaL_Reg modules[] = {
	{"smtp.core", luaopen_smtp_core},
	{"smtp.core.log", luaopen_smtp_log},
	{"smtp.core.timer", luaopen_smtp_timer},
	{"smtp.core.fsync", luaopen_smtp_fsync},
	{"smtp.core.tcp", luaopen_smtp_tcp},
	{"smtp.ngx.socket", luaopen_smtp_ngx_socket},
	{"smtp.core.dns", luaopen_smtp_dns},
	{"smtp.core.tls", luaopen_smtp_tls},
	{"smtp.core.server", luaopen_smtp_server},
	{"smtp.replies", luaopen_smtp_replies},
	{"smtp.core.re", luaopen_smtp_re},
	{"smtp.core.digest", luaopen_smtp_digest},
	{"smtp.core.ngx", luaopen_smtp_ngx},
	{"smtp.ngx.shdict", luaopen_smtp_shdict},
	{"smtp.client.proto", luaopen_smtp_client_proto},
	{"smtp.core.mime", luaopen_smtp_mime},
	{"smtp.core.spool", luaopen_smtp_spool},
	{"smtp.milter.proto", luaopen_smtp_milter_proto},
	{NULL, NULL},
};

void lua_modules_preload(lua_State *L)
{
	lua_getglobal(L, "package");
	lua_getfield(L, -1, "preload");
	for (const luaL_Reg *m = modules; m->name; m++) {
		lua_pushcfunction(L, m->func);
		lua_setfield(L, -2, m->name);
	}
	lua_pop(L, 2);
	lua_cowait_install(L);
}
