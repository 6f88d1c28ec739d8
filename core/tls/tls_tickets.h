/* tls_tickets — the keys that encrypt TLS session tickets (TLS 1.2 and
 * 1.3), kept by the process rather than by each context, so that a
 * context rebuilt by a reload, or a worker forked after it, still resumes
 * the sessions of the one before.
 *
 * The process holds one random secret (made once, from the CSPRNG, never
 * written anywhere, excluded from core dumps). A context's keys are
 * derived from it, from the context's scope (a digest of its certificate
 * and TLS options: a reload that changes either gets other keys, so old
 * tickets mean a full handshake) and from the period of the clock: a new
 * key every TLS_TICKET_PERIOD seconds, the previous one still accepted
 * (and its tickets renewed) for one more period. Workers forked from the
 * master share the secret, so they derive the same keys with no exchange.
 * The ticketKeys option (48 bytes, Node's layout) replaces all this with
 * the operator's fixed keys. */
#ifndef LUASMTPD_TLS_TICKETS_H
#define LUASMTPD_TLS_TICKETS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <time.h>

#define TLS_TICKET_PERIOD (12 * 3600)
#define TLS_TICKET_SCOPE_LEN 32
#define TLS_TICKET_KEYS_LEN 48

/* Makes the process secret if there is none yet. The master calls it
 * before forking workers; a context built first makes it as well. */
void tls_tickets_init(void);
/* Ticket keys for ctx: fixed (TLS_TICKET_KEYS_LEN bytes, Node's layout:
 * name, HMAC secret, AES key), or, when fixed is NULL, derived from the
 * process secret and scope (TLS_TICKET_SCOPE_LEN bytes). */
void tls_tickets_install(SSL_CTX *ctx, const unsigned char *fixed, const unsigned char *scope);
/* The clock the derived keys follow; NULL: time(). For tests. */
void tls_tickets_set_clock(time_t (*now)(void));

#endif
