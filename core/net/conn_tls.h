/* conn_tls — TLS on a connection: the handshake (implicit TLS, or after
 * STARTTLS), SNI (sniOptions and a yielding SNICallback), peer certificate
 * checks, and reading/writing through OpenSSL. */
#ifndef LUASMTPD_CONN_TLS_H
#define LUASMTPD_CONN_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <sys/types.h>

struct conn;

/* Starts the server side of a handshake on c's socket. */
void conn_tls_begin(struct conn *c);
/* Drives the handshake on I/O readiness. */
void conn_tls_handshake(struct conn *c);
/* Like recv/send: > 0 bytes, 0 at the peer's close, -1 with errno
 * (EAGAIN: wait; *want_write set when OpenSSL needs to write first). */
ssize_t conn_tls_recv(struct conn *c, void *buf, size_t n);
ssize_t conn_tls_send(struct conn *c, const void *buf, size_t n, bool *want_read);
void conn_tls_free(struct conn *c);
/* The owner's answer to on_servername: ctx (NULL: the default) or a
 * refusal (the handshake fails with unrecognized_name). */
void conn_tls_servername_answer(struct conn *c, SSL_CTX *ctx, bool refused);
/* Does the handshake wait for that answer? */
bool conn_tls_waiting(const struct conn *c);

#endif
