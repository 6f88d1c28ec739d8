/* smtp_xclient — Postfix's XCLIENT and XFORWARD: a trusted front end
 * (a proxy, a content filter) tells the server who the real client is.
 * Only peers named by useXClient / useXForward may use them. Their check
 * and proceed are in the command table (smtp/session_commands.h). */
#ifndef LUASMTPD_SMTP_XCLIENT_H
#define LUASMTPD_SMTP_XCLIENT_H

#include <stdbool.h>

struct conn;

#define X_VALUE_MAX 255

enum x_attr { X_NAME, X_ADDR, X_PORT, X_PROTO, X_HELO, X_LOGIN, X_IDENT, X_SOURCE, X_COUNT };

struct x_value {
	bool present;
	bool unavailable; /* [UNAVAILABLE] or [TEMPUNAVAIL] */
	char v[X_VALUE_MAX + 1];
};

/* What the check parsed, for proceed. */
struct xclient_args {
	struct x_value vals[X_COUNT];
};

/* Is the command offered to this peer now (EHLO keywords)? */
bool smtp_xclient_offered(const struct conn *c, bool xforward);

#endif
