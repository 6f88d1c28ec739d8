/*
 * test_data.c — unit tests for the DATA decoder: unstuffing, the end
 * marker, bare CR/LF in both modes, the 2023 smuggling variants, and
 * chunking independence, checked against a simple whole-buffer reference
 * decoder over every short input.
 */
#include "proto/smtp_parse.h"
#include "unit.h"

#include <stdlib.h>

struct decoded {
	char *out;
	size_t out_len, consumed;
	bool done, bare_seen, bound_ok;
};

static void decoded_free(struct decoded *r)
{
	free(r->out);
}

/* Feeds in[0..len) cut at cuts[0..ncuts) (ascending), as a connection
 * would: stop feeding once done. Checks the output bound on every call.
 * in_place: each piece is decoded over itself when the decoder allows, as
 * the server does. */
static struct decoded decode_cuts_how(enum smtp_bare_mode mode, const char *in, size_t len,
                                      const size_t *cuts, size_t ncuts, bool in_place)
{
	struct smtp_data_decoder d;
	struct decoded r = { malloc(2 * len + 4), 0, 0, false, false, true };
	char *piece = malloc(len + 1);
	size_t i, from = 0, to, n, used;

	smtp_data_init(&d, mode);
	for (i = 0; i <= ncuts && !r.done; i++, from = to) {
		to = i < ncuts ? cuts[i] : len;
		if (in_place && smtp_data_in_place_ok(&d)) {
			memcpy(piece, in + from, to - from);
			used = smtp_data_decode(&d, piece, to - from, piece, &n, &r.done);
			memcpy(r.out + r.out_len, piece, n);
		} else {
			used = smtp_data_decode(&d, in + from, to - from, r.out + r.out_len, &n, &r.done);
		}
		r.bound_ok = r.bound_ok && n <= 2 * (to - from) + 4 && used <= to - from;
		r.bound_ok = r.bound_ok && (r.done || used == to - from);
		r.out_len += n;
		r.consumed = from + used;
	}
	r.bare_seen = d.bare_seen;
	free(piece);
	return r;
}

static struct decoded decode_cuts(enum smtp_bare_mode mode, const char *in, size_t len,
                                  const size_t *cuts, size_t ncuts)
{
	return decode_cuts_how(mode, in, len, cuts, ncuts, false);
}

static struct decoded decode_whole(enum smtp_bare_mode mode, const char *in, size_t len)
{
	return decode_cuts(mode, in, len, NULL, 0);
}

static struct decoded decode_bytewise(enum smtp_bare_mode mode, const char *in, size_t len)
{
	size_t *cuts = malloc((len + 1) * sizeof *cuts);
	struct decoded r;
	size_t i;

	for (i = 0; i < len; i++)
		cuts[i] = i;
	r = decode_cuts(mode, in, len, cuts, len);
	free(cuts);
	return r;
}

static bool decoded_same(const struct decoded *a, const struct decoded *b)
{
	return a->out_len == b->out_len && memcmp(a->out, b->out, a->out_len) == 0 &&
	       a->consumed == b->consumed && a->done == b->done && a->bare_seen == b->bare_seen &&
	       a->bound_ok && b->bound_ok;
}

/* The decoder as RFC 5321 4.5.2 and the header describe it, written the
 * obvious way over a complete buffer with lookahead. */
static struct decoded reference(enum smtp_bare_mode mode, const char *in, size_t n)
{
	struct decoded r = { malloc(2 * n + 4), 0, 0, false, false, true };
	size_t i = 0;
	bool line_start = true, soft = false; /* soft: after a bare CR/LF made CRLF */

