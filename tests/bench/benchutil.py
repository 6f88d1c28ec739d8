"""Small helpers the benchmarks and the valgrind session share: a free
loopback port, and a process's CPU time read from /proc (user+sys from
/proc/PID/stat in clock ticks; on-CPU time of its threads from
/proc/PID/task/*/schedstat in nanoseconds, finer than ticks); for the
lock-step benchmarks (hook_overhead.py, relay_bench.py, milter_bench.py),
their options and how their rounds are summed up."""

import argparse
import os
import socket

TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def stat_cpu_s(pid):
    """user+sys seconds of process PID (/proc/PID/stat, TICK resolution)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime (fields 14, 15)


def sched_cpu_s(pid):
    """On-CPU seconds of every thread of PID from schedstat; None if unavailable."""
    ns = 0
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                ns += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return ns / 1e9


def lockstep_args(doc, messages, min_rounds=1, more=None):
    """The lock-step benchmarks' options, checked: -n messages per variant
    and round (default `messages`), -c connections, -r rounds (at least
    `min_rounds`); more(parser) adds a benchmark's own."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=messages, help="messages per variant and round (default %d)" % messages)
    ap.add_argument("-c", type=int, default=4, help="connections (default 4)")
    ap.add_argument("-r", "--rounds", type=int, default=5, help="measured rounds per variant (default 5%s)"
                    % (", at least %d" % min_rounds if min_rounds > 1 else ""))
    if more:
        more(ap)
    a = ap.parse_args()
    if a.n < 1 or a.c < 1 or a.rounds < min_rounds:
        ap.error("-n and -c must be positive, --rounds at least %d" % min_rounds)
    return a


def median(xs):
    xs = sorted(xs)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def spread(xs, fmt="%.1f", scale=1.0):
    """'min / median / max' of xs (each times scale), or n/a."""
    if not xs:
        return "n/a"
    return " / ".join(fmt % (x * scale) for x in (min(xs), median(xs), max(xs)))


def cpu_samples(variants):
    """The per-message CPU samples to compare the variants by: on-CPU time
    (schedstat) when every variant has it, else user+sys (/proc/PID/stat).
    Returns (samples(variant), True when schedstat)."""
    use_sched = all(v.sched_us for v in variants)
    return ((lambda v: v.sched_us) if use_sched else (lambda v: v.stat_us)), use_sched


def cpu_s(pid):
    """On-CPU seconds of PID (schedstat), or user+sys where that is missing."""
    s = sched_cpu_s(pid)
    return s if s is not None else stat_cpu_s(pid)


def title(what, binary, args, body):
    """The first line of a lock-step benchmark's table."""
    return "luasmtpd %s: %s, %d rounds x %d messages x %d B over %d connections" % (
        what, binary, args.rounds, args.n, len(body), args.c)
