/* replies_lua — writes the reply catalogue of core/proto/replies.c to
 * stdout as the Lua module lua/smtp/replies.lua (make lua/smtp/replies.lua),
 * for the testing kit under plain luajit/busted, where the server's
 * smtp.replies (core/lua/api_replies.c) is not there. A build tool: it
 * links proto/replies.o only. */
#include "proto/replies.h"

#include <stdio.h>

int main(void)
{
	printf("-- Generated from core/proto/replies.c by core/tools/replies_lua.c\n"
	       "-- (make lua/smtp/replies.lua): edit the C table, not this file.\n"
	       "-- The reply catalogue outside the server; inside it, smtp.replies is\n"
	       "-- the C table itself (core/lua/api_replies.c), and\n"
	       "-- tests/e2e/test_docs.py checks that the two are the same.\n"
	       "return {\n"
	       "  -- RFC 3463 enhanced code for a reply code (smtp-server's table); a code\n"
	       "  -- not listed gets X.0.0 of its class.\n"
	       "  enhanced = {\n");
	for (size_t i = 0; i < SMTP_ENHANCED_CODES; i++)
		printf("    [%d] = \"%s\",\n", smtp_code_enhanced[i].code, smtp_code_enhanced[i].enhanced);
	printf("  },\n"
	       "  -- The code of a hook's rejection that names none.\n"
	       "  rejectCode = {\n");
	for (size_t i = 0; i < SMTP_HOOK_REJECTS; i++)
		printf("    %s = %d,\n", smtp_hook_rejects[i].hook, smtp_hook_rejects[i].code);
	printf("  },\n"
	       "  -- The text of a rejection that gives none.\n"
	       "  rejected = \"%s\",\n"
	       "  -- {code, enhanced code, text}; texts are printable ASCII without quotes.\n",
	       smtp_rejected_text);
	for (size_t id = 0; id < REPLY_COUNT; id++) {
		const struct smtp_reply *r = &smtp_replies[id];
		printf("  %s = { %d, \"%s\", \"%s\" },\n", r->name, r->code, r->enhanced, r->text);
	}
	printf("}\n");
	return ferror(stdout) ? 1 : 0;
}
