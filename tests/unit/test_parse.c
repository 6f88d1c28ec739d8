/*
 * test_parse.c — unit tests for command framing and splitting, HELO
 * arguments, MAIL/RCPT paths and parameters, xtext and SIZE.
 */
#include "proto/smtp_parse.h"
#include "unit.h"

#include <stdlib.h>

/* ---- line framing ------------------------------------------------------- */

#define FEED_MAX 512
#define FEED_CAP (FEED_MAX + 1 + 4096)

/* What a connection does with smtp_line_next: append each read to a
 * bounded buffer, take lines out, keep the rest. */
struct feeder {
	struct smtp_line_reader r;
	char buf[FEED_CAP];
	size_t len, high_water;
	int overflow, ok, too_long, skipping;
	char last[FEED_MAX + 1];
	size_t last_len;
};

static void feeder_init(struct feeder *f, size_t max)
{
	memset(f, 0, sizeof *f);
	smtp_line_reader_init(&f->r, max);
}

static void feeder_push(struct feeder *f, const char *data, size_t n)
{
	size_t off = 0, used, line_len;
	const char *line;
	enum smtp_line_status st;

	if (f->len + n > FEED_CAP) {
		f->overflow++;
		return;
	}
	memcpy(f->buf + f->len, data, n);
	f->len += n;
	if (f->len > f->high_water)
		f->high_water = f->len;
	do {
		st = smtp_line_next(&f->r, f->buf + off, f->len - off, &line, &line_len, &used);
		off += used;
		if (st == SMTP_LINE_OK) {
			f->ok++;
			memcpy(f->last, line, line_len);
			f->last_len = line_len;
		} else if (st == SMTP_LINE_TOO_LONG) {
			f->too_long++;
		} else if (st == SMTP_LINE_SKIPPING) {
			f->skipping++;
		}
	} while (st != SMTP_LINE_NEED_MORE && off < f->len);
	memmove(f->buf, f->buf + off, f->len - off);
	f->len -= off;
}

static void test_line_basic(void)
{
	struct smtp_line_reader r;
	const char *line;
	size_t len, used;
	const char two[] = "A\r\nB\n";

	smtp_line_reader_init(&r, 10);
	CHECK_INT(smtp_line_next(&r, "NOOP\r\n", 6, &line, &len, &used), SMTP_LINE_OK);
	CHECK_MEM(line, len, "NOOP");
	CHECK_INT(used, 6);
	CHECK_INT(smtp_line_next(&r, "NOOP\n", 5, &line, &len, &used), SMTP_LINE_OK);
	CHECK_MEM(line, len, "NOOP");
	CHECK_INT(used, 5);
	CHECK_INT(smtp_line_next(&r, "NOOP", 4, &line, &len, &used), SMTP_LINE_NEED_MORE);
	CHECK_INT(used, 0);
	CHECK(line == NULL && len == 0);
	CHECK_INT(smtp_line_next(&r, NULL, 0, &line, &len, &used), SMTP_LINE_NEED_MORE);
	CHECK_INT(smtp_line_next(&r, "NOOP\r", 5, &line, &len, &used), SMTP_LINE_NEED_MORE);

	CHECK_INT(smtp_line_next(&r, two, 5, &line, &len, &used), SMTP_LINE_OK);
	CHECK_MEM(line, len, "A");
	CHECK_INT(used, 3);
	CHECK_INT(smtp_line_next(&r, two + 3, 2, &line, &len, &used), SMTP_LINE_OK);
	CHECK_MEM(line, len, "B");

	CHECK_INT(smtp_line_next(&r, "\r\n", 2, &line, &len, &used), SMTP_LINE_OK);
	CHECK_INT(len, 0);
	CHECK_INT(smtp_line_next(&r, "\n", 1, &line, &len, &used), SMTP_LINE_OK);
	CHECK_INT(len, 0);
	/* only the CR right before the LF is the terminator's */
	CHECK_INT(smtp_line_next(&r, "a\rb\r\n", 5, &line, &len, &used), SMTP_LINE_OK);
	CHECK_MEM(line, len, "a\rb");
	CHECK_INT(smtp_line_next(&r, "x\r\r\n", 4, &line, &len, &used), SMTP_LINE_OK);
	CHECK_MEM(line, len, "x\r");
	CHECK_INT(smtp_line_next(&r, "\0\n", 2, &line, &len, &used), SMTP_LINE_OK);
	CHECK_MEM(line, len, "\0");
}

static void test_line_limit(void)
{
	struct smtp_line_reader r;
	const char *line;
	size_t len, used;

	smtp_line_reader_init(&r, 10);
	CHECK_INT(smtp_line_next(&r, "0123456789\r\n", 12, &line, &len, &used), SMTP_LINE_OK);
	CHECK_INT(len, 10);
	CHECK_INT(smtp_line_next(&r, "0123456789\n", 11, &line, &len, &used), SMTP_LINE_OK);
	CHECK_INT(smtp_line_next(&r, "0123456789A\r\nNOOP\r\n", 19, &line, &len, &used),
	          SMTP_LINE_TOO_LONG);
	CHECK_INT(used, 13);
	CHECK(!r.skipping);
	/* a full line plus its CR still fits; one more byte does not */
	CHECK_INT(smtp_line_next(&r, "0123456789\r", 11, &line, &len, &used), SMTP_LINE_NEED_MORE);
	CHECK_INT(smtp_line_next(&r, "0123456789A", 11, &line, &len, &used), SMTP_LINE_SKIPPING);
	CHECK_INT(used, 11);
	CHECK(r.skipping);
	CHECK_INT(smtp_line_next(&r, "more", 4, &line, &len, &used), SMTP_LINE_SKIPPING);
	CHECK_INT(used, 4);
	CHECK_INT(smtp_line_next(&r, NULL, 0, &line, &len, &used), SMTP_LINE_NEED_MORE);
	CHECK_INT(smtp_line_next(&r, "\r", 1, &line, &len, &used), SMTP_LINE_SKIPPING);
	CHECK_INT(smtp_line_next(&r, "\nNOOP\r\n", 7, &line, &len, &used), SMTP_LINE_TOO_LONG);
	CHECK_INT(used, 1);
	CHECK_INT(smtp_line_next(&r, "NOOP\r\n", 6, &line, &len, &used), SMTP_LINE_OK);
	CHECK_MEM(line, len, "NOOP");
	/* max 0: only empty lines */
	smtp_line_reader_init(&r, 0);
	CHECK_INT(smtp_line_next(&r, "\r\n", 2, &line, &len, &used), SMTP_LINE_OK);
	CHECK_INT(smtp_line_next(&r, "x\r\n", 3, &line, &len, &used), SMTP_LINE_TOO_LONG);
}

