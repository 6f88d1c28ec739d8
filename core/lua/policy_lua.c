#include "lua/policy_lua.h"

#include "lua/lua_api.h"
#include "lua/lua_hook.h"
#include "lua/lua_runtime.h"
#include "lua/lua_session.h"
#include "lua/lua_session_state.h"
#include "lua/lua_stream.h"
#include "lua/api_tls.h"
#include "net/conn.h"
#include "net/conn_tls.h"
#include "smtp/session.h"
#include "proto/replies.h"
#include "lua/tls_options.h"

#include <lauxlib.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The verdict's disabled set from the value of session.disabledCommands
 * on top of L (popped). */
static void policy_lua_take_disabled(lua_State *L, struct policy_verdict *v)
{
	v->disabled_set = lua_type(L, -1) == LUA_TTABLE;
	v->disabled_commands = 0;
	if (v->disabled_set) {
		uint32_t mask = 0;
		size_t n = lua_objlen(L, -1);
		for (size_t i = 1; i <= n; i++) {
			lua_rawgeti(L, -1, (int)i);
			size_t len;
			const char *name = lua_tolstring(L, -1, &len);
			if (name)
				mask |= 1u << smtp_verb_from_name(name, len);
			lua_pop(L, 1);
		}
		v->disabled_commands = mask & ~1u;
	}
	lua_pop(L, 1);
}

/* With no hook since the last verdict, the session's current set stands. */
static void policy_lua_keep_disabled(struct conn *c, struct policy_verdict *v)
{
	v->disabled_set = conn_session(c)->disabled_override;
	v->disabled_commands = conn_session(c)->disabled_commands;
}

/* session.disabledCommands, as a verdict says it: read after every hook
 * (ran: a hook ran, or was stopped, since the last verdict). */
static void policy_lua_read_disabled(struct conn *c, struct policy_verdict *v, bool ran)
{
	if (!ran) {
		policy_lua_keep_disabled(c, v);
		return;
	}
	/* After every hook: the key is interned once, not on each lookup. */
	static int key_ref = LUA_NOREF;
	lua_State *L = lua_main;
	if (key_ref == LUA_NOREF) {
		lua_pushliteral(L, "disabledCommands");
		key_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	}
	lua_session_push(L, c);
	lua_rawgeti(L, LUA_REGISTRYINDEX, key_ref);
	lua_rawget(L, -2);
	policy_lua_take_disabled(L, v);
	lua_pop(L, 1);
}

/* v decides nothing beyond o's reply: the rest of v zeroed, the reply
 * copied to its text's end (not a whole struct copy, see hook_outcome_copy). */
static void policy_lua_verdict_of(struct policy_verdict *v, const struct hook_outcome *o)
{
	_Static_assert(offsetof(struct policy_verdict, reply) == 0, "the reply leads the verdict");
	memset((char *)v + sizeof v->reply, 0, sizeof *v - sizeof v->reply);
	hook_outcome_copy(&v->reply, o);
}

/* Hands the verdict to the session's continuation. Callers build v with
 * its reply in place: a hook_outcome is over 500 bytes, copied or zeroed
 * once per hook otherwise (callgrind: about 140 instructions each). */
static void policy_lua_answer(struct conn *c, struct policy_verdict *v)
{
	struct smtp_session *s = conn_session(c);
	policy_done_fn done = lua_state_of(s->conn)->policy_done;
	lua_state_of(s->conn)->policy_done = NULL;
	done(s, v);
}

/* The verdict of a hook whose return values say nothing more. */
/* Whether a hook ran for this verdict: only an absent one is accepted
 * without its coroutine (a hook stopped by hookTimeout has failed). */
static bool policy_lua_hook_ran(const struct hook_outcome *o, lua_State *co)
{
	return co || o->kind != HOOK_ACCEPT;
}

static void policy_lua_done(struct conn *c, const struct hook_outcome *o, lua_State *co, int nres)
{
	struct policy_verdict v;
	policy_lua_verdict_of(&v, o);
	policy_lua_read_disabled(c, &v, policy_lua_hook_ran(o, co));
	policy_lua_answer(c, &v);
}

