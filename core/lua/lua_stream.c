#include "lua/lua_stream.h"
#include "lua/lua_session_state.h"
#include "smtp/session.h"

#include "smtp/body_verdict.h"
#include "net/conn.h"
#include "lua/api_fsync.h"
#include "lua/errors.h"
#include "lua/lua_api.h"
#include "lua/lua_hook.h"
#include "lua/lua_runtime.h"

#include <lauxlib.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STREAM_MT "luasmtpd.stream"

struct lua_stream {
	struct conn *c; /* NULL once detached */
	double byte_length;
	int size_exceeded;
};

static struct lua_api_class stream_class = LUA_API_CLASS_NONE;

/* Runs on every read: the class is told by its metatable's address. */
static struct lua_stream *stream_check(lua_State *L)
{
	return lua_api_checkudata(L, 1, &stream_class, "stream");
}

static int stream_fail(lua_State *L, const char *err)
{
	lua_pushnil(L);
	lua_pushstring(L, err);
	return 2;
}

/* nil and the reply the core will give, where the end would have been. */
static int stream_push_refusal(lua_State *L, const struct body_refusal *r)
{
	lua_pushnil(L);
	lua_pushfstring(L, "%d %s %s", r->code, r->enhanced, r->text);
	return 2;
}

/* Pushes everything pending as one chunk. */
static void stream_push_pending(lua_State *L, struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	struct buf *p = &s->body->pending;
	lua_pushlstring(L, buf_head(p), buf_used(p));
	buf_consume(p, buf_used(p));
	s->body->handed_out = true;
}

static bool stream_waiting(const struct conn *c)
{
	const struct hook_run *h = &lua_state_of(c)->hook;
	return h->active && h->wait == WAIT_STREAM && h->id == HOOK_DATA;
}

/* Moves what the header block lacks from the pending bytes into it; true
 * once the stream may hand bytes out: the block is complete (or over its
 * limit), or already written out. */
static bool stream_header_ready(struct conn *c)
{
	struct body *b = conn_session(c)->body;
	struct message *m = &b->msg;
	if (m->emitted)
		return true;
	if (!message_ready(m) && buf_used(&b->pending) > 0)
		buf_consume(&b->pending, message_take(m, buf_head(&b->pending), buf_used(&b->pending)));
	if (b->ended)
		message_end(m);
	return message_ready(m);
}

/* The first reader or saver takes the header block with its edits, ahead
 * of the body bytes pending: put back in front of them where it came from
 * when it is unedited (no new buffer, no copy of the body), else in a new
 * buffer with them behind it. */
static void stream_header_out(struct conn *c)
{
	struct body *b = conn_session(c)->body;
	if (message_emit_front(&b->msg, &b->pending))
		return;
	struct buf out = {0};
	message_emit(&b->msg, &out);
	if (buf_used(&b->pending) > 0)
		buf_append(&out, buf_head(&b->pending), buf_used(&b->pending));
	buf_free(&b->pending);
	b->pending = out;
}

/* Ready and not written out yet: written out now. */
static bool stream_header_take(struct conn *c)
{
	if (!stream_header_ready(c))
		return false;
	if (!conn_session(c)->body->msg.emitted)
		stream_header_out(c);
	return true;
}

static int stream_read(lua_State *L)
{
	struct lua_stream *st = stream_check(L);
	struct conn *c = st->c;
	if (!c)
		return 0; /* detached: the body is over */
	struct body_refusal refusal;
	if (body_verdict(c, &refusal))
		return stream_push_refusal(L, &refusal);
	if (stream_header_take(c)) {
		if (buf_used(&conn_session(c)->body->pending) > 0) {
			stream_push_pending(L, c);
			return 1;
		}
		if (conn_session(c)->body->ended)
			return 0;
	}
	if (hook_current(L) != c)
		return luaL_error(L, "stream:read: only the onData hook's coroutine may wait for the body");
	lua_state_of(c)->hook.wait = WAIT_STREAM;
	return lua_yield(L, 0);
}

