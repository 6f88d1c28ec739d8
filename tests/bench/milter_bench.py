#!/usr/bin/python3
"""Milter benchmark (not a test): luasmtpd's CPU per message of 1 KiB when
its onData

  (a) reads the stream and accepts: the baseline (the session with the
      client, which every milter variant pays too),
  (b) the same with `milters = {"inet:127.0.0.1:PORT"}` in the script, to
      a local OpenDKIM in sign mode (Debian's opendkim, started here on a
      free port with a key made by opendkim-genkey, as tests/e2e/test_milter.py
      starts it): one milter connection per SMTP session, the message's
      steps on it,
  (c) the same through smtp.milter from onData: milter.check() on the
      stream, its own connection (and negotiation) per message.

Each milter variant checks that OpenDKIM signed: (b) that the stream its
onData reads starts with the DKIM-Signature OpenDKIM inserted, (c) that
check() returned one; an unsigned message gets a 451 and stops the run.

What is counted: luasmtpd's on-CPU time (user+sys of its threads,
/proc/PID/task/*/schedstat, or /proc/PID/stat ticks where schedstat is
missing) around each round of messages sent by a lock-step client
(MAIL+RCPT+DATA pipelined, then the body; tests/bench/hook_overhead.py's
load). The milter's own round trip is a variant minus (a). OpenDKIM's CPU
(user+sys from /proc/PID/stat, which keeps the time of its per-connection
threads after they end) is shown beside it, not added; the load generator
is not counted. Wall time per message is what one client waits for it
(a round's wall time x connections / messages). Every figure is
min / median / max over the rounds.

usage: milter_bench.py [-n MESSAGES] [-c CONNECTIONS] [-r ROUNDS]
Default: 500 messages over 4 connections, 5 rounds per variant
(interleaved), about 60 s (bounded: every variant stops at the deadline
and says so).
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

import harness  # noqa: E402
from benchutil import cpu_samples, lockstep_args, median, spread, stat_cpu_s, title  # noqa: E402
from hook_overhead import BASE, PeerVariant, measure  # noqa: E402
from test_milter import start_opendkim  # noqa: E402

BUDGET = 150.0  # seconds for the whole benchmark

PRELUDE = r'''
local MILTER = %s
local SIGNED = %s
local function unsigned() return nil, smtp.reject(451, "4.3.0 the milter did not sign") end
'''

# (a) and (b): the same hook; (b) checks the head OpenDKIM changed.
DRAIN = r'''function(stream, session)
    local first = stream:read()
    while stream:read() do end
    if SIGNED and not (first or ""):find("DKIM-Signature:", 1, true) then return unsigned() end
  end'''

CHECK = r'''function(stream, session)
    local v, mods = require("smtp.milter").check(MILTER, session, stream,
      {connectTimeout = 5, commandTimeout = 5, contentTimeout = 5})
    if not v then return nil, smtp.reject(451, "4.3.0 milter: " .. tostring(mods)) end
    if v.reply then return nil, v.reply end
    for _, m in ipairs(mods) do
      if m.name == "DKIM-Signature" then return end
    end
    return unsigned()
  end'''


def variant_script(hook, milter=None, signed=False, **opts):
    return harness.script(hooks={"onData": harness.Lua(hook)},
                          prelude=PRELUDE % (harness.lua_value(milter), "true" if signed else "false"),
                          **dict(BASE, **opts))


def message(size):
    """A message of about size bytes that OpenDKIM signs (From in its domain)."""
    head = (b"From: Bench <bench@example.com>\r\nTo: rcpt@example.com\r\nSubject: milter bench\r\n"
            b"Date: Sun, 6 Dec 2026 08:00:00 +0000\r\nMessage-ID: <bench@example.com>\r\n\r\n")
    line = b"x" * 62 + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line)) + b".\r\n"


class MilterVariant(PeerVariant):
    """A variant whose milter's CPU is read around each round too (user+sys
    from /proc/PID/stat, which keeps the time of OpenDKIM's ended
    per-connection threads), with the wall time per message; a refused
    message stops the run."""

    def __init__(self, label, text, milter_pid=None):
        super().__init__(label, text, milter_pid, stat_cpu_s)
        self.wall_ms = []

    def round(self, n, conns, body, deadline):
        got0, wall0 = self.messages, self.wall
        ok = super().round(n, conns, body, deadline)
        if not ok and time.monotonic() < deadline:
            raise RuntimeError("%s: a message was refused (milter down or no signature?)" % self.label)
        got = self.messages - got0
        if got:
            self.wall_ms.append((self.wall - wall0) * conns * 1e3 / got)
        return ok


def main():
    a = lockstep_args(__doc__, 500, min_rounds=3)

    body = message(1024)
    start = time.monotonic()
    deadline = start + BUDGET
    dkim = start_opendkim()
    spec = "inet:127.0.0.1:%d" % dkim.port
    variants = []
    try:
        for label, text, pid in [
            ("(a) read, accept", variant_script(DRAIN), None),
            ("(b) milters = {OpenDKIM}", variant_script(DRAIN, spec, True, milters=[spec]), dkim.pid),
            ("(c) smtp.milter.check", variant_script(CHECK, spec), dkim.pid),
        ]:
            variants.append(MilterVariant(label, text, pid))
        measure(variants, a.n, a.c, body, a.rounds, deadline)
    finally:
        for v in variants:
            v.stop()
        dkim.stop()

    per, use_sched = cpu_samples(variants)
    base = median(per(variants[0]))
    print(title("milter round trip (OpenDKIM, sign mode)", os.path.relpath(harness.binary(), ROOT), a, body))
    print("%-26s %6s %6s %22s %10s %22s %20s" % ("variant", "msgs", "msg/s", "cpu us/msg min/med/max",
                                                "milter's", "OpenDKIM us/msg", "wall ms/msg"))
    for i, v in enumerate(variants):
        own = "%+.1f" % (median(per(v)) - base) if i else "-"
        print("%-26s %6d %6.0f %22s %10s %22s %20s %s"
              % (v.label, v.messages, v.messages / v.wall if v.wall else 0, spread(per(v)), own,
                 spread(v.peer_us, "%.0f") if v.peer_pid else "-", spread(v.wall_ms, "%.2f"), v.note))
    print("cpu: luasmtpd's %s per message; milter's: its median minus (a)'s (us); OpenDKIM's user+sys "
          "(/proc/PID/stat) is not included; wall: per message as one client waits for it"
          % ("on-CPU time (schedstat)" if use_sched else "user+sys (/proc/PID/stat)"))
    print("total %.1fs" % (time.monotonic() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
