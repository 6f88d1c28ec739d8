#!/usr/bin/python3
"""Hook overhead benchmark (not a test): server CPU per message with

  (a) no hooks,
  (b) empty onConnect/onMailFrom/onRcptTo and an onData that drains the
      stream,
  (c) an onRcptTo doing one smtp.tcp round trip to a local redis-server
      (connect, GET, close),
  (d) the same through smtp.tcp with pooling (setkeepalive: the connect
      takes the pooled connection),
  (e) one GET through lua-resty-redis on ngx.socket.tcp with set_keepalive
      (when ../shared/compat/lib holds it; else the variant is left out),

measured as the server process's user+sys time from /proc/PID/stat (clock
ticks) and, more precisely, its on-CPU time from /proc/PID/task/*/schedstat
(nanoseconds), around N messages sent by a lock-step Python client over a
few connections (MAIL+RCPT+DATA pipelined, then the body, per message).

usage: hook_overhead.py [-n MESSAGES] [-c CONNECTIONS] [--size BYTES] [-r ROUNDS]
Default: 2000 messages over 4 connections, 1 KiB bodies, 5 rounds per
variant (interleaved; the median is reported), against
$LUASMTPD_BIN (default build/luasmtpd). Runtime is bounded (about 90 s at
most: every variant stops at its deadline and says so). Prints a table
and exits 0; non-zero only when a run fails.
"""

import os
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

import harness  # noqa: E402
from benchutil import TICK, cpu_samples, lockstep_args, median, sched_cpu_s, stat_cpu_s, title  # noqa: E402
import svcutil  # noqa: E402

TOTAL_BUDGET = 85.0     # seconds for the whole benchmark
IO_TIMEOUT = 10.0
WARMUP = 200            # messages per variant before measuring (JIT, caches)

BASE = {"name": "bench.test", "authOptional": True, "disableReverseLookup": True, "hookTimeout": 10}

EMPTY_HOOKS = {
    "onConnect": harness.Lua("function(session) end"),
    "onMailFrom": harness.Lua("function(address, session) end"),
    "onRcptTo": harness.Lua("function(address, session) end"),
    "onData": harness.Lua("function(stream, session) for _ in stream:chunks() do end end"),
}

REDIS_PRELUDE = r'''
local REDIS_PORT = %d
local GET = "*2\r\n$3\r\nGET\r\n$9\r\nbench:key\r\n"
'''


def redis_get_hooks(finish):
    """onRcptTo doing one GET over smtp.tcp, then `finish` (Lua) with the socket."""
    return {"onRcptTo": harness.Lua(r'''function(address, session)
    local sock = smtp.tcp()
    sock:settimeout(2)
    assert(sock:connect("127.0.0.1", REDIS_PORT))
    assert(sock:send(GET))
    local head = assert(sock:receive("*l"))
    local n = tonumber(head:sub(2))
    if n and n >= 0 then assert(sock:receive(n + 2)) end
    %s
  end''' % finish)}


REDIS_HOOKS = redis_get_hooks("sock:close()")
POOLED_HOOKS = redis_get_hooks("assert(sock:setkeepalive(60))")

# lua-resty-redis exactly as published, when the shared compat folder has it
COMPAT = next((p for p in (os.path.join(ROOT, "..", "shared", "compat", "lib"),
                           os.path.join(ROOT, "..", "..", "shared", "compat", "lib"))
               if os.path.isdir(p)), None)

RESTY_PRELUDE = r'''
package.path = %s .. "/?.lua;" .. package.path
ngx = ngx or {socket = require "smtp.ngx.socket", null = require("cjson").null}
local redis = require "resty.redis"
'''

RESTY_HOOKS = {
    "onRcptTo": harness.Lua(r'''function(address, session)
    local red = redis:new()
    red:set_timeouts(2000, 2000, 2000)
    assert(red:connect("127.0.0.1", REDIS_PORT))
    assert(red:get("bench:key"))
    assert(red:set_keepalive(60000, 10))
  end'''),
}


class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        self.sock.settimeout(IO_TIMEOUT)
        self.buf = b""
        self.expect(220)
        self.sock.sendall(b"EHLO bench.client\r\n")
        self.expect(250)

    def reply(self):
        while True:
            i = self.buf.find(b"\r\n")
            while i >= 0:
                line, rest = self.buf[:i], self.buf[i + 2:]
                if line[3:4] != b"-":
                    self.buf = rest
                    return line
                self.buf = rest
                i = self.buf.find(b"\r\n")
            d = self.sock.recv(65536)
            if not d:
                raise RuntimeError("server closed the connection")
            self.buf += d

    def expect(self, code):
        line = self.reply()
        if not line.startswith(b"%d" % code):
            raise RuntimeError("expected %d, got %r" % (code, line))

    def message(self, body):
        self.sock.sendall(b"MAIL FROM:<bench@example.com>\r\nRCPT TO:<rcpt@example.com>\r\nDATA\r\n")
        self.expect(250)
        self.expect(250)
        self.expect(354)
        self.sock.sendall(body)
        self.expect(250)

    def close(self):
        try:
            self.sock.sendall(b"QUIT\r\n")
            self.reply()
        except (OSError, RuntimeError):
            pass
        self.sock.close()


