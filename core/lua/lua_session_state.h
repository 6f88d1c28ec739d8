/* lua_session_state — what the Lua layer keeps for one SMTP session: the
 * hook in flight and the registry references of the objects its hooks
 * see. The Lua policy creates it when a session attaches and frees it on
 * detach; the session holds it only as its policy's opaque state, so
 * core/smtp/ knows nothing of Lua. */
#ifndef LUASMTPD_LUA_SESSION_STATE_H
#define LUASMTPD_LUA_SESSION_STATE_H

#include "lua/lua_hook.h"
#include "smtp/session.h"

struct lua_session_state {
	struct hook_run hook; /* the hook in flight, if any */
	int session_ref;      /* the Lua session table */
	int tls_obj_ref;      /* the conn object onSecure gets */
	/* The registry slot of the message's stream object: made at the
	 * session's first DATA with a hook, kept to its end (false between
	 * messages), so a message costs no luaL_ref and luaL_unref. */
	int stream_ref;
	bool stream_live; /* the slot holds the current message's stream */
	policy_done_fn policy_done; /* the answer to the question in flight, if any */
	policy_servername_fn servername_done; /* ... when that question is servername */
};

/* The Lua state of the session c carries. */
static inline struct lua_session_state *lua_state_of(const struct conn *c)
{
	return conn_session(c)->policy_state;
}

#endif
