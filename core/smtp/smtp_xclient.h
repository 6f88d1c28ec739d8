/* smtp_xclient — Postfix's XCLIENT and XFORWARD: a trusted front end
 * (a proxy, a content filter) tells the server who the real client is.
 * Only peers named by useXClient / useXForward may use them. */
#ifndef LUASMTPD_SMTP_XCLIENT_H
#define LUASMTPD_SMTP_XCLIENT_H

#include <stdbool.h>

struct conn;
struct smtp_cmd;

void smtp_xclient_command(struct conn *c, const struct smtp_cmd *cmd);
void smtp_xforward_command(struct conn *c, const struct smtp_cmd *cmd);
/* Is the command offered to this peer now (EHLO keywords)? */
bool smtp_xclient_offered(const struct conn *c, bool xforward);

#endif