	while (i < n) {
		if (line_start && in[i] == '.') {
			if (!soft && i + 2 < n && in[i + 1] == '\r' && in[i + 2] == '\n') {
				r.done = true;
				i += 3;
				break;
			}
			if (i + 1 < n && in[i + 1] != '\r' && in[i + 1] != '\n')
				i++; /* stuffed dot */
		}
		line_start = soft = false;
		if (in[i] == '\r' && i + 1 < n && in[i + 1] == '\n') {
			r.out[r.out_len++] = '\r';
			r.out[r.out_len++] = '\n';
			i += 2;
			line_start = true;
		} else if ((in[i] == '\r' || in[i] == '\n') && mode == SMTP_BARE_NORMALIZE) {
			r.out[r.out_len++] = '\r';
			r.out[r.out_len++] = '\n';
			r.bare_seen = true;
			i++;
			line_start = soft = true;
		} else {
			r.bare_seen = r.bare_seen || in[i] == '\r' || in[i] == '\n';
			r.out[r.out_len++] = in[i++];
		}
	}
	r.consumed = i;
	return r;
}

#define CHECK_DECODED(r, lit) CHECK_MEM((r).out, (r).out_len, lit)

static void test_simple(void)
{
	static const char msg[] = "Subject: hi\r\n\r\nHello\r\n.\r\n";
	struct decoded r = decode_whole(SMTP_BARE_REJECT, msg, sizeof msg - 1);

	CHECK(r.done);
	CHECK_INT(r.consumed, sizeof msg - 1);
	CHECK(!r.bare_seen);
	CHECK_DECODED(r, "Subject: hi\r\n\r\nHello\r\n");
	decoded_free(&r);

	r = decode_whole(SMTP_BARE_REJECT, ".\r\n", 3);
	CHECK(r.done);
	CHECK_INT(r.consumed, 3);
	CHECK_INT(r.out_len, 0);
	decoded_free(&r);

	r = decode_whole(SMTP_BARE_REJECT, "\r\n.\r\n", 5);
	CHECK(r.done);
	CHECK_DECODED(r, "\r\n");
	decoded_free(&r);

	/* NUL and 8-bit bytes are content like any other */
	r = decode_whole(SMTP_BARE_REJECT, "a\0b\xff\r\n.\r\n", 9);
	CHECK(r.done && !r.bare_seen);
	CHECK_DECODED(r, "a\0b\xff\r\n");
	decoded_free(&r);
}

static void test_stuffing(void)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
		{ "..x\r\n.\r\n", ".x\r\n" },
		{ ".x\r\n.\r\n", "x\r\n" },
		{ "a\r\n..\r\n.\r\n", "a\r\n.\r\n" },
		{ "a\r\n...\r\n.\r\n", "a\r\n..\r\n" },
		{ ".leading dot\r\n..two dots\r\n.\r\n", "leading dot\r\n.two dots\r\n" },
		{ "a.\r\nb\r\n.\r\n", "a.\r\nb\r\n" },
		{ "a\r\n .\r\n.\r\n", "a\r\n .\r\n" },
	};
	size_t i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		size_t len = strlen(cases[i].in);
		struct decoded r = decode_whole(SMTP_BARE_REJECT, cases[i].in, len);

		CHECK(r.done && r.consumed == len && !r.bare_seen);
		unit_check_mem(r.out, r.out_len, cases[i].out, strlen(cases[i].out), __FILE__,
		               __LINE__, cases[i].in);
		decoded_free(&r);
	}
}