def drive(port, total, conns, body, deadline):
    """Sends `total` messages over `conns` connections (one thread each,
    lock-step). Returns (messages sent, wall seconds, errors)."""
    per = [total // conns + (1 if i < total % conns else 0) for i in range(conns)]
    sent = [0] * conns
    errors = []

    def run(i):
        try:
            c = Conn(port)
            try:
                for _ in range(per[i]):
                    if time.monotonic() > deadline:
                        errors.append("deadline reached")
                        return
                    c.message(body)
                    sent[i] += 1
            finally:
                c.close()
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
    t0 = time.monotonic()
    ts = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(max(0.1, deadline - time.monotonic() + IO_TIMEOUT))
    return sum(sent), time.monotonic() - t0, errors


class Variant:
    """One server, warmed up, measured several times."""

    def __init__(self, label, text):
        self.label = label
        self.srv = harness.Server(text, log_level="warn")
        self.stat_us, self.sched_us = [], []
        self.messages = 0
        self.wall = 0.0
        self.note = ""

    def warm(self, conns, body, deadline):
        got, _, errors = drive(self.srv.port, WARMUP, conns, body, deadline)
        if errors:
            raise RuntimeError("%s: warm-up failed: %s" % (self.label, errors[0]))

    def round(self, n, conns, body, deadline):
        pid = self.srv.proc.pid
        t0, s0 = stat_cpu_s(pid), sched_cpu_s(pid)
        got, wall, errors = drive(self.srv.port, n, conns, body, deadline)
        t1, s1 = stat_cpu_s(pid), sched_cpu_s(pid)
        if errors:
            if got == 0:
                raise RuntimeError("%s: %s" % (self.label, errors[0]))
            self.note = "(stopped at the deadline)"
        if got:
            self.stat_us.append((t1 - t0) * 1e6 / got)
            if s0 is not None and s1 is not None:
                self.sched_us.append((s1 - s0) * 1e6 / got)
        self.messages += got
        self.wall += wall
        return not errors

    def stop(self):
        try:
            self.srv.stop()
        except harness.ServerError as e:
            print("warning: %s: %s" % (self.label, str(e).splitlines()[0]), file=sys.stderr)
        self.srv.cleanup()


class PeerVariant(Variant):
    """A variant whose peer (a next hop, a milter: process peer_pid) has its
    CPU per message read around each round too, by cpu(pid) in seconds."""

    def __init__(self, label, text, peer_pid=None, cpu=None):
        super().__init__(label, text)
        self.peer_pid, self.cpu = peer_pid, cpu
        self.peer_us = []

    def round(self, n, conns, body, deadline):
        if self.peer_pid is None:
            return super().round(n, conns, body, deadline)
        before, got0 = self.cpu(self.peer_pid), self.messages
        ok = super().round(n, conns, body, deadline)
        got = self.messages - got0
        if got:
            self.peer_us.append((self.cpu(self.peer_pid) - before) * 1e6 / got)
        return ok


def measure(variants, n, conns, body, rounds, deadline):
    """Warms every variant up, then measures `rounds` rounds of n messages;
    rounds interleave the variants, so drift (other load, CPU frequency)
    hits all of them alike (the median is reported)."""
    for v in variants:
        v.warm(conns, body, deadline)
    for _ in range(rounds):
        if not all([v.round(n, conns, body, deadline) for v in variants]):
            break


def main():
    a = lockstep_args(__doc__, 2000, more=lambda ap: ap.add_argument(
        "--size", type=int, default=1024, help="body bytes (default 1024)"))

    line = b"x" * 62 + b"\r\n"
    body = b"Subject: bench\r\n\r\n" + line * max(1, a.size // len(line)) + b".\r\n"
    start = time.monotonic()
    deadline = start + TOTAL_BUDGET
    redis = svcutil.Redis()
    variants = []
    try:
        svcutil.redis_command(redis.port, "SET", "bench:key", "v" * 32)
        for label, text in [
            ("(a) no hooks", harness.script(**BASE)),
            ("(b) empty hooks", harness.script(hooks=EMPTY_HOOKS, **BASE)),
            ("(c) redis GET in onRcptTo", harness.script(hooks=REDIS_HOOKS, prelude=REDIS_PRELUDE % redis.port,
                                                         **BASE)),
            ("(d) (c) pooled, smtp.tcp", harness.script(hooks=POOLED_HOOKS, prelude=REDIS_PRELUDE % redis.port,
                                                        **BASE)),
        ] + ([("(e) resty.redis pooled", harness.script(
                hooks=RESTY_HOOKS, prelude=REDIS_PRELUDE % redis.port + RESTY_PRELUDE % harness.lua_value(
                    os.path.abspath(COMPAT)), **BASE))] if COMPAT else []):
            variants.append(Variant(label, text))
        measure(variants, a.n, a.c, body, a.rounds, deadline)
    finally:
        for v in variants:
            v.stop()
        redis.stop()

    print(title("hook overhead", os.path.relpath(harness.binary(), ROOT), a, body))
    print("%-28s %8s %8s %11s %11s %17s" % ("variant", "msgs", "msg/s", "cpu us/msg", "(schedstat)",
                                            "overhead"))
    base = variants[0]
    samples, use_sched = cpu_samples(variants)
    key = (lambda v: median(samples(v)))
    for v in variants:
        if v is base:
            over = "-"
        else:
            d = key(v) - key(base)
            over = "%+.1f us %+.0f%%" % (d, 100.0 * d / key(base) if key(base) else 0.0)
        sched = "%.1f" % median(v.sched_us) if v.sched_us else "n/a"
        print("%-28s %8d %8.0f %11.1f %11s %17s %s"
              % (v.label, v.messages, v.messages / v.wall if v.wall else 0, median(v.stat_us), sched, over,
                 v.note))
    print("cpu us/msg: median over rounds of the server's user+sys (/proc/PID/stat, %d Hz ticks); "
          "schedstat: on-CPU time of its threads (ns); overhead vs (a) from %s"
          % (TICK, "schedstat" if use_sched else "/proc/PID/stat"))
    print("total %.1fs" % (time.monotonic() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
