/* state — the session's transitions (smtp/state.h): the table of what may
 * follow each state, and smtp_session_enter, the one place a session's
 * state is written. */
#include "smtp/state.h"

#include "net/conn.h"
#include "smtp/session.h"

#include <stdint.h>
#include <stdlib.h>

#define TO(st) SMTP_STATE_BIT(SMTP_STATE_##st)

/* What may follow each state (staying put is always allowed):
 *
 *   CONNECT -> TLS      implicit TLS: the handshake before anything
 *           -> COMMAND  the greeting, onConnect having accepted
 *   TLS     -> CONNECT  implicit TLS done: the reverse lookup, onConnect, onSecure
 *           -> COMMAND  after STARTTLS: onSecure accepted
 *   COMMAND -> TLS      STARTTLS answered 220
 *           -> CONNECT  XCLIENT named a new client: onConnect again
 *           -> AUTH     a mechanism waits for the client's next line
 *           -> DATA     DATA answered 354
 *           -> BDAT     a chunk to read
 *   AUTH    -> COMMAND  the exchange is over (asked, aborted, refused)
 *   DATA    -> COMMAND  the message's reply is out
 *   BDAT    -> COMMAND  the chunk is read and answered
 *           -> DATA     LAST is read: the reply waits for the verdict
 *   any     -> CLOSING  (and nothing after it)
 */
static const uint8_t state_next[SMTP_STATE_COUNT] = {
	[SMTP_STATE_CONNECT] = TO(TLS) | TO(COMMAND) | TO(CLOSING),
	[SMTP_STATE_TLS] = TO(CONNECT) | TO(COMMAND) | TO(CLOSING),
	[SMTP_STATE_COMMAND] = TO(TLS) | TO(CONNECT) | TO(AUTH) | TO(DATA) | TO(BDAT) | TO(CLOSING),
	[SMTP_STATE_AUTH] = TO(COMMAND) | TO(CLOSING),
	[SMTP_STATE_DATA] = TO(COMMAND) | TO(CLOSING),
	[SMTP_STATE_BDAT] = TO(COMMAND) | TO(DATA) | TO(CLOSING),
	[SMTP_STATE_CLOSING] = TO(CLOSING),
};

static const char *const state_names[SMTP_STATE_COUNT] = {
	[SMTP_STATE_CONNECT] = "CONNECT", [SMTP_STATE_TLS] = "TLS",   [SMTP_STATE_COMMAND] = "COMMAND",
	[SMTP_STATE_AUTH] = "AUTH",       [SMTP_STATE_DATA] = "DATA", [SMTP_STATE_BDAT] = "BDAT",
	[SMTP_STATE_CLOSING] = "CLOSING",
};

/* The sanitizer builds (gcc's and clang's spellings) are the debug builds:
 * there a wrong transition stops the run that found it. */
#if defined(__SANITIZE_ADDRESS__)
#define STATE_STRICT 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define STATE_STRICT 1
#endif
#endif

const char *smtp_state_name(enum smtp_state st)
{
	return st < SMTP_STATE_COUNT ? state_names[st] : "?";
}

void smtp_session_enter(struct conn *c, enum smtp_state to)
{
	struct smtp_session *s = conn_session(c);
	if (!(state_next[s->state] & SMTP_STATE_BIT(to)) && to != s->state) {
		conn_log(c, LOG_ERROR, "illegal session state transition", "from", smtp_state_name(s->state), "to",
		         smtp_state_name(to), NULL);
#ifdef STATE_STRICT
		abort();
#endif
		if (s->state == SMTP_STATE_CLOSING)
			return;
	}
	s->state = to;
}