/* 4 MiB without LF, in pieces of several sizes: the buffer never holds
 * more than max + 1 + one piece, and the line is reported exactly once. */
static void test_line_huge(void)
{
	static const size_t pieces[] = { 1, 7, 1000, 4096 };
	static char chunk[4096];
	size_t i, sent, n, total = (size_t)4 << 20;
	struct feeder *f = malloc(sizeof *f);

	memset(chunk, 'A', sizeof chunk);
	for (i = 0; i < sizeof pieces / sizeof pieces[0]; i++) {
		feeder_init(f, FEED_MAX);
		feeder_push(f, "NOOP\r\n", 6);
		for (sent = 0; sent < total; sent += n) {
			n = total - sent < pieces[i] ? total - sent : pieces[i];
			feeder_push(f, chunk, n);
		}
		feeder_push(f, "\r\nQUIT\r\n", 8);
		CHECK_INT(f->overflow, 0);
		CHECK(f->high_water <= FEED_MAX + 1 + pieces[i]);
		CHECK_INT(f->too_long, 1);
		CHECK_INT(f->ok, 2);
		CHECK_MEM(f->last, f->last_len, "QUIT");
		CHECK_INT(f->len, 0);
	}
	free(f);
}

/* The same lines come out however the stream is cut */
static void test_line_split(void)
{
	static const char stream[] = "EHLO x\r\nMAIL FROM:<a@b>\nRCPT TO:<c@d>\r\n\r\nQUIT\r\n";
	size_t cut, n = sizeof stream - 1;
	struct feeder *f = malloc(sizeof *f);
	int bad = 0;

	for (cut = 0; cut <= n; cut++) {
		feeder_init(f, FEED_MAX);
		feeder_push(f, stream, cut);
		feeder_push(f, stream + cut, n - cut);
		bad += f->ok != 5 || f->too_long != 0 || f->len != 0;
	}
	feeder_init(f, FEED_MAX);
	for (cut = 0; cut < n; cut++)
		feeder_push(f, stream + cut, 1);
	CHECK_INT(f->ok, 5);
	CHECK_MEM(f->last, f->last_len, "QUIT");
	CHECK_INT(bad, 0);
	free(f);
}

/* ---- commands ----------------------------------------------------------- */

struct cmd_case {
	const char *line;
	size_t len; /* 0: strlen(line) */
	enum smtp_cmd_status status;
	enum smtp_verb verb;
	const char *name, *arg;
};

