/* libFuzzer target: base64 and SASL PLAIN decoding; decode(encode(x)) == x. */
#include "smtp_parse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *dec = malloc(size / 4 * 3 + 4);
	long n = smtp_base64_decode((const char *)data, size, dec);
	if (n >= 0) {
		struct smtp_auth_plain pl;
		smtp_auth_plain_split(dec, (size_t)n, &pl);
	}
	free(dec);
	char *enc = malloc((size + 2) / 3 * 4 + 1);
	size_t elen = smtp_base64_encode((const char *)data, size, enc);
	char *back = malloc(elen / 4 * 3 + 4);
	long m = smtp_base64_decode(enc, elen, back);
	if ((size > 0 && m != (long)size) || (m > 0 && memcmp(back, data, size) != 0))
		abort();
	free(enc);
	free(back);
	return 0;
}
