/* api_mime — smtp.core.mime, the C half of smtp.mime (lua/smtp/mime.lua):
 * a message parsed by GMime (proto/mime_tree.c) handed to Lua as plain
 * tables, from a string, a file, or the spool (lua/api_spool.c) the
 * onData stream's chunks were written to: a small message is parsed in
 * memory, a large one from the spool's temporary file, so parsing a
 * 20 MiB message costs the parser's buffers and the text kept, not
 * 20 MiB. */
#include "lua/api_spool.h"
#include "lua/lua_api.h"
#include "lua/modules.h"
#include "proto/mime_tree.h"

#include <gmime/gmime.h>
#include <lualib.h>

#include <errno.h>
#include <unistd.h>

static void push_string_field(lua_State *L, const char *key, const char *value)
{
	if (!value)
		return;
	lua_pushstring(L, value);
	lua_setfield(L, -2, key);
}

static void push_part(lua_State *L, const struct mime_part *p)
{
	luaL_checkstack(L, 6, "parts nested too deep");
	lua_createtable(L, 0, 11);
	push_string_field(L, "type", p->type);
	lua_createtable(L, 0, (int)p->nparams);
	for (size_t i = 0; i < p->nparams; i++) {
		lua_pushstring(L, p->params[i].value);
		lua_setfield(L, -2, p->params[i].name);
	}
	lua_setfield(L, -2, "params");
	push_string_field(L, "disposition", p->disposition);
	push_string_field(L, "filename", p->filename);
	push_string_field(L, "encoding", p->encoding);
	push_string_field(L, "charset", p->charset);
	if (p->leaf) {
		lua_pushnumber(L, (lua_Number)p->size);
		lua_setfield(L, -2, "size");
	}
	if (p->is_text) {
		lua_pushlstring(L, p->text, p->text_len);
		lua_setfield(L, -2, "text");
		lua_pushboolean(L, p->truncated);
		lua_setfield(L, -2, "truncated");
	}
	if (p->container) {
		lua_createtable(L, (int)p->nparts, 0);
		for (size_t i = 0; i < p->nparts; i++) {
			push_part(L, &p->parts[i]);
			lua_rawseti(L, -2, (int)i + 1);
		}
		lua_setfield(L, -2, "parts");
	}
}

/* {headers = {{name, value, raw}, ...}, root = part, defects = {...}} */
static void push_msg(lua_State *L, const struct mime_msg *m)
{
	lua_createtable(L, 0, 3);
	lua_createtable(L, (int)m->nheaders, 0);
	for (size_t i = 0; i < m->nheaders; i++) {
		lua_createtable(L, 0, 3);
		push_string_field(L, "name", m->headers[i].name);
		push_string_field(L, "value", m->headers[i].value);
		push_string_field(L, "raw", m->headers[i].raw);
		lua_rawseti(L, -2, (int)i + 1);
	}
	lua_setfield(L, -2, "headers");
	push_part(L, &m->root);
	lua_setfield(L, -2, "root");
	lua_createtable(L, (int)m->ndefects, 0);
	for (size_t i = 0; i < m->ndefects; i++) {
		lua_pushstring(L, m->defects[i]);
		lua_rawseti(L, -2, (int)i + 1);
	}
	lua_setfield(L, -2, "defects");
}

static void limits_from(lua_State *L, int idx, struct mime_limits *lim)
{
	mime_limits_default(lim);
	if (lua_isnoneornil(L, idx))
		return;
	lua_Number max_text = luaL_checknumber(L, idx);
	luaL_argcheck(L, max_text >= 0 && max_text <= (lua_Number)(1u << 30), idx, "maxText out of range");
	lim->max_text = (size_t)max_text;
	if (lim->max_total_text < lim->max_text)
		lim->max_total_text = lim->max_text;
}

/* parse(message [, maxText]) -> msg */
static int mime_parse(lua_State *L)
{
	size_t len;
	const char *data = luaL_checklstring(L, 1, &len);
	struct mime_limits lim;
	limits_from(L, 2, &lim);
	struct mime_msg m;
	mime_tree_parse_buffer(data, len, &lim, &m);
	push_msg(L, &m);
	mime_msg_free(&m);
	return 1;
}

/* parse_file(file [, maxText]) -> msg: the whole file from its start,
 * read in place by GMime through a descriptor of its own; the handle's
 * position is left where it was. */
static int mime_parse_file(lua_State *L)
{
	FILE **fp = luaL_checkudata(L, 1, LUA_FILEHANDLE);
	luaL_argcheck(L, *fp != NULL, 1, "closed file");
	struct mime_limits lim;
	limits_from(L, 2, &lim);
	/* what is written reaches the file, the descriptor's offset is the handle's */
	fflush(*fp);
	int fd = dup(fileno(*fp));
	if (fd < 0)
		return lua_api_fail(L, lua_api_errno(errno));
	off_t at = lseek(fd, 0, SEEK_CUR); /* shared with the handle's descriptor */
	GMimeStream *stream = g_mime_stream_fs_new_with_bounds(fd, 0, -1); /* owns fd */
	struct mime_msg m;
	mime_tree_parse_stream(stream, &lim, &m);
	g_object_unref(stream);
	if (at >= 0)
		lseek(fileno(*fp), at, SEEK_SET);
	push_msg(L, &m);
	mime_msg_free(&m);
	return 1;
}

/* addresses(raw) -> {{name = ..., address = ...}, ...} */
static int mime_addresses(lua_State *L)
{
	const char *raw = luaL_checkstring(L, 1);
	size_t n;
	struct mime_address *a = mime_addresses_parse(raw, &n);
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		lua_createtable(L, 0, 2);
		push_string_field(L, "name", a[i].name);
		push_string_field(L, "address", a[i].address);
		lua_rawseti(L, -2, (int)i + 1);
	}
	mime_addresses_free(a, n);
	return 1;
}

/* parse_spool(spool [, maxText]) -> msg: the bytes in memory in place,
 * those in the spool's file through a GMime stream over its descriptor,
 * up to the spool's size. */
static int mime_parse_spool(lua_State *L)
{
	const struct spool *sp = lua_spool_check(L, 1);
	struct mime_limits lim;
	limits_from(L, 2, &lim);
	struct mime_msg m;
	const char *mem = spool_memory(sp);
	if (mem) {
		mime_tree_parse_buffer(mem, (size_t)sp->size, &lim, &m);
	} else {
		GMimeStream *stream = g_mime_stream_fs_new_with_bounds(spool_fd(sp), 0, (gint64)sp->size);
		g_mime_stream_fs_set_owner((GMimeStreamFs *)stream, FALSE); /* the spool closes it */
		mime_tree_parse_stream(stream, &lim, &m);
		g_object_unref(stream);
	}
	push_msg(L, &m);
	mime_msg_free(&m);
	return 1;
}

int luaopen_smtp_mime(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{"parse", mime_parse},
		{"parse_file", mime_parse_file},
		{"addresses", mime_addresses},
		{"parse_spool", mime_parse_spool},
		{NULL, NULL},
	};
	mime_tree_init();
	return lua_api_module(L, fns);
}
