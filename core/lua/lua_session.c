#include "lua/lua_session.h"
#include "lua/lua_api.h"
#include "lua/lua_session_state.h"
#include "smtp/session.h"

#include "net/conn.h"
#include "lua/lua_runtime.h"
#include "proto/proxy_parse.h"
#include "smtp/rcpt_set.h"

#include <ctype.h>
#include <lauxlib.h>
#include <string.h>

void lua_session_new(struct conn *c)
{
	lua_State *L = lua_main;
	const struct lua_api_field peers[] = {
		LUA_API_FIELD_STRING("id", c->id),
		LUA_API_FIELD_STRING("remoteAddress", c->remote_addr),
		LUA_API_FIELD_INTEGER("remotePort", c->remote_port),
		LUA_API_FIELD_STRING("localAddress", c->local_addr),
		LUA_API_FIELD_INTEGER("localPort", c->local_port),
	};
	static const struct lua_api_field plain[] = {
		LUA_API_FIELD_BOOLEAN("secure", false),
		LUA_API_FIELD_STRING("transmissionType", "SMTP"),
	};
	lua_createtable(L, 0, 16);
	lua_api_set_fields(L, -1, peers, sizeof peers / sizeof peers[0]);
	/* No reverse lookup yet: smtp-server's fallback form. */
	lua_pushfstring(L, "[%s]", c->remote_addr);
	lua_setfield(L, -2, "clientHostname");
	lua_api_set_fields(L, -1, plain, sizeof plain / sizeof plain[0]);
	lua_state_of(c)->session_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_session_reset_envelope(c);
}

void lua_session_free(struct conn *c)
{
	struct lua_session_state *ls = lua_state_of(c);
	luaL_unref(lua_main, LUA_REGISTRYINDEX, ls->session_ref);
	ls->session_ref = LUA_NOREF;
}

void lua_session_push(lua_State *L, struct conn *c)
{
	lua_rawgeti(L, LUA_REGISTRYINDEX, lua_state_of(c)->session_ref);
}

void lua_session_set_proxy(struct conn *c, const struct proxy_info *pi)
{
	lua_State *L = lua_main;
	lua_session_push(L, c);
	const struct lua_api_field proxy[] = {
		LUA_API_FIELD_INTEGER("version", pi->version),
		/* A LOCAL header (a health check) names no client: version only. */
		LUA_API_FIELD_STRING("sourceAddress", pi->src),
		LUA_API_FIELD_INTEGER("sourcePort", pi->src_port),
		LUA_API_FIELD_STRING("destinationAddress", pi->dst),
		LUA_API_FIELD_INTEGER("destinationPort", pi->dst_port),
	};
	lua_createtable(L, 0, 5);
	lua_api_set_fields(L, -1, proxy, pi->local ? 1 : sizeof proxy / sizeof proxy[0]);
	lua_setfield(L, -2, "proxy");
	lua_pop(L, 1);
}

void lua_session_set(struct conn *c, const char *field, const char *value)
{
	lua_State *L = lua_main;
	lua_session_push(L, c);
	if (value)
		lua_pushstring(L, value);
	else
		lua_pushnil(L);
	lua_setfield(L, -2, field);
	lua_pop(L, 1);
}

void lua_session_set_value(struct conn *c, const char *field, lua_State *L, int idx)
{
	lua_pushvalue(L, idx);
	lua_session_push(L, c);
	lua_insert(L, -2);
	lua_setfield(L, -2, field);
	lua_pop(L, 1);
}

void lua_session_reset_envelope(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	lua_State *L = lua_main;
	lua_session_push(L, c);
	lua_createtable(L, 0, 2);
	lua_newtable(L);
	lua_setfield(L, -2, "rcptTo");
	lua_setfield(L, -2, "envelope");
	lua_pushinteger(L, s->transactions + 1);
	lua_setfield(L, -2, "transaction");
	lua_pop(L, 1);
}

/* Pushes session.envelope. */
static void lua_session_push_envelope(lua_State *L, struct conn *c)
{
	lua_session_push(L, c);
	lua_getfield(L, -1, "envelope");
	lua_remove(L, -2);
}

void lua_session_set_mail_from(struct conn *c, lua_State *L, int idx)
{
	lua_pushvalue(L, idx);
	lua_session_push_envelope(L, c);
	lua_insert(L, -2);
	lua_setfield(L, -2, "mailFrom");
	lua_pop(L, 1);
}

void lua_session_add_rcpt(struct conn *c, lua_State *L, int idx)
{
	struct smtp_session *s = conn_session(c);
	idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
	lua_session_push_envelope(L, c);
	lua_getfield(L, -1, "rcptTo");
	size_t at = rcpt_set_find(s->rcpts, s->judged, strlen(s->judged));
	if (at == 0)
		at = lua_objlen(L, -1) + 1;
	lua_pushvalue(L, idx);
	lua_rawseti(L, -2, (int)at);
	lua_pop(L, 2);
}

void lua_push_address(lua_State *L, const struct smtp_path *p)
{
	lua_createtable(L, 0, 2);
	lua_pushlstring(L, p->address, p->address_len);
	lua_setfield(L, -2, "address");
	lua_createtable(L, 0, (int)p->nparams);
	for (size_t i = 0; i < p->nparams; i++) {
		const struct smtp_param *prm = &p->params[i];
		char key[64];
		size_t kl = prm->key_len < sizeof key - 1 ? prm->key_len : sizeof key - 1;
		for (size_t k = 0; k < kl; k++)
			key[k] = (char)toupper((unsigned char)prm->key[k]);
		lua_pushlstring(L, key, kl);
		if (!prm->value) {
			lua_pushboolean(L, 1);
		} else {
			char val[SMTP_PATH_MAX + 1];
			long vl = smtp_xtext_decode(prm->value, prm->value_len, val, sizeof val);
			if (vl >= 0)
				lua_pushlstring(L, val, (size_t)vl);
			else
				lua_pushlstring(L, prm->value, prm->value_len);
		}
		lua_rawset(L, -3);
	}
	lua_setfield(L, -2, "args");
}
