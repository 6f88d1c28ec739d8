/* smtp_session — the SMTP state machine: what each command does to a
 * connection's session, which decision it asks the policy for, and the
 * reply. Input comes from conn (framed lines, body bytes); replies go to
 * conn's buffer. The commands live by job in smtp_helo.c, smtp_mail.c,
 * smtp_body.c, smtp_auth.c and smtp_xclient.c (smtp/session_commands.h). */
#ifndef LUASMTPD_SMTP_SESSION_H
#define LUASMTPD_SMTP_SESSION_H

#include "net/conn.h"
#include "smtp/policy.h"
#include "smtp/state.h"

#include <stdbool.h>
#include <stddef.h>

/* After accept: onConnect, then the greeting. */
void smtp_session_connect(struct conn *c);
/* Asks the policy about the client (again, after XCLIENT), done as its
 * continuation. */
void smtp_session_run_on_connect(struct conn *c, policy_done_fn done);
/* In such a done: true when the policy accepted; its refusal ends the
 * connection. */
bool smtp_session_connect_accepted(struct smtp_session *s, const struct policy_verdict *v);
/* A login succeeded for user (NULL: not a string). */
void smtp_session_set_user(struct smtp_session *s, const char *user);
/* What every verdict carries besides its reply (the disabled commands). */
void smtp_session_take_verdict(struct smtp_session *s, const struct policy_verdict *v);
/* One command or SASL line, without its line ending. */
void smtp_session_line(struct conn *c, const char *line, size_t len);
void smtp_session_line_too_long(struct conn *c);
/* Body bytes during DATA; returns how many were consumed (the end marker
 * included, pipelined commands after it not). The consumed bytes may be
 * overwritten: the body is decoded in place. */
size_t smtp_session_data(struct conn *c, char *p, size_t n);
/* Chunk bytes during BDAT; returns how many were consumed. */
size_t smtp_session_bdat(struct conn *c, const char *p, size_t n);
/* A TLS handshake has completed: onConnect (implicit TLS), onSecure. */
void smtp_session_secured(struct conn *c);
/* A handshake failed: the policy is told, then the connection closes. */
void smtp_session_tls_failed(struct conn *c, const char *code, const char *reason);
/* May this session authenticate now (TLS, or allowInsecureAuth)? */
bool smtp_session_auth_offered(const struct conn *c);
/* Tells the policy session.transmissionType may have changed (smtp_session_transmission). */
void smtp_session_update_transmission(struct conn *c);
/* The 220 greeting (again, after XCLIENT). */
void smtp_session_greet(struct conn *c);
/* s appended at out[o] (len bytes in all), cut to fit, NUL-terminated;
 * returns the new end. What snprintf "%s" did, at a tenth of its cost,
 * for the texts of every connection (the greeting, heloResponse). */
size_t smtp_text_put(char *out, size_t len, size_t o, const char *s);
/* A new, empty mail transaction. */
void smtp_session_reset_transaction(struct conn *c);
/* ... told to the policy in one call with the other facts that changed
 * with it (enum session_fact bits). */
void smtp_session_reset_transaction_with(struct conn *c, unsigned facts);
/* The connection is closing: greetingDelay's timer goes, if it runs. */
void smtp_session_cancel_greeting_delay(struct conn *c);
/* The message in flight, if any, is over: frees its body state. */
void smtp_session_body_free(struct conn *c);
/* Back to before HELO: after STARTTLS (RFC 3207 4.2) and XCLIENT. */
void smtp_session_forget_identity(struct conn *c);
/* Server shutdown: end an idle session now. */
void smtp_session_stop(struct conn *c);

#endif
