#!/usr/bin/python3
"""Runs the luasmtpd end-to-end tests.

usage: run.py [-k SUBSTRING]... [-x] [--list] [NAME]...

NAME selects tests: a module (test_data), a class (test_data.DataTest) or a
test (test_data.DataTest.test_dot_lines); the ".py" suffix is optional.
-k keeps tests whose full id contains SUBSTRING (case-insensitive; any of several -k).
-x stops at the first failure. --list prints the selected test ids.

The server binary is $LUASMTPD_BIN (default build/luasmtpd). Each failing
test is printed with its traceback, the client transcripts and the server
log tail. The last line is always "N passed, M failed"; the exit status is
1 when anything failed.
"""

import argparse
import glob
import importlib
import os
import signal
import sys
import time
import traceback
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402

TEST_TIME_LIMIT = 60  # seconds; a hard stop for a hung test


class TestTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise TestTimeout("test exceeded %ds" % TEST_TIME_LIMIT)


def discover(names, keys):
    loader = unittest.TestLoader()
    modules = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(HERE, "test_*.py")))
    wanted = [n[:-3] if n.endswith(".py") else n for n in names]
    wanted = [os.path.basename(n) if "/" in n else n for n in wanted]
    tests = []
    errors = []
    for m in modules:
        if wanted and not any(w == m or w.startswith(m + ".") for w in wanted):
            continue
        try:
            mod = importlib.import_module(m)
        except Exception:
            errors.append((m, traceback.format_exc()))
            continue

        def walk(suite):
            for t in suite:
                if isinstance(t, unittest.TestSuite):
                    yield from walk(t)
                else:
                    yield t
        for t in walk(loader.loadTestsFromModule(mod)):
            tid = t.id()
            if wanted and not any(tid == w or tid.startswith(w + ".") for w in wanted):
                continue
            if keys and not any(k.lower() in tid.lower() for k in keys):
                continue
            tests.append(t)
    return tests, errors


def describe_failure(tid, err_text):
    out = ["=" * 70, "FAIL: " + tid, "-" * 70, err_text.rstrip()]
    for c in harness.TEST_CLIENTS:
        out.append("--- client transcript (local port %s) ---" % c.local_port)
        out.append(c.format_transcript())
    for s in harness.TEST_SERVERS:
        out.append("--- server log tail (%s; files kept in %s) ---" % (" ".join(s.argv()[1:]), s.tmp))
        out.append(s.log_tail(25))
    return "\n".join(out)