static int stream_check_only(lua_State *L)
{
	stream_check(L);
	return 0;
}

/* stream:chunks() is Lua: after a read that waited (yielded) only Lua code
 * can go on. Its iterator raises the core's refusal that stream:read()
 * returns ("552 5.3.4 Error: ...") as an smtp.reject, so a hook that lets
 * it through is answered that, not logged as a bug. */
static const char stream_chunks_lua[] =
	"local read, check = ...\n"
	"local function next_chunk(stream)\n"
	"  local chunk, err = read(stream)\n"
	"  if err then error(require('smtp').reject(tonumber(err:sub(1, 3)), err:sub(5)), 0) end\n"
	"  return chunk\n"
	"end\n"
	/* A stateless iterator: a closure per message cost a message 1,500
	 * instructions with what collecting it took. */
	"return function(stream)\n"
	"  check(stream)\n"
	"  return next_chunk, stream\n"
	"end\n";

static bool stream_write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return false;
		}
		p += w;
		n -= (size_t)w;
	}
	return true;
}

/* Writes bytes to the save file; remembers the first error. */
static void stream_save_bytes(struct conn *c, const char *p, size_t n)
{
	struct smtp_session *s = conn_session(c);
	struct body *b = s->body;
	if (b->save_errno == 0 && !stream_write_all(b->save_fd, p, n))
		b->save_errno = errno;
}

static void stream_save_pending(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	struct body *b = s->body;
	stream_save_bytes(c, buf_head(&b->pending), buf_used(&b->pending));
	buf_consume(&b->pending, buf_used(&b->pending));
}

/* Drops an unfinished save file. */
static void stream_save_abort(struct body *b)
{
	if (b->save_fd >= 0) {
		close(b->save_fd);
		unlink(b->save_path);
		b->save_fd = -1;
	}
	free(b->save_path);
	b->save_path = NULL;
}

/* Closes the save file at the end of the body; pushes true or nil, err.
 * true means durable: the data, and the file's name in its directory. */
static int stream_save_finish(lua_State *L, struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	struct body *b = s->body;
	if (b->save_errno == 0 && fsync(b->save_fd) != 0)
		b->save_errno = errno;
	if (close(b->save_fd) != 0 && b->save_errno == 0)
		b->save_errno = errno;
	if (b->save_errno == 0 && fsync_parent_dir(b->save_path) != 0)
		b->save_errno = errno;
	b->save_fd = -1;
	if (b->save_errno != 0)
		unlink(b->save_path);
	free(b->save_path);
	b->save_path = NULL;
	if (b->save_errno != 0)
		return stream_fail(L, strerror(b->save_errno));
	lua_pushboolean(L, 1);
	return 1;
}

static int stream_save(lua_State *L)
{
	struct lua_stream *st = stream_check(L);
	const char *path = luaL_checkstring(L, 2);
	size_t prefix_len = 0;
	const char *prefix = luaL_optlstring(L, 3, "", &prefix_len);
	struct conn *c = st->c;
	if (!c)
		return stream_fail(L, LUA_ERR_GONE);
	struct body *b = conn_session(c)->body;
	if (b->save_fd >= 0)
		return luaL_error(L, "stream:save: already saving");
	struct body_refusal refusal;
	if (body_verdict(c, &refusal))
		return stream_push_refusal(L, &refusal);
	/* What was read is gone: the file would hold only the rest. */
	if (b->handed_out)
		return stream_fail(L, "stream:save: part of the message was already read");
	if (!b->ended && hook_current(L) != c)
		return luaL_error(L, "stream:save: only the onData hook's coroutine may wait for the body");
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return stream_fail(L, strerror(errno));
	b->save_fd = fd;
	b->save_errno = 0;
	b->save_path = strdup(path);
	b->handed_out = true;
	if (!stream_write_all(fd, prefix, prefix_len))
		b->save_errno = errno;
	if (stream_header_take(c))
		stream_save_pending(c);
	if (b->ended)
		return stream_save_finish(L, c);
	lua_state_of(c)->hook.wait = WAIT_STREAM;
	return lua_yield(L, 0);
}

