/* auth_throttle — failed AUTH counted per client address across sessions
 * (maxAuthFailuresPerIp within authFailureWindow), in the spirit of
 * Postfix's anvil: a password guesser that opens a new session for every
 * few guesses is stopped too, not only one that stays. The table is the
 * process's own (with --workers each worker counts for itself) and has a
 * fixed size: many addresses evict the oldest entries, never grow memory. */
#ifndef LUASMTPD_AUTH_THROTTLE_H
#define LUASMTPD_AUTH_THROTTLE_H

#include <stdbool.h>

/* Has addr failed max times within the window (max 0: never)? */
bool auth_throttle_blocked(const char *addr, unsigned max, double window);
/* Counts a failure of addr; the window starts at its first failure. */
void auth_throttle_failed(const char *addr, unsigned max, double window);

#endif
