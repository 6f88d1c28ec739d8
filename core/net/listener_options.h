/* listener_options — what the transport needs of one listener's options:
 * where it listens, its timeouts and connection limits, whom it trusts to
 * send a PROXY header, and its TLS contexts. Plain data: the Lua layer
 * fills it from the script (lua/config.c), net/ only reads it, and the SMTP
 * session's options embed it (smtp/options.h). */
#ifndef LUASMTPD_LISTENER_OPTIONS_H
#define LUASMTPD_LISTENER_OPTIONS_H

#include "base/cidr.h"

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

#define CONFIG_MAX_LISTEN 16
#define CONFIG_MAX_WATCH 32
#define CONFIG_MAX_TRUSTED 32

/* A certificate chosen by the name the client asks for (sniOptions). */
struct sni_entry {
	char *name; /* lower-case */
	SSL_CTX *ctx;
};

/* A listener's TLS: its contexts and the files they were read from (watched
 * for renewals). Rebuilt as a whole, swapped as a whole. */
struct tls_set {
	SSL_CTX *ctx; /* NULL: no TLS on this listener */
	struct sni_entry *sni;
	size_t nsni;
	char *watch[CONFIG_MAX_WATCH];
	size_t nwatch;
};

struct listener_options {
	char *listen[CONFIG_MAX_LISTEN];
	size_t nlisten;
	char *user; /* run as this user once the ports are bound (root only; process-wide: first listener) */

	unsigned max_clients;    /* 0: no limit */
	unsigned max_connections_per_ip; /* 0: no limit */
	unsigned max_connection_rate;    /* per address per minute; 0: no limit */
	double socket_timeout;
	double handshake_timeout; /* a TLS handshake's deadline; < 0: socketTimeout, 0: none */
	double close_timeout;
	double min_data_rate; /* bytes/s a message must keep up (Postfix's smtpd_min_data_rate) */

	bool use_proxy; /* a PROXY protocol header comes first */
	struct cidr proxy_trusted[CONFIG_MAX_TRUSTED]; /* none: every peer */
	size_t nproxy_trusted;

	struct tls_set tls;
	struct tls_sni_cache *sni_cache; /* servername -> context, as SNICallback answered */
	unsigned sni_cache_size;         /* names it keeps; 0: no limit */
};

/* A loaded script as the transport sees it: its listeners. The server keeps
 * it alive by reference through its server_ops (net/server.h), and so does
 * each session for the generation it started on. */
struct listener_set {
	struct listener_options **listeners;
	size_t nlisteners;
};

#endif