static const struct cmd_case cmd_cases[] = {
	{ "HELO example.com", 0, SMTP_CMD_OK, SMTP_VERB_HELO, "HELO", "example.com" },
	{ "EHLO example.com", 0, SMTP_CMD_OK, SMTP_VERB_EHLO, "EHLO", "example.com" },
	{ "LHLO example.com", 0, SMTP_CMD_OK, SMTP_VERB_LHLO, "LHLO", "example.com" },
	{ "MAIL FROM:<a@b>", 0, SMTP_CMD_OK, SMTP_VERB_MAIL, "MAIL", "FROM:<a@b>" },
	{ "RCPT TO:<a@b>", 0, SMTP_CMD_OK, SMTP_VERB_RCPT, "RCPT", "TO:<a@b>" },
	{ "DATA", 0, SMTP_CMD_OK, SMTP_VERB_DATA, "DATA", "" },
	{ "BDAT 100 LAST", 0, SMTP_CMD_OK, SMTP_VERB_BDAT, "BDAT", "100 LAST" },
	{ "RSET", 0, SMTP_CMD_OK, SMTP_VERB_RSET, "RSET", "" },
	{ "NOOP", 0, SMTP_CMD_OK, SMTP_VERB_NOOP, "NOOP", "" },
	{ "NOOP anything at all", 0, SMTP_CMD_OK, SMTP_VERB_NOOP, "NOOP", "anything at all" },
	{ "QUIT", 0, SMTP_CMD_OK, SMTP_VERB_QUIT, "QUIT", "" },
	{ "VRFY postmaster", 0, SMTP_CMD_OK, SMTP_VERB_VRFY, "VRFY", "postmaster" },
	{ "EXPN list", 0, SMTP_CMD_OK, SMTP_VERB_EXPN, "EXPN", "list" },
	{ "HELP", 0, SMTP_CMD_OK, SMTP_VERB_HELP, "HELP", "" },
	{ "STARTTLS", 0, SMTP_CMD_OK, SMTP_VERB_STARTTLS, "STARTTLS", "" },
	{ "AUTH PLAIN AHVzZXIAcGFzcw==", 0, SMTP_CMD_OK, SMTP_VERB_AUTH, "AUTH",
	  "PLAIN AHVzZXIAcGFzcw==" },
	{ "XCLIENT ADDR=192.0.2.1", 0, SMTP_CMD_OK, SMTP_VERB_XCLIENT, "XCLIENT",
	  "ADDR=192.0.2.1" },
	{ "XFORWARD NAME=x", 0, SMTP_CMD_OK, SMTP_VERB_XFORWARD, "XFORWARD", "NAME=x" },
	/* case, blanks */
	{ "ehlo example.com", 0, SMTP_CMD_OK, SMTP_VERB_EHLO, "ehlo", "example.com" },
	{ "mAiL fRoM:<a@b>", 0, SMTP_CMD_OK, SMTP_VERB_MAIL, "mAiL", "fRoM:<a@b>" },
	{ "starttls", 0, SMTP_CMD_OK, SMTP_VERB_STARTTLS, "starttls", "" },
	{ "MAIL\tFROM:<a@b>", 0, SMTP_CMD_OK, SMTP_VERB_MAIL, "MAIL", "FROM:<a@b>" },
	{ "RCPT  \t TO:<a@b>  \t ", 0, SMTP_CMD_OK, SMTP_VERB_RCPT, "RCPT", "TO:<a@b>" },
	{ "  NOOP  ", 0, SMTP_CMD_OK, SMTP_VERB_NOOP, "NOOP", "" },
	{ "QUIT\t", 0, SMTP_CMD_OK, SMTP_VERB_QUIT, "QUIT", "" },
	{ "EHLO a  b", 0, SMTP_CMD_OK, SMTP_VERB_EHLO, "EHLO", "a  b" },
	{ "EHLO \xc3\xa4.example", 0, SMTP_CMD_OK, SMTP_VERB_EHLO, "EHLO", "\xc3\xa4.example" },
	{ "NOOP \x7f", 0, SMTP_CMD_OK, SMTP_VERB_NOOP, "NOOP", "\x7f" },
	/* unknown */
	{ "FOO bar", 0, SMTP_CMD_OK, SMTP_VERB_UNKNOWN, "FOO", "bar" },
	{ "MAILFROM:<a@b>", 0, SMTP_CMD_OK, SMTP_VERB_UNKNOWN, "MAILFROM:<a@b>", "" },
	{ "MAI", 0, SMTP_CMD_OK, SMTP_VERB_UNKNOWN, "MAI", "" },
	{ "STARTTLSX", 0, SMTP_CMD_OK, SMTP_VERB_UNKNOWN, "STARTTLSX", "" },
	{ "\xc3\x89HLO x", 0, SMTP_CMD_OK, SMTP_VERB_UNKNOWN, "\xc3\x89HLO", "x" },
	/* empty and blank */
	{ "", 0, SMTP_CMD_EMPTY, SMTP_VERB_UNKNOWN, "", "" },
	{ "   ", 0, SMTP_CMD_EMPTY, SMTP_VERB_UNKNOWN, "", "" },
	{ "\t \t", 0, SMTP_CMD_EMPTY, SMTP_VERB_UNKNOWN, "", "" },
	/* NUL, bare CR, LF and other C0 bytes: the injection probes */
	{ "NOOP\0", 5, SMTP_CMD_BAD_CHAR, SMTP_VERB_UNKNOWN, "", "" },
	{ "HELO a\0b", 8, SMTP_CMD_BAD_CHAR, SMTP_VERB_UNKNOWN, "", "" },
	{ "\0", 1, SMTP_CMD_BAD_CHAR, SMTP_VERB_UNKNOWN, "", "" },
	{ "MAIL FROM:<a@x>\rRCPT TO:<b@x>", 0, SMTP_CMD_BAD_CHAR, SMTP_VERB_UNKNOWN, "", "" },
	{ "EHLO probe\r250-INJECTED\r\0x", 26, SMTP_CMD_BAD_CHAR, SMTP_VERB_UNKNOWN, "", "" },
	{ "\r", 0, SMTP_CMD_BAD_CHAR, SMTP_VERB_UNKNOWN, "", "" },
	{ "NOOP\r", 0, SMTP_CMD_BAD_CHAR, SMTP_VERB_UNKNOWN, "", "" },
	{ "NOOP\nQUIT", 0, SMTP_CMD_BAD_CHAR, SMTP_VERB_UNKNOWN, "", "" },
	{ "NOOP \x01", 0, SMTP_CMD_BAD_CHAR, SMTP_VERB_UNKNOWN, "", "" },
	{ "NOOP \x1b[31m", 0, SMTP_CMD_BAD_CHAR, SMTP_VERB_UNKNOWN, "", "" },
	{ "\x1f", 0, SMTP_CMD_BAD_CHAR, SMTP_VERB_UNKNOWN, "", "" },
	{ "  \x0b", 0, SMTP_CMD_BAD_CHAR, SMTP_VERB_UNKNOWN, "", "" },
	/* HTTP request lines */
	{ "GET / HTTP/1.1", 0, SMTP_CMD_OK, SMTP_VERB_HTTP, "GET", "/ HTTP/1.1" },
	{ "POST /submit HTTP/1.0", 0, SMTP_CMD_OK, SMTP_VERB_HTTP, "POST", "/submit HTTP/1.0" },
	{ "HEAD /x HTTP/1.1", 0, SMTP_CMD_OK, SMTP_VERB_HTTP, "HEAD", "/x HTTP/1.1" },
	{ "PUT /x HTTP/1.1", 0, SMTP_CMD_OK, SMTP_VERB_HTTP, "PUT", "/x HTTP/1.1" },
	{ "DELETE /x HTTP/1.1", 0, SMTP_CMD_OK, SMTP_VERB_HTTP, "DELETE", "/x HTTP/1.1" },
	{ "TRACE / HTTP/1.1", 0, SMTP_CMD_OK, SMTP_VERB_HTTP, "TRACE", "/ HTTP/1.1" },
	{ "OPTIONS * HTTP/1.1", 0, SMTP_CMD_OK, SMTP_VERB_HTTP, "OPTIONS", "* HTTP/1.1" },
	{ "CONNECT example.com:443 HTTP/1.1", 0, SMTP_CMD_OK, SMTP_VERB_HTTP, "CONNECT",
	  "example.com:443 HTTP/1.1" },
	{ "GET http://example.com/ HTTP/1.1", 0, SMTP_CMD_OK, SMTP_VERB_HTTP, "GET",
	  "http://example.com/ HTTP/1.1" },
	{ "get / HTTP/2.0", 0, SMTP_CMD_OK, SMTP_VERB_HTTP, "get", "/ HTTP/2.0" },
	{ "GET /", 0, SMTP_CMD_OK, SMTP_VERB_UNKNOWN, "GET", "/" },
	{ "GET HTTP/1.1", 0, SMTP_CMD_OK, SMTP_VERB_UNKNOWN, "GET", "HTTP/1.1" },
	{ "GET / HTTP/1", 0, SMTP_CMD_OK, SMTP_VERB_UNKNOWN, "GET", "/ HTTP/1" },
	{ "GET / HTTP/x.1", 0, SMTP_CMD_OK, SMTP_VERB_UNKNOWN, "GET", "/ HTTP/x.1" },
	{ "GET / HTTP/1.10", 0, SMTP_CMD_OK, SMTP_VERB_UNKNOWN, "GET", "/ HTTP/1.10" },
	{ "GET /HTTP/1.1", 0, SMTP_CMD_OK, SMTP_VERB_UNKNOWN, "GET", "/HTTP/1.1" },
	{ "FOO / HTTP/1.1", 0, SMTP_CMD_OK, SMTP_VERB_UNKNOWN, "FOO", "/ HTTP/1.1" },
	{ "HELO / HTTP/1.1", 0, SMTP_CMD_OK, SMTP_VERB_HELO, "HELO", "/ HTTP/1.1" },
	{ "GET / HTTP/1.1\r", 0, SMTP_CMD_BAD_CHAR, SMTP_VERB_UNKNOWN, "", "" },
};