/* The header edits: true, or nil and why not (smtp/message.h). */
static int stream_edited(lua_State *L, const char *err)
{
	if (err)
		return stream_fail(L, err);
	lua_pushboolean(L, 1);
	return 1;
}

static struct message *stream_message(lua_State *L)
{
	struct lua_stream *st = stream_check(L);
	return st->c ? &conn_session(st->c)->body->msg : NULL;
}

static int stream_add_header(lua_State *L)
{
	size_t nlen, vlen;
	const char *name = luaL_checklstring(L, 2, &nlen);
	const char *value = luaL_checklstring(L, 3, &vlen);
	struct message *m = stream_message(L);
	return stream_edited(L, m ? message_add(m, name, nlen, value, vlen) : LUA_ERR_GONE);
}

static int stream_prepend_header(lua_State *L)
{
	size_t nlen, vlen;
	const char *name = luaL_checklstring(L, 2, &nlen);
	const char *value = luaL_checklstring(L, 3, &vlen);
	struct message *m = stream_message(L);
	return stream_edited(L, m ? message_insert(m, 0, name, nlen, value, vlen) : LUA_ERR_GONE);
}

static int stream_remove_header(lua_State *L)
{
	size_t nlen;
	const char *name = luaL_checklstring(L, 2, &nlen);
	struct message *m = stream_message(L);
	return stream_edited(L, m ? message_remove(m, name, nlen) : LUA_ERR_GONE);
}

/* __index, with the methods table as its upvalue. */
static int stream_index(lua_State *L)
{
	/* A method is found without looking at the object (a method checks it
	 * itself): stream:chunks() and stream:read() need no check more. */
	lua_pushvalue(L, 2);
	lua_rawget(L, lua_upvalueindex(1));
	if (!lua_isnil(L, -1))
		return 1;
	struct lua_stream *st = stream_check(L);
	const char *key = luaL_checkstring(L, 2);
	if (strcmp(key, "byteLength") == 0) {
		lua_pushnumber(L, st->c ? (double)conn_session(st->c)->body->byte_length : st->byte_length);
		return 1;
	}
	if (strcmp(key, "sizeExceeded") == 0) {
		lua_pushboolean(L, st->c ? conn_session(st->c)->body->size_exceeded : st->size_exceeded);
		return 1;
	}
	return 0;
}

void lua_stream_register(lua_State *L)
{
	static const luaL_Reg methods[] = {
		{"read", stream_read},
		{"save", stream_save},
		{"addHeader", stream_add_header},
		{"prependHeader", stream_prepend_header},
		{"removeHeader", stream_remove_header},
		{NULL, NULL},
	};
	luaL_newmetatable(L, STREAM_MT);
	lua_newtable(L);
	luaL_register(L, NULL, methods);
	if (luaL_loadbuffer(L, stream_chunks_lua, sizeof stream_chunks_lua - 1, "=stream:chunks") != 0)
		abort(); /* a constant that compiles */
	lua_pushcfunction(L, stream_read);
	lua_pushcfunction(L, stream_check_only);
	lua_call(L, 2, 1);
	lua_setfield(L, -2, "chunks");
	lua_pushcclosure(L, stream_index, 1);
	lua_setfield(L, -2, "__index");
	lua_pushvalue(L, -1);
	stream_class = lua_api_class_of(L);
	lua_pop(L, 1);
}

