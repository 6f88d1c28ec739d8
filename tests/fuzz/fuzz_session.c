/* libFuzzer target: random client byte streams (commands, DATA, BDAT,
 * AUTH, STARTTLS attempts, pipelined or not) through the real session
 * state machine (core/smtp/) with no Lua. The first byte picks the
 * policy: the null one (accept everything) or one that refuses every
 * question; the rest is written to the session in pieces cut at each
 * 0xff byte, the loop running between pieces as it would between reads. */
#include "../unit/session_fake.h"
#include "smtp/policy_null.h"

#include <stdint.h>

static void refuse(struct smtp_session *s, policy_done_fn done)
{
	struct policy_verdict v = {.reply = {.kind = HOOK_REJECT, .code = 550, .enhanced = "5.7.1"}};
	snprintf(v.reply.text, sizeof v.reply.text, "refused");
	done(s, &v);
}

static void refuse_auth(struct smtp_session *s, const struct policy_auth *a, policy_done_fn done)
{
	refuse(s, done);
}

static void refuse_path(struct smtp_session *s, const struct smtp_path *path, policy_done_fn done)
{
	refuse(s, done);
}

static struct smtp_policy policy_refusing;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	policy_refusing = policy_null;
	policy_refusing.auth = refuse_auth;
	policy_refusing.mail = refuse_path;
	policy_refusing.rcpt = refuse_path;
	policy_refusing.data = refuse;
	smtp_policy_use(data[0] & 1 ? &policy_refusing : &policy_null);
	struct client cl;
	if (!client_open(&cl))
		return 0;
	const char *p = (const char *)data + 1, *end = (const char *)data + size;
	while (p < end) {
		const char *cut = memchr(p, 0xff, (size_t)(end - p));
		size_t n = (size_t)((cut ? cut : end) - p);
		if (!client_say_bytes(&cl, p, n))
			break;
		p += n + (cut != NULL);
	}
	if (!client_close(&cl))
		abort(); /* the session outlived its client */
	return 0;
}
