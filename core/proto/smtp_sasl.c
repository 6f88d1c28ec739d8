/*
 * smtp_sasl.c — the SASL pieces of AUTH: strict base64 and SASL PLAIN
 * (RFC 4616) splitting. The base64 is ours and strict (padding required,
 * no whitespace, nothing but the alphabet): lax decoders are where AUTH
 * bugs live (Exim CVE-2018-6789), and a parser of proto/ calls no library.
 */
#include "proto/smtp_parse.h"

#include <limits.h>
#include <string.h>

static const char smtp_b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The value of a base64 character, -1 for anything else. */
static int smtp_b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Empty input is refused: SASL spells an empty response "=" (RFC 4954),
 * which the caller recognises before decoding. */
long smtp_base64_decode(const char *in, size_t len, char *out)
{
	size_t pad, i, n = 0;

	if (len == 0 || len % 4 != 0 || len / 4 * 3 > LONG_MAX)
		return -1;
	pad = in[len - 1] != '=' ? 0 : in[len - 2] != '=' ? 1 : 2;
	for (i = 0; i < len; i += 4) {
		unsigned long quantum = 0;
		for (size_t k = 0; k < 4; k++) {
			int v = i + k >= len - pad ? 0 : smtp_b64_value((unsigned char)in[i + k]);
			if (v < 0)
				return -1;
			quantum = quantum << 6 | (unsigned long)v;
		}
		out[n++] = (char)(quantum >> 16);
		out[n++] = (char)(quantum >> 8 & 0xff);
		out[n++] = (char)(quantum & 0xff);
	}
	/* the padding stands for no bytes */
	n -= pad;
	out[n] = '\0';
	return (long)n;
}

size_t smtp_base64_encode(const char *in, size_t len, char *out)
{
	const unsigned char *p = (const unsigned char *)in;
	size_t n = 0;

	for (; len > 0; p += 3, len = len > 3 ? len - 3 : 0) {
		unsigned long quantum = (unsigned long)p[0] << 16 | (len > 1 ? (unsigned long)p[1] << 8 : 0) |
		                        (len > 2 ? p[2] : 0);
		out[n++] = smtp_b64_alphabet[quantum >> 18];
		out[n++] = smtp_b64_alphabet[quantum >> 12 & 63];
		out[n++] = len > 1 ? smtp_b64_alphabet[quantum >> 6 & 63] : '=';
		out[n++] = len > 2 ? smtp_b64_alphabet[quantum & 63] : '=';
	}
	out[n] = '\0';
	return n;
}

/* Identities end up in logs, Received: headers and Lua; passwords only go
 * to the check, and RFC 4616 lets them hold any byte but NUL. */
static bool smtp_sasl_identity_ok(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

bool smtp_auth_plain_split(const char *msg, size_t len, struct smtp_auth_plain *out)
{
	const char *end, *nul1, *nul2;

	if (len == 0 || !(nul1 = memchr(msg, '\0', len)))
		return false;
	end = msg + len;
	nul2 = memchr(nul1 + 1, '\0', (size_t)(end - nul1 - 1));
	if (!nul2 || memchr(nul2 + 1, '\0', (size_t)(end - nul2 - 1)))
		return false;
	out->authzid = msg;
	out->authzid_len = (size_t)(nul1 - msg);
	out->authcid = nul1 + 1;
	out->authcid_len = (size_t)(nul2 - nul1 - 1);
	out->password = nul2 + 1;
	out->password_len = (size_t)(end - nul2 - 1);
	if (out->authcid_len == 0) {
		out->authcid = out->authzid;
		out->authcid_len = out->authzid_len;
	}
	return out->authcid_len > 0 && out->password_len > 0 &&
	       smtp_sasl_identity_ok(out->authzid, out->authzid_len) &&
	       smtp_sasl_identity_ok(out->authcid, out->authcid_len);
}