static void test_command_table(void)
{
	size_t i;

	for (i = 0; i < sizeof cmd_cases / sizeof cmd_cases[0]; i++) {
		const struct cmd_case *c = &cmd_cases[i];
		size_t len = c->len ? c->len : strlen(c->line);
		struct smtp_cmd cmd;
		enum smtp_cmd_status st = smtp_parse_command(c->line, len, &cmd);
		int ok = st == c->status && cmd.verb == c->verb && cmd.name_len == strlen(c->name) &&
		         memcmp(cmd.name, c->name, cmd.name_len) == 0 &&
		         cmd.arg_len == strlen(c->arg) && memcmp(cmd.arg, c->arg, cmd.arg_len) == 0;

		CHECK(ok);
		if (!ok) {
			unit_print_bytes("line", c->line, len);
			printf("     status %d verb %d\n", st, cmd.verb);
			unit_print_bytes("name", cmd.name, cmd.name_len);
			unit_print_bytes("arg ", cmd.arg, cmd.arg_len);
		}
		/* an absent argument points at the line end, never elsewhere */
		if (cmd.arg_len == 0)
			CHECK(cmd.arg == c->line + len);
	}
}

static void test_verb_names(void)
{
	int v;
	char lower[16];

	for (v = SMTP_VERB_HELO; v <= SMTP_VERB_XFORWARD; v++) {
		const char *name = smtp_verb_name((enum smtp_verb)v);
		size_t i, n = strlen(name);

		CHECK(n > 0 && n < sizeof lower);
		CHECK_INT(smtp_verb_from_name(name, n), v);
		for (i = 0; i < n; i++)
			lower[i] = (char)(name[i] | 0x20);
		CHECK_INT(smtp_verb_from_name(lower, n), v);
		CHECK_INT(smtp_verb_from_name(name, n - 1), SMTP_VERB_UNKNOWN);
	}
	/* Four-letter words are compared with bit 5 masked: only letters fold. */
	CHECK_INT(smtp_verb_from_name("m`il", 4), SMTP_VERB_UNKNOWN);
	CHECK_INT(smtp_verb_from_name("\xcd" "AIL", 4), SMTP_VERB_UNKNOWN);
	CHECK_INT(smtp_verb_from_name("MAI\x0c", 4), SMTP_VERB_UNKNOWN);
	CHECK_INT(smtp_verb_from_name("mAiL", 4), SMTP_VERB_MAIL);
	CHECK_STR(smtp_verb_name(SMTP_VERB_MAIL), "MAIL");
	CHECK_STR(smtp_verb_name(SMTP_VERB_STARTTLS), "STARTTLS");
	CHECK_STR(smtp_verb_name(SMTP_VERB_UNKNOWN), "");
	CHECK_STR(smtp_verb_name(SMTP_VERB_HTTP), "");
	CHECK_STR(smtp_verb_name(SMTP_VERB_COUNT), "");
	CHECK_STR(smtp_verb_name((enum smtp_verb)-1), "");
	CHECK_INT(smtp_verb_from_name("", 0), SMTP_VERB_UNKNOWN);
	CHECK_INT(smtp_verb_from_name("GET", 3), SMTP_VERB_UNKNOWN);
	CHECK_INT(smtp_verb_from_name("MAILX", 5), SMTP_VERB_UNKNOWN);
	CHECK_INT(smtp_verb_from_name("MAIL", 4), SMTP_VERB_MAIL);
	CHECK_INT(smtp_verb_from_name("xForward", 8), SMTP_VERB_XFORWARD);
	/* no locale folding: dotless/dotted i and Kelvin sign are not ASCII */
	CHECK_INT(smtp_verb_from_name("HELP\xc4\xb1", 6), SMTP_VERB_UNKNOWN);
	CHECK(smtp_ascii_ieq("SIZE", 4, "size", 4));
	CHECK(!smtp_ascii_ieq("SIZE", 4, "siz", 3));
	CHECK(!smtp_ascii_ieq("a@", 2, "A`", 2));
	CHECK(smtp_ascii_ieq("", 0, "", 0));
}

/* ---- HELO --------------------------------------------------------------- */

static void test_helo(void)
{
	char name[300];

	CHECK(smtp_valid_helo("example.com", 11));
	CHECK(smtp_valid_helo("[192.0.2.1]", 11));
	CHECK(smtp_valid_helo("[IPv6:::1]", 10));
	CHECK(smtp_valid_helo("localhost", 9));
	CHECK(smtp_valid_helo("\xc3\xa4.example", 10));
	CHECK(smtp_valid_helo("not_a_valid.hostname!", 21));
	CHECK(!smtp_valid_helo("", 0));
	CHECK(!smtp_valid_helo("a b", 3));
	CHECK(!smtp_valid_helo("a\tb", 3));
	CHECK(!smtp_valid_helo("a\0b", 3));
	CHECK(!smtp_valid_helo("a\rb", 3));
	CHECK(!smtp_valid_helo("a\nb", 3));
	CHECK(!smtp_valid_helo("a\x7f", 2));
	memset(name, 'a', sizeof name);
	CHECK(smtp_valid_helo(name, 255));
	CHECK(!smtp_valid_helo(name, 256));
	CHECK(!smtp_valid_helo(name, 300));
}

/* ---- paths -------------------------------------------------------------- */

static struct smtp_path path_out;

static enum smtp_path_status path_n(enum smtp_path_kind kind, const char *arg, size_t len,
                                     bool lenient)
{
	return smtp_parse_path(kind, arg, len, lenient, &path_out);
}

static enum smtp_path_status mail(const char *arg)
{
	return path_n(SMTP_PATH_MAIL, arg, strlen(arg), false);
}

static enum smtp_path_status rcpt(const char *arg)
{
	return path_n(SMTP_PATH_RCPT, arg, strlen(arg), false);
}

static enum smtp_path_status mail_lenient(const char *arg)
{
	return path_n(SMTP_PATH_MAIL, arg, strlen(arg), true);
}