static void test_end_and_pipelining(void)
{
	struct smtp_data_decoder d;
	char out[64];
	size_t n, used;
	bool done;

	/* the bytes after the end are the next commands: left unconsumed */
	smtp_data_init(&d, SMTP_BARE_REJECT);
	used = smtp_data_decode(&d, "a\r\n.\r\nQUIT\r\n", 12, out, &n, &done);
	CHECK(done);
	CHECK_INT(used, 6);
	CHECK_MEM(out, n, "a\r\n");
	/* and stay so: a finished decoder takes nothing more */
	used = smtp_data_decode(&d, "QUIT\r\n", 6, out, &n, &done);
	CHECK(done);
	CHECK_INT(used, 0);
	CHECK_INT(n, 0);

	/* held-back bytes count as consumed and come out later */
	smtp_data_init(&d, SMTP_BARE_REJECT);
	used = smtp_data_decode(&d, "a\r\n.", 4, out, &n, &done);
	CHECK(!done);
	CHECK_INT(used, 4);
	CHECK_MEM(out, n, "a\r\n");
	used = smtp_data_decode(&d, "\r", 1, out, &n, &done);
	CHECK(!done && used == 1 && n == 0);
	used = smtp_data_decode(&d, NULL, 0, out, &n, &done);
	CHECK(!done && used == 0 && n == 0);
	used = smtp_data_decode(&d, "X", 1, out, &n, &done);
	CHECK(!done && used == 1);
	CHECK_MEM(out, n, ".\rX");
	CHECK(d.bare_seen);

	smtp_data_init(&d, SMTP_BARE_REJECT);
	used = smtp_data_decode(&d, "a\r", 2, out, &n, &done);
	CHECK_MEM(out, n, "a");
	used = smtp_data_decode(&d, "\n", 1, out, &n, &done);
	CHECK_MEM(out, n, "\r\n");
	used = smtp_data_decode(&d, ".", 1, out, &n, &done);
	CHECK(n == 0 && !done);
	used = smtp_data_decode(&d, "\r", 1, out, &n, &done);
	CHECK(n == 0 && !done);
	used = smtp_data_decode(&d, "\nNOOP\r\n", 7, out, &n, &done);
	CHECK(done && used == 1 && n == 0);
	CHECK(!d.bare_seen);
}

static void test_bare(void)
{
	static const struct {
		const char *in, *reject, *normalize;
	} cases[] = {
		{ "a\nb\r\n.\r\n", "a\nb\r\n", "a\r\nb\r\n" },
		{ "a\rb\r\n.\r\n", "a\rb\r\n", "a\r\nb\r\n" },
		{ "\r\r\n.\r\n", "\r\r\n", "\r\n\r\n" },
		{ "\n\n.\r\n\r\n.\r\n", "\n\n.\r\n\r\n", "\r\n\r\n.\r\n\r\n" },
		{ ".\n.\r\n\r\n.\r\n", ".\n.\r\n\r\n", ".\r\n.\r\n\r\n" },
		/* a bare LF/CR kept starts no line; made a CRLF, it starts one for
		 * unstuffing, but a "." line after it is content, not the end */
		{ "a\n..x\r\n.\r\n", "a\n..x\r\n", "a\r\n.x\r\n" },
		{ "a\r..x\r\n.\r\n", "a\r..x\r\n", "a\r\n.x\r\n" },
		{ "a\n.x\r\n.\r\n", "a\n.x\r\n", "a\r\nx\r\n" },
		{ "a\n...\r\n.\r\n", "a\n...\r\n", "a\r\n..\r\n" },
		{ "a\n.\r\nb\r\n.\r\n", "a\n.\r\nb\r\n", "a\r\n.\r\nb\r\n" },
		{ "a\n.\rb\r\n.\r\n", "a\n.\rb\r\n", "a\r\n.\r\nb\r\n" },
		{ "\n\r\n.\r\n", "\n\r\n", "\r\n\r\n" },
		{ "\r\n.\r.\r\n.\r\n", "\r\n.\r.\r\n", "\r\n.\r\n.\r\n" },
		{ "\r\n.\r\r\n.\r\n", "\r\n.\r\r\n", "\r\n.\r\n\r\n" },
	};
	size_t i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		size_t len = strlen(cases[i].in);
		struct decoded rj = decode_whole(SMTP_BARE_REJECT, cases[i].in, len);
		struct decoded nm = decode_whole(SMTP_BARE_NORMALIZE, cases[i].in, len);

		CHECK(rj.done && rj.consumed == len && rj.bare_seen);
		CHECK(nm.done && nm.consumed == len && nm.bare_seen);
		unit_check_mem(rj.out, rj.out_len, cases[i].reject, strlen(cases[i].reject), __FILE__,
		               __LINE__, cases[i].in);
		unit_check_mem(nm.out, nm.out_len, cases[i].normalize, strlen(cases[i].normalize),
		               __FILE__, __LINE__, cases[i].in);
		decoded_free(&rj);
		decoded_free(&nm);
	}
}

