#!/usr/bin/python3
"""Instructions per unit (not a test): luasmtpd with scripts/bench.lua
under valgrind --tool=callgrind, driven by build/bench_load with one
connection in flight (lock-step, so every run reads the same bytes in the
same pieces). The count is of the server's own user-space instructions
(Ir): it does not depend on the machine's load, which makes it the
steadiest "no worse" check between two builds on a noisy machine (it
does not see the kernel's share, which is most of the wall-clock cost).

A unit's count is a difference of two server runs: one with a warm-up
only (start, the JIT's first traces, the first TLS handshakes, exit), one
with the same warm-up and then N more units; (Ir of the second - Ir of
the first) / N. Units, as in compare.py: msgs (messages, 100 per
connection, 1 KiB bodies), conns (connections, one message each), tls
(STARTTLS sessions, TLS 1.3, one message each).

usage: callgrind.py [-n MESSAGES] BINARY [BINARY...]
Prints Ir per unit for each binary (and each one's ratio to the last).
About 20 s per binary with the default -n 1000.
"""

import argparse
import os
import re
import shutil
import sys
import tempfile

import compare

WARM = {"msgs": 200, "conns": 20, "tls": 5}
UNITS = ("msgs", "conns", "tls")
LABEL = {"msgs": "Ir per message, 100/conn, 1 KiB", "conns": "Ir per connection, 1 msg each",
         "tls": "Ir per STARTTLS session"}


def counts(n):
    """Units of the measured part of each scenario for -n N messages."""
    return {"msgs": n, "conns": max(10, n // 5), "tls": max(5, n // 50)}


def instructions(name, key, cert, tmp, extra=None):
    """Ir of one server run under callgrind: the warm-up of every scenario,
    then EXTRA = (scenario, units) if given."""
    out = os.path.join(tmp, "callgrind-%s-%s.out" % (name, extra[0] if extra else "warm"))
    wrap = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out]
    srv = compare.Server(name, key, cert, tmp, wrap=wrap, start=120)
    try:
        for scen in UNITS:
            compare.load(srv.port, scen, WARM[scen], conc=1, timeout=600)
        if extra:
            compare.load(srv.port, extra[0], extra[1], conc=1, timeout=600)
        srv.check()
    finally:
        srv.stop(grace=300)  # callgrind writes its file as the server exits
    with open(out) as f:
        m = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M)
    if not m:
        raise RuntimeError("%s: no instruction total in %s" % (name, out))
    return int(m.group(1))


def per_unit(name, key, cert, tmp, n):
    """{scenario: Ir per unit} for server NAME (a key of compare.LUASMTPD)."""
    base = instructions(name, key, cert, tmp)
    return {scen: (instructions(name, key, cert, tmp, (scen, k)) - base) / k for scen, k in counts(n).items()}


def measure_all(names, n, rounds=1):
    """{name: {scenario: [Ir per unit, one per round]}} for each server name."""
    if not shutil.which("valgrind"):
        raise RuntimeError("valgrind is not installed")
    tmp = tempfile.mkdtemp(prefix="luasmtpd-callgrind-")
    res = {name: {scen: [] for scen in UNITS} for name in names}
    try:
        key, cert = compare.make_cert(tmp)
        for _ in range(rounds):
            for name in names:
                for scen, v in per_unit(name, key, cert, tmp, n).items():
                    res[name][scen].append(v)
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--messages", type=int, default=1000, help="messages measured (default 1000)")
    ap.add_argument("binaries", nargs="+", help="luasmtpd binaries (a build tree's or build_base.sh's)")
    a = ap.parse_args()
    names = []
    for i, b in enumerate(a.binaries):
        name = "luasmtpd" if i == 0 else "base" if i == 1 else "base%d" % i
        compare.LUASMTPD[name] = b
        names.append(name)
    res = measure_all(names, max(10, a.messages))
    last = a.binaries[-1]
    for scen in UNITS:
        for name, b in zip(names, a.binaries):
            ratio = "" if b == last else "%.3fx of %s" % (res[name][scen][0] / res[names[-1]][scen][0], last)
            print("%-34s %-28s %12.0f  %s" % (LABEL[scen], b, res[name][scen][0], ratio))
    return 0


if __name__ == "__main__":
    sys.exit(main())