/* Readies hook id with done as the session's continuation: NULL (and done
 * has been told "accept") when the script has no such hook. */
static lua_State *policy_lua_prepare(struct smtp_session *s, enum hook_id id, policy_done_fn done)
{
	lua_state_of(s->conn)->policy_done = done;
	lua_State *co = hook_prepare(s->conn, id);
	if (!co)
		hook_accept_now(s->conn, policy_lua_done);
	return co;
}

/* ---- the session's Lua state ------------------------------------------------ */

static void policy_lua_attach(struct smtp_session *s)
{
	struct lua_session_state *st = calloc(1, sizeof *st);
	if (!st)
		abort();
	st->session_ref = LUA_NOREF;
	st->hook.co_ref = LUA_NOREF;
	st->tls_obj_ref = LUA_NOREF;
	st->stream_ref = LUA_NOREF;
	s->policy_state = st;
}

static void policy_lua_detach(struct smtp_session *s)
{
	/* The Lua conn object lets go of the SSL before the transport frees it. */
	lua_tls_detach(s->conn);
	lua_stream_free(s->conn);
	lua_session_free(s->conn);
	free(s->policy_state);
	s->policy_state = NULL;
}

/* The session table, with what the PROXY header said of the client. */
static void policy_lua_opened(struct smtp_session *s, const struct proxy_info *pi)
{
	lua_session_new(s->conn);
	if (pi)
		lua_session_set_proxy(s->conn, pi);
}

/* onClose(session), when the session table was made (the connection got
 * past its PROXY header). */
static void policy_lua_closed_done(struct conn *c, const struct hook_outcome *o, lua_State *co, int nres)
{
	struct policy_verdict v;
	policy_lua_verdict_of(&v, o);
	policy_lua_answer(c, &v);
}

static void policy_lua_closed(struct smtp_session *s, policy_done_fn done)
{
	lua_State *co = lua_state_of(s->conn)->session_ref != LUA_NOREF ? hook_prepare(s->conn, HOOK_CLOSE) : NULL;
	if (!co) {
		static const struct policy_verdict accept = {.reply.kind = HOOK_ACCEPT};
		done(s, &accept);
		return;
	}
	lua_state_of(s->conn)->policy_done = done;
	lua_session_push(co, s->conn);
	hook_start(s->conn, 1, policy_lua_closed_done);
}

/* session[field] = value, nil for NULL or "". */
static void policy_lua_set_string(struct conn *c, const char *field, const char *value)
{
	lua_session_set(c, field, value && value[0] ? value : NULL);
}

/* Mirrors a fact of the session into its table. */
static void policy_lua_changed_one(struct smtp_session *s, enum session_fact f)
{
	struct conn *c = s->conn;
	lua_State *L = lua_main;
	switch (f) {
	case FACT_PREGREET:
		lua_pushboolean(L, s->pregreet);
		lua_session_set_value(c, "pregreet", L, -1);
		lua_pop(L, 1);
		break;
	case FACT_CLIENT_HOSTNAME: {
		char name[SMTP_SESSION_HOSTNAME_BUF];
		policy_lua_set_string(c, "clientHostname", smtp_session_client_hostname(s, name));
		break;
	}
	case FACT_HELO:
		policy_lua_set_string(c, "hostNameAppearsAs", s->helo_name);
		policy_lua_set_string(c, "openingCommand", smtp_session_opening_command(s));
		break;
	case FACT_USER_FORGOTTEN:
		lua_session_set(c, "user", NULL);
		lua_session_set(c, "authMethod", NULL);
		break;
	/* The mechanism as Postfix passes it to milters as {auth_type}: XCLIENT
	 * LOGIN is Postfix's "XCLIENT" method too. */
	case FACT_AUTH:
		lua_session_set(c, "authMethod", auth_method_name(s->sasl_method));
		break;
	case FACT_XCLIENT_LOGIN:
		lua_session_set(c, "authMethod", "XCLIENT");
		break;
	case FACT_TRANSMISSION:
		lua_session_set(c, "transmissionType", smtp_session_transmission(s));
		break;
	case FACT_ENVELOPE:
		lua_session_reset_envelope(c);
		break;
	case FACT_TLS:
		lua_tls_session_fields(c);
		break;
	case FACT_REMOTE:
		lua_session_set(c, "remoteAddress", c->remote_addr);
		lua_pushinteger(L, c->remote_port);
		lua_session_set_value(c, "remotePort", L, -1);
		lua_pop(L, 1);
		break;
	}
}

