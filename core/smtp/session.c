#include "smtp/session.h"

#include "smtp/smtp_session.h"

#include <stdlib.h>

static const struct smtp_policy *policy_current;

void smtp_policy_use(const struct smtp_policy *p)
{
	policy_current = p;
}

struct smtp_session *smtp_session_new(struct conn *c)
{
	struct smtp_session *s = calloc(1, sizeof *s);
	if (!s)
		abort();
	s->conn = c;
	s->policy = policy_current;
	c->session = s;
	s->policy->attach(s);
	return s;
}

void smtp_session_free(struct conn *c)
{
	struct smtp_session *s = conn_session(c);
	smtp_session_body_free(c);
	s->policy->detach(s);
	rcpt_set_clear(&s->rcpts);
	free(s->user);
	free(s->x_peer);
	free(s->sasl_user);
	free(s->sasl_challenge);
	free(s->sasl_refusal);
	free(s);
	c->session = NULL;
}
