/* options — what the SMTP session needs of its listener's options: names
 * and texts, the extensions it hides, limits, AUTH and XCLIENT settings.
 * Plain data, filled from the script by the Lua layer (lua/config.c); it
 * embeds the transport's part, so a connection's c->opt leads to it. */
#ifndef LUASMTPD_SMTP_OPTIONS_H
#define LUASMTPD_SMTP_OPTIONS_H

#include "base/cidr.h"
#include "net/conn.h"
#include "net/listener_options.h"
#include "proto/smtp_parse.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum auth_method {
	AUTH_PLAIN = 1 << 0,
	AUTH_LOGIN = 1 << 1,
	AUTH_CRAM_MD5 = 1 << 2,
	AUTH_XOAUTH2 = 1 << 3,
};

#define CONFIG_MAX_AUTH_METHODS 4

struct smtp_options {
	struct listener_options listener; /* the transport's part: a connection's c->opt */

	char *name;
	char *banner;
	char *helo_response; /* printf-free template: first %s name, second %s client */
	char *auth_required_message;

	enum auth_method auth_methods[CONFIG_MAX_AUTH_METHODS]; /* advertised in this order */
	size_t nauth_methods;
	bool auth_optional;
	bool allow_insecure_auth;
	unsigned max_unauth_commands; /* 0: no limit */
	unsigned max_auth_failures;   /* failed AUTH attempts before 421; 0: no limit */
	unsigned max_auth_failures_per_ip; /* per client address within auth_failure_window; 0: none */
	double auth_failure_window;
	unsigned max_junk_commands; /* NOOP, RSET, VRFY, HELP before each counts as an error; 0: none */

	uint64_t size; /* 0: no limit */
	bool hide_size;
	unsigned max_recipients; /* 0: no limit */
	size_t max_command_length;
	size_t max_line_length; /* message lines (DATA), CRLF excluded; 0: no limit */
	double greeting_delay; /* wait before the greeting; who speaks first is a pregreeter */

	uint32_t disabled_commands; /* bit per enum smtp_verb */
	bool hide_pipelining;
	bool hide_8bitmime;
	bool hide_smtputf8;
	bool hide_enhanced;
	bool hide_chunking;
	bool lmtp; /* RFC 2033: LHLO, one reply per recipient after the message */
	bool use_xclient, use_xforward;
	struct cidr xclient_trusted[CONFIG_MAX_TRUSTED], xforward_trusted[CONFIG_MAX_TRUSTED];
	size_t nxclient_trusted, nxforward_trusted;
	bool hide_dsn;        /* default true, as in smtp-server */
	bool hide_requiretls; /* default true */
	bool lenient_address_parsing;
	bool disable_reverse_lookup;
	bool resolve_client_hostname; /* forward-confirmed reverse DNS for clientHostname */
	enum smtp_bare_mode bare_line_endings;

	bool secure;        /* implicit TLS from the first byte */
	bool needs_upgrade; /* nothing but EHLO/STARTTLS/QUIT before TLS */
	bool hide_starttls;
};

/* The SMTP options of the listener c came in on: every listener's transport
 * options are the first part of its SMTP options. */
static inline const struct smtp_options *smtp_opt(const struct conn *c)
{
	return (const struct smtp_options *)((const char *)c->opt - offsetof(struct smtp_options, listener));
}

/* The name AUTH and authMethods give m ("PLAIN", "CRAM-MD5", ...). */
const char *auth_method_name(enum auth_method m);
bool config_verb_disabled(const struct smtp_options *o, enum smtp_verb v);

#endif
