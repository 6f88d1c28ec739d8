/* api_dns — smtp.dns: query(name, type) for A, AAAA, MX, TXT and PTR from
 * a hook, suspending only that hook; configure{servers, timeout, tries}. */
#include "lua/api_dns.h"
#include "smtp/session.h"

#include "lua/lua_api.h"
#include "lua/lua_hook.h"
#include "lua/modules.h"
#include "net/conn.h"
#include "net/dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define DNS_MAX_ANSWERS 64

struct lua_dns_wait {
	struct hook_pending pending; /* first member: the cleanup gets us back */
	struct dns_query *q;
	int type;
};

static const struct {
	const char *name;
	int type;
} dns_types[] = {
	{"A", ns_t_a}, {"AAAA", ns_t_aaaa}, {"MX", ns_t_mx}, {"TXT", ns_t_txt}, {"PTR", ns_t_ptr},
};

/* A and AAAA answers: a list of address strings. */
static void push_addresses(lua_State *L, int family, const unsigned char *abuf, int alen, int *ok)
{
	union {
		struct ares_addrttl v4[DNS_MAX_ANSWERS];
		struct ares_addr6ttl v6[DNS_MAX_ANSWERS];
	} a;
	int n = DNS_MAX_ANSWERS;
	*ok = (family == AF_INET ? ares_parse_a_reply(abuf, alen, NULL, a.v4, &n)
	                         : ares_parse_aaaa_reply(abuf, alen, NULL, a.v6, &n)) == ARES_SUCCESS;
	lua_createtable(L, n, 0);
	for (int i = 0; *ok && i < n; i++) {
		char s[INET6_ADDRSTRLEN];
		const void *ip = family == AF_INET ? (const void *)&a.v4[i].ipaddr : (const void *)&a.v6[i].ip6addr;
		inet_ntop(family, ip, s, sizeof s);
		lua_pushstring(L, s);
		lua_rawseti(L, -2, i + 1);
	}
}

static void push_mx(lua_State *L, const unsigned char *abuf, int alen, int *ok)
{
	struct ares_mx_reply *mx = NULL;
	*ok = ares_parse_mx_reply(abuf, alen, &mx) == ARES_SUCCESS;
	lua_newtable(L);
	int i = 0;
	for (struct ares_mx_reply *m = mx; *ok && m; m = m->next) {
		lua_createtable(L, 0, 2);
		lua_pushstring(L, m->host);
		lua_setfield(L, -2, "exchange");
		lua_pushinteger(L, m->priority);
		lua_setfield(L, -2, "priority");
		lua_rawseti(L, -2, ++i);
	}
	ares_free_data(mx);
}

/* One string per TXT record, its character-strings joined (as SPF wants). */
static void push_txt(lua_State *L, const unsigned char *abuf, int alen, int *ok)
{
	struct ares_txt_ext *txt = NULL;
	*ok = ares_parse_txt_reply_ext(abuf, alen, &txt) == ARES_SUCCESS;
	lua_newtable(L);
	int i = 0, parts = 0;
	for (struct ares_txt_ext *t = txt; *ok && t; t = t->next) {
		if (t->record_start && parts) {
			lua_concat(L, parts);
			lua_rawseti(L, -2, ++i);
			parts = 0;
		}
		lua_pushlstring(L, (const char *)t->txt, t->length);
		parts++;
	}
	if (parts) {
		lua_concat(L, parts);
		lua_rawseti(L, -2, ++i);
	}
	ares_free_data(txt);
}

static void push_ptr(lua_State *L, const unsigned char *abuf, int alen, int *ok)
{
	struct hostent *h = NULL;
	*ok = ares_parse_ptr_reply(abuf, alen, NULL, 0, AF_INET, &h) == ARES_SUCCESS;
	lua_newtable(L);
	if (*ok && h) {
		lua_pushstring(L, h->h_name);
		lua_rawseti(L, -2, 1);
		int n = 1;
		for (int i = 0; h->h_aliases && h->h_aliases[i]; i++) {
			if (strcmp(h->h_aliases[i], h->h_name) == 0)
				continue; /* c-ares lists the name among its aliases too */
			lua_pushstring(L, h->h_aliases[i]);
			lua_rawseti(L, -2, ++n);
		}
	}
	if (h)
		ares_free_hostent(h);
}

/* Pushes the records of a raw answer as a Lua array; false (nothing
 * pushed) when the answer does not parse. */
