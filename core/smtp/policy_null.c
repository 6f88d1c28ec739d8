#include "smtp/policy_null.h"

#include <stddef.h>

static const struct policy_verdict null_accept = {.reply.kind = HOOK_ACCEPT};

static void null_changed(struct smtp_session *s, unsigned facts)
{
}

static void null_forwarded(struct smtp_session *s, bool xforward, const struct policy_attr *attrs, size_t n)
{
}

static void null_session(struct smtp_session *s)
{
}

static void null_opened(struct smtp_session *s, const struct proxy_info *pi)
{
}

static void null_servername(struct smtp_session *s, const char *name, policy_servername_fn done)
{
	done(s, NULL, false);
}

static void null_decide(struct smtp_session *s, policy_done_fn done)
{
	done(s, &null_accept);
}

static void null_tls_error(struct smtp_session *s, const char *code, const char *reason, policy_done_fn done)
{
	done(s, &null_accept);
}

/* Nobody here knows the users: the session refuses the login itself. */
static void null_auth(struct smtp_session *s, const struct policy_auth *a, policy_done_fn done)
{
	static const struct policy_verdict undecided = {.reply.kind = HOOK_ACCEPT, .undecided = true};
	done(s, &undecided);
}

static void null_path(struct smtp_session *s, const struct smtp_path *path, policy_done_fn done)
{
	done(s, &null_accept);
}

static void null_body(struct smtp_session *s, const char *p, size_t n)
{
}

static enum policy_wait null_waiting(const struct smtp_session *s)
{
	return POLICY_IDLE;
}

const struct smtp_policy policy_null = {
	.changed = null_changed,
	.forwarded = null_forwarded,
	.attach = null_session,
	.detach = null_session,
	.opened = null_opened,
	.servername = null_servername,
	.closed = null_decide,
	.connect = null_decide,
	.secure = null_decide,
	.tls_error = null_tls_error,
	.auth = null_auth,
	.mail = null_path,
	.rcpt = null_path,
	.data = null_decide,
	.body = null_body,
	.body_more = null_session,
	.message_end = null_session,
	.cancel = null_session,
	.waiting = null_waiting,
};
