/* smtp_log — the lines that say what happened to mail: one per message
 * (per recipient in LMTP, whose verdicts differ), one per refused sender or
 * recipient. Postfix-style, so that grep answers "what became of it". */
#ifndef LUASMTPD_SMTP_LOG_H
#define LUASMTPD_SMTP_LOG_H

#include <stdbool.h>
#include <stddef.h>

struct conn;

/* After the final dot: replies/len are the reply lines just queued (one,
 * or one per recipient in LMTP). Reads the envelope from the session. */
void smtp_log_message(struct conn *c, const char *replies, size_t len);
/* After a refused MAIL (rcpt false) or RCPT: address is the refused one,
 * reply the reply line queued for it. */
void smtp_log_refused(struct conn *c, bool rcpt, const char *address, const char *reply, size_t len);

#endif