static void test_path_basic(void)
{
	CHECK_INT(mail("FROM:<a@b.example>"), SMTP_PATH_OK);
	CHECK_STR(path_out.address, "a@b.example");
	CHECK_INT(path_out.address_len, 11);
	CHECK(!path_out.is_null && !path_out.is_postmaster && !path_out.has_8bit);
	CHECK_INT(path_out.nparams, 0);
	CHECK_INT(mail("from:<a@b>"), SMTP_PATH_OK);
	CHECK_INT(mail("From: <a@b>"), SMTP_PATH_OK);
	CHECK_INT(mail("FROM:   <a@b>"), SMTP_PATH_OK);
	CHECK_INT(mail("FROM:\t<a@b>"), SMTP_PATH_OK);
	CHECK_INT(mail("FROM:<a@b>   "), SMTP_PATH_OK);
	CHECK_INT(rcpt("TO:<a@b>"), SMTP_PATH_OK);
	CHECK_INT(rcpt("to:<a@b>"), SMTP_PATH_OK);
	CHECK_INT(rcpt("tO: <a@b>"), SMTP_PATH_OK);
	CHECK_STR(path_out.address, "a@b");

	/* the null path: MAIL only */
	CHECK_INT(mail("FROM:<>"), SMTP_PATH_OK);
	CHECK(path_out.is_null);
	CHECK_INT(path_out.address_len, 0);
	CHECK_STR(path_out.address, "");
	CHECK_INT(mail("FROM:<> SIZE=10"), SMTP_PATH_OK);
	CHECK(path_out.is_null && path_out.nparams == 1);
	CHECK_INT(rcpt("TO:<>"), SMTP_PATH_BAD_ADDRESS);

	/* postmaster without a domain: RCPT only */
	CHECK_INT(rcpt("TO:<postmaster>"), SMTP_PATH_OK);
	CHECK(path_out.is_postmaster);
	CHECK_STR(path_out.address, "postmaster");
	CHECK_INT(rcpt("TO:<PostMaster>"), SMTP_PATH_OK);
	CHECK(path_out.is_postmaster);
	CHECK_STR(path_out.address, "PostMaster");
	CHECK_INT(rcpt("TO:<postmaster@example.com>"), SMTP_PATH_OK);
	CHECK(!path_out.is_postmaster);
	CHECK_INT(mail("FROM:<postmaster>"), SMTP_PATH_BAD_ADDRESS);
	CHECK(!path_out.is_postmaster);
	CHECK_INT(mail("FROM:<postmaster@example.com>"), SMTP_PATH_OK);
	CHECK_INT(rcpt("TO:<postmasterx>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<user>"), SMTP_PATH_BAD_ADDRESS);

	/* not FROM:<...> / TO:<...> at all */
	CHECK_INT(mail("FROM:sender@example.com"), SMTP_PATH_SYNTAX);
	CHECK_INT(mail("FROM: sender@example.com"), SMTP_PATH_SYNTAX);
	CHECK_INT(mail("FROM:<a@b"), SMTP_PATH_SYNTAX);
	CHECK_INT(mail("FROM:<"), SMTP_PATH_SYNTAX);
	CHECK_INT(mail("FROM:"), SMTP_PATH_SYNTAX);
	CHECK_INT(mail("FROM"), SMTP_PATH_SYNTAX);
	CHECK_INT(mail(""), SMTP_PATH_SYNTAX);
	CHECK_INT(mail("FROM :<a@b>"), SMTP_PATH_SYNTAX);
	CHECK_INT(mail("FROM<a@b>"), SMTP_PATH_SYNTAX);
	CHECK_INT(mail("TO:<a@b>"), SMTP_PATH_SYNTAX);
	CHECK_INT(rcpt("FROM:<a@b>"), SMTP_PATH_SYNTAX);
	CHECK_INT(mail("FROM:<a@b>x"), SMTP_PATH_SYNTAX);
	CHECK_INT(mail("FROM:<a@b>SIZE=1"), SMTP_PATH_SYNTAX);
	CHECK_INT(mail("FROM:a@b>"), SMTP_PATH_SYNTAX);
	CHECK_INT(mail("FROM:<a@b>>"), SMTP_PATH_SYNTAX);
	CHECK_INT(mail("FROM:<<a@b>>"), SMTP_PATH_BAD_ADDRESS);
}

