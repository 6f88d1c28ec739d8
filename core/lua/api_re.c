/* api_re — PCRE2 for ngx.re (lua/smtp/ngx/re.lua builds match, find,
 * gmatch, sub and gsub on it): a compiled regex is a userdata holding the
 * code and its match data; exec fills the caller's offset table. The
 * option letters are lua-nginx-module's; "o" (the compile-once cache) is
 * the Lua side's, "j" asks for PCRE2's JIT, "d" for the DFA matcher. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "lua/lua_api.h"
#include "lua/modules.h"

#include <pcre2.h>

#include <stdbool.h>
#include <stdio.h>

/* pcre2_dfa_match's scratch space, in ints (PCRE2's documented minimum
 * is 20; 100 covers ordinary patterns, more gives "workspace" errors). */
#define RE_DFA_WORKSPACE 100

struct re {
	pcre2_code *code;
	pcre2_match_data *md;
	uint32_t match_opts; /* PCRE2_NO_UTF_CHECK with "U" */
	bool dfa;
};

static struct lua_api_class re_class = LUA_API_CLASS_NONE;

static bool re_parse_opts(lua_State *L, const char *opts, uint32_t *copts, struct re *r, bool *jit)
{
	for (const char *p = opts; *p; p++) {
		switch (*p) {
		case 'a': *copts |= PCRE2_ANCHORED; break;
		case 'd': r->dfa = true; break;
		case 'D': *copts |= PCRE2_DUPNAMES; break;
		case 'i': *copts |= PCRE2_CASELESS; break;
		case 'j': *jit = true; break;
		case 'J': *copts |= PCRE2_ALT_BSUX | PCRE2_MATCH_UNSET_BACKREF; break;
		case 'm': *copts |= PCRE2_MULTILINE; break;
		case 'o': break; /* the cache is lua/smtp/ngx/re.lua's */
		case 's': *copts |= PCRE2_DOTALL; break;
		case 'u': *copts |= PCRE2_UTF; break;
		case 'U':
			*copts |= PCRE2_UTF;
			r->match_opts |= PCRE2_NO_UTF_CHECK;
			break;
		case 'x': *copts |= PCRE2_EXTENDED; break;
		default:
			luaL_error(L, "unknown flag \"%c\" (flags \"%s\")", *p, opts);
			return false;
		}
	}
	return true;
}

/* compile(pattern, opts): the regex, or nil, err (lua-nginx-module's text) */
static int re_compile(lua_State *L)
{
	size_t len;
	const char *pattern = luaL_checklstring(L, 1, &len);
	const char *opts = luaL_optstring(L, 2, "");
	struct re *r = lua_api_newudata(L, sizeof *r, &re_class);
	uint32_t copts = 0;
	bool jit = false;
	re_parse_opts(L, opts, &copts, r, &jit);
	int code;
	PCRE2_SIZE at;
	r->code = pcre2_compile((PCRE2_SPTR)pattern, len, copts, &code, &at, NULL);
	if (!r->code) {
		PCRE2_UCHAR msg[256];
		pcre2_get_error_message(code, msg, sizeof msg);
		lua_pushnil(L);
		lua_pushfstring(L, "pcre2_compile() failed: %s in \"%s\"", (const char *)msg, pattern);
		return 2;
	}
	/* Without JIT support PCRE2 interprets: "j" is a wish, as in nginx. */
	if (jit)
		pcre2_jit_compile(r->code, PCRE2_JIT_COMPLETE);
	r->md = pcre2_match_data_create_from_pattern(r->code, NULL);
	if (!r->md)
		return luaL_error(L, "out of memory");
	return 1;
}

static struct re *re_check(lua_State *L)
{
	return lua_api_checkudata(L, 1, &re_class, "regex");
}

/* re:exec(subject, offset, ov [, notempty_atstart]): offset is 0-based;
 * returns how many groups are set (ov[1], ov[2] = start, end of group 0,
 * 0-based and exclusive; -1 when unset, up to every group of the pattern),
 * 0 for no match, or nil, err. */
