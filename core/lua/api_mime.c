/* api_mime — smtp.core.mime, the C half of smtp.mime (lua/smtp/mime.lua):
 * a message parsed by GMime (proto/mime_tree.c) handed to Lua as plain
 * tables, from a string, a file, or a sink the onData stream's chunks are
 * written to. The sink holds a small message in memory and moves a large
 * one to an unlinked temporary file, so parsing a 20 MiB message costs
 * the parser's buffers and the text kept, not 20 MiB. */
#include "lua/lua_api.h"
#include "lua/modules.h"
#include "proto/mime_tree.h"

#include <gmime/gmime.h>
#include <lualib.h>

#include <errno.h>
#include <string.h>
#include <unistd.h>

/* A message over this many bytes goes to a temporary file. */
#define SINK_MEMORY_MAX (256 * 1024)

struct sink {
	GByteArray *mem;   /* the bytes so far, until they go to file */
	GMimeStream *file; /* NULL while in memory */
	bool spent;        /* parsed or closed */
};

static int sink_class = LUA_NOREF;

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

static struct sink *check_sink(lua_State *L)
{
	return lua_api_checkudata(L, 1, sink_class, "mime sink");
}

static void sink_release(struct sink *s)
{
	if (s->mem)
		g_byte_array_unref(s->mem);
	s->mem = NULL;
	if (s->file)
		g_object_unref(s->file);
	s->file = NULL;
	s->spent = true;
}

/* The bytes so far go to an unlinked temporary file (in $TMPDIR); NULL,
 * or why not. */
static const char *sink_spill(struct sink *s)
{
	static char why[256];
	char *path = NULL;
	GError *err = NULL;
	int fd = g_file_open_tmp("luasmtpd-mime-XXXXXX", &path, &err);
	if (fd < 0) {
		g_strlcpy(why, err ? err->message : "cannot create a temporary file", sizeof why);
		g_clear_error(&err);
		return why;
	}
	unlink(path);
	g_free(path);
	s->file = g_mime_stream_fs_new(fd); /* owns fd */
	/* An empty array has no data, which g_mime_stream_write refuses: a
	 * first chunk over the limit spills at once. */
	if (s->mem->len && g_mime_stream_write(s->file, (const char *)s->mem->data, s->mem->len) < 0)
		return lua_api_errno(errno);
	g_byte_array_unref(s->mem);
	s->mem = NULL;
	return NULL;
}

/* sink() -> a sink: s:write(chunk) -> true or nil, err; s:parse([maxText]) -> msg */
static int mime_sink(lua_State *L)
{
	struct sink *s = lua_api_newudata(L, sizeof *s, sink_class);
	s->mem = g_byte_array_new();
	return 1;
}

static int sink_write(lua_State *L)
{
	struct sink *s = check_sink(L);
	size_t len;
	const char *chunk = luaL_checklstring(L, 2, &len);
	if (s->spent)
		return luaL_error(L, "mime sink: already parsed");
	const char *err = NULL;
	if (!s->file && s->mem->len + len > SINK_MEMORY_MAX)
		err = sink_spill(s);
	if (!err && !s->file)
		g_byte_array_append(s->mem, (const guint8 *)chunk, (guint)len);
	else if (!err && g_mime_stream_write(s->file, chunk, len) < 0)
		err = lua_api_errno(errno);
	if (err) {
		sink_release(s);
		return lua_api_fail(L, err);
	}
	lua_pushboolean(L, 1);
	return 1;
}

static int sink_parse(lua_State *L)
{
	struct sink *s = check_sink(L);
	struct mime_limits lim;
	limits_from(L, 2, &lim);
	if (s->spent)
		return luaL_error(L, "mime sink: already parsed");
	struct mime_msg m;
	if (s->file) {
		g_mime_stream_reset(s->file);
		mime_tree_parse_stream(s->file, &lim, &m);
	} else {
		mime_tree_parse_buffer((const char *)s->mem->data, s->mem->len, &lim, &m);
	}
	sink_release(s);
	push_msg(L, &m);
	mime_msg_free(&m);
	return 1;
}

static int sink_gc(lua_State *L)
{
	struct sink *s = check_sink(L);
	if (!s->spent)
		sink_release(s);
	return 0;
}

int luaopen_smtp_mime(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{"parse", mime_parse},
		{"parse_file", mime_parse_file},
		{"addresses", mime_addresses},
		{"sink", mime_sink},
		{NULL, NULL},
	};
	static const luaL_Reg methods[] = {
		{"write", sink_write},
		{"parse", sink_parse},
		{NULL, NULL},
	};
	static const luaL_Reg meta[] = {
		{"__gc", sink_gc},
		{NULL, NULL},
	};
	mime_tree_init();
	if (sink_class == LUA_NOREF)
		sink_class = lua_api_class(L, methods, meta);
	return lua_api_module(L, fns);
}