/* What every HELO, EHLO and LHLO tells together (a new envelope, the
 * name, the transmission type): one call into Lua sets it all. */
#define FACTS_OF_HELO (FACT_ENVELOPE | FACT_HELO | FACT_TRANSMISSION)

/* Mirrors the facts (enum session_fact bits) told together: HELO's in one
 * call into Lua, the others one by one. */
static void policy_lua_changed(struct smtp_session *s, unsigned facts)
{
	if ((facts & FACTS_OF_HELO) == FACTS_OF_HELO) {
		const char *name = s->helo_name && s->helo_name[0] ? s->helo_name : NULL;
		lua_session_helo(s->conn, name, smtp_session_opening_command(s), smtp_session_transmission(s));
		facts &= ~FACTS_OF_HELO;
	}
	for (unsigned f = 1; facts; f <<= 1)
		if (facts & f) {
			facts &= ~f;
			policy_lua_changed_one(s, (enum session_fact)f);
		}
}

/* The session field an XCLIENT/XFORWARD attribute overrides, or NULL. */
static const char *policy_lua_forwarded_field(const char *attr)
{
	static const char *const fields[][2] = {
		{"NAME", "clientHostname"}, {"ADDR", "remoteAddress"}, {"PORT", "remotePort"},
		{"HELO", "hostNameAppearsAs"},
	};
	for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
		if (strcmp(attr, fields[i][0]) == 0)
			return fields[i][1];
	return NULL;
}

/* session.xClient (or xForward) = {KEY = value or false,
 * ["KEY:DEFAULT"] = the session's field before}, added to one left by an
 * earlier command. */
static void policy_lua_forwarded(struct smtp_session *s, bool xforward, const struct policy_attr *attrs,
                                 size_t n)
{
	const char *table_name = xforward ? "xForward" : "xClient";
	lua_State *L = lua_main;
	/* Raw: the tables are the script's, which may have set metatables. */
	lua_session_push(L, s->conn);
	lua_pushstring(L, table_name);
	lua_rawget(L, -2);
	if (lua_type(L, -1) != LUA_TTABLE) {
		lua_pop(L, 1);
		lua_newtable(L);
		lua_pushvalue(L, -1);
		lua_api_rawsetfield(L, -3, table_name);
	}
	for (size_t i = 0; i < n; i++) {
		const char *field = policy_lua_forwarded_field(attrs[i].name);
		if (field) {
			lua_pushfstring(L, "%s:DEFAULT", attrs[i].name);
			lua_pushstring(L, field);
			lua_rawget(L, -4);
			lua_rawset(L, -3);
		}
		if (attrs[i].value)
			lua_pushstring(L, attrs[i].value);
		else
			lua_pushboolean(L, 0);
		lua_api_rawsetfield(L, -2, attrs[i].name);
	}
	lua_pop(L, 2);
}

/* ---- connect, TLS --------------------------------------------------------- */

static void policy_lua_connect(struct smtp_session *s, policy_done_fn done)
{
	lua_State *co = policy_lua_prepare(s, HOOK_CONNECT, done);
	if (!co)
		return;
	lua_session_push(co, s->conn);
	hook_start(s->conn, 1, policy_lua_done);
}

static void policy_lua_secure(struct smtp_session *s, policy_done_fn done)
{
	lua_State *co = policy_lua_prepare(s, HOOK_SECURE, done);
	if (!co)
		return;
	lua_tls_push_conn(co, s->conn);
	lua_session_push(co, s->conn);
	hook_start(s->conn, 2, policy_lua_done);
}