static int re_exec(lua_State *L)
{
	struct re *r = re_check(L);
	size_t len;
	const char *s = luaL_checklstring(L, 2, &len);
	lua_Integer off = luaL_checkinteger(L, 3);
	luaL_checktype(L, 4, LUA_TTABLE);
	uint32_t mopts = r->match_opts;
	if (lua_toboolean(L, 5))
		mopts |= PCRE2_NOTEMPTY_ATSTART | PCRE2_ANCHORED;
	if (off < 0 || (size_t)off > len)
		return luaL_argerror(L, 3, "offset outside the subject");
	int rc;
	if (r->dfa) {
		int ws[RE_DFA_WORKSPACE];
		rc = pcre2_dfa_match(r->code, (PCRE2_SPTR)s, len, (PCRE2_SIZE)off, mopts, r->md, NULL,
		                     ws, RE_DFA_WORKSPACE);
		if (rc == 0) /* more matches than pairs: the first (longest) is there */
			rc = 1;
		if (rc > 0)
			rc = 1; /* the DFA matcher has no groups; its extra pairs are shorter matches */
	} else {
		rc = pcre2_match(r->code, (PCRE2_SPTR)s, len, (PCRE2_SIZE)off, mopts, r->md, NULL);
	}
	if (rc == PCRE2_ERROR_NOMATCH) {
		lua_pushinteger(L, 0);
		return 1;
	}
	if (rc < 0) {
		lua_pushnil(L);
		lua_pushfstring(L, "pcre_exec() failed: %d", rc);
		return 2;
	}
	uint32_t ncap = 0;
	pcre2_pattern_info(r->code, PCRE2_INFO_CAPTURECOUNT, &ncap);
	PCRE2_SIZE *ov = pcre2_get_ovector_pointer(r->md);
	for (uint32_t i = 0; i <= ncap; i++) {
		bool set = (int)i < rc && ov[2 * i] != PCRE2_UNSET;
		lua_pushinteger(L, set ? (lua_Integer)ov[2 * i] : -1);
		lua_rawseti(L, 4, (int)(2 * i + 1));
		lua_pushinteger(L, set ? (lua_Integer)ov[2 * i + 1] : -1);
		lua_rawseti(L, 4, (int)(2 * i + 2));
	}
	lua_pushinteger(L, rc);
	return 1;
}

/* re:ncaptures(): the number of groups */
static int re_ncaptures(lua_State *L)
{
	struct re *r = re_check(L);
	uint32_t n = 0;
	pcre2_pattern_info(r->code, PCRE2_INFO_CAPTURECOUNT, &n);
	lua_pushinteger(L, r->dfa ? 0 : (lua_Integer)n);
	return 1;
}

/* re:names(): {{name, group}, ...} in PCRE2's name table order */
static int re_names(lua_State *L)
{
	struct re *r = re_check(L);
	uint32_t count = 0, size = 0;
	PCRE2_SPTR table = NULL;
	pcre2_pattern_info(r->code, PCRE2_INFO_NAMECOUNT, &count);
	pcre2_pattern_info(r->code, PCRE2_INFO_NAMEENTRYSIZE, &size);
	pcre2_pattern_info(r->code, PCRE2_INFO_NAMETABLE, &table);
	lua_createtable(L, (int)count, 0);
	for (uint32_t i = 0; i < count; i++) {
		PCRE2_SPTR e = table + (size_t)i * size;
		lua_createtable(L, 2, 0);
		lua_pushstring(L, (const char *)e + 2);
		lua_rawseti(L, -2, 1);
		lua_pushinteger(L, (e[0] << 8) | e[1]);
		lua_rawseti(L, -2, 2);
		lua_rawseti(L, -2, (int)i + 1);
	}
	return 1;
}

static int re_gc(lua_State *L)
{
	struct re *r = re_check(L);
	pcre2_match_data_free(r->md);
	pcre2_code_free(r->code);
	r->md = NULL;
	r->code = NULL;
	return 0;
}

int luaopen_smtp_re(lua_State *L)
{
	static const luaL_Reg methods[] = {
		{"exec", re_exec},
		{"ncaptures", re_ncaptures},
		{"names", re_names},
		{NULL, NULL},
	};
	static const luaL_Reg meta[] = {
		{"__gc", re_gc},
		{NULL, NULL},
	};
	static const luaL_Reg fns[] = {
		{"compile", re_compile},
		{NULL, NULL},
	};
	if (re_class.ref == LUA_NOREF)
		re_class = lua_api_class(L, methods, meta);
	return lua_api_module(L, fns);
}
