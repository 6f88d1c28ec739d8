#!/usr/bin/python3
"""Two luasmtpd builds in one run (not a test; make bench-compare): this
tree's binary ("new") against one built from another commit ("base",
tests/bench/build_base.sh), both with scripts/bench.lua, on compare.py's
scenarios and load; CPU is the server's on-CPU time from schedstat (ns),
finer than compare.py's 100 Hz ticks at --quick volumes:

  (1) CPU s per 10k messages, (2) per 10k connections, (3) per GB of
  10 MiB base64-like bodies, (3u) per GB of uniform x-line bodies, (4) per
  10k STARTTLS sessions: both servers up side by side, pinned as in
  compare.py, samples interleaved (new, base; then base, new), so drift
  on a shared machine hits both alike;
  (5) RSS KiB per idle plain connection, a fresh server per sample;
  (5t) the same per idle TLS connection (STARTTLS + EHLO), set up one at
  a time as compare.py's (5t), with its goal (<= 16 KiB);
  (I) callgrind instructions per message, per connection and per STARTTLS
  session (tests/bench/callgrind.py): the server's own user-space
  instructions, which the machine's load does not change; the most
  reliable "no worse" figure on a noisy machine.

Per figure: median, min and max for each build, and the ratio new/base of
each round's pair of samples: its min, median and max (above 1: new costs
more).  --quick (3 rounds at a fifth of the volumes, 1,000 idle plain
and 500 idle TLS connections, 300 callgrind messages once) takes about a
minute; the default (5 rounds, full volumes, 5,000 idle of each,
1,000 callgrind messages three times) about 7 minutes.

usage: base_compare.py --base-binary BIN [--binary BIN] [--quick] [-r ROUNDS]
                       [-c CONCURRENCY] [--no-pin] [--callgrind-messages N]
Exit status 0 unless a server or bench_load failed.
"""

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time

import callgrind
import compare

NAMES = ("luasmtpd", "base")
SHOWN = {"luasmtpd": "new", "base": "base"}
FIGURES = [  # key, label, per-unit scale
    ("msgs", "(1) CPU s/10k msgs, 100/conn, 1 KiB", 10000),
    ("conns", "(2) CPU s/10k conns, 1 msg each", 10000),
    ("bulk", "(3) CPU s/GB, 10 MiB bodies", 1e9),
    ("bulku", "(3u) same, uniform x-line bodies", 1e9),
    ("tls", "(4) CPU s/10k STARTTLS, TLS1.3 P-256", 10000),
]


def run_cpu(key, cert, tmp, rounds, vol, conc, scpu, ccpu, t_start):
    """{figure: {name: [CPU s per unit, one per round]}}, rounds interleaved; CPU
    from schedstat (ns) where the kernel has it: 100 Hz ticks are coarse at --quick volumes."""
    res = {}
    servers = {}
    try:
        for n in NAMES:
            servers[n] = compare.Server(n, key, cert, tmp, cpus=scpu)
            compare.load(servers[n].port, "msgs", 1000, cpus=ccpu)  # warm-up (JIT, allocator, caches)
            compare.load(servers[n].port, "conns", 100, cpus=ccpu)
            compare.load(servers[n].port, "tls", 50, cpus=ccpu)
        for r in range(rounds):
            for fkey, _, _ in FIGURES:
                for n in (NAMES if r % 2 == 0 else NAMES[::-1]):
                    st, ns, _, _ = compare.measure(servers[n], fkey, vol[fkey], conc, cpus=ccpu)
                    res.setdefault(fkey, {}).setdefault(n, []).append(st if ns is None else ns)
            print("round %d of %d done (%.0f s)" % (r + 1, rounds, time.monotonic() - t_start), flush=True)
    finally:
        for s in servers.values():
            s.stop()
    return res


def run_rss(key, cert, tmp, rounds, idle_n, tls=False):
    """{name: [RSS KiB per idle plain (TLS) connection]}, a fresh server per sample; TLS ones
    set up one at a time, as compare.py's (5t)."""
    res = {}
    for r in range(rounds):
        for n in (NAMES if r % 2 == 0 else NAMES[::-1]):
            res.setdefault(n, []).append(compare.idle_rss(n, key, cert, tmp, idle_n, tls=tls,
                                                          conc=1 if tls else 200)[0])
    return res


def fmt(v):
    return "n/a" if v is None else "%.3f" % v if abs(v) < 10 else "%.1f" % v if abs(v) < 1000 else "%.0f" % v


def spread(xs):
    """(median, min, max) of XS, Nones when empty."""
    return (statistics.median(xs), min(xs), max(xs)) if xs else (None, None, None)


def rows(label, new, base, goal=None):
    """Two table rows, new and base; the second with the ratios new/base of each round's pair;
    the first with whether new's median meets GOAL (a maximum), if given."""
    ratios = [x / y for x, y in zip(new, base) if y > 0]
    rm, rlo, rhi = spread(ratios)
    note = "" if rm is None else "%.3f  %.3f  %.3f" % (rlo, rm, rhi)
    m = spread(new)[0]
    met = "" if goal is None or m is None else "goal <= %g: %s" % (goal, "met" if m <= goal else "NOT met")
    for i, (who, xs) in enumerate((("new", new), ("base", base))):
        m, lo, hi = spread(xs)
        print("%-38s %-5s %9s %9s %9s   %s" % (label if i == 0 else "", who, fmt(m), fmt(lo), fmt(hi),
                                               note if i == 1 else met))


