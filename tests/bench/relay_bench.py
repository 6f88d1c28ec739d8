#!/usr/bin/python3
"""Relay benchmark (not a test): luasmtpd's CPU per 10,000 messages of
1 KiB when its onData

  (a) delivers into a Maildir (scripts/default.lua),
  (b) relays with smtp.client to a next hop over pooled connections,
  (c) relays the same with a new connection per message (pool = false),

the next hop being a second luasmtpd that drains each message (it offers
PIPELINING and CHUNKING, as Postfix does; its CPU is not counted). The
goals (issue 18): (b) at most 2x (a), and (c) at least 3x (b). CPU is
the front server's user+sys and on-CPU time (/proc), measured as
hook_overhead.py does, around messages sent by its lock-step client.

usage: relay_bench.py [-n MESSAGES] [-c CONNECTIONS] [-r ROUNDS]
Default: 2000 messages over 4 connections, 5 rounds per variant
(interleaved; the median is reported), about 90 s at most.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

import harness  # noqa: E402
from hook_overhead import BASE, TOTAL_BUDGET, Variant, measure, median  # noqa: E402

RELAY_HOOKS = r'''function(stream, session)
    local res, err = require("smtp.client").send{host = "127.0.0.1", port = %d, pool = %s,
      helo = "bench.test", from = session.envelope.mailFrom, to = session.envelope.rcptTo,
      message = stream, timeout = 10}
    if not res then return nil, err end
  end'''


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=2000, help="messages per variant (default 2000)")
    ap.add_argument("-c", type=int, default=4, help="connections (default 4)")
    ap.add_argument("-r", "--rounds", type=int, default=5, help="measured rounds per variant (default 5)")
    a = ap.parse_args()
    if a.n < 1 or a.c < 1 or a.rounds < 1:
        ap.error("-n, -c and --rounds must be positive")

    line = b"x" * 62 + b"\r\n"
    body = b"Subject: bench\r\n\r\n" + line * 16 + b".\r\n"
    start = time.monotonic()
    deadline = start + TOTAL_BUDGET
    nexthop = harness.Server(harness.script(
        hooks={"onData": harness.Lua("function(stream) for _ in stream:chunks() do end end")}, **BASE),
        log_level="warn")
    variants = []
    try:
        for label, text in [
            ("(a) Maildir delivery", harness.DEFAULT_SCRIPT),
            ("(b) relay, pooled", harness.script(hooks={"onData": harness.Lua(RELAY_HOOKS % (nexthop.port, "true"))},
                                                 **BASE)),
            ("(c) relay, no pool", harness.script(hooks={"onData": harness.Lua(RELAY_HOOKS % (nexthop.port, "false"))},
                                                  **BASE)),
        ]:
            variants.append(Variant(label, text))
        measure(variants, a.n, a.c, body, a.rounds, deadline)
    finally:
        for v in variants:
            v.stop()
        nexthop.stop()
        nexthop.cleanup()

    use_sched = all(v.sched_us for v in variants)
    key = (lambda v: median(v.sched_us)) if use_sched else (lambda v: median(v.stat_us))
    print("luasmtpd relay: %s, %d rounds x %d messages x %d B over %d connections"
          % (os.path.relpath(harness.binary(), ROOT), a.rounds, a.n, len(body), a.c))
    print("%-24s %8s %8s %16s" % ("variant", "msgs", "msg/s", "cpu s / 10k msgs"))
    for v in variants:
        print("%-24s %8d %8.0f %16.2f %s" % (v.label, v.messages, v.messages / v.wall if v.wall else 0,
                                             key(v) * 1e4 / 1e6, v.note))
    maildir, pooled, fresh = (key(v) for v in variants)
    print("relay pooled / Maildir: %.2fx (goal <= 2x); no pool / pooled: %.2fx (goal >= 3x)"
          % (pooled / maildir, fresh / pooled))
    print("cpu: median over rounds of the front server's %s" % ("on-CPU time (schedstat)" if use_sched
                                                                 else "user+sys (/proc/PID/stat)"))
    print("total %.1fs" % (time.monotonic() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
