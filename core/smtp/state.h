/* state — the SMTP session's own state: which input it takes now and what
 * it does with it. The transport has its own (enum conn_phase in
 * net/conn.h: PROXY, HANDSHAKE, OPEN, CLOSING, CLOSED); while it is OPEN,
 * this says what the session is doing. Only smtp_session_enter
 * (smtp/state.c) writes it, and only along the transitions listed there. */
#ifndef LUASMTPD_SMTP_STATE_H
#define LUASMTPD_SMTP_STATE_H

struct conn;

enum smtp_state {
	SMTP_STATE_CONNECT, /* before the greeting: greetingDelay, the reverse lookup, onConnect
	                     * (again after XCLIENT); a new session's (zero) */
	SMTP_STATE_TLS,     /* implicit TLS, or STARTTLS answered: the handshake, then onSecure */
	SMTP_STATE_COMMAND, /* reading command lines */
	SMTP_STATE_AUTH,    /* reading SASL continuation lines */
	SMTP_STATE_DATA,    /* reading a message body; after its end, waiting for the verdict */
	SMTP_STATE_BDAT,    /* reading a BDAT chunk */
	SMTP_STATE_CLOSING, /* the last reply is queued, the handshake failed or the connection is
	                     * gone: nothing more is read, and no state follows */
	SMTP_STATE_COUNT
};

#define SMTP_STATE_BIT(st) (1u << (st))

/* The one way a session changes state. An illegal transition (a bug) is
 * logged, aborts in the sanitizer builds (ASan, the fuzz targets), and
 * never leaves CLOSING. */
void smtp_session_enter(struct conn *c, enum smtp_state to);
const char *smtp_state_name(enum smtp_state st);

#endif
