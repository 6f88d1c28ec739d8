/*
 * test_replies.c — the reply catalogue (proto/replies.c): every entry is a
 * reply the wire can carry and the generated Lua file can quote, every
 * hook of the script has a default rejection code, and the lookups.
 */
#include "lua/config.h"
#include "proto/replies.h"
#include "unit.h"

#include <stdio.h>

static bool text_ok(const char *t, size_t len)
{
	if (len == 0 || strlen(t) != len)
		return false;
	for (size_t i = 0; i < len; i++)
		if (t[i] < ' ' || t[i] > '~' || t[i] == '"' || t[i] == '\\')
			return false;
	return true;
}

/* An enhanced code of the reply code's class ("5.x.y" for 5xx). */
static bool enhanced_ok(const char *e, int code)
{
	return e[0] == '0' + code / 100 && smtp_has_enhanced(e) && !strchr(e, ' ');
}

/* A 3xx continuation carries no enhanced code (RFC 2034 3). */
static bool reply_enhanced_ok(const char *e, int code)
{
	return code / 100 == 3 ? e[0] == '\0' : enhanced_ok(e, code);
}

static void test_every_entry_is_sendable(void)
{
	for (int id = 0; id < REPLY_COUNT; id++) {
		const struct smtp_reply *r = &smtp_replies[id];
		CHECK(r->name != NULL && r->name[0]);
		CHECK(r->code >= 200 && r->code <= 599);
		CHECK(r->enhanced && reply_enhanced_ok(r->enhanced, r->code));
		CHECK(r->text && text_ok(r->text, r->text_len));
		for (int other = 0; other < id; other++)
			CHECK(strcmp(smtp_replies[other].name, r->name) != 0);
		/* The whole lines are the reply as code, enhanced code and text make it. */
		char line[600], bare[600];
		snprintf(line, sizeof line, "%d %s%s%s\r\n", r->code, r->enhanced, r->enhanced[0] ? " " : "", r->text);
		snprintf(bare, sizeof bare, "%d %s\r\n", r->code, r->text);
		CHECK(strcmp(r->line, line) == 0);
		CHECK_INT(r->line_len, strlen(line));
		CHECK(strcmp(r->bare, bare) == 0);
		CHECK_INT(r->bare_len, strlen(bare));
	}
	CHECK(text_ok(smtp_rejected_text, strlen(smtp_rejected_text)));
}

static void test_enhanced_codes(void)
{
	for (int i = 0; i < SMTP_ENHANCED_CODES; i++) {
		CHECK(enhanced_ok(smtp_code_enhanced[i].enhanced, smtp_code_enhanced[i].code));
		CHECK(i == 0 || smtp_code_enhanced[i - 1].code < smtp_code_enhanced[i].code);
	}
	CHECK_STR(smtp_enhanced_for(550), "5.1.1");
	CHECK_STR(smtp_enhanced_for(538), "5.7.11");
	CHECK_STR(smtp_enhanced_for(599), "5.0.0");
	CHECK_STR(smtp_enhanced_for(499), "4.0.0");
	CHECK_STR(smtp_enhanced_for(299), "2.0.0");
}

static void test_every_hook_has_a_reject_code(void)
{
	for (int id = 0; id < HOOK_COUNT; id++) {
		int code = smtp_reject_code(hook_name((enum hook_id)id));
		CHECK(code >= 400 && code <= 599);
	}
	CHECK_INT(smtp_reject_code("onMailFrom"), 550);
	CHECK_INT(smtp_reject_code("onData"), 450);
	CHECK_INT(smtp_reject_code("noSuchHook"), 0);
}

static void test_has_enhanced(void)
{
	CHECK(smtp_has_enhanced("5.1.1 no such user"));
	CHECK(smtp_has_enhanced("2.6.1"));
	CHECK(smtp_has_enhanced("5.7.11 x"));
	CHECK(!smtp_has_enhanced("5.1.1x"));
	CHECK(!smtp_has_enhanced("3.1.1 x"));
	CHECK(!smtp_has_enhanced("5.1 x"));
	CHECK(!smtp_has_enhanced("5.1234.1 x"));
	CHECK(!smtp_has_enhanced("no such user"));
}

int main(void)
{
	RUN(test_every_entry_is_sendable);
	RUN(test_enhanced_codes);
	RUN(test_every_hook_has_a_reject_code);
	RUN(test_has_enhanced);
	return unit_summary();
}
