/* session_commands — inside core/smtp/: the command table's entry
 * (smtp_session.c holds the table) and the checks and actions it points
 * to, which live by job in smtp_helo.c, smtp_mail.c, smtp_body.c,
 * smtp_auth.c, smtp_xclient.c and smtp_session.c. */
#ifndef LUASMTPD_SMTP_SESSION_COMMANDS_H
#define LUASMTPD_SMTP_SESSION_COMMANDS_H

#include "proto/replies.h"
#include "proto/smtp_parse.h"
#include "smtp/options.h"
#include "smtp/smtp_xclient.h"

#include <stdbool.h>
#include <stdint.h>

struct conn;

/* What a check answers besides a catalogue reply (a refusal the dispatcher
 * sends): the verb may proceed, or the check has answered itself (a
 * formatted reply, a logged refusal, the end of the session). */
#define SMTP_CHECK_PASS ((enum smtp_reply_id)REPLY_COUNT)
#define SMTP_CHECK_SENT ((enum smtp_reply_id)(REPLY_COUNT + 1))

/* What a check has read in the arguments, for its verb's proceed. */
struct smtp_args {
	union {
		struct smtp_path path; /* MAIL, RCPT */
		struct {
			uint64_t size;
			bool last;
		} bdat;
		struct {
			enum auth_method method;
			const char *ir; /* the initial response, or NULL */
			size_t ir_len;
		} auth;
		struct xclient_args x; /* XCLIENT, XFORWARD */
	};
	/* The first guard the session does not meet, or SMTP_CHECK_PASS: a
	 * BDAT's, answered once its chunk is read (CMD_AFTER_CHUNK). */
	enum smtp_reply_id unmet;
};

typedef enum smtp_reply_id smtp_check_fn(struct conn *c, const struct smtp_cmd *cmd, struct smtp_args *a);
typedef void smtp_proceed_fn(struct conn *c, const struct smtp_cmd *cmd, struct smtp_args *a);

#define SMTP_GUARDS_MAX 5

enum smtp_command_flags {
	CMD_BEFORE_TLS = 1, /* taken before STARTTLS where needsUpgrade */
	CMD_JUNK = 2,       /* moves no mail: counts toward maxJunkCommands */
	CMD_AFTER_CHUNK = 4, /* BDAT: a guard's refusal waits for the chunk to be read */
};

/* One verb of the command table. Commands are read in SMTP_STATE_COMMAND
 * only (the other states read SASL lines or body bytes); what varies is
 * what the dialogue has reached, which the guards test: each is a
 * catalogue reply that names the state it refuses (REPLY_NEED_HELO: not
 * greeted), tried in order, then the check, then proceed. */
struct smtp_command {
	unsigned flags;
	enum smtp_reply_id guards[SMTP_GUARDS_MAX]; /* the first 0 (never a guard) ends them */
	smtp_check_fn *check;                       /* NULL: nothing to check */
	smtp_proceed_fn *proceed;                   /* NULL: not a command we take */
};

/* The table's entry for a verb (tests list the guards through it). */
const struct smtp_command *smtp_command_of(enum smtp_verb v);

smtp_check_fn smtp_check_helo, smtp_check_starttls, smtp_check_mail, smtp_check_rcpt, smtp_check_data,
	smtp_check_bdat, smtp_check_auth, smtp_check_xclient, smtp_check_xforward;
smtp_proceed_fn smtp_cmd_helo, smtp_cmd_starttls, smtp_cmd_mail, smtp_cmd_rcpt, smtp_cmd_data, smtp_cmd_bdat,
	smtp_cmd_auth, smtp_cmd_xclient, smtp_cmd_xforward;

/* 500, and after too many of them 421. */
void smtp_cmd_unknown(struct conn *c, const struct smtp_cmd *cmd);
/* Sends a guard's refusal (the login one with authRequiredMessage). */
void smtp_session_refuse(struct conn *c, enum smtp_reply_id guard);

/* smtp-server's rule: with AUTH on and not optional, mail needs a login. */
bool smtp_session_auth_required(const struct conn *c);
/* By the option, or by session.disabledCommands once a hook has set it. */
bool smtp_session_verb_disabled(struct conn *c, enum smtp_verb v);
bool smtp_session_dsn_on(const struct conn *c);
bool smtp_session_chunking_offered(struct conn *c);

/* The code of a reply we queued: three digits, no strtol on every line. */
static inline int smtp_session_reply_code(const char *p)
{
	return (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
}

#endif
