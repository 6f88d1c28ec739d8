#include "lua/server_ops.h"

#include "base/log.h"
#include "lua/lua_guard.h"
#include "lua/lua_runtime.h"
#include "lua/lua_timer.h"
#include "tls/tls_sni_cache.h"

#include <lauxlib.h>
#include <stdlib.h>

static struct listener_set *ops_load(struct server *srv, char *err, size_t errlen)
{
	lua_timer_load_begin();
	struct config *cfg = lua_runtime_load(srv->script, srv->listen_override, srv->noverride, err, errlen);
	lua_timer_load_end(cfg != NULL);
	return cfg ? &cfg->set : NULL;
}

static void ops_ref(struct listener_set *set)
{
	config_ref(config_of(set));
}

static void ops_unref(struct listener_set *set)
{
	config_unref(lua_main, config_of(set));
}

static void ops_adopt(struct listener_set *set)
{
	struct config *cfg = config_of(set);
	lua_guard_set_memory_limit(cfg->nlisteners ? cfg->listeners[0].lua_memory_limit : 0);
}

/* Swaps in freshly built TLS for every listener of cfg; all or nothing.
 * extra_idx: options over the script's (0: none). */
static bool ops_build_tls(struct config *cfg, lua_State *L, int extra_idx, char *err, size_t errlen)
{
	struct tls_set *built = calloc(cfg->nlisteners, sizeof *built);
	if (!built)
		abort();
	bool ok = true;
	for (size_t i = 0; ok && i < cfg->nlisteners; i++)
		ok = config_build_tls(L, &cfg->listeners[i], extra_idx, &built[i], err, errlen);
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		struct listener_options *o = &cfg->listeners[i].smtp.listener;
		if (ok) {
			/* Handshakes in flight hold their own reference to the old context. */
			config_free_tls(&o->tls);
			o->tls = built[i];
			tls_sni_cache_free(o->sni_cache);
			o->sni_cache = NULL;
		} else {
			config_free_tls(&built[i]);
		}
	}
	free(built);
	return ok;
}

static bool ops_rebuild_tls(struct listener_set *set, char *err, size_t errlen)
{
	return ops_build_tls(config_of(set), lua_main, 0, err, errlen);
}

static void ops_serving(void)
{
	lua_guard_start(lua_main);
	lua_timer_serving();
}

const struct server_ops lua_server_ops = {
	.load = ops_load,
	.ref = ops_ref,
	.unref = ops_unref,
	.adopt = ops_adopt,
	.rebuild_tls = ops_rebuild_tls,
	.serving = ops_serving,
	.stopping = lua_timer_exiting,
	.close = lua_runtime_close,
};

bool lua_update_secure_context(struct server *srv, lua_State *L, int idx, char *err, size_t errlen)
{
	idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
	struct config *cfg = config_of(srv->cfg);
	if (!ops_build_tls(cfg, L, idx, err, errlen))
		return false;
	server_watch_certs(srv);
	/* The new values become the listeners' own, so a later renewal on
	 * disk rebuilds from them. */
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		lua_rawgeti(L, LUA_REGISTRYINDEX, cfg->listeners[i].table_ref);
		lua_pushnil(L);
		while (lua_next(L, idx)) {
			lua_pushvalue(L, -2);
			lua_insert(L, -2);
			lua_rawset(L, -4);
		}
		lua_pop(L, 1);
	}
	log_kv(LOG_INFO, NULL, "secure context updated", NULL);
	return true;
}