/* onError({code, message, remoteAddress, meta}) as smtp-server emits it. */
static void policy_lua_tls_error(struct smtp_session *s, const char *code, const char *reason,
                                 policy_done_fn done)
{
	struct conn *c = s->conn;
	lua_State *co = policy_lua_prepare(s, HOOK_ERROR, done);
	if (!co)
		return;
	lua_createtable(co, 0, 4);
	lua_pushstring(co, code);
	lua_setfield(co, -2, "code");
	lua_pushstring(co, strcmp(code, "SocketError") == 0 ? "Socket closed while initiating TLS" : reason);
	lua_setfield(co, -2, "message");
	lua_pushstring(co, c->remote_addr);
	lua_setfield(co, -2, "remoteAddress");
	lua_createtable(co, 0, 6);
	lua_pushstring(co, smtp_opt(c)->secure ? "tls" : "starttls");
	lua_setfield(co, -2, "tlsProtocol");
	lua_pushstring(co, "smtp");
	lua_setfield(co, -2, "protocol");
	lua_pushstring(co, "connect");
	lua_setfield(co, -2, "stage");
	lua_pushstring(co, c->remote_addr);
	lua_setfield(co, -2, "remoteAddress");
	lua_pushstring(co, reason);
	lua_setfield(co, -2, "reason");
	lua_setfield(co, -2, "meta");
	hook_start(c, 1, policy_lua_done);
}

/* SNICallback returned: an smtp.tls.context serves the name, nil the
 * default context; a rejection ends the handshake. */
static void policy_lua_servername_done(struct conn *c, const struct hook_outcome *o, lua_State *co, int nres)
{
	struct smtp_session *s = conn_session(c);
	SSL_CTX *ctx = NULL;
	if (o->kind == HOOK_REJECT) {
		conn_log(c, LOG_WARN, "SNICallback refused the name", "servername", c->servername,
		         "reason", o->text, NULL);
	} else if (o->kind == HOOK_ACCEPT && co && nres >= 1) {
		ctx = tls_context_check(co, 1);
		if (!ctx && !lua_isnil(co, 1))
			conn_log(c, LOG_WARN, "SNICallback returned something that is not smtp.tls.context",
			         "servername", c->servername, NULL);
	}
	/* A hook that failed is logged by the hook runner: the default serves. */
	policy_servername_fn done = lua_state_of(s->conn)->servername_done;
	lua_state_of(s->conn)->servername_done = NULL;
	done(s, ctx, o->kind == HOOK_REJECT);
}

static void policy_lua_servername(struct smtp_session *s, const char *name, policy_servername_fn done)
{
	lua_State *co = hook_prepare(s->conn, HOOK_SNI);
	if (!co) {
		done(s, NULL, false);
		return;
	}
	lua_state_of(s->conn)->servername_done = done;
	lua_pushstring(co, name);
	hook_start(s->conn, 1, policy_lua_servername_done);
}

/* ---- AUTH ------------------------------------------------------------------ */

/* auth.validatePassword(pw): does HMAC-MD5(pw, challenge) match the
 * client's digest? Upvalues: the challenge and the digest (hex). */
static int policy_lua_cram_validate(lua_State *L)
{
	size_t plen, clen, dlen;
	const char *pw = luaL_checklstring(L, 1, &plen);
	const char *challenge = lua_tolstring(L, lua_upvalueindex(1), &clen);
	const char *digest = lua_tolstring(L, lua_upvalueindex(2), &dlen);
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned mlen = 0;
	HMAC(EVP_md5(), pw, (int)plen, (const unsigned char *)challenge, clen, mac, &mlen);
	char hex[2 * EVP_MAX_MD_SIZE + 1];
	for (unsigned i = 0; i < mlen; i++)
		snprintf(hex + 2 * i, 3, "%02x", mac[i]);
	bool ok = dlen == 2 * mlen && CRYPTO_memcmp(hex, digest, dlen) == 0;
	lua_pushboolean(L, ok);
	return 1;
}

/* Pushes onAuth's auth table: method, username, and the proof under the
 * names smtp-server gives it. */
