#include "tls/tls_keyshare.h"

#include <openssl/err.h>
#include <openssl/evp.h>

/* OpenSSL 3 keeps a TLS 1.3 handshake's two key shares (our ephemeral key
 * pair and the peer's public key) until the SSL is freed, although they
 * served once, to derive the handshake secret: about 0.4 KiB of every
 * open connection (figure (5t) of make bench), and our ephemeral private
 * key in memory for the connection's life. EVP_PKEY_set_type with the
 * key's own type frees (and wipes) its material and keeps the object,
 * which OpenSSL frees with the SSL. Nothing reads them after the handshake:
 * there is no renegotiation (SSL_OP_NO_RENEGOTIATION; TLS 1.3 has none)
 * and nothing here asks for them (SSL_get_tmp_key). A TLS 1.2 server has
 * freed its own already and keeps no peer key: then there is nothing to
 * do. */
void tls_drop_key_shares(SSL *ssl)
{
	EVP_PKEY *keys[2] = {NULL, NULL};
	SSL_get_tmp_key(ssl, &keys[0]);
	SSL_get_peer_tmp_key(ssl, &keys[1]);
	for (int i = 0; i < 2; i++) {
		if (keys[i])
			EVP_PKEY_set_type(keys[i], EVP_PKEY_get_base_id(keys[i]));
		EVP_PKEY_free(keys[i]); /* the reference the getter gave */
	}
	ERR_clear_error();
}
