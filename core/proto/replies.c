#include "proto/replies.h"

#include <ctype.h>
#include <string.h>

/* Each reply also as whole lines, with and without its enhanced code, put
 * together by the compiler: a known reply is one copy into the output. */
#define REPLY_LINES(line, bare) line "\r\n", sizeof line + 1, bare "\r\n", sizeof bare + 1
#define REPLY(id, key, c, e, t) [id] = {key, c, e, t, sizeof t - 1, REPLY_LINES(#c " " e " " t, #c " " t)}
/* A 3xx continuation: no enhanced code to show or hide. */
#define REPLY_PLAIN(id, key, c, t) [id] = {key, c, "", t, sizeof t - 1, REPLY_LINES(#c " " t, #c " " t)}

const struct smtp_reply smtp_replies[REPLY_COUNT] = {
	/* A hook raised a Lua error (or misbehaved). */
	REPLY(REPLY_INTERNAL_ERROR, "internalError", 451, "4.3.0", "Error: internal server error"),
	/* onAuth accepted, without a message of its own. */
	REPLY(REPLY_AUTH_ACCEPTED, "authAccepted", 235, "2.7.0", "Authentication successful"),
	/* onAuth returned no user: not a login. */
	REPLY(REPLY_AUTH_NO_USER, "authNoUser", 535, "5.7.8", "Error: Authentication credentials invalid"),
	REPLY(REPLY_MAIL_ACCEPTED, "mailAccepted", 250, "2.1.0", "Accepted"),
	REPLY(REPLY_RCPT_ACCEPTED, "rcptAccepted", 250, "2.1.5", "Accepted"),
	/* onData accepted without a text (SMTP; LMTP per recipient). */
	REPLY(REPLY_MESSAGE_QUEUED, "messageQueued", 250, "2.6.0", "OK: message queued"),
	REPLY(REPLY_MESSAGE_ACCEPTED, "messageAccepted", 250, "2.6.0", "OK: message accepted"),
	/* LMTP: onData's entry for a recipient is neither accept nor a rejection. */
	REPLY(REPLY_RECIPIENT_NOT_ACCEPTED, "recipientNotAccepted", 450, "4.2.1",
	      "Error: message not accepted for this recipient"),
	REPLY(REPLY_NEED_HELO, "needHelo", 503, "5.5.1", "Error: send HELO/EHLO first"),
	REPLY(REPLY_NESTED_MAIL, "nestedMail", 503, "5.5.1", "Error: nested MAIL command"),
	REPLY(REPLY_NEED_MAIL, "needMail", 503, "5.5.1", "Error: need MAIL command"),
	REPLY(REPLY_NEED_RCPT, "needRcpt", 503, "5.5.1", "Error: need RCPT command"),
	REPLY(REPLY_BAD_SENDER, "badSender", 501, "5.1.7", "Error: Bad sender address syntax"),
	REPLY(REPLY_BAD_RECIPIENT, "badRecipient", 501, "5.1.3", "Error: Bad recipient address syntax"),
	REPLY(REPLY_BAD_SIZE, "badSize", 501, "5.5.4", "Error: Bad message size syntax"),
	REPLY(REPLY_BAD_BODY, "badBody", 501, "5.5.4",
	      "Error: Invalid BODY parameter value. Must be 7BIT, 8BITMIME or BINARYMIME"),
	REPLY(REPLY_SMTPUTF8_VALUE, "smtputf8Value", 501, "5.5.4",
	      "Error: Invalid SMTPUTF8 parameter. This flag does not accept a value"),
	REPLY(REPLY_REQUIRETLS_NOT_TLS, "requireTlsNotTls", 530, "5.7.10",
	      "Error: REQUIRETLS not permitted on non-TLS connections"),
	REPLY(REPLY_REQUIRETLS_VALUE, "requireTlsValue", 501, "5.5.4", "Error: REQUIRETLS does not accept a value"),
	REPLY(REPLY_NEED_SMTPUTF8, "needSmtputf8", 553, "5.6.7",
	      "Error: internationalized address needs the SMTPUTF8 parameter"),
	REPLY(REPLY_TOO_MANY_RECIPIENTS, "tooManyRecipients", 452, "4.5.3", "Error: too many recipients"),
	REPLY(REPLY_AUTH_REQUIRED, "authRequired", 530, "5.7.0", "Error: authentication Required"),
	REPLY_PLAIN(REPLY_DATA_GO_AHEAD, "dataGoAhead", 354, "End data with <CR><LF>.<CR><LF>"),
	REPLY(REPLY_BARE_LINE_ENDING, "bareLineEnding", 554, "5.5.2",
	      "Error: bare <CR> or <LF> in message; only <CR><LF> ends a line"),
	REPLY(REPLY_BDAT_SYNTAX, "bdatSyntax", 501, "5.5.4", "Error: Syntax: BDAT <size> [LAST]"),
	REPLY(REPLY_RCPT_AFTER_BDAT, "rcptAfterBdat", 503, "5.5.1", "Error: RCPT is not allowed once BDAT has begun"),
	REPLY(REPLY_DATA_AFTER_BDAT, "dataAfterBdat", 503, "5.5.1", "Error: DATA is not allowed after BDAT"),
	REPLY(REPLY_BINARYMIME_NEEDS_BDAT, "binarymimeNeedsBdat", 503, "5.5.1",
	      "Error: BODY=BINARYMIME needs BDAT, not DATA"),
	REPLY(REPLY_LMTP_NO_EHLO, "lmtpNoEhlo", 500, "5.5.1", "Error: EHLO not allowed in LMTP server"),
	REPLY(REPLY_LMTP_NO_HELO, "lmtpNoHelo", 500, "5.5.1", "Error: HELO not allowed in LMTP server"),
	REPLY(REPLY_RSET, "rset", 250, "2.0.0", "Flushed"),
	REPLY(REPLY_OK, "ok", 250, "2.0.0", "OK"),
	REPLY(REPLY_BYE, "bye", 221, "2.0.0", "Bye"),
	REPLY(REPLY_HELP, "help", 214, "2.0.0", "See https://tools.ietf.org/html/rfc5321 for details"),
	REPLY(REPLY_VRFY, "vrfy", 252, "2.0.0", "Try to send something. No promises though"),
	REPLY(REPLY_VRFY_SYNTAX, "vrfySyntax", 501, "5.5.4", "Error: Syntax: VRFY address"),
	REPLY(REPLY_UNKNOWN_COMMAND, "unknownCommand", 500, "5.5.2", "Error: command not recognized"),
	REPLY(REPLY_CONTROL_CHARACTER, "controlCharacter", 501, "5.5.2", "Error: command contains a control character"),
	REPLY(REPLY_LINE_TOO_LONG, "lineTooLong", 500, "5.5.6", "Error: line too long"),
	REPLY(REPLY_HTTP_REQUEST, "httpRequest", 421, "4.4.2", "HTTP requests not allowed"),
	REPLY(REPLY_TOO_MANY_UNRECOGNIZED, "tooManyUnrecognized", 421, "4.4.2", "Error: too many unrecognized commands"),
	REPLY(REPLY_TOO_MANY_ERRORS, "tooManyErrors", 421, "4.4.2", "Error: too many errors"),
	REPLY(REPLY_TOO_MANY_UNAUTHENTICATED, "tooManyUnauthenticated", 421, "4.4.2",
	      "Error: too many unauthenticated commands"),
	REPLY(REPLY_AUTH_NEEDS_TLS, "authNeedsTls", 538, "5.7.11", "Error: Must issue a STARTTLS command first"),
	REPLY(REPLY_STARTTLS_READY, "startTlsReady", 220, "2.0.0", "Ready to start TLS"),
	REPLY(REPLY_STARTTLS_SYNTAX, "startTlsSyntax", 501, "5.5.4", "Error: syntax: STARTTLS"),
	REPLY(REPLY_TLS_ACTIVE, "tlsActive", 503, "5.5.1", "Error: TLS already active"),
	REPLY(REPLY_MUST_STARTTLS, "mustStartTls", 530, "5.7.0", "Error: Must issue a STARTTLS command first"),
	REPLY(REPLY_AUTH_UNKNOWN_MECHANISM, "authUnknownMechanism", 504, "5.5.4",
	      "Error: Unrecognized authentication type"),
	REPLY(REPLY_AUTH_AGAIN, "authAgain", 503, "5.5.1", "Error: No identity changes permitted"),
	REPLY(REPLY_AUTH_THROTTLED, "authThrottled", 454, "4.7.0",
	      "Error: too many authentication failures, try again later"),
	REPLY(REPLY_AUTH_BAD_BASE64, "authBadBase64", 501, "5.5.2", "Error: invalid userdata"),
	REPLY(REPLY_AUTH_ABORTED, "authAborted", 501, "5.0.0", "Authentication aborted"),
	REPLY(REPLY_TOO_MANY_CONNECTIONS, "tooManyConnections", 421, "4.4.2", "Too many connections from your address"),
	/* On accept, these three follow the server's name (maxConnectionsPerIp's is the one above). */
	REPLY(REPLY_TOO_MANY_CLIENTS, "tooManyClients", 421, "4.4.2", "Too many connected clients, try again in a moment"),
	REPLY(REPLY_CONNECTION_RATE, "connectionRate", 421, "4.4.2", "Too many connections from your address, slow down"),
	REPLY(REPLY_SHUTTING_DOWN, "shuttingDown", 421, "4.4.2", "Server shutting down"),
	/* socketTimeout of silence, or a message slower than minDataRate. */
	REPLY(REPLY_TIMEOUT, "timeout", 421, "4.4.2", "Timeout - closing connection"),
	/* A megabyte with no line end: not a command. */
	REPLY(REPLY_LINE_UNTERMINATED, "lineUnterminated", 421, "4.4.2", "Error: line too long, closing connection"),
	REPLY(REPLY_BAD_HOSTNAME, "badHostname", 501, "5.5.4", "Error: Bad hostname syntax"),
	REPLY(REPLY_BAD_PARAMETER, "badParameter", 501, "5.5.4", "Error: Bad parameter syntax"),
	REPLY(REPLY_TOO_MANY_PARAMETERS, "tooManyParameters", 501, "5.5.4", "Error: too many parameters"),
	REPLY(REPLY_BAD_RET, "badRet", 501, "5.5.4", "Error: Invalid RET parameter value. Must be FULL or HDRS"),
	REPLY(REPLY_BAD_ENVID, "badEnvid", 501, "5.5.4", "Error: Bad ENVID parameter syntax"),
	REPLY(REPLY_BAD_NOTIFY, "badNotify", 501, "5.5.4",
	      "Error: NOTIFY parameter must be NEVER, or SUCCESS, FAILURE and DELAY"),
	REPLY(REPLY_BAD_ORCPT, "badOrcpt", 501, "5.5.4", "Error: Bad ORCPT parameter syntax"),
	REPLY(REPLY_DATA_SYNTAX, "dataSyntax", 501, "5.5.4", "Error: Syntax: DATA"),
	REPLY(REPLY_AUTH_SYNTAX, "authSyntax", 501, "5.5.4", "Error: syntax: AUTH mechanism [initial-response]"),
	REPLY(REPLY_AUTH_DURING_MAIL, "authDuringMail", 503, "5.5.1",
	      "Error: AUTH is not allowed during a mail transaction"),
	/* The script has no onAuth. */
	REPLY(REPLY_AUTH_NOT_IMPLEMENTED, "authNotImplemented", 535, "5.7.8", "Error: Authentication not implemented"),
	REPLY(REPLY_AUTH_TOO_MANY_FAILURES, "authTooManyFailures", 421, "4.7.0",
	      "Error: too many failed authentication attempts"),
	REPLY(REPLY_XCLIENT_NOT_ALLOWED, "xclientNotAllowed", 550, "5.7.0", "Error: Not allowed"),
	REPLY(REPLY_XCLIENT_DURING_MAIL, "xclientDuringMail", 503, "5.5.1", "Error: Mail transaction in progress"),
	REPLY(REPLY_XCLIENT_SYNTAX, "xclientSyntax", 501, "5.5.4", "Error: Bad command parameter syntax"),
};

