/* lua_session — the `session` table every hook gets. The core writes the
 * facts it owns (addresses, envelope, user...); anything else a script
 * stores in it lives as long as the connection. */
#ifndef LUASMTPD_LUA_SESSION_H
#define LUASMTPD_LUA_SESSION_H

#include "proto/smtp_parse.h"

#include <lua.h>
#include <stdbool.h>

struct conn;
struct proxy_info;

/* Loads the Lua side of the envelope into L (at start-up, once per state). */
bool lua_session_register(lua_State *L);
void lua_session_new(struct conn *c);
void lua_session_free(struct conn *c);
void lua_session_push(lua_State *L, struct conn *c);
/* session.proxy = what the PROXY header said. */
void lua_session_set_proxy(struct conn *c, const struct proxy_info *pi);
/* session[field] = value (nil when value is NULL). */
void lua_session_set(struct conn *c, const char *field, const char *value);
/* session[field] = the value at idx of L. */
void lua_session_set_value(struct conn *c, const char *field, lua_State *L, int idx);
/* A new, empty envelope, and session.transaction = c->transactions + 1.
 * This and lua_session_helo log an error, and leave the table as it is,
 * if a hook has made it refuse the writes. */
void lua_session_reset_envelope(struct conn *c);
/* HELO/EHLO/LHLO: lua_session_reset_envelope and hostNameAppearsAs,
 * openingCommand, transmissionType (NULL: nil) in one call. */
void lua_session_helo(struct conn *c, const char *name, const char *opening, const char *transmission);
/* envelope.mailFrom = the address table at idx, and what its args say:
 * bodyType, smtpUtf8, requireTLS and (dsn) dsn = {ret, envid}. Pushes
 * session.disabledCommands (raw), read before these writes. False, with
 * nothing written (nil pushed) and the error logged, when a hook has
 * broken the tables it writes to (session.envelope not a table...). */
bool lua_session_set_mail_from(struct conn *c, lua_State *L, int idx, bool dsn);
/* Appends the recipient accepted (the address table at idx); one equal
 * (case-insensitively) to an earlier one replaces it, at the index the
 * session's set (smtp_session.rcpts) holds for it: found without a scan.
 * Pushes session.disabledCommands (raw), read before this write. */
bool lua_session_add_rcpt(struct conn *c, lua_State *L, int idx);
/* Pushes {address = "...", args = {KEY = value|true}}, and with dsn also
 * dsn = {notify = {"SUCCESS", ...}, orcpt = args.ORCPT}. */
void lua_push_address(lua_State *L, const struct smtp_path *p, bool dsn);
/* On co, where hook_prepare pushed a MAIL/RCPT hook: readies it to run as
 * judge(hook, session, the address's parts), which makes the address table
 * and returns it ahead of the hook's values (hook_results_after_one).
 * Returns the number of arguments for hook_start. */
int lua_session_judge_push(lua_State *co, struct conn *c, const struct smtp_path *p, bool dsn);

#endif