static void policy_lua_push_auth(lua_State *co, const struct policy_auth *a)
{
	lua_createtable(co, 0, 6);
	lua_pushstring(co, a->method);
	lua_setfield(co, -2, "method");
	lua_pushlstring(co, a->username, a->username_len);
	lua_setfield(co, -2, "username");
	if (!a->secret)
		return;
	if (a->challenge) {
		lua_pushstring(co, a->challenge);
		lua_setfield(co, -2, "challenge");
		lua_pushlstring(co, a->secret, a->secret_len);
		lua_setfield(co, -2, "challengeResponse");
		lua_pushstring(co, a->challenge);
		lua_pushlstring(co, a->secret, a->secret_len);
		lua_pushcclosure(co, policy_lua_cram_validate, 2);
		lua_setfield(co, -2, "validatePassword");
		return;
	}
	lua_pushlstring(co, a->secret, a->secret_len);
	lua_setfield(co, -2, strcmp(a->method, "XOAUTH2") == 0 ? "accessToken" : "password");
}

/* onAuth accepted with {user = ..., message = ...}: session.user is set;
 * without a user the login fails (the session says how). */
static void policy_lua_auth_done(struct conn *c, const struct hook_outcome *o, lua_State *co, int nres)
{
	struct policy_verdict v;
	policy_lua_verdict_of(&v, o);
	struct hook_outcome *reply = &v.reply;
	policy_lua_read_disabled(c, &v, policy_lua_hook_ran(o, co));
	bool table = o->kind == HOOK_ACCEPT && co && nres >= 1 && lua_type(co, 1) == LUA_TTABLE;
	int top = table ? lua_gettop(co) : 0;
	if (table && (!lua_api_getfield(co, 1, "user") || !lua_api_getfield(co, 1, "message"))) {
		/* The table raised when read (an object's __index): the login
		 * fails as a hook that raised does. */
		conn_log(c, LOG_ERROR, "hook failed", "hook", "onAuth", "error",
		         lua_isstring(co, -1) ? lua_tostring(co, -1) : "reading its result raised", NULL);
		lua_settop(co, top);
		hook_internal_error(&v.reply); /* the disabled set read above stands */
		policy_lua_answer(c, &v);
		return;
	}
	if (table) {
		/* The user stays on the coroutine's stack until the done below returns. */
		v.user_set = !lua_isnil(co, -2);
		if (v.user_set)
			lua_session_set_value(c, "user", co, -2);
		v.user = lua_type(co, -2) == LUA_TSTRING ? lua_tostring(co, -2) : NULL;
		size_t len = 0;
		const char *msg = v.user_set ? lua_tolstring(co, -1, &len) : NULL;
		if (msg) {
			len = len < sizeof reply->text ? len : sizeof reply->text - 1;
			memcpy(reply->text, msg, len);
			reply->text[len] = '\0';
		}
		lua_pop(co, 1);
	}
	policy_lua_answer(c, &v);
	if (table)
		lua_pop(co, 1); /* the user */
}

static void policy_lua_auth(struct smtp_session *s, const struct policy_auth *a, policy_done_fn done)
{
	struct conn *c = s->conn;
	lua_state_of(s->conn)->policy_done = done;
	lua_State *co = hook_prepare(c, HOOK_AUTH);
	if (!co) {
		struct policy_verdict v = {.reply.kind = HOOK_ACCEPT, .undecided = true};
		policy_lua_read_disabled(c, &v, false);
		policy_lua_answer(c, &v);
		return;
	}
	policy_lua_push_auth(co, a);
	lua_session_push(co, c);
	hook_start(c, 2, policy_lua_auth_done);
}

/* ---- MAIL / RCPT ---------------------------------------------------------- */

static bool policy_lua_dsn_on(const struct conn *c)
{
	return !smtp_opt(c)->hide_dsn;
}

/* Asks onMailFrom/onRcptTo (id) about path; the address table goes to the
 * hook and, accepted, into the envelope. */
