/* libFuzzer target: the DATA body decoder. The first byte picks the mode
 * and a split point; decoding in two pieces must equal decoding in one,
 * and "normalize" must put out only CRLF line ends. */
#include "proto/smtp_parse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static size_t decode(enum smtp_bare_mode mode, const char *in, size_t len, size_t split, char *out,
                     bool *done)
{
	struct smtp_data_decoder d;
	smtp_data_init(&d, mode);
	size_t total = 0, consumed = 0;
	*done = false;
	size_t pieces[2] = {split, len - split};
	for (int i = 0; i < 2 && !*done; i++) {
		size_t n, c = smtp_data_decode(&d, in + consumed, pieces[i], out + total, &n, done);
		total += n;
		consumed += c;
		if (!*done && c != pieces[i])
			abort(); /* not done, yet input left unconsumed */
	}
	return total;
}

/* "normalize" leaves no CR without its LF and no LF without its CR. */
static bool only_crlf(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '\r' && (i + 1 == len || s[i + 1] != '\n'))
			return false;
		if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r'))
			return false;
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	enum smtp_bare_mode mode = data[0] & 1 ? SMTP_BARE_NORMALIZE : SMTP_BARE_REJECT;
	const char *in = (const char *)data + 1;
	size_t len = size - 1;
	size_t split = len ? (data[0] >> 1) % (len + 1) : 0;
	char *a = malloc(2 * len + 8), *b = malloc(2 * len + 8);
	bool da, db;
	size_t na = decode(mode, in, len, len, a, &da);
	size_t nb = decode(mode, in, len, split, b, &db);
	if (da != db || na != nb || memcmp(a, b, na) != 0)
		abort(); /* the result depends on how the input was split */
	if (mode == SMTP_BARE_NORMALIZE && !only_crlf(a, na))
		abort();
	struct smtp_data_decoder d;
	smtp_data_init(&d, mode);
	if (smtp_data_in_place_ok(&d)) { /* decoded over its own input, as the server does */
		bool dc;
		size_t nc;
		memcpy(b, in, len);
		smtp_data_decode(&d, b, len, b, &nc, &dc);
		if (dc != da || nc != na || memcmp(a, b, na) != 0)
			abort();
	}
	free(a);
	free(b);
	return 0;
}