static bool dns_push_records(lua_State *L, int type, const unsigned char *abuf, int alen)
{
	int ok = 0;
	switch (type) {
	case ns_t_a: push_addresses(L, AF_INET, abuf, alen, &ok); break;
	case ns_t_aaaa: push_addresses(L, AF_INET6, abuf, alen, &ok); break;
	case ns_t_mx: push_mx(L, abuf, alen, &ok); break;
	case ns_t_txt: push_txt(L, abuf, alen, &ok); break;
	case ns_t_ptr: push_ptr(L, abuf, alen, &ok); break;
	}
	if (!ok)
		lua_pop(L, 1);
	return ok;
}

const char *lua_dns_error(int status)
{
	switch (status) {
	case ARES_ENOTFOUND:
	case ARES_ENODATA: return LUA_ERR_NOT_FOUND;
	case ARES_ETIMEOUT: return LUA_ERR_TIMEOUT;
	case ARES_ECONNREFUSED: return LUA_ERR_REFUSED;
	case ARES_EBADNAME: return LUA_ERR_BAD_NAME;
	default: return ares_strerror(status);
	}
}

/* Pushes records, or nil, err. */
static int lua_dns_results(lua_State *L, int type, int status, const unsigned char *abuf, int alen)
{
	if (status == ARES_SUCCESS && dns_push_records(L, type, abuf, alen))
		return 1;
	return lua_api_fail(L, status == ARES_SUCCESS ? LUA_ERR_BAD_ANSWER : lua_dns_error(status));
}

/* Runs from the loop, never inside lua_dns_query (dns.h). */
static void lua_dns_answered(void *arg, int status, const unsigned char *abuf, int alen)
{
	struct lua_dns_wait *w = arg;
	lua_State *co = hook_pending_thread(&w->pending);
	if (co)
		hook_pending_done(&w->pending, lua_dns_results(co, w->type, status, abuf, alen));
	free(w);
}

static void lua_dns_cleanup(struct hook_pending *p)
{
	struct lua_dns_wait *w = (struct lua_dns_wait *)p;
	dns_cancel(w->q);
	free(w);
}

static int lua_dns_query(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	const char *tname = luaL_optstring(L, 2, "A");
	int type = 0;
	for (size_t i = 0; i < sizeof dns_types / sizeof *dns_types; i++)
		if (strcasecmp(dns_types[i].name, tname) == 0)
			type = dns_types[i].type;
	if (!type)
		return luaL_argerror(L, 2, "expected A, AAAA, MX, TXT or PTR");
	if (!hook_can_wait(L))
		return luaL_error(L, "smtp.dns.query: only a hook's own coroutine can wait for an answer");
	char rev[80];
	if (type == ns_t_ptr && dns_reverse_name(name, rev, sizeof rev))
		name = rev;
	struct lua_dns_wait *w = calloc(1, sizeof *w);
	if (!w)
		abort();
	w->pending.cleanup = lua_dns_cleanup;
	w->type = type;
	char err[256];
	w->q = dns_query(name, type, lua_dns_answered, w, err, sizeof err);
	if (!w->q) {
		free(w);
		return lua_api_fail(L, err);
	}
	return hook_wait(L, &w->pending);
}

static int lua_dns_configure(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	lua_getfield(L, 1, "servers");
	if (lua_type(L, -1) == LUA_TTABLE) {
		for (int i = 1; i <= (int)lua_objlen(L, -1); i++) {
			lua_rawgeti(L, -1, i);
			const char *s = lua_tostring(L, -1);
			lua_pop(L, 1);
			if (!s)
				return luaL_error(L, "smtp.dns.configure: servers[%d] is not a string", i);
			if (i > 1)
				luaL_addchar(&b, ',');
			luaL_addstring(&b, s);
		}
	}
	lua_pop(L, 1);
	luaL_pushresult(&b);
	lua_getfield(L, 1, "timeout");
	double timeout = lua_tonumber(L, -1);
	lua_getfield(L, 1, "tries");
	int tries = (int)lua_tointeger(L, -1);
	char err[256];
	if (!dns_configure(lua_tostring(L, -3), timeout, tries, err, sizeof err))
		return luaL_error(L, "smtp.dns.configure: %s", err);
	return 0;
}

int luaopen_smtp_dns(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{"query", lua_dns_query},
		{"configure", lua_dns_configure},
		{NULL, NULL},
	};
	return lua_api_module(L, fns);
}
