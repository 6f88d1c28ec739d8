/* session_commands — inside core/smtp/: the handlers of the command table
 * (smtp_session.c) and the checks they share across smtp_helo.c,
 * smtp_mail.c and smtp_body.c. */
#ifndef LUASMTPD_SMTP_SESSION_COMMANDS_H
#define LUASMTPD_SMTP_SESSION_COMMANDS_H

#include "proto/smtp_parse.h"

#include <stdbool.h>

struct conn;

void smtp_cmd_helo(struct conn *c, const struct smtp_cmd *cmd);
void smtp_cmd_starttls(struct conn *c, const struct smtp_cmd *cmd);
void smtp_cmd_mail(struct conn *c, const struct smtp_cmd *cmd);
void smtp_cmd_rcpt(struct conn *c, const struct smtp_cmd *cmd);
void smtp_cmd_data(struct conn *c, const struct smtp_cmd *cmd);
void smtp_cmd_bdat(struct conn *c, const struct smtp_cmd *cmd);
/* 500, and after too many of them 421. */
void smtp_cmd_unknown(struct conn *c, const struct smtp_cmd *cmd);

/* smtp-server's rule: with AUTH on and not optional, mail needs a login. */
bool smtp_session_auth_required(const struct conn *c);
/* By the option, or by session.disabledCommands once a hook has set it. */
bool smtp_session_verb_disabled(struct conn *c, enum smtp_verb v);
bool smtp_session_dsn_on(const struct conn *c);
bool smtp_session_chunking_offered(struct conn *c);
/* Greeted, and logged in where that is required; replies when not. */
bool smtp_session_check_transaction_start(struct conn *c);

/* The code of a reply we queued: three digits, no strtol on every line. */
static inline int smtp_session_reply_code(const char *p)
{
	return (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
}

#endif
