/*
 * test_session.c — the real SMTP state machine (core/smtp/) with no Lua:
 * decisions come from the null policy (accept everything) or from a
 * scripted one (verdicts from a table), the transport is core/net/conn.c
 * on one end of a socket pair. Client bytes go in, the replies come out.
 * Linked without core/lua/ (see its rule in the Makefile).
 */
#include "session_fake.h"
#include "smtp/policy_null.h"
#include "smtp/session_commands.h"
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


/* ---- the command table and the session's states ---- */

/* A session that meets every guard a verb tries before guard, and not
 * guard itself: guards go HELO, login, MAIL, RCPT, BDAT in every list. */
static void reach_refusal(struct client *cl, enum smtp_reply_id guard)
{
	if (guard == REPLY_NEED_HELO)
		return;
	say(cl, "EHLO client.test\r\n");
	if (guard == REPLY_AUTH_REQUIRED) {
		cl->opt.auth_optional = false; /* read when used: a login is required now */
		return;
	}
	if (guard == REPLY_NEED_MAIL)
		return;
	say(cl, "MAIL FROM:<a@example.org>\r\n");
	if (guard == REPLY_NEED_RCPT || guard == REPLY_NESTED_MAIL)
		return;
	say(cl, "RCPT TO:<b@example.org>\r\nBDAT 1\r\nx"); /* BDAT has begun the message */
}

/* Each guard of each verb in the table, tripped alone, gives its
 * catalogue reply (the login's is authRequiredMessage, here the
 * catalogue's text); BDAT's comes after its chunk. A verb given guards
 * must get a line here. */
static void test_every_guard_refuses_with_its_catalogue_reply(void)
{
	static const char *const lines[SMTP_VERB_COUNT] = {
		[SMTP_VERB_AUTH] = "AUTH PLAIN\r\n",
		[SMTP_VERB_MAIL] = "MAIL FROM:<c@example.org>\r\n",
		[SMTP_VERB_RCPT] = "RCPT TO:<d@example.org>\r\n",
		[SMTP_VERB_DATA] = "DATA\r\n",
		[SMTP_VERB_BDAT] = "BDAT 1\r\ny",
	};
	smtp_policy_use(&policy_null);
	int tried = 0;
	for (int v = 0; v < SMTP_VERB_COUNT; v++) {
		const struct smtp_command *e = smtp_command_of((enum smtp_verb)v);
		for (int i = 0; i < SMTP_GUARDS_MAX && e->guards[i]; i++) {
			const struct smtp_reply *r = &smtp_replies[e->guards[i]];
			CHECK(lines[v] != NULL);
			if (!lines[v])
				break;
			struct client cl;
			CHECK(client_open(&cl));
			reach_refusal(&cl, e->guards[i]);
			char want[256];
			snprintf(want, sizeof want, "%d %s %s\r\n", r->code, r->enhanced, r->text);
			const char *got = say(&cl, lines[v]);
			if (!strstr(got, want))
				printf("     %s, guard %s: got %s", smtp_verb_name((enum smtp_verb)v), r->name, got);
			CHECK_HAS(got, want);
			CHECK(client_close(&cl));
			tried++;
		}
	}
	CHECK(tried >= 15); /* MAIL 3, RCPT 4, DATA 5, BDAT 4, AUTH 1 today */
}

/* needsUpgrade: before TLS, every verb the table takes but the opening
 * ones, STARTTLS and QUIT is refused with the catalogue's 530. */
static void test_needs_upgrade_refuses_all_but_the_plaintext_verbs(void)
{
	smtp_policy_use(&policy_null);
	for (int v = 1; v < SMTP_VERB_COUNT; v++) {
		const struct smtp_command *e = smtp_command_of((enum smtp_verb)v);
		if (!e->proceed)
			continue;
		struct client cl;
		CHECK(client_open(&cl));
		cl.opt.needs_upgrade = true;
		char line[64];
		if (v == SMTP_VERB_HTTP)
			snprintf(line, sizeof line, "GET / HTTP/1.0\r\n");
		else
			snprintf(line, sizeof line, "%s x\r\n", smtp_verb_name((enum smtp_verb)v));
		const char *got = say(&cl, line);
		bool refused = strstr(got, "530 5.7.0 Error: Must issue a STARTTLS command first\r\n") != NULL;
		CHECK(refused == !(e->flags & CMD_BEFORE_TLS));
		client_close(&cl);
	}
}

