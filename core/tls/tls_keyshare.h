/* tls_keyshare — the key exchange's keys, dropped once a handshake is over. */
#ifndef LUASMTPD_TLS_KEYSHARE_H
#define LUASMTPD_TLS_KEYSHARE_H

#include <openssl/ssl.h>

/* Empties the ephemeral keys of ssl's handshake (ours and the peer's key
 * share); call it when the handshake has completed. */
void tls_drop_key_shares(SSL *ssl);

#endif
