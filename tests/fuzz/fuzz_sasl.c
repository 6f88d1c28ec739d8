/* libFuzzer target: base64 and SASL PLAIN decoding; decode(encode(x)) == x,
 * and our base64 agrees with OpenSSL's (the reference, linked here only:
 * proto/ itself calls no library) on every input ours accepts. */
#include "proto/smtp_parse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *dec = malloc(size / 4 * 3 + 4);
	long n = smtp_base64_decode((const char *)data, size, dec);
	if (n >= 0) {
		struct smtp_auth_plain pl;
		unsigned char *ref = malloc(size / 4 * 3 + 4);
		int got = EVP_DecodeBlock(ref, data, (int)size);
		size_t pad = data[size - 1] != '=' ? 0 : data[size - 2] != '=' ? 1 : 2;
		if (got < 0 || (size_t)got - pad != (size_t)n || memcmp(ref, dec, (size_t)n) != 0)
			abort();
		free(ref);
		smtp_auth_plain_split(dec, (size_t)n, &pl);
	}
	free(dec);
	char *enc = malloc((size + 2) / 3 * 4 + 1);
	size_t elen = smtp_base64_encode((const char *)data, size, enc);
	unsigned char *ref = malloc((size + 2) / 3 * 4 + 1);
	if ((size_t)EVP_EncodeBlock(ref, data, (int)size) != elen || memcmp(ref, enc, elen) != 0)
		abort();
	free(ref);
	char *back = malloc(elen / 4 * 3 + 4);
	long m = smtp_base64_decode(enc, elen, back);
	if ((size > 0 && m != (long)size) || (m > 0 && memcmp(back, data, size) != 0))
		abort();
	free(enc);
	free(back);
	return 0;
}
