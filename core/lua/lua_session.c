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

/* The session, envelope and address tables are built by these Lua
 * functions, not through the C API: a field set from bytecode has its key
 * interned once, at load, where lua_setfield interns it on every call (the
 * tables of one message cost 10,000 instructions that way, a third of the
 * server's). */
static const char envelope_lua[] =
	/* Locals: after the script has loaded, globals are reached through a
	 * metatable (lua_protect_globals), and a script cannot swap these. */
	"local new_tab, upper, rawget, rawset = require('table.new'), string.upper, rawget, rawset\n"
	"local type, next, getmetatable = type, next, getmetatable\n"
	"local M = {}\n"
	/* An envelope nothing was put in yet (EHLO after the greeting, RSET
	 * before MAIL) is kept: new tables would only be garbage to collect. */
	"local function untouched(env)\n"
	"  if type(env) ~= 'table' or getmetatable(env) or next(env) ~= 'rcptTo' or next(env, 'rcptTo') ~= nil then return false end\n"
	"  local list = env.rcptTo\n"
	"  return type(list) == 'table' and not getmetatable(list) and next(list) == nil\n"
	"end\n"
	/* A connection that has carried a message likely carries more: its
	 * envelopes get room for every field at once (growing one twice cost
	 * more than filling it); an idle one keeps the smallest. */
	/* The session table is the script's: it may have a metatable (a
	 * "strict" one that refuses new fields), so it is read and written
	 * raw here, as the core's own writes from C are. */
	"local function reset(session, transaction)\n"
	"  if rawget(session, 'transaction') == transaction and untouched(rawget(session, 'envelope')) then return end\n"
	"  local env = transaction > 1 and new_tab(0, 8) or {}\n"
	"  env.rcptTo = new_tab(1, 0)\n"
	"  rawset(session, 'envelope', env)\n"
	"  rawset(session, 'transaction', transaction)\n"
	"end\n"
	"M.reset = reset\n"
	/* HELO/EHLO/LHLO: what four calls from C wrote (the envelope and three
	 * fields, each key interned again by lua_setfield), in one. */
	"function M.helo(session, transaction, name, opening, transmission)\n"
	"  reset(session, transaction)\n"
	"  rawset(session, 'hostNameAppearsAs', name)\n"
	"  rawset(session, 'openingCommand', opening)\n"
	"  rawset(session, 'transmissionType', transmission)\n"
	"end\n"
	/* No reverse lookup yet: clientHostname is smtp-server's fallback form. */
	"function M.new(id, remote, remote_port, loc, local_port)\n"
	"  local s = new_tab(0, 16)\n"
	"  s.id, s.remoteAddress, s.remotePort, s.localAddress, s.localPort = id, remote, remote_port, loc, local_port\n"
	"  s.clientHostname = '[' .. remote .. ']'\n"
	"  s.secure, s.transmissionType = false, 'SMTP'\n"
	"  reset(s, 1)\n"
	"  return s\n"
	"end\n"
	/* A constructor of constant fields is a copy of a template with its
	 * keys in place: the fields are then stored to, where a new table
	 * had each key inserted (lj_tab_newkey, twice an address). */
	"local function address(addr, args, dsn, notify)\n"
	"  args = args or {}\n"
	"  local t\n"
	"  if dsn then\n"
	"    t = {address = false, args = false, dsn = false}\n"
	"    t.dsn = {notify = notify or {}, orcpt = args.ORCPT}\n"
	"  else\n"
	"    t = {address = false, args = false}\n"
	"  end\n"
	"  t.address, t.args = addr, args\n"
	"  return t\n"
	"end\n"
	"M.address = address\n"
	/* A MAIL/RCPT hook runs inside this, the address made in the same
	 * resume and handed back ahead of the hook's values for the envelope:
	 * no registry reference, no second call from C. */
	"function M.judge(hook, session, addr, args, dsn, notify)\n"
	"  local a = address(addr, args, dsn, notify)\n"
	"  return a, hook(a, session)\n"
	"end\n"
	/* mail and rcpt return session.disabledCommands, read (raw) before
	 * they write as C read it after the verdict: one lookup from C less
	 * per address. A hook may have broken what they read (replaced
	 * session.envelope or address.args with something else): they raise
	 * before writing anything, and the command fails as the hook would
	 * have (lua_session_set_mail_from). */
	"local function envelope_of(session)\n"
	"  local env = rawget(session, 'envelope')\n"
	"  if type(env) ~= 'table' then error('session.envelope is not a table', 0) end\n"
	"  return env\n"
	"end\n"
	"function M.mail(session, address, smtputf8, dsn)\n"
	"  local disabled = rawget(session, 'disabledCommands')\n"
	"  local env, args = envelope_of(session), rawget(address, 'args')\n"
	"  if type(args) ~= 'table' then error('address.args is not a table', 0) end\n"
	"  local body, body_type = rawget(args, 'BODY'), '7bit'\n"
	"  if type(body) == 'string' or type(body) == 'number' then\n"
	"    body = upper(body)\n"
	"    body_type = body == '8BITMIME' and '8bitmime' or body == 'BINARYMIME' and 'binarymime' or '7bit'\n"
	"  end\n"
	"  local requiretls = rawget(args, 'REQUIRETLS')\n"
	"  rawset(env, 'mailFrom', address)\n"
	"  rawset(env, 'bodyType', body_type)\n"
	"  rawset(env, 'smtpUtf8', smtputf8)\n"
	"  if requiretls ~= nil then rawset(env, 'requireTLS', requiretls) end\n"
	"  if dsn then rawset(env, 'dsn', {ret = rawget(args, 'RET'), envid = rawget(args, 'ENVID')}) end\n"
	"  return disabled\n"
	"end\n"
	"function M.rcpt(session, address, at)\n"
	"  local disabled = rawget(session, 'disabledCommands')\n"
	"  local list = rawget(envelope_of(session), 'rcptTo')\n"
	"  if type(list) ~= 'table' then error('session.envelope.rcptTo is not a table', 0) end\n"
	"  rawset(list, at > 0 and at or #list + 1, address)\n"
	"  return disabled\n"
	"end\n"
	"return M\n";