const struct smtp_code_enhanced smtp_code_enhanced[SMTP_ENHANCED_CODES] = {
	{211, "2.0.0"}, {214, "2.0.0"}, {220, "2.0.0"}, {221, "2.0.0"}, {235, "2.7.0"},  {250, "2.0.0"},
	{251, "2.1.5"}, {252, "2.0.0"}, {421, "4.4.2"}, {450, "4.2.1"}, {451, "4.3.0"},  {452, "4.2.2"},
	{454, "4.7.0"}, {500, "5.5.2"}, {501, "5.5.4"}, {502, "5.5.1"}, {503, "5.5.1"},  {504, "5.5.4"},
	{521, "5.3.2"}, {523, "5.3.4"}, {530, "5.7.0"}, {534, "5.7.9"}, {535, "5.7.8"},  {538, "5.7.11"},
	{550, "5.1.1"}, {551, "5.1.6"}, {552, "5.2.2"}, {553, "5.1.3"}, {554, "5.6.0"},  {555, "5.5.4"},
};

const struct smtp_hook_reject smtp_hook_rejects[SMTP_HOOK_REJECTS] = {
	{"onConnect", 554}, {"onSecure", 554}, {"SNICallback", 554}, {"onAuth", 535},  {"onMailFrom", 550},
	{"onRcptTo", 550},  {"onData", 450},   {"onClose", 451},     {"onError", 451},
};

const char smtp_rejected_text[] = "Error: rejected";

const char *smtp_enhanced_for(int code)
{
	for (size_t i = 0; i < SMTP_ENHANCED_CODES; i++)
		if (smtp_code_enhanced[i].code == code)
			return smtp_code_enhanced[i].enhanced;
	return code >= 500 ? "5.0.0" : code >= 400 ? "4.0.0" : "2.0.0";
}

int smtp_reject_code(const char *hook)
{
	for (size_t i = 0; i < SMTP_HOOK_REJECTS; i++)
		if (strcmp(smtp_hook_rejects[i].hook, hook) == 0)
			return smtp_hook_rejects[i].code;
	return 0;
}

bool smtp_has_enhanced(const char *t)
{
	if (!(t[0] == '2' || t[0] == '4' || t[0] == '5') || t[1] != '.')
		return false;
	const char *p = t + 2;
	for (int part = 0; part < 2; part++) {
		int digits = 0;
		while (isdigit((unsigned char)*p) && digits < 3) {
			p++;
			digits++;
		}
		if (digits == 0)
			return false;
		if (part == 0 && *p++ != '.')
			return false;
	}
	return *p == ' ' || *p == '\0';
}
