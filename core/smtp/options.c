#include "smtp/options.h"

static const char *const auth_names[] = {"PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2"};

const char *auth_method_name(enum auth_method m)
{
	for (size_t i = 0; i < sizeof auth_names / sizeof *auth_names; i++)
		if (m == 1u << i)
			return auth_names[i];
	return "?";
}

bool config_verb_disabled(const struct smtp_options *o, enum smtp_verb v)
{
	return (o->disabled_commands >> v) & 1u;
}