enum { ENVELOPE_NEW, ENVELOPE_RESET, ENVELOPE_HELO, ENVELOPE_ADDRESS, ENVELOPE_JUDGE, ENVELOPE_MAIL, ENVELOPE_RCPT, ENVELOPE_FNS };
static const char *const envelope_fn_names[ENVELOPE_FNS] = {"new", "reset", "helo", "address", "judge", "mail", "rcpt"};
static int envelope_fn_ref[ENVELOPE_FNS];

bool lua_session_register(lua_State *L)
{
	if (luaL_loadbuffer(L, envelope_lua, sizeof envelope_lua - 1, "=envelope") || lua_pcall(L, 0, 1, 0)) {
		lua_pop(L, 1);
		return false;
	}
	for (int i = 0; i < ENVELOPE_FNS; i++) {
		lua_getfield(L, -1, envelope_fn_names[i]);
		envelope_fn_ref[i] = luaL_ref(L, LUA_REGISTRYINDEX);
	}
	lua_pop(L, 1);
	return true;
}

static void envelope_fn_push(lua_State *L, int fn)
{
	lua_rawgeti(L, LUA_REGISTRYINDEX, envelope_fn_ref[fn]);
}

/* Calls an envelope function (pushed, with its nargs arguments) for c,
 * protected: it works on the script's tables, which a hook may have
 * changed under it, and an error there must fail this session's command,
 * not the process (an unprotected call panics). On an error, logged, its
 * nres results are nils and it returns false. */
static bool envelope_call(struct conn *c, lua_State *L, int nargs, int nres, const char *what)
{
	if (lua_pcall(L, nargs, nres, 0) == 0)
		return true;
	conn_log(c, LOG_ERROR, "the session table could not be updated", "update", what, "error",
	         lua_isstring(L, -1) ? lua_tostring(L, -1) : "(not a string)", NULL);
	lua_pop(L, 1);
	for (int i = 0; i < nres; i++)
		lua_pushnil(L);
	return false;
}

void lua_session_new(struct conn *c)
{
	lua_State *L = lua_main;
	envelope_fn_push(L, ENVELOPE_NEW);
	lua_pushstring(L, c->id);
	lua_pushstring(L, c->remote_addr);
	lua_pushinteger(L, c->remote_port);
	lua_pushstring(L, c->local_addr);
	lua_pushinteger(L, c->local_port);
	lua_call(L, 5, 1);
	lua_state_of(c)->session_ref = luaL_ref(L, LUA_REGISTRYINDEX);
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
	lua_api_rawsetfield(L, -2, "proxy");
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
	lua_api_rawsetfield(L, -2, field);
	lua_pop(L, 1);
}