static void test_path_local_part(void)
{
	char buf[400];

	/* source routes are dropped */
	CHECK_INT(mail("FROM:<@relay.example.com,@other.example.com:sender@example.com>"),
	          SMTP_PATH_OK);
	CHECK_STR(path_out.address, "sender@example.com");
	CHECK_INT(rcpt("TO:<@a:b@c>"), SMTP_PATH_OK);
	CHECK_STR(path_out.address, "b@c");
	CHECK_INT(rcpt("TO:<@a:postmaster>"), SMTP_PATH_OK);
	CHECK(path_out.is_postmaster);
	CHECK_INT(mail("FROM:<@:a@b>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(mail("FROM:<@a,:b@c>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(mail("FROM:<@a,b:c@d>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(mail("FROM:<@a,,@b:c@d>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(mail("FROM:<@bad_domain:a@b>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(mail("FROM:<@a>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(mail("FROM:<@a:>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(mail("FROM:<@>"), SMTP_PATH_BAD_ADDRESS);

	/* quoted strings keep their quotes; a '>' inside them is not the end */
	CHECK_INT(mail("FROM:<\"sender\"@example.com>"), SMTP_PATH_OK);
	CHECK_STR(path_out.address, "\"sender\"@example.com");
	CHECK_INT(mail("FROM:<\"a b\"@x>"), SMTP_PATH_OK);
	CHECK_INT(mail("FROM:<\"\"@x>"), SMTP_PATH_OK);
	CHECK_INT(mail("FROM:<\"a>b\"@x.y> SIZE=1"), SMTP_PATH_OK);
	CHECK_STR(path_out.address, "\"a>b\"@x.y");
	CHECK_INT(path_out.nparams, 1);
	CHECK_INT(mail("FROM:<\"a\\\"b\\\\\"@x>"), SMTP_PATH_OK);
	CHECK_STR(path_out.address, "\"a\\\"b\\\\\"@x");
	CHECK_INT(mail("FROM:<\"abc@x>"), SMTP_PATH_SYNTAX);
	CHECK_INT(mail("FROM:<\"a\"b@x>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(mail("FROM:<\"a\"@>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(mail("FROM:<\"a\\\xc3\xa4\"@x>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(mail("FROM:<\"\xc3\xa4\"@x>"), SMTP_PATH_OK);
	CHECK(path_out.has_8bit);

	/* dot-atoms */
	CHECK_INT(mail("FROM:<first.last@x>"), SMTP_PATH_OK);
	CHECK_INT(mail("FROM:<!#$%&'*+-/=?^_`{|}~@x>"), SMTP_PATH_OK);
	CHECK_INT(mail("FROM:<.a@x>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(mail("FROM:<user.@example.com>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(mail("FROM:<a..b@x>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(mail("FROM:<a b@x>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(mail("FROM:<a@b@c>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(mail("FROM:<a(b)@x>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(mail("FROM:<a,b@x>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(mail("FROM:<a@>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(mail("FROM:<a>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(mail("FROM:<a\\b@x>"), SMTP_PATH_BAD_ADDRESS);

	/* RFC 5321 4.5.3.1.1: 64 octets of local part */
	memset(buf, 'a', sizeof buf);
	memcpy(buf, "FROM:<", 6);
	memcpy(buf + 6 + 64, "@x>", 3);
	CHECK_INT(path_n(SMTP_PATH_MAIL, buf, 6 + 64 + 3, false), SMTP_PATH_OK);
	memset(buf, 'a', sizeof buf);
	memcpy(buf, "FROM:<", 6);
	memcpy(buf + 6 + 65, "@x>", 3);
	CHECK_INT(path_n(SMTP_PATH_MAIL, buf, 6 + 65 + 3, false), SMTP_PATH_BAD_ADDRESS);
	memset(buf, 'a', sizeof buf);
	memcpy(buf, "FROM:<", 6);
	memcpy(buf + 6 + 300, "@x>", 3);
	CHECK_INT(path_n(SMTP_PATH_MAIL, buf, 6 + 300 + 3, false), SMTP_PATH_BAD_ADDRESS);
}

/* "TO:<a@" + labels of the given lengths + ">" */
static enum smtp_path_status rcpt_labels(const size_t *labels, size_t n)
{
	char buf[1200];
	size_t i, len = 0;

	memcpy(buf, "TO:<a@", 6);
	len = 6;
	for (i = 0; i < n; i++) {
		if (i > 0)
			buf[len++] = '.';
		memset(buf + len, 'd', labels[i]);
		len += labels[i];
	}
	buf[len++] = '>';
	return path_n(SMTP_PATH_RCPT, buf, len, false);
}

static void test_path_domain(void)
{
	static const size_t l63[] = { 63 }, l64[] = { 64 };
	static const size_t d255[] = { 63, 63, 63, 63 }, d256[] = { 63, 63, 63, 64 };
	static const size_t d257[] = { 63, 63, 63, 63, 1 };
	static const size_t d324[] = { 63, 63, 63, 63, 63, 4 };

	CHECK_INT(rcpt("TO:<a@localhost>"), SMTP_PATH_OK);
	CHECK_INT(rcpt("TO:<a@Mail-1.Example.COM>"), SMTP_PATH_OK);
	CHECK_INT(rcpt("TO:<a@1.2.3.4>"), SMTP_PATH_OK);
	CHECK_INT(rcpt("TO:<a@xn--bcher-kva.example>"), SMTP_PATH_OK);
	CHECK_INT(rcpt("TO:<a@-x.com>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<a@x-.com>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<a@x..com>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<a@x.com.>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<a@.x>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<a@x_y.com>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<a@x y>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<a@x!y>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<a@x:25>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt_labels(l63, 1), SMTP_PATH_OK);
	CHECK_INT(rcpt_labels(l64, 1), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt_labels(d255, 4), SMTP_PATH_OK);
	CHECK_INT(rcpt_labels(d256, 4), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt_labels(d257, 5), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt_labels(d324, 6), SMTP_PATH_BAD_ADDRESS);

	/* address literals */
	CHECK_INT(rcpt("TO:<a@[192.0.2.1]>"), SMTP_PATH_OK);
	CHECK_STR(path_out.address, "a@[192.0.2.1]");
	CHECK_INT(rcpt("TO:<a@[IPv6:::1]>"), SMTP_PATH_OK);
	CHECK_INT(rcpt("TO:<a@[ipv6:2001:db8::1]>"), SMTP_PATH_OK);
	CHECK_INT(rcpt("TO:<a@[IPv6:::ffff:192.0.2.1]>"), SMTP_PATH_OK);
	CHECK_INT(rcpt("TO:<a@[IPv6:2001:db8:0:0:0:0:2:1]>"), SMTP_PATH_OK);
	CHECK_INT(rcpt("TO:<a@[256.1.1.1]>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<a@[1.2.3]>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<a@[1.2.3.4.5]>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<a@[01.2.3.4]>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<a@[IPv6:2001:db8::1::2]>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<a@[IPv6:192.0.2.1]>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<a@[IPv6:fe80::1%eth0]>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<a@[IPv6:]>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<a@[::1]>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<a@[]>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<a@[x:y]>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<a@[192.0.2.1>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<a@[192.0.2.1]x>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<a@192.0.2.1]>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<a@[IPv6:1111:2222:3333:4444:5555:6666:255.255.255.255:1]>"),
	          SMTP_PATH_BAD_ADDRESS);
}

static void test_path_8bit_and_controls(void)
{
	CHECK_INT(rcpt("TO:<j\xc3\xb6ran@ex\xc3\xa4mple.com>"), SMTP_PATH_OK);
	CHECK(path_out.has_8bit);
	CHECK_STR(path_out.address, "j\xc3\xb6ran@ex\xc3\xa4mple.com");
	CHECK_INT(rcpt("TO:<a@\xe4\xbe\x8b\xe5\xad\x90.\xe6\xb5\x8b\xe8\xaf\x95>"), SMTP_PATH_OK);
	CHECK(path_out.has_8bit);
	CHECK_INT(rcpt("TO:<\xf0\x9f\x98\x80@x>"), SMTP_PATH_OK);
	CHECK_INT(rcpt("TO:<a@b>"), SMTP_PATH_OK);
	CHECK(!path_out.has_8bit);
	CHECK_INT(rcpt("TO:<\xff@x>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<\xc0\xaa@x>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<\xe0\x80\xaa@x>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<a\xc3@x>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<\xed\xa0\x80@x>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<\xf4\x90\x80\x80@x>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<a@\x80x>"), SMTP_PATH_BAD_ADDRESS);

	CHECK_INT(rcpt("TO:<a\x01"
	               "b@x>"),
	          SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(path_n(SMTP_PATH_RCPT, "TO:<a\0@x>", 10, false), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(path_n(SMTP_PATH_RCPT, "TO:<a@x\0>", 10, false), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(path_n(SMTP_PATH_RCPT, "TO:<a@[1.2.3.4\0]>", 18, false), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(path_n(SMTP_PATH_RCPT, "TO:<a@x>\0", 9, false), SMTP_PATH_SYNTAX);
	CHECK_INT(path_n(SMTP_PATH_RCPT, "TO:<a@x>\0", 9, true), SMTP_PATH_SYNTAX);
	CHECK_INT(rcpt("TO:<a@x\r>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<a\n@x>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<a\x7f@x>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<\"a\tb\"@x>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(rcpt("TO:<a@x> NOTIFY=\x01"), SMTP_PATH_BAD_PARAM);
	CHECK_INT(rcpt("TO:<a@x> NOTIFY=a\rb"), SMTP_PATH_BAD_PARAM);
}

static void test_path_params(void)
{
	const struct smtp_param *p;
	char buf[400];
	int i;

	CHECK_INT(mail("FROM:<a@b> SIZE=100"), SMTP_PATH_OK);
	CHECK_INT(path_out.nparams, 1);
	CHECK_MEM(path_out.params[0].key, path_out.params[0].key_len, "SIZE");
	CHECK_MEM(path_out.params[0].value, path_out.params[0].value_len, "100");

	CHECK_INT(mail("FROM:<a@b> SMTPUTF8"), SMTP_PATH_OK);
	CHECK(path_out.params[0].value == NULL && path_out.params[0].value_len == 0);
	CHECK_INT(mail("FROM:<a@b> BODY="), SMTP_PATH_OK);
	CHECK(path_out.params[0].value != NULL && path_out.params[0].value_len == 0);

	CHECK_INT(mail("FROM:<a@b>  SIZE=1 \t BODY=8BITMIME SMTPUTF8  "), SMTP_PATH_OK);
	CHECK_INT(path_out.nparams, 3);
	CHECK_MEM(path_out.params[1].key, path_out.params[1].key_len, "BODY");
	CHECK_MEM(path_out.params[1].value, path_out.params[1].value_len, "8BITMIME");
	p = smtp_path_param(&path_out, "body");
	CHECK(p == &path_out.params[1]);
	CHECK(smtp_path_param(&path_out, "Smtputf8") == &path_out.params[2]);
	CHECK(smtp_path_param(&path_out, "RET") == NULL);
	CHECK(smtp_path_param(&path_out, "SIZ") == NULL);
	CHECK_INT(mail("FROM:<a@b>\tSIZE=1"), SMTP_PATH_OK);
	CHECK_INT(mail("FROM:<a@b> A=b=c"), SMTP_PATH_OK);
	CHECK_MEM(path_out.params[0].value, path_out.params[0].value_len, "b=c");
	CHECK_INT(mail("FROM:<a@b> X-Y=1 X-=2 9=3 ENVID=\xc3\xa4"), SMTP_PATH_OK);
	CHECK_INT(path_out.nparams, 4);
	CHECK_INT(rcpt("TO:<a@b> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@b"), SMTP_PATH_OK);
	CHECK_MEM(path_out.params[1].value, path_out.params[1].value_len, "rfc822;a@b");

	/* duplicates, case-insensitively; nparams names the offender */
	CHECK_INT(mail("FROM:<a@b> SIZE=1 size=2"), SMTP_PATH_DUP_PARAM);
	CHECK_INT(path_out.nparams, 1);
	CHECK_MEM(path_out.params[1].key, path_out.params[1].key_len, "size");
	CHECK_INT(mail("FROM:<a@b> RET=FULL RET=HDRS"), SMTP_PATH_DUP_PARAM);
	CHECK_INT(rcpt("TO:<a@b> NOTIFY=NEVER X=1 notify=SUCCESS"), SMTP_PATH_DUP_PARAM);
	CHECK_INT(path_out.nparams, 2);
	CHECK_INT(mail("FROM:<a@b> SMTPUTF8 SMTPUTF8"), SMTP_PATH_DUP_PARAM);

	/* bad keys */
	CHECK_INT(mail("FROM:<a@b> =x"), SMTP_PATH_BAD_PARAM);
	CHECK_INT(path_out.nparams, 0);
	CHECK_INT(path_out.params[0].key_len, 0);
	CHECK_INT(mail("FROM:<a@b> SIZE=1 -X=1"), SMTP_PATH_BAD_PARAM);
	CHECK_INT(path_out.nparams, 1);
	CHECK_MEM(path_out.params[1].key, path_out.params[1].key_len, "-X");
	CHECK_INT(mail("FROM:<a@b> X_Y=1"), SMTP_PATH_BAD_PARAM);
	CHECK_INT(mail("FROM:<a@b> X.Y"), SMTP_PATH_BAD_PARAM);
	CHECK_INT(mail("FROM:<a@b> \xc3\xa4=1"), SMTP_PATH_BAD_PARAM);
	CHECK_INT(mail("FROM:<a@b> ="), SMTP_PATH_BAD_PARAM);

	/* SMTP_PARAMS_MAX of them, then one too many */
	strcpy(buf, "FROM:<a@b>");
	for (i = 0; i < SMTP_PARAMS_MAX; i++)
		sprintf(buf + strlen(buf), " K%d=%d", i, i);
	CHECK_INT(mail(buf), SMTP_PATH_OK);
	CHECK_INT(path_out.nparams, SMTP_PARAMS_MAX);
	CHECK(smtp_path_param(&path_out, "k15") == &path_out.params[15]);
	strcat(buf, " EXTRA");
	CHECK_INT(mail(buf), SMTP_PATH_TOO_MANY_PARAMS);
	CHECK_INT(path_out.nparams, SMTP_PARAMS_MAX);
	/* a bad address wins over bad parameters */
	CHECK_INT(mail("FROM:<a> =x"), SMTP_PATH_BAD_ADDRESS);
}

static void test_path_lenient(void)
{
	char buf[700];

	CHECK_INT(mail_lenient("FROM:<user.@example.com>"), SMTP_PATH_OK);
	CHECK_STR(path_out.address, "user.@example.com");
	CHECK_INT(mail_lenient("FROM:<a..b@x_y> SIZE=1"), SMTP_PATH_OK);
	CHECK_INT(path_out.nparams, 1);
	CHECK_INT(mail_lenient("FROM:<x@[bad]>"), SMTP_PATH_OK);
	CHECK_INT(mail_lenient("FROM:<@r:a.@b>"), SMTP_PATH_OK);
	CHECK_STR(path_out.address, "a.@b");
	CHECK_INT(mail_lenient("FROM:<\xff@\xfe>"), SMTP_PATH_OK);
	CHECK(path_out.has_8bit);
	CHECK_INT(mail_lenient("FROM:<>"), SMTP_PATH_OK);
	CHECK(path_out.is_null);
	CHECK_INT(path_n(SMTP_PATH_RCPT, "TO:<postmaster>", 15, true), SMTP_PATH_OK);
	CHECK(path_out.is_postmaster);
	CHECK_INT(mail_lenient("FROM:<postmaster>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(mail_lenient("FROM:<a b@x>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(mail_lenient("FROM:<a@>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(mail_lenient("FROM:<@x>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(mail_lenient("FROM:<ab>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(mail_lenient("FROM:<a<b@c>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(mail_lenient("FROM:<a\x01@b>"), SMTP_PATH_BAD_ADDRESS);
	CHECK_INT(mail_lenient("FROM:<a@b"), SMTP_PATH_SYNTAX);
	CHECK_INT(mail_lenient("FROM:a@b"), SMTP_PATH_SYNTAX);
	CHECK_INT(mail_lenient("FROM:<a@b> SIZE=1 SIZE=2"), SMTP_PATH_DUP_PARAM);

	/* SMTP_PATH_MAX bounds the copy whatever the mode */
	memcpy(buf, "FROM:<", 6);
	memset(buf + 6, 'a', SMTP_PATH_MAX - 2);
	memcpy(buf + 6 + SMTP_PATH_MAX - 2, "@b>", 3);
	CHECK_INT(path_n(SMTP_PATH_MAIL, buf, 6 + SMTP_PATH_MAX + 1, true), SMTP_PATH_OK);
	CHECK_INT(path_out.address_len, SMTP_PATH_MAX);
	CHECK_INT(strlen(path_out.address), SMTP_PATH_MAX);
	memcpy(buf, "FROM:<", 6);
	memset(buf + 6, 'a', SMTP_PATH_MAX - 1);
	memcpy(buf + 6 + SMTP_PATH_MAX - 1, "@b>", 3);
	CHECK_INT(path_n(SMTP_PATH_MAIL, buf, 6 + SMTP_PATH_MAX + 2, true), SMTP_PATH_BAD_ADDRESS);
}

/* ---- xtext and SIZE ----------------------------------------------------- */

static long xtext(const char *in, char *out, size_t cap)
{
	return smtp_xtext_decode(in, strlen(in), out, cap);
}

static void test_xtext(void)
{
	char out[64];

	CHECK_INT(xtext("abc", out, sizeof out), 3);
	CHECK_MEM(out, 3, "abc");
	CHECK_INT(xtext("a+2Bb", out, sizeof out), 3);
	CHECK_MEM(out, 3, "a+b");
	CHECK_INT(xtext("+2b+3D", out, sizeof out), 2);
	CHECK_MEM(out, 2, "+=");
	CHECK_INT(xtext("rfc822;a+40b.example", out, sizeof out), 18);
	CHECK_MEM(out, 18, "rfc822;a@b.example");
	CHECK_INT(xtext("+C3+A4", out, sizeof out), 2);
	CHECK_MEM(out, 2, "\xc3\xa4");
	CHECK_INT(xtext("", out, sizeof out), 0);
	CHECK_INT(xtext("!~", out, sizeof out), 2);
	CHECK_INT(xtext("+", out, sizeof out), -1);
	CHECK_INT(xtext("a+2", out, sizeof out), -1);
	CHECK_INT(xtext("+G0", out, sizeof out), -1);
	CHECK_INT(xtext("+0G", out, sizeof out), -1);
	CHECK_INT(xtext("+ 2B", out, sizeof out), -1);
	CHECK_INT(xtext("a b", out, sizeof out), -1);
	CHECK_INT(xtext("a=b", out, sizeof out), -1);
	CHECK_INT(xtext("\xc3\xa4", out, sizeof out), -1);
	CHECK_INT(xtext("a\tb", out, sizeof out), -1);
	CHECK_INT(xtext("\x7f", out, sizeof out), -1);
	CHECK_INT(smtp_xtext_decode("a\0b", 3, out, sizeof out), -1);
	/* escapes may not smuggle control bytes */
	CHECK_INT(xtext("+00", out, sizeof out), -1);
	CHECK_INT(xtext("a+0D+0Ab", out, sizeof out), -1);
	CHECK_INT(xtext("+7F", out, sizeof out), -1);
	CHECK_INT(xtext("+20", out, sizeof out), 1);
	/* the output bound */
	CHECK_INT(xtext("abc", out, 2), -1);
	CHECK_INT(xtext("abc", out, 3), 3);
	CHECK_INT(xtext("a+2B", out, 1), -1);
	CHECK_INT(xtext("", out, 0), 0);
}

struct size_case {
	const char *text;
	bool ok;
	uint64_t value;
};

static const struct size_case size_cases[] = {
	{ "100", true, 100 },
	{ "0", true, 0 },
	{ "007", true, 7 },
	{ "18446744073709551615", true, UINT64_MAX },
	{ "00000000000000000001", true, 1 },
	{ "", false, 0 },
	{ "-1", false, 0 },
	{ "+1", false, 0 },
	{ " 1", false, 0 },
	{ "1 ", false, 0 },
	{ "1e9", false, 0 },
	{ "0x10", false, 0 },
	{ "1.5", false, 0 },
	{ "12a", false, 0 },
	{ "NaN", false, 0 },
	{ "99999999999999999999", false, 0 },
	{ "18446744073709551616", false, 0 },
	{ "18446744073709551617", false, 0 },
	{ "99999999999999999999999", false, 0 },
	{ "000000000000000000001", false, 0 },
};

static void test_size(void)
{
	size_t i;

	for (i = 0; i < sizeof size_cases / sizeof size_cases[0]; i++) {
		const struct size_case *c = &size_cases[i];
		uint64_t v = 12345;
		bool ok = smtp_parse_size(c->text, strlen(c->text), &v);

		CHECK(ok == c->ok && (!ok || v == c->value));
		if (ok != c->ok)
			printf("     SIZE=%s\n", c->text);
	}
}

int main(void)
{
	RUN(test_line_basic);
	RUN(test_line_limit);
	RUN(test_line_huge);
	RUN(test_line_split);
	RUN(test_command_table);
	RUN(test_verb_names);
	RUN(test_helo);
	RUN(test_path_basic);
	RUN(test_path_local_part);
	RUN(test_path_domain);
	RUN(test_path_8bit_and_controls);
	RUN(test_path_params);
	RUN(test_path_lenient);
	RUN(test_xtext);
	RUN(test_size);
	return unit_summary();
}
