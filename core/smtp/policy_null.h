/* policy_null — a policy that decides nothing: every question is
 * answered at once as a script without hooks answers it (accept; a login
 * is undecided). It runs the session with no Lua, in unit tests and in
 * the session's fuzz target. */
#ifndef LUASMTPD_POLICY_NULL_H
#define LUASMTPD_POLICY_NULL_H

#include "smtp/policy.h"

extern const struct smtp_policy policy_null;

#endif