void lua_session_set_value(struct conn *c, const char *field, lua_State *L, int idx)
{
	lua_pushvalue(L, idx);
	lua_session_push(L, c);
	lua_insert(L, -2);
	lua_api_rawsetfield(L, -2, field);
	lua_pop(L, 1);
}

void lua_session_reset_envelope(struct conn *c)
{
	lua_State *L = lua_main;
	envelope_fn_push(L, ENVELOPE_RESET);
	lua_session_push(L, c);
	lua_pushinteger(L, conn_session(c)->transactions + 1);
	envelope_call(c, L, 2, 0, "envelope");
}

void lua_session_helo(struct conn *c, const char *name, const char *opening, const char *transmission)
{
	lua_State *L = lua_main;
	envelope_fn_push(L, ENVELOPE_HELO);
	lua_session_push(L, c);
	lua_pushinteger(L, conn_session(c)->transactions + 1);
	lua_pushstring(L, name);
	lua_pushstring(L, opening);
	lua_pushstring(L, transmission);
	envelope_call(c, L, 5, 0, "helo");
}

bool lua_session_set_mail_from(struct conn *c, lua_State *L, int idx, bool dsn)
{
	idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
	envelope_fn_push(L, ENVELOPE_MAIL);
	lua_session_push(L, c);
	lua_pushvalue(L, idx);
	lua_pushboolean(L, conn_session(c)->tx.smtputf8);
	lua_pushboolean(L, dsn);
	return envelope_call(c, L, 4, 1, "mailFrom");
}

bool lua_session_add_rcpt(struct conn *c, lua_State *L, int idx)
{
	struct smtp_session *s = conn_session(c);
	idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
	envelope_fn_push(L, ENVELOPE_RCPT);
	lua_session_push(L, c);
	lua_pushvalue(L, idx);
	lua_pushinteger(L, (lua_Integer)rcpt_set_find(s->rcpts, s->judged, strlen(s->judged)));
	return envelope_call(c, L, 3, 1, "rcptTo");
}

/* args = {KEY = value|true} from the path's parameters, xtext decoded. */
static void lua_push_address_args(lua_State *L, const struct smtp_path *p)
{
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
}

/* {"SUCCESS", ...}: NOTIFY's words, upper-cased, each at most 8 bytes. */
static void lua_push_notify(lua_State *L, const struct smtp_param *notify)
{
	lua_newtable(L);
	const char *v = notify->value, *end = v ? v + notify->value_len : NULL;
	for (int n = 1; v && v < end; n++) {
		const char *comma = memchr(v, ',', (size_t)(end - v));
		size_t len = comma ? (size_t)(comma - v) : (size_t)(end - v);
		char word[8];
		for (size_t i = 0; i < len && i < sizeof word; i++)
			word[i] = (char)(v[i] >= 'a' && v[i] <= 'z' ? v[i] - 32 : v[i]);
		lua_pushlstring(L, word, len < sizeof word ? len : sizeof word);
		lua_rawseti(L, -2, n);
		v = comma ? comma + 1 : end;
	}
}

/* The address's parts as the chunk's address() takes them: the address,
 * its args (nil: none), dsn and NOTIFY's words (nil: none). */
static void lua_push_address_parts(lua_State *L, const struct smtp_path *p, bool dsn)
{
	lua_pushlstring(L, p->address, p->address_len);
	if (p->nparams)
		lua_push_address_args(L, p);
	else
		lua_pushnil(L);
	lua_pushboolean(L, dsn);
	const struct smtp_param *notify = dsn ? smtp_path_param(p, "NOTIFY") : NULL;
	if (notify)
		lua_push_notify(L, notify);
	else
		lua_pushnil(L);
}

void lua_push_address(lua_State *L, const struct smtp_path *p, bool dsn)
{
	envelope_fn_push(L, ENVELOPE_ADDRESS);
	lua_push_address_parts(L, p, dsn);
	lua_call(L, 4, 1);
}

int lua_session_judge_push(lua_State *co, struct conn *c, const struct smtp_path *p, bool dsn)
{
	envelope_fn_push(co, ENVELOPE_JUDGE);
	lua_insert(co, -2); /* below the hook */
	lua_session_push(co, c);
	lua_push_address_parts(co, p, dsn);
	return 6;
}
