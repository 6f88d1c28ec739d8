#include "smtp/session.h"

#include "lua/lua_runtime.h"
#include "lua/lua_session.h"
#include "lua/lua_tls.h"
#include "smtp/smtp_session.h"

#include <lauxlib.h>
#include <stdlib.h>

struct smtp_session *smtp_session_new(struct conn *c)
{
	struct smtp_session *s = calloc(1, sizeof *s);
	if (!s)
		abort();
	s->conn = c;
	s->session_ref = LUA_NOREF;
	s->hook.co_ref = LUA_NOREF;
	s->pending_ref = LUA_NOREF;
	s->tls_obj_ref = LUA_NOREF;
	c->session = s;
	return s;
}

void smtp_session_free(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	smtp_session_body_free(c);
	/* The Lua conn object lets go of c's SSL before the transport frees it. */
	lua_tls_detach(c);
	lua_session_free(c);
	luaL_unref(lua_main, LUA_REGISTRYINDEX, s->pending_ref);
	free(s->x_peer);
	free(s->sasl_user);
	free(s->sasl_challenge);
	free(s->sasl_refusal);
	free(s);
	c->session = NULL;
}
