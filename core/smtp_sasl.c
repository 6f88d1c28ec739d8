/*
 * smtp_sasl.c — the SASL pieces of AUTH: strict base64 and SASL PLAIN
 * (RFC 4616) splitting. OpenSSL does the base64 arithmetic; the validation
 * is ours because EVP_DecodeBlock is lax (it skips whitespace and counts
 * padding as data), and lax decoders are where AUTH bugs live (Exim
 * CVE-2018-6789).
 */
#include "smtp_parse.h"

#include <limits.h>
#include <string.h>

#include <openssl/evp.h>

/* EVP takes int lengths: work in pieces that fit, keeping whole quanta */
#define SMTP_B64_TEXT_CHUNK ((size_t)1 << 30) /* base64 characters, a multiple of 4 */
#define SMTP_B64_DATA_CHUNK ((size_t)3 << 28) /* raw bytes, a multiple of 3 */

static bool smtp_b64_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '+' || c == '/';
}

/* Empty input is refused: SASL spells an empty response "=" (RFC 4954),
 * which the caller recognises before decoding. */
long smtp_base64_decode(const char *in, size_t len, char *out)
{
	size_t pad, i, chunk, n = 0;
	int got;

	if (len == 0 || len % 4 != 0 || len / 4 * 3 > LONG_MAX)
		return -1;
	pad = in[len - 1] != '=' ? 0 : in[len - 2] != '=' ? 1 : 2;
	for (i = 0; i < len - pad; i++)
		if (!smtp_b64_char((unsigned char)in[i]))
			return -1;
	for (i = 0; i < len; i += chunk) {
		chunk = len - i < SMTP_B64_TEXT_CHUNK ? len - i : SMTP_B64_TEXT_CHUNK;
		got = EVP_DecodeBlock((unsigned char *)out + n, (const unsigned char *)in + i, (int)chunk);
		if (got < 0)
			return -1;
		n += (size_t)got;
	}
	/* EVP_DecodeBlock counts the zero bytes the padding stands for */
	n -= pad;
	out[n] = '\0';
	return (long)n;
}

size_t smtp_base64_encode(const char *in, size_t len, char *out)
{
	size_t chunk, n = 0;

	for (; len > 0; in += chunk, len -= chunk) {
		chunk = len < SMTP_B64_DATA_CHUNK ? len : SMTP_B64_DATA_CHUNK;
		n += (size_t)EVP_EncodeBlock((unsigned char *)out + n, (const unsigned char *)in, (int)chunk);
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