static void policy_lua_judge_address(struct smtp_session *s, enum hook_id id, const struct smtp_path *path,
                                     policy_done_fn done, hook_done_fn hook_done)
{
	struct conn *c = s->conn;
	lua_state_of(s->conn)->policy_done = done;
	bool dsn = id == HOOK_RCPT_TO && policy_lua_dsn_on(c);
	lua_State *co = hook_prepare(c, id);
	if (!co) {
		/* hook_accept_now answers before it returns: the address waits on
		 * top of the main stack for policy_lua_address_done. */
		lua_push_address(lua_main, path, dsn);
		hook_accept_now(c, hook_done);
		return;
	}
	int nargs = lua_session_judge_push(co, c, path, dsn);
	hook_results_after_one(c);
	hook_start(c, nargs, hook_done);
}

/* session.envelope gets the accepted sender (the address table at idx of
 * L) and what its parameters say; session.disabledCommands is pushed. */
static bool policy_lua_envelope_mail(struct conn *c, lua_State *L, int idx)
{
	return lua_session_set_mail_from(c, L, idx, policy_lua_dsn_on(c));
}

/* The verdict on an address; accepted, record puts it in the envelope.
 * The address is the first value the hook's wrapper returned (a hook
 * that raised or timed out has none), or, with no hook, on top of L. */
static void policy_lua_address_done(struct conn *c, const struct hook_outcome *o, lua_State *co,
                                    bool (*record)(struct conn *c, lua_State *L, int idx))
{
	lua_State *L = lua_main;
	struct policy_verdict v;
	policy_lua_verdict_of(&v, o);
	bool ran = policy_lua_hook_ran(o, co);
	if (o->kind != HOOK_ACCEPT) {
		policy_lua_read_disabled(c, &v, ran);
		policy_lua_answer(c, &v);
		return;
	}
	/* Accepted: the envelope's Lua call reads disabledCommands before it
	 * writes, where a read of its own from C cost a lookup more. It runs
	 * on the hook's coroutine, which has returned (as a pooled coroutine
	 * is reused), where the address is: not moved to L first. */
	lua_State *R = co ? co : L;
	if (co)
		lua_checkstack(co, 8);
	if (!record(c, R, co ? 1 : lua_gettop(L))) {
		/* A hook broke what the envelope is written to: the command
		 * fails as a hook that raised does (logged by record). */
		lua_pop(R, co ? 1 : 2);
		hook_internal_error(&v.reply);
		policy_lua_read_disabled(c, &v, true);
	} else if (co) {
		policy_lua_take_disabled(co, &v);
	} else {
		lua_pop(L, 2);
		policy_lua_keep_disabled(c, &v);
	}
	policy_lua_answer(c, &v);
}

static void policy_lua_mail_done(struct conn *c, const struct hook_outcome *o, lua_State *co, int nres)
{
	policy_lua_address_done(c, o, co, policy_lua_envelope_mail);
}

static void policy_lua_mail(struct smtp_session *s, const struct smtp_path *path, policy_done_fn done)
{
	policy_lua_judge_address(s, HOOK_MAIL_FROM, path, done, policy_lua_mail_done);
}

static void policy_lua_rcpt_done(struct conn *c, const struct hook_outcome *o, lua_State *co, int nres)
{
	policy_lua_address_done(c, o, co, lua_session_add_rcpt);
}

static void policy_lua_rcpt(struct smtp_session *s, const struct smtp_path *path, policy_done_fn done)
{
	policy_lua_judge_address(s, HOOK_RCPT_TO, path, done, policy_lua_rcpt_done);
}

/* ---- DATA / BDAT ----------------------------------------------------------- */

/* One recipient's answer in onData's LMTP table (at the top of L): a
 * string accepts with that text, an smtp.reject refuses, nil or true
 * accept, anything else refuses with the catalogue's reply. */
