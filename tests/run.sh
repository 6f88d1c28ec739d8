#!/bin/sh
# Runs every test of luasmtpd, from the repository root (make test calls it
# after building build/luasmtpd, build/luasmtpd-asan and build/test_*):
#   1. each build/test_* unit binary
#  1b. each build/fuzz_* target replaying its seed corpus: one test per
#      target (pass or fail), not one per corpus file
#   2. the Busted specs (busted -o TAP, from .busted)
#   3. the end-to-end suite against build/luasmtpd
#   4. the end-to-end suite against build/luasmtpd-asan (ASan + UBSan + LSan)
# Each part's counts come from its "N passed, M failed" line (or the TAP
# ok / not ok lines). A part that crashes or prints no summary counts as
# one failure. The last line is "total: N passed, M failed"; the exit
# status is non-zero when anything failed.

cd "$(dirname "$0")/.." || exit 2

PYTHON=${PYTHON:-/usr/bin/python3}
[ -x "$PYTHON" ] || PYTHON=python3

TMP=$(mktemp -d "${TMPDIR:-/tmp}/luasmtpd-tests.XXXXXX") || exit 2
trap 'rm -rf "$TMP"' EXIT INT TERM

TOTAL_PASSED=0
TOTAL_FAILED=0
: > "$TMP/summary"

# record NAME PASSED FAILED
record() {
	TOTAL_PASSED=$((TOTAL_PASSED + $2))
	TOTAL_FAILED=$((TOTAL_FAILED + $3))
	printf '%s: %s passed, %s failed\n' "$1" "$2" "$3" >> "$TMP/summary"
}

# run LOGFILE CMD...: runs CMD with its output shown and saved, returns
# CMD's exit status.
run() {
	_log=$1
	shift
	{ "$@" 2>&1; echo $? > "$TMP/rc"; } | tee "$_log"
	return "$(cat "$TMP/rc")"
}

# counts LOGFILE: prints "P F" from the last "N passed, M failed" line, or
# nothing when there is none.
counts() {
	grep -E '(^|[^0-9])[0-9]+ passed, [0-9]+ failed' "$1" | tail -n 1 |
		sed -E 's/^(.*[^0-9])?([0-9]+) passed, ([0-9]+) failed.*$/\2 \3/'
}

# summarize NAME LOGFILE RC: records a part from its summary line.
summarize() {
	_c=$(counts "$2")
	if [ -z "$_c" ]; then
		echo "*** $1: no \"N passed, M failed\" summary (exit $3): counted as 1 failure"
		record "$1" 0 1
		return
	fi
	set -- "$1" "$2" "$3" $_c
	if [ "$3" -ne 0 ] && [ "$5" -eq 0 ]; then
		echo "*** $1: exit status $3 with no failure counted: counted as 1 failure"
		record "$1" "$4" 1
		return
	fi
	record "$1" "$4" "$5"
}

# ---- 1. C unit tests
echo "==== unit tests (build/test_*)"
found=0
for t in build/test_*; do
	[ -f "$t" ] && [ -x "$t" ] || continue
	found=1
	echo "---- $t"
	run "$TMP/unit.log" "$t"
	rc=$?
	summarize "unit $(basename "$t")" "$TMP/unit.log" "$rc"
done
if [ "$found" = 0 ]; then
	echo "(no unit test binaries in build/)"
	record "unit" 0 0
fi

# ---- 1b. fuzz targets replaying their seed corpus (crashes found become seeds).
# A replay is one test: counting its files would let the corpus outweigh
# every other part of the suite.
echo "==== fuzz regression (build/fuzz_*)"
for t in build/fuzz_*; do
	[ -x "$t" ] || continue
	name=$(basename "$t" | sed 's/^fuzz_//')
	if "$t" tests/fuzz/corpus/"$name"/* > "$TMP/fuzz.log" 2>&1; then
		record "fuzz $name" 1 0
	else
		tail -n 20 "$TMP/fuzz.log"
		record "fuzz $name" 0 1
	fi
done

# ---- 2. Busted specs
echo "==== busted"
if command -v busted > /dev/null 2>&1; then
	run "$TMP/busted.log" busted -o TAP
	rc=$?
	ok=$(grep -c '^ok ' "$TMP/busted.log")
	notok=$(grep -c '^not ok ' "$TMP/busted.log")
	if [ "$rc" -ne 0 ] && [ "$notok" -eq 0 ]; then
		echo "*** busted: exit status $rc with no failing test: counted as 1 failure"
		notok=1
	fi
	if [ "$ok" -eq 0 ] && [ "$notok" -eq 0 ] && ! grep -q '^1\.\.' "$TMP/busted.log"; then
		echo "*** busted: no TAP output: counted as 1 failure"
		notok=1
	fi
	record "busted" "$ok" "$notok"
else
	echo "*** busted is not installed: counted as 1 failure"
	record "busted" 0 1
fi

# ---- 3. end-to-end, plain build
echo "==== e2e (build/luasmtpd)"
if [ -x build/luasmtpd ]; then
	LUASMTPD_BIN=build/luasmtpd run "$TMP/e2e.log" "$PYTHON" tests/e2e/run.py
	summarize "e2e luasmtpd" "$TMP/e2e.log" $?
else
	echo "*** build/luasmtpd is missing: counted as 1 failure"
	record "e2e luasmtpd" 0 1
fi

# ---- 4. end-to-end, ASan/UBSan build
echo "==== e2e (build/luasmtpd-asan)"
if [ -x build/luasmtpd-asan ]; then
	LUASMTPD_BIN=build/luasmtpd-asan \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		run "$TMP/e2e-asan.log" "$PYTHON" tests/e2e/run.py
	summarize "e2e luasmtpd-asan" "$TMP/e2e-asan.log" $?
else
	echo "*** build/luasmtpd-asan is missing: counted as 1 failure"
	record "e2e luasmtpd-asan" 0 1
fi

echo "==== summary"
cat "$TMP/summary"
echo "total: $TOTAL_PASSED passed, $TOTAL_FAILED failed"
[ "$TOTAL_FAILED" -eq 0 ]
