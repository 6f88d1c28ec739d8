/*
 * unit.h — the whole unit-test framework: checks that count instead of
 * aborting, so one run reports every failure, and a summary printed as the
 * binary's last line ("N passed, M failed") for the test runner to read.
 * The summary counts test cases (the functions main() RUNs), not checks: a
 * case that checks a thousand inputs in a loop is still one test.
 * Include it once per test binary.
 */
#ifndef LUASMTPD_UNIT_H
#define LUASMTPD_UNIT_H

#include <stdio.h>
#include <string.h>

static int unit_passed, unit_failed;        /* checks */
static int unit_cases_passed, unit_cases_failed; /* test cases */

static inline void unit_check(int ok, const char *file, int line, const char *what)
{
	if (ok) {
		unit_passed++;
		return;
	}
	unit_failed++;
	printf("FAIL %s:%d: %s\n", file, line, what);
}

static inline void unit_check_int(long long got, long long want, const char *file, int line,
                                  const char *what)
{
	unit_check(got == want, file, line, what);
	if (got != want)
		printf("     got %lld, want %lld\n", got, want);
}

/* Prints bytes with C escapes so failures show CR, LF and NUL */
static inline void unit_print_bytes(const char *label, const char *s, size_t len)
{
	size_t i;

	printf("     %s \"", label);
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '\r')
			printf("\\r");
		else if (c == '\n')
			printf("\\n");
		else if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
			printf("\\x%02x", c);
		else
			putchar(c);
	}
	printf("\"\n");
}

static inline void unit_check_mem(const char *got, size_t got_len, const char *want,
                                  size_t want_len, const char *file, int line, const char *what)
{
	int ok = got_len == want_len && (want_len == 0 || memcmp(got, want, want_len) == 0);

	unit_check(ok, file, line, what);
	if (!ok) {
		unit_print_bytes("got ", got, got_len);
		unit_print_bytes("want", want, want_len);
	}
}

#define CHECK(cond) unit_check(!!(cond), __FILE__, __LINE__, #cond)
#define CHECK_INT(got, want) \
	unit_check_int((long long)(got), (long long)(want), __FILE__, __LINE__, #got " == " #want)
/* got/got_len against a string literal (which may hold NULs) */
#define CHECK_MEM(got, got_len, lit) \
	unit_check_mem((got), (got_len), (lit), sizeof(lit) - 1, __FILE__, __LINE__, #got " == " #lit)
#define CHECK_STR(got, lit) CHECK_MEM((got), strlen(got), lit)

/* Runs one test case: it fails when any of its checks fails. */
static inline void unit_run(void (*test)(void), const char *name)
{
	int failed = unit_failed;
	test();
	if (unit_failed == failed) {
		unit_cases_passed++;
	} else {
		unit_cases_failed++;
		printf("FAILED %s\n", name);
	}
}
#define RUN(test) unit_run(test, #test)

static inline int unit_summary(void)
{
	printf("(%d checks passed, %d failed)\n", unit_passed, unit_failed);
	printf("%d passed, %d failed\n", unit_cases_passed, unit_cases_failed);
	return unit_failed > 0 || unit_cases_passed == 0;
}

#endif