static void policy_lua_rcpt_reply(lua_State *L, struct hook_outcome *o)
{
	int t = lua_type(L, -1);
	if (t == LUA_TSTRING) {
		hook_outcome_from_value(L, -1, 250, o);
		o->kind = HOOK_ACCEPT;
	} else if (lua_is_reject(L, -1)) {
		if (!hook_outcome_from_value(L, lua_gettop(L), 450, o))
			lua_pop(L, 1); /* what reading it raised: the recipient gets the internal error */
	} else if (t == LUA_TNIL || (t == LUA_TBOOLEAN && lua_toboolean(L, -1))) {
		o->kind = HOOK_ACCEPT;
		o->text[0] = '\0';
	} else {
		const struct smtp_reply *r = &smtp_replies[REPLY_RECIPIENT_NOT_ACCEPTED];
		o->kind = HOOK_REJECT;
		o->code = r->code;
		snprintf(o->enhanced, sizeof o->enhanced, "%s", r->enhanced);
		snprintf(o->text, sizeof o->text, "%.*s", (int)r->text_len, r->text);
	}
}

/* onData returned: a string is the success text; in LMTP a table answers
 * per recipient. */
static void policy_lua_data_done(struct conn *c, const struct hook_outcome *o, lua_State *co, int nres)
{
	struct smtp_session *s = conn_session(c);
	struct policy_verdict v;
	policy_lua_verdict_of(&v, o);
	bool accepted = o->kind == HOOK_ACCEPT && co && nres >= 1;
	if (accepted && lua_type(co, 1) == LUA_TSTRING) {
		struct hook_outcome t;
		hook_outcome_from_value(co, 1, 250, &t);
		memcpy(v.reply.text, t.text, sizeof t.text);
	}
	if (accepted && lua_type(co, 1) == LUA_TTABLE && !lua_is_reject(co, 1) && smtp_opt(c)->lmtp &&
	    s->tx.nrcpt > 0) {
		if (!(v.rcpt_replies = calloc(s->tx.nrcpt, sizeof *v.rcpt_replies)))
			abort();
		for (unsigned i = 0; i < s->tx.nrcpt; i++) {
			lua_rawgeti(co, 1, (int)i + 1);
			policy_lua_rcpt_reply(co, &v.rcpt_replies[i]);
			lua_pop(co, 1);
		}
	}
	policy_lua_read_disabled(c, &v, policy_lua_hook_ran(o, co));
	policy_lua_answer(c, &v);
}

static void policy_lua_data(struct smtp_session *s, policy_done_fn done)
{
	struct body *b = s->body;
	b->save_fd = -1;
	lua_state_of(s->conn)->stream_live = false;
	lua_State *co = policy_lua_prepare(s, HOOK_DATA, done);
	if (!co)
		return;
	lua_stream_push(co, s->conn);
	lua_session_push(co, s->conn);
	hook_start(s->conn, 2, policy_lua_data_done);
}

static void policy_lua_body(struct smtp_session *s, const char *p, size_t n)
{
	lua_stream_feed_bytes(s->conn, p, n);
}

static void policy_lua_body_more(struct smtp_session *s)
{
	lua_stream_feed(s->conn);
}

static void policy_lua_message_end(struct smtp_session *s)
{
	lua_stream_detach(s->conn);
}

static void policy_lua_cancel(struct smtp_session *s)
{
	lua_state_of(s->conn)->policy_done = NULL;
	lua_state_of(s->conn)->servername_done = NULL;
	hook_cancel(s->conn);
}

static enum policy_wait policy_lua_waiting(const struct smtp_session *s)
{
	const struct hook_run *h = &lua_state_of(s->conn)->hook;
	return !h->active ? POLICY_IDLE : h->wait == WAIT_STREAM ? POLICY_READING : POLICY_DECIDING;
}

const struct smtp_policy policy_lua = {
	.attach = policy_lua_attach,
	.detach = policy_lua_detach,
	.opened = policy_lua_opened,
	.servername = policy_lua_servername,
	.closed = policy_lua_closed,
	.changed = policy_lua_changed,
	.forwarded = policy_lua_forwarded,
	.connect = policy_lua_connect,
	.secure = policy_lua_secure,
	.tls_error = policy_lua_tls_error,
	.auth = policy_lua_auth,
	.mail = policy_lua_mail,
	.rcpt = policy_lua_rcpt,
	.data = policy_lua_data,
	.body = policy_lua_body,
	.body_more = policy_lua_body_more,
	.message_end = policy_lua_message_end,
	.cancel = policy_lua_cancel,
	.waiting = policy_lua_waiting,
};
