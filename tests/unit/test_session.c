/*
 * test_session.c — the real SMTP state machine (core/smtp/) with no Lua:
 * decisions come from the null policy (accept everything) or from a
 * scripted one (verdicts from a table), the transport is core/net/conn.c
 * on one end of a socket pair. Client bytes go in, the replies come out.
 * Linked without core/lua/ (see its rule in the Makefile).
 */
#include "session_fake.h"
#include "smtp/policy_null.h"
#include "unit.h"

#include <stdio.h>
#include <string.h>

/* ---- a scripted policy: the null policy, but for the answers listed ---- */

struct scripted {
	const char *question; /* "mail", "rcpt", "auth" */
	const char *subject;  /* the address, or the login's username */
	int code;             /* 0: accept */
	const char *text;     /* the refusal's text, or the accepted login's user */
};

static const struct scripted *script;

static const struct scripted *scripted_find(const char *question, const char *subject, size_t len)
{
	for (const struct scripted *e = script; e && e->question; e++)
		if (strcmp(e->question, question) == 0 && strlen(e->subject) == len &&
		    memcmp(e->subject, subject, len) == 0)
			return e;
	return NULL;
}

static void scripted_answer(struct smtp_session *s, const struct scripted *e, policy_done_fn done)
{
	struct policy_verdict v = {.reply.kind = HOOK_ACCEPT};
	if (e && e->code) {
		v.reply.kind = HOOK_REJECT;
		v.reply.code = e->code;
		snprintf(v.reply.text, sizeof v.reply.text, "%s", e->text);
	}
	done(s, &v);
}

static void scripted_path(const char *question, struct smtp_session *s, const struct smtp_path *path,
                          policy_done_fn done)
{
	scripted_answer(s, scripted_find(question, path->address, path->address_len), done);
}

static void scripted_mail(struct smtp_session *s, const struct smtp_path *path, policy_done_fn done)
{
	scripted_path("mail", s, path, done);
}

static void scripted_rcpt(struct smtp_session *s, const struct smtp_path *path, policy_done_fn done)
{
	scripted_path("rcpt", s, path, done);
}

static void scripted_auth(struct smtp_session *s, const struct policy_auth *a, policy_done_fn done)
{
	const struct scripted *e = scripted_find("auth", a->username, a->username_len);
	if (!e || e->code) {
		scripted_answer(s, e, done);
		return;
	}
	struct policy_verdict v = {.reply.kind = HOOK_ACCEPT, .user_set = true, .user = e->text};
	done(s, &v);
}

static struct smtp_policy policy_scripted;

static void use_script(const struct scripted *table)
{
	script = table;
	policy_scripted = policy_null;
	policy_scripted.mail = scripted_mail;
	policy_scripted.rcpt = scripted_rcpt;
	policy_scripted.auth = scripted_auth;
	smtp_policy_use(&policy_scripted);
}

#define CHECK_HAS(got, want) CHECK(strstr((got), (want)) != NULL)

/* ---- the conversations ---- */

static void test_a_message_with_the_null_policy(void)
{
	smtp_policy_use(&policy_null);
	struct client cl;
	CHECK(client_open(&cl));
	CHECK_HAS(say(&cl, ""), "220 mx.test ESMTP");
	const char *r = say(&cl, "EHLO client.test\r\n");
	CHECK_HAS(r, "250-mx.test Nice to meet you");
	CHECK_HAS(r, "250-PIPELINING");
	CHECK_HAS(say(&cl, "MAIL FROM:<a@example.org>\r\n"), "250 2.1.0 Accepted");
	CHECK_HAS(say(&cl, "RCPT TO:<b@example.org>\r\n"), "250 2.1.5 Accepted");
	CHECK_HAS(say(&cl, "DATA\r\n"), "354 ");
	CHECK_HAS(say(&cl, "Subject: hi\r\n\r\nhello\r\n.\r\n"), "250 2.6.0 OK: message queued");
	CHECK_HAS(say(&cl, "QUIT\r\n"), "221 2.0.0 Bye");
	CHECK(client_close(&cl));
}

