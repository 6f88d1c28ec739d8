/* smtp_auth — AUTH (RFC 4954) and its SASL mechanisms: PLAIN, LOGIN,
 * CRAM-MD5 (auth.validatePassword) and XOAUTH2 (auth.accessToken), each
 * handing onAuth what smtp-server hands it. */
#ifndef LUASMTPD_SMTP_AUTH_H
#define LUASMTPD_SMTP_AUTH_H

#include <stddef.h>

struct conn;

/* (AUTH's check and proceed are in the command table,
 * smtp/session_commands.h.) A continuation line while a mechanism waits
 * for one. */
void smtp_auth_line(struct conn *c, const char *line, size_t len);

#endif