def report(a, cpu, rss, rss_tls, ir, rounds, vol, conc, idle_n, idle_tls_n, scpu):
    print()
    print("new: %s  base: %s (scripts/bench.lua, --log-level warn)" % (compare.LUASMTPD["luasmtpd"],
                                                                        compare.LUASMTPD["base"]))
    print("%s run; %d samples per CPU figure, %d per RSS figure; bench_load -c %d%s; units per sample %s"
          % ("quick" if a.quick else "default", rounds, len(rss.get("base", [])), conc,
             ", server on CPU 0, bench_load on CPU 1" if scpu else ", not pinned",
             "/".join(str(vol[f[0]]) for f in FIGURES)))
    print()
    print("%-38s %-5s %9s %9s %9s   %s" % ("figure", "build", "median", "min", "max",
                                          "new/base per round: min median max"))
    print("-" * 100)
    for fkey, label, scale in FIGURES:
        rows(label, [x * scale for x in cpu.get(fkey, {}).get("luasmtpd", [])],
             [x * scale for x in cpu.get(fkey, {}).get("base", [])])
    rows("(5) RSS KiB/idle plain conn, N=%d" % idle_n, rss.get("luasmtpd", []), rss.get("base", []), 2)
    rows("(5t) RSS KiB/idle TLS conn, N=%d" % idle_tls_n, rss_tls.get("luasmtpd", []), rss_tls.get("base", []),
         16)
    for scen in callgrind.UNITS:
        if ir:
            rows("(I) " + callgrind.LABEL[scen], ir["luasmtpd"][scen], ir["base"][scen])
    print("-" * 100)
    print("CPU: on-CPU time of the server's threads (/proc/PID/task/*/schedstat, ns; /proc/PID/stat")
    print("user+sys where schedstat is missing). (I): callgrind Ir of the server, %s"
          % ("%d sample(s), %d measured messages" % (a.callgrind_rounds, a.callgrind_messages) if ir
             else "not run"))


def main():
    t_start = time.monotonic()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-binary", required=True, help="the base luasmtpd (build/base/bin/luasmtpd)")
    ap.add_argument("--binary", default=compare.LUASMTPD["luasmtpd"], help="the new luasmtpd (build/luasmtpd)")
    ap.add_argument("--quick", action="store_true", help="smaller runs (about a minute)")
    ap.add_argument("-r", "--rounds", type=int, default=None, help="samples per CPU figure (default 5, --quick 3)")
    ap.add_argument("-c", "--concurrency", type=int, default=compare.CONC,
                    help="bench_load -c for (1)-(4) (default %d)" % compare.CONC)
    ap.add_argument("--no-pin", action="store_true", help="do not pin the servers to CPU 0 and bench_load to CPU 1")
    ap.add_argument("--callgrind-messages", type=int, default=None,
                    help="messages measured under callgrind (default 1000, --quick 300; 0: no callgrind)")
    a = ap.parse_args()
    for b in (a.binary, a.base_binary, compare.LOAD_BIN):
        if not os.access(b, os.X_OK):
            print("FAILED: %s missing (make build/luasmtpd build/bench_load; "
                  "tests/bench/build_base.sh BASE)" % b, file=sys.stderr)
            return 1
    compare.LUASMTPD.update(luasmtpd=a.binary, base=a.base_binary)
    rounds = max(1, a.rounds or (3 if a.quick else 5))
    div = compare.QUICK_DIV if a.quick else 1
    vol = {k: max(1, v // div) for k, v in compare.VOLUMES["luasmtpd"].items()}
    idle_n, idle_tls_n = (1000, 500) if a.quick else (compare.IDLE_N, compare.IDLE_TLS_N)
    if a.callgrind_messages is None:
        a.callgrind_messages = 300 if a.quick else 1000
    a.callgrind_rounds = 1 if a.quick else 3
    scpu, ccpu = (None, None) if a.no_pin else (compare.SERVER_CPUS, compare.CLIENT_CPUS)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    if hard != resource.RLIM_INFINITY:
        idle_n, idle_tls_n = min(idle_n, hard - 1000), min(idle_tls_n, hard - 1000)

    tmp = tempfile.mkdtemp(prefix="luasmtpd-bench-")
    cpu, rss, rss_tls, ir = {}, {}, {}, None
    failed = False
    try:
        key, cert = compare.make_cert(tmp)
        cpu = run_cpu(key, cert, tmp, rounds, vol, a.concurrency, scpu, ccpu, t_start)
        rss = run_rss(key, cert, tmp, min(rounds, 3), idle_n)
        rss_tls = run_rss(key, cert, tmp, min(rounds, 3), idle_tls_n, tls=True)
        print("idle RSS done (%.0f s)" % (time.monotonic() - t_start), flush=True)
        if a.callgrind_messages > 0:
            ir = callgrind.measure_all(NAMES, a.callgrind_messages, a.callgrind_rounds)
            print("callgrind done (%.0f s)" % (time.monotonic() - t_start), flush=True)
    except Exception as e:  # noqa: BLE001
        print("FAILED: %s" % e, file=sys.stderr)
        failed = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(a, cpu, rss, rss_tls, ir, rounds, vol, a.concurrency, idle_n, idle_tls_n, scpu)
    print("total run time %.0f s" % (time.monotonic() - t_start))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