static void test_a_refused_recipient_from_the_script(void)
{
	static const struct scripted table[] = {
		{"rcpt", "nobody@example.org", 550, "5.1.1 No such user"},
		{NULL},
	};
	use_script(table);
	struct client cl;
	CHECK(client_open(&cl));
	say(&cl, "EHLO client.test\r\n");
	CHECK_HAS(say(&cl, "MAIL FROM:<a@example.org>\r\n"), "250 ");
	CHECK_HAS(say(&cl, "RCPT TO:<nobody@example.org>\r\n"), "550 5.1.1 No such user");
	CHECK_HAS(say(&cl, "RCPT TO:<b@example.org>\r\n"), "250 2.1.5 Accepted");
	CHECK(client_close(&cl));
}

static void test_pipelined_commands_answered_in_order(void)
{
	smtp_policy_use(&policy_null);
	struct client cl;
	CHECK(client_open(&cl));
	say(&cl, "EHLO client.test\r\n");
	const char *r = say(&cl, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\n"
	                         "DATA\r\n");
	const char *mail = strstr(r, "250 2.1.0"), *rcpt = strstr(r, "250 2.1.5"), *data = strstr(r, "354 ");
	CHECK(mail && rcpt && data && mail < rcpt && rcpt < data);
	CHECK(rcpt && strstr(rcpt + 1, "250 2.1.5") != NULL);
	CHECK_HAS(say(&cl, "x\r\n.\r\nQUIT\r\n"), "221 ");
	CHECK(client_close(&cl));
}

static void test_bdat(void)
{
	smtp_policy_use(&policy_null);
	struct client cl;
	CHECK(client_open(&cl));
	CHECK_HAS(say(&cl, "EHLO client.test\r\n"), "250-CHUNKING");
	say(&cl, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n");
	CHECK_HAS(say(&cl, "BDAT 7\r\nhello\r\n"), "250 2.0.0 7 octets received");
	CHECK_HAS(say(&cl, "BDAT 5 LAST\r\nworld"), "250 2.6.0 OK: message queued");
	CHECK(client_close(&cl));
}

static void test_auth_plain_with_a_scripted_verdict(void)
{
	static const struct scripted table[] = {
		{"auth", "alice", 0, "alice"},
		{"auth", "mallory", 535, "5.7.8 Error: authentication failed: Invalid username or password"},
		{NULL},
	};
	use_script(table);
	struct client cl;
	CHECK(client_open(&cl));
	CHECK_HAS(say(&cl, "EHLO client.test\r\n"), "250 AUTH PLAIN LOGIN");
	/* "\0mallory\0pw", then "\0alice\0pw" */
	CHECK_HAS(say(&cl, "AUTH PLAIN AG1hbGxvcnkAcHc=\r\n"), "535 5.7.8 Error: authentication failed");
	CHECK_HAS(say(&cl, "AUTH PLAIN AGFsaWNlAHB3\r\n"), "235 2.7.0 Authentication successful");
	CHECK_HAS(say(&cl, "AUTH PLAIN AGFsaWNlAHB3\r\n"), "503 ");
	CHECK(client_close(&cl));
}

static void test_auth_undecided_by_the_null_policy(void)
{
	smtp_policy_use(&policy_null);
	struct client cl;
	CHECK(client_open(&cl));
	say(&cl, "EHLO client.test\r\n");
	CHECK_HAS(say(&cl, "AUTH PLAIN AGFsaWNlAHB3\r\n"), "535 5.7.8 Error: Authentication not implemented");
	CHECK(client_close(&cl));
}

int main(void)
{
	RUN(test_a_message_with_the_null_policy);
	RUN(test_a_refused_recipient_from_the_script);
	RUN(test_pipelined_commands_answered_in_order);
	RUN(test_bdat);
	RUN(test_auth_plain_with_a_scripted_verdict);
	RUN(test_auth_undecided_by_the_null_policy);
	return unit_summary();
}