def cleanup_servers(servers):
    """Stops servers a test left running; returns an error text or None."""
    problems = []
    for s in servers:
        if not s.stopped:
            try:
                s.stop()
            except Exception as e:  # noqa: BLE001
                problems.append(str(e))
    return "\n".join(problems) or None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*")
    ap.add_argument("-k", action="append", default=[])
    ap.add_argument("-x", action="store_true")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()

    tests, import_errors = discover(a.names, a.k)
    if a.list:
        for t in tests:
            print(t.id())
        print("%d passed, %d failed" % (0, len(import_errors)))
        return 1 if import_errors else 0

    signal.signal(signal.SIGALRM, _alarm)
    passed = failed = 0
    skipped = []
    reports = []
    for m, tb in import_errors:
        failed += 1
        reports.append(describe_failure(m + " (import)", tb))
        print("FAIL %s (import error)" % m, flush=True)

    print("luasmtpd e2e: %d tests, binary %s" % (len(tests), harness.binary()), flush=True)
    if not tests and not import_errors:
        print("no test matches the selection")
        print("0 passed, 1 failed")
        return 1
    t_start = time.monotonic()
    # group consecutive tests by class for setUpClass/tearDownClass
    i = 0
    stop = False
    while i < len(tests) and not stop:
        cls = type(tests[i])
        group = []
        while i < len(tests) and type(tests[i]) is cls:
            group.append(tests[i])
            i += 1
        harness.TEST_CLIENTS[:] = []
        harness.TEST_SERVERS[:] = []
        why = getattr(cls, "__unittest_skip_why__", "") if getattr(cls, "__unittest_skip__", False) else None
        if why is not None:
            # A skipped class: its setUpClass must not run.
            for t in group:
                if why.startswith(harness.COMPAT_SKIP):
                    skipped.append("%s: %s" % (t.id(), why))
                    print("skip %s" % t.id(), flush=True)
                else:
                    failed += 1
                    print("FAIL %s (skipped: %s)" % (t.id(), why), flush=True)
                    reports.append(describe_failure(t.id(), "skipped: " + why))
            continue
        try:
            signal.alarm(TEST_TIME_LIMIT)
            cls.setUpClass()
            signal.alarm(0)
        except BaseException:  # noqa: BLE001
            signal.alarm(0)
            tb = traceback.format_exc()
            for t in group:
                failed += 1
                print("FAIL %s (setUpClass)" % t.id(), flush=True)
                reports.append(describe_failure(t.id() + " (setUpClass)", tb))
            cleanup_servers(list(harness.TEST_SERVERS))
            if a.x:
                break
            continue
        class_servers = list(harness.TEST_SERVERS)
        failed_before = failed
        for t in group:
            harness.TEST_CLIENTS[:] = []
            harness.TEST_SERVERS[:] = list(class_servers)
            result = unittest.TestResult()
            t0 = time.monotonic()
            signal.alarm(TEST_TIME_LIMIT)
            try:
                t.run(result)
            except TestTimeout:
                result.errors.append((t, traceback.format_exc()))
            finally:
                signal.alarm(0)
            own = [s for s in harness.TEST_SERVERS if s not in class_servers]
            leftover = cleanup_servers(own)
            for c in harness.TEST_CLIENTS:
                c.close()
            dt = time.monotonic() - t0
            problems = [tb for (_, tb) in result.errors + result.failures]
            problems += ["unexpected success"] * len(result.unexpectedSuccesses)
            problems += ["skipped: " + why for (_, why) in result.skipped if not why.startswith(harness.COMPAT_SKIP)]
            if result.skipped and not problems:
                skipped.append("%s: %s" % (t.id(), result.skipped[0][1]))
                print("skip %s (%.2fs)" % (t.id(), dt), flush=True)
                continue
            if leftover:
                problems.append("server left running by the test failed to stop cleanly:\n" + leftover)
            if problems:
                failed += 1
                print("FAIL %s (%.2fs)" % (t.id(), dt), flush=True)
                reports.append(describe_failure(t.id(), "\n".join(problems)))
                if a.x:
                    stop = True
                    break
            else:
                passed += 1
                print("ok   %s (%.2fs)" % (t.id(), dt), flush=True)
                for s in own:
                    s.cleanup()
        harness.TEST_CLIENTS[:] = []
        harness.TEST_SERVERS[:] = list(class_servers)
        try:
            signal.alarm(TEST_TIME_LIMIT)
            cls.tearDownClass()
            signal.alarm(0)
            leftover = cleanup_servers(class_servers)
            if leftover:
                raise AssertionError(leftover)
            if failed == failed_before:
                for s in class_servers:
                    s.cleanup()
        except BaseException:  # noqa: BLE001
            signal.alarm(0)
            failed += 1
            name = "%s.%s.tearDownClass" % (cls.__module__, cls.__name__)
            print("FAIL %s" % name, flush=True)
            reports.append(describe_failure(name, traceback.format_exc()))

    for r in reports:
        print(r)
    print("=" * 70)
    print("time %.1fs" % (time.monotonic() - t_start))
    if skipped:
        print("skipped (only the tests of the OpenResty libraries may be, where ../shared/compat/lib is absent):")
        for line in skipped:
            print("  " + line)
    print("%d passed, %d failed%s" % (passed, failed, " (%d skipped)" % len(skipped) if skipped else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
