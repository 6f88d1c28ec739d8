/* modules — the C modules behind the public `smtp` Lua module
 * (lua/smtp/init.lua), one per api_*.c, preloaded from one list: a script
 * sees them only through smtp.* (smtp.tcp(), smtp.dns.query, ...). */
#ifndef LUASMTPD_LUA_MODULES_H
#define LUASMTPD_LUA_MODULES_H

#include <lua.h>

int luaopen_smtp_core(lua_State *L);   /* lua_runtime.c: smtp.pid, dev certificates, smtp.reject */
int luaopen_smtp_log(lua_State *L);    /* api_log.c: smtp.log.* */
int luaopen_smtp_timer(lua_State *L);  /* api_timer.c: smtp.sleep, smtp.now */
int luaopen_smtp_fsync(lua_State *L);  /* api_fsync.c: smtp.fsync_dir */
int luaopen_smtp_tcp(lua_State *L);    /* api_socket.c: smtp.tcp() */
int luaopen_smtp_ngx_socket(lua_State *L); /* api_socket.c: ngx.socket.tcp, smtp.ngx.socket */
/* lua_cowait.c: coroutine.resume and wrap that let a coroutine a hook runs
 * wait on a cosocket (the wait passes through to the hook) */
void lua_cowait_install(lua_State *L);
int luaopen_smtp_dns(lua_State *L);    /* api_dns.c: smtp.dns.* */
int luaopen_smtp_tls(lua_State *L);    /* api_tls.c: smtp.tls.context */
int luaopen_smtp_server(lua_State *L); /* api_server.c: smtp.server */
/* api_replies.c: smtp.replies, the catalogue of proto/replies.c (preloaded
 * under that name, so require "smtp.replies" never reads the Lua copy) */
int luaopen_smtp_replies(lua_State *L);
int luaopen_smtp_re(lua_State *L);     /* api_re.c: PCRE2 for ngx.re */
int luaopen_smtp_digest(lua_State *L); /* api_digest.c: ngx.md5, base64, crc32... */
int luaopen_smtp_ngx(lua_State *L);    /* api_ngx.c: what ngx.ctx and ngx.get_phase ask of the core */
/* api_shdict.c: smtp.ngx.shdict = {declare, shared}, ngx.shared.DICT */
int luaopen_smtp_shdict(lua_State *L);
/* api_client.c: smtp.client.proto, replies, EHLO and the body for smtp.client */
int luaopen_smtp_client_proto(lua_State *L);
/* api_mime.c: smtp.core.mime, GMime behind smtp.mime */
int luaopen_smtp_mime(lua_State *L);
/* api_spool.c: smtp.core.spool, the message spooled for declared milters and smtp.mime */
int luaopen_smtp_spool(lua_State *L);
int luaopen_smtp_milter_proto(lua_State *L); /* api_milter.c: smtp.milter.proto */

/* Adds every module to package.preload, as "smtp.core" and "smtp.core.<module>"
 * (and "smtp.replies"). */
void lua_modules_preload(lua_State *L);

#endif
