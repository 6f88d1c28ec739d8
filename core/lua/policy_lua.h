/* policy_lua — the script as the session's policy (smtp/policy.h): each
 * question runs its hook with the session table, the hook's answer
 * becomes the verdict, and what the session accepted is mirrored into the
 * session table the next hooks see. */
#ifndef LUASMTPD_POLICY_LUA_H
#define LUASMTPD_POLICY_LUA_H

#include "smtp/policy.h"

extern const struct smtp_policy policy_lua;

#endif