/* Every CR is followed by LF and every LF preceded by CR */
static bool only_crlf(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (s[i] == '\r' && (i + 1 == len || s[i + 1] != '\n'))
			return false;
		if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r'))
			return false;
	}
	return true;
}

/* security.md 1.1: the message must end at the real CRLF.CRLF only,
 * whatever the mode and however the bytes arrive */
static void test_smuggling(void)
{
	static const char *const eods[] = { "\n.\n",   "\n.\r\n", "\r\n.\n",
		                            "\r.\r",   "\r.\r\n", "\r\n.\r" };
	static const char smuggled[] = "MAIL FROM:<smuggled@attacker.example>\r\nRCPT TO:<r@x>\r\n"
	                               "DATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n";
	static const enum smtp_bare_mode modes[] = { SMTP_BARE_REJECT, SMTP_BARE_NORMALIZE };
	char in[512];
	size_t e, m, len, body;

	for (e = 0; e < sizeof eods / sizeof eods[0]; e++) {
		body = (size_t)sprintf(in, "Subject: p\r\n\r\nouter%s%s", eods[e], smuggled);
		len = body + (size_t)sprintf(in + body, "QUIT\r\n");
		for (m = 0; m < 2; m++) {
			struct decoded whole = decode_whole(modes[m], in, len);
			struct decoded bytes = decode_bytewise(modes[m], in, len);
			struct decoded head = decode_whole(modes[m], in, body - 1);

			CHECK(whole.done && whole.consumed == body && whole.bare_seen);
			CHECK(decoded_same(&whole, &bytes));
			/* one byte short of the real end is not an end */
			CHECK(!head.done && head.consumed == body - 1);
			if (modes[m] == SMTP_BARE_NORMALIZE)
				CHECK(only_crlf(whole.out, whole.out_len));
			decoded_free(&whole);
			decoded_free(&bytes);
			decoded_free(&head);
		}
	}
}

/* Every string of up to 8 bytes over { a . CR LF }, followed by the end
 * marker and a pipelined command: whole, byte by byte and cut in two at
 * every point, all agreeing with the reference. */
static void test_exhaustive(void)
{
	static const char alphabet[4] = { 'a', '.', '\r', '\n' };
	static const char tail[] = "\r\n.\r\nQUIT\r\n";
	char in[8 + sizeof tail];
	size_t len, i, cut, m, code, ncodes, cases = 0;
	int bad = 0;

	for (len = 0; len <= 8; len++) {
		ncodes = (size_t)1 << (2 * len);
		for (code = 0; code < ncodes; code++) {
			for (i = 0; i < len; i++)
				in[i] = alphabet[(code >> (2 * i)) & 3];
			memcpy(in + len, tail, sizeof tail - 1);
			for (m = 0; m < 2; m++) {
				enum smtp_bare_mode mode = m ? SMTP_BARE_NORMALIZE : SMTP_BARE_REJECT;
				size_t n = len + sizeof tail - 1;
				struct decoded ref = reference(mode, in, n);
				struct decoded got = decode_bytewise(mode, in, n);

				bad += !ref.done || !decoded_same(&ref, &got);
				decoded_free(&got);
				for (cut = 0; cut <= n; cut++) {
					got = decode_cuts(mode, in, n, &cut, 1);
					bad += !decoded_same(&ref, &got);
					decoded_free(&got);
					got = decode_cuts_how(mode, in, n, &cut, 1, true);
					bad += !decoded_same(&ref, &got);
					decoded_free(&got);
				}
				if (bad && bad < 3)
					unit_print_bytes("first mismatch", in, n);
				decoded_free(&ref);
				cases++;
			}
		}
	}
	CHECK(cases > 100000);
	CHECK_INT(bad, 0);
}

