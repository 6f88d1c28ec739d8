#!/usr/bin/python3
"""Relay benchmark (not a test): luasmtpd's CPU per 10,000 messages of
1 KiB when its onData

  (a) delivers into a Maildir (scripts/default.lua),
  (b) reads the message and relays nothing: the baseline, the same hook
      reading the stream the same way, so that (b) is the cost of the
      session with the client that every relay variant pays too,
  (c) relays with smtp.client to a next hop over pooled connections,
  (d) relays the same with a new connection per message (pool = false),
  (e), (f) as (c) and (d) with tls = "required": STARTTLS to the next
      hop, verified against the test CA (a new connection is then a TLS
      handshake too),

the next hop being a second luasmtpd that drains each message (it offers
PIPELINING and CHUNKING, as Postfix does). The goals (issue 18): (c) at
most 2x (a), and (d) at least 3x (c).

What is counted: the front server's CPU only, user+sys of all its
threads (on-CPU time from /proc/PID/task/*/schedstat, or /proc/PID/stat
ticks where schedstat is missing), taken around each round of messages
sent by a lock-step client (MAIL+RCPT+DATA pipelined, then the body). The
next hop's CPU is read the same way and shown beside it, not added; the
load generator (this process's threads) is not counted. Kernel work done
in the front's context (its sends, and on loopback the receiving side's
TCP processing that its sends trigger) counts as the front's.

The relay's own cost is a variant minus (b). "no pool / pooled" is given
both ways: over the whole server (what the issue asks) and over the
relay's own cost. Every figure is min / median / max over the rounds.

usage: relay_bench.py [-n MESSAGES] [-c CONNECTIONS] [-r ROUNDS] [--no-tls]
Default: 1000 messages over 4 connections, 5 rounds per variant
(interleaved), about 60-120 s (bounded: every variant stops at the
deadline and says so).
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

import harness  # noqa: E402
from benchutil import cpu_s, cpu_samples, lockstep_args, median, spread, title  # noqa: E402
from hook_overhead import BASE, PeerVariant, measure  # noqa: E402

BUDGET = 170.0  # seconds for the whole benchmark

DRAIN = "function(stream) while stream:read() do end end"

RELAY_HOOKS = r'''function(stream, session)
    local res, err = require("smtp.client").send{host = "127.0.0.1", port = %d, pool = %s,
      tls = %s, ca = %s, servername = "localhost",
      helo = "bench.test", from = session.envelope.mailFrom, to = session.envelope.rcptTo,
      message = stream, timeout = 10}
    if not res then return nil, err end
  end'''


def relay_script(port, pool, tls="none", ca=None):
    return harness.script(hooks={"onData": harness.Lua(RELAY_HOOKS % (
        port, "true" if pool else "false", harness.lua_value(tls), harness.lua_value(ca)))}, **BASE)


def per_10k(xs):
    """'min / median / max' in s per 10k messages, from us per message."""
    return spread(xs, "%.2f", 0.01)


def main():
    a = lockstep_args(__doc__, 1000, more=lambda ap: ap.add_argument(
        "--no-tls", action="store_true", help="leave out the STARTTLS variants (e), (f)"))

    line = b"x" * 62 + b"\r\n"
    body = b"Subject: bench\r\n\r\n" + line * 16 + b".\r\n"
    start = time.monotonic()
    deadline = start + BUDGET
    drain = harness.script(hooks={"onData": harness.Lua(DRAIN)}, **BASE)
    hops, variants = [], []
    try:
        plain = harness.Server(drain, log_level="warn")
        hops.append(plain)
        todo = [
            ("(a) Maildir delivery", harness.DEFAULT_SCRIPT, None),
            ("(b) no relay (baseline)", drain, None),
            ("(c) relay, pooled", relay_script(plain.port, True), plain),
            ("(d) relay, no pool", relay_script(plain.port, False), plain),
        ]
        if not a.no_tls:
            import tlsutil
            pki = tlsutil.certs()
            tls = harness.Server(harness.script(hooks={"onData": harness.Lua(DRAIN)}, **dict(BASE, **pki.pair())),
                                 log_level="warn")
            hops.append(tls)
            todo += [
                ("(e) STARTTLS, pooled", relay_script(tls.port, True, "required", pki.ca), tls),
                ("(f) STARTTLS, no pool", relay_script(tls.port, False, "required", pki.ca), tls),
            ]
        for label, text, hop in todo:
            variants.append(PeerVariant(label, text, hop and hop.proc.pid, cpu_s))
        measure(variants, a.n, a.c, body, a.rounds, deadline)
    finally:
        for v in variants:
            v.stop()
        for h in hops:
            h.stop()
            h.cleanup()

    per, use_sched = cpu_samples(variants)
    key = (lambda v: median(per(v)))
    base = key(variants[1])
    print(title("relay", os.path.relpath(harness.binary(), ROOT), a, body))
    print("%-25s %6s %6s %20s %9s %20s" % ("variant", "msgs", "msg/s", "cpu s/10k min/med/max",
                                          "relay's", "next hop s/10k"))
    for i, v in enumerate(variants):
        own = "%.2f" % ((key(v) - base) / 100) if i >= 2 else "-"
        print("%-25s %6d %6.0f %20s %9s %20s %s" % (v.label, v.messages, v.messages / v.wall if v.wall else 0,
                                                   per_10k(per(v)), own, per_10k(v.peer_us) if v.peer_pid else "-",
                                                   v.note))
    maildir, _, pooled, fresh = (key(v) for v in variants[:4])
    print("relay pooled / Maildir: %.2fx (goal <= 2x)" % (pooled / maildir))

    def ratios(what, pooled_v, fresh_v):
        whole = key(fresh_v) / key(pooled_v)
        own_p, own_f = key(pooled_v) - base, key(fresh_v) - base
        own = "%.2fx" % (own_f / own_p) if own_p > 0 else "n/a"
        print("%s no pool / pooled: %.2fx over the whole server (goal >= 3x), %s over the relay's own cost"
              % (what, whole, own))
    ratios("plain:", variants[2], variants[3])
    if len(variants) > 4:
        ratios("STARTTLS:", variants[4], variants[5])
    print("cpu: the front server's %s per 10k messages; relay's: its median minus (b)'s; the next hop's "
          "is not included" % ("on-CPU time (schedstat)" if use_sched else "user+sys (/proc/PID/stat)"))
    print("total %.1fs" % (time.monotonic() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
