#include "proto/replies.h"

#include <ctype.h>
#include <string.h>

#define REPLY(id, key, c, e, t) [id] = {key, c, e, t, sizeof t - 1}

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