/* Line ends at every offset around the 16- and 32-byte blocks the scan
 * takes its bit masks of (a CRLF split by a block's end, a stuffed dot or
 * bare CR or LF just after one), whole and cut there, in both modes. */
static void test_block_boundaries(void)
{
	static const char *const marks[] = { "\r\n", "\r\n.", "\r\n..", "\n", "\r", "\r\r\n", "\r\n\r\n", "\n." };
	char in[256];
	int bad = 0;

	for (size_t k = 0; k < 100; k++) {
		for (size_t j = 0; j < sizeof marks / sizeof marks[0]; j++) {
			size_t ml = strlen(marks[j]), n = 0;
			memset(in, 'x', k);
			n += k;
			memcpy(in + n, marks[j], ml);
			n += ml;
			memset(in + n, 'y', 40);
			n += 40;
			memcpy(in + n, "\r\nz\r\n.\r\n", 9);
			n += 9;
			for (int m = 0; m < 2; m++) {
				enum smtp_bare_mode mode = m ? SMTP_BARE_NORMALIZE : SMTP_BARE_REJECT;
				struct decoded ref = reference(mode, in, n);
				size_t cuts[] = { k + 1 };
				struct decoded got = decode_cuts(mode, in, n, cuts, 0);
				bad += !ref.done || !decoded_same(&ref, &got);
				decoded_free(&got);
				got = decode_cuts_how(mode, in, n, cuts, 1, true);
				bad += !decoded_same(&ref, &got);
				decoded_free(&got);
				if (bad == 1)
					unit_print_bytes("first mismatch", in, n);
				decoded_free(&ref);
			}
		}
	}
	CHECK_INT(bad, 0);
}

/* A large random message with long lines, cut at random points */
static void test_random_chunks(void)
{
	static const char pieces[][8] = { "\r\n", "\r\n.", "\r\n..", "\n", "\r", ".", "text " };
	size_t cap = (size_t)1 << 20, len = 0, i, ncuts = 0;
	char *in = malloc(cap + 16);
	size_t *cuts = malloc(4096 * sizeof *cuts);
	unsigned seed = 12345;
	int round, m;

	while (len < cap) {
		seed = seed * 1103515245u + 12345u;
		i = (seed >> 16) % 16;
		if (i < sizeof pieces / sizeof pieces[0]) {
			memcpy(in + len, pieces[i], strlen(pieces[i]));
			len += strlen(pieces[i]);
		} else {
			in[len++] = (char)('a' + i);
		}
	}
	memcpy(in + len, "\r\n.\r\n", 5);
	len += 5;
	for (m = 0; m < 2; m++) {
		enum smtp_bare_mode mode = m ? SMTP_BARE_NORMALIZE : SMTP_BARE_REJECT;
		struct decoded ref = reference(mode, in, len);

		for (round = 0; round < 8; round++) {
			struct decoded got;
			size_t at = 0;

			for (ncuts = 0; ncuts < 4096; ncuts++) {
				seed = seed * 1103515245u + 12345u;
				at += 1 + (seed >> 8) % (round < 4 ? 16 : 2 * len / 4096);
				if (at >= len)
					break;
				cuts[ncuts] = at;
			}
			got = decode_cuts(mode, in, len, cuts, ncuts);
			CHECK(decoded_same(&ref, &got));
			decoded_free(&got);
			got = decode_cuts_how(mode, in, len, cuts, ncuts, true);
			CHECK(decoded_same(&ref, &got));
			decoded_free(&got);
		}
		CHECK(ref.done);
		decoded_free(&ref);
	}
	free(cuts);
	free(in);
}

int main(void)
{
	RUN(test_simple);
	RUN(test_stuffing);
	RUN(test_end_and_pipelining);
	RUN(test_bare);
	RUN(test_smuggling);
	RUN(test_exhaustive);
	RUN(test_block_boundaries);
	RUN(test_random_chunks);
	return unit_summary();
}