static enum smtp_state state_of(struct client *cl)
{
	return conn_session(cl->srv.conns)->state;
}

/* The session's state follows the dialogue: command lines, SASL lines,
 * the body, a BDAT chunk, then closing; nothing leaves CLOSING. */
static void test_states_follow_the_dialogue(void)
{
	smtp_policy_use(&policy_null);
	struct client cl;
	CHECK(client_open(&cl)); /* the null policy's onConnect answers at once: greeted */
	CHECK_INT(state_of(&cl), SMTP_STATE_COMMAND);
	say(&cl, "EHLO client.test\r\nAUTH PLAIN\r\n");
	CHECK_INT(state_of(&cl), SMTP_STATE_AUTH);
	say(&cl, "*\r\n");
	CHECK_INT(state_of(&cl), SMTP_STATE_COMMAND);
	say(&cl, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
	CHECK_INT(state_of(&cl), SMTP_STATE_DATA);
	say(&cl, "x\r\n.\r\nBDAT 10\r\nabc");
	CHECK_INT(state_of(&cl), SMTP_STATE_BDAT);
	say(&cl, "defghij");
	CHECK_INT(state_of(&cl), SMTP_STATE_COMMAND);
	CHECK_HAS(say(&cl, "QUIT\r\n"), "221 2.0.0 Bye");
	CHECK(cl.srv.conns == NULL || state_of(&cl) == SMTP_STATE_CLOSING);
	CHECK(client_close(&cl));

	CHECK(client_open(&cl));
	say(&cl, "");
	smtp_session_enter(cl.srv.conns, SMTP_STATE_CLOSING);
	smtp_session_enter(cl.srv.conns, SMTP_STATE_COMMAND); /* illegal: logged, refused */
	CHECK_INT(state_of(&cl), SMTP_STATE_CLOSING);
	CHECK(client_close(&cl));
}

/* What the policy is told, call by call, and what it reads then. */
static struct {
	unsigned facts[8];
	char transmission[8][16];
	int n;
} told;

static void recording_changed(struct smtp_session *s, unsigned facts)
{
	if (told.n == 8)
		return;
	told.facts[told.n] = facts;
	snprintf(told.transmission[told.n], sizeof told.transmission[0], "%s", smtp_session_transmission(s));
	told.n++;
}

/* HELO's facts come in one call, with the name, the opening command and
 * the transmission type already set (the Lua policy writes them in one
 * call into Lua); a new envelope alone, or with the transmission type
 * when SMTPUTF8 ends with it, in one call too. */
static void test_facts_told_together(void)
{
	static struct smtp_policy recording;
	recording = policy_null;
	recording.changed = recording_changed;
	smtp_policy_use(&recording);
	struct client cl;
	CHECK(client_open(&cl));
	say(&cl, "");
	told.n = 0;
	say(&cl, "EHLO Client.Test\r\n");
	CHECK_INT(told.n, 1);
	CHECK_INT(told.facts[0], FACT_ENVELOPE | FACT_HELO | FACT_TRANSMISSION);
	CHECK_STR(told.transmission[0], "ESMTP");
	CHECK_STR(conn_session(cl.srv.conns)->helo_name, "client.test");
	told.n = 0;
	say(&cl, "RSET\r\n");
	CHECK_INT(told.n, 1);
	CHECK_INT(told.facts[0], FACT_ENVELOPE);
	told.n = 0;
	say(&cl, "MAIL FROM:<a@example.org> SMTPUTF8\r\nRSET\r\n");
	CHECK_INT(told.n, 2); /* MAIL's UTF8SMTP, RSET's envelope with ESMTP again */
	CHECK_INT(told.facts[0], FACT_TRANSMISSION);
	CHECK_STR(told.transmission[0], "UTF8SMTP");
	CHECK_INT(told.facts[1], FACT_ENVELOPE | FACT_TRANSMISSION);
	CHECK_STR(told.transmission[1], "ESMTP");
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
	RUN(test_every_guard_refuses_with_its_catalogue_reply);
	RUN(test_needs_upgrade_refuses_all_but_the_plaintext_verbs);
	RUN(test_states_follow_the_dialogue);
	RUN(test_facts_told_together);
	return unit_summary();
}