void lua_stream_push(lua_State *L, struct conn *c)
{
	struct lua_stream *st = lua_newuserdata(L, sizeof *st);
	memset(st, 0, sizeof *st);
	st->c = c;
	lua_rawgeti(L, LUA_REGISTRYINDEX, stream_class.ref);
	lua_setmetatable(L, -2);
	lua_pushvalue(L, -1);
	struct lua_session_state *ls = lua_state_of(c);
	if (ls->stream_ref == LUA_NOREF)
		ls->stream_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	else
		lua_rawseti(L, LUA_REGISTRYINDEX, ls->stream_ref);
	ls->stream_live = true;
}

/* Once the core refuses the message (body_verdict), nothing more of it is
 * handed out: what is pending goes, a save in progress leaves no file, and
 * a reader or saver waiting learns it now. Returns whether it refused. */
static bool stream_refused(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	struct body *b = s->body;
	struct body_refusal refusal;
	if (!body_verdict(c, &refusal))
		return false;
	buf_consume(&b->pending, buf_used(&b->pending));
	stream_save_abort(b);
	if (stream_waiting(c))
		hook_wake(c, stream_push_refusal(lua_state_of(c)->hook.co, &refusal));
	return true;
}

void lua_stream_feed(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	struct body *b = s->body;
	if (stream_refused(c))
		return;
	bool waiting = stream_waiting(c);
	if (b->save_fd < 0 && !waiting) {
		/* Nobody reads yet: the header block gathers, edits may still come. */
		stream_header_ready(c);
		return;
	}
	if (!stream_header_take(c))
		return;
	if (b->save_fd >= 0)
		stream_save_pending(c);
	if (!waiting)
		return;
	lua_State *co = lua_state_of(c)->hook.co;
	if (b->save_fd >= 0) {
		if (b->ended)
			hook_wake(c, stream_save_finish(co, c));
		return;
	}
	if (buf_used(&b->pending) > 0) {
		stream_push_pending(co, c);
		hook_wake(c, 1);
	} else if (b->ended) {
		hook_wake(c, 0);
	}
}

void lua_stream_feed_bytes(struct conn *c, const char *p, size_t n)
{
	struct smtp_session *s = conn_session(c);
	struct body *b = s->body;
	if (stream_refused(c))
		return;
	bool waiting = stream_waiting(c);
	/* Bytes go straight to a reader or saver once the header block is out;
	 * and a message that came in one piece (the common case) goes as it is,
	 * header block and all, when the block needs no edit: no copy into the
	 * pending buffer and out again (the pending path is the fallback). */
	bool direct = n > 0 && buf_used(&b->pending) == 0 && (b->save_fd >= 0 || waiting) &&
	              (b->msg.emitted || message_pass_in_place(&b->msg, p, n, b->ended));
	if (!direct) {
		buf_append(&b->pending, p, n);
		lua_stream_feed(c);
		return;
	}
	if (b->save_fd >= 0) {
		stream_save_bytes(c, p, n);
		return;
	}
	lua_pushlstring(lua_state_of(c)->hook.co, p, n);
	b->handed_out = true;
	hook_wake(c, 1);
}

void lua_stream_detach(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	struct body *b = s->body;
	stream_save_abort(b);
	struct lua_session_state *ls = lua_state_of(c);
	if (!ls->stream_live)
		return;
	lua_State *L = lua_main;
	lua_rawgeti(L, LUA_REGISTRYINDEX, ls->stream_ref);
	struct lua_stream *st = lua_touserdata(L, -1);
	st->c = NULL;
	st->byte_length = (double)b->byte_length;
	st->size_exceeded = b->size_exceeded;
	lua_pop(L, 1);
	lua_pushboolean(L, 0); /* the object is the script's alone now */
	lua_rawseti(L, LUA_REGISTRYINDEX, ls->stream_ref);
	ls->stream_live = false;
}

void lua_stream_free(struct conn *c)
{
	struct lua_session_state *ls = lua_state_of(c);
	luaL_unref(lua_main, LUA_REGISTRYINDEX, ls->stream_ref);
	ls->stream_ref = LUA_NOREF;
	ls->stream_live = false;
}
