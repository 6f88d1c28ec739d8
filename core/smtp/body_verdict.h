/* body_verdict — what the core decides about a message from its body
 * alone (the size limit, bare CR or LF under bareLineEndings = "reject",
 * maxLineLength), whatever onData says. The reply after the message gives
 * it, and the stream reports it to onData in place of the end, so that no
 * policy takes as complete a message the core refuses. */
#ifndef LUASMTPD_BODY_VERDICT_H
#define LUASMTPD_BODY_VERDICT_H

struct conn;

struct body_refusal {
	int code;
	const char *enhanced;
	char text[128]; /* the reply text, "Error: ..." */
};

/* The refusal the body has earned so far, in r; 0 when none (r untouched),
 * else its reply code. Needs c->body. */
int body_verdict(const struct conn *c, struct body_refusal *r);

#endif
