#!/usr/bin/python3
"""Mixed-traffic soak test for luasmtpd (issue 8 item 7; not part of
`make test`).

N messages (default 100,000; --quick: 5,000) go to one server over many
connections from several client threads: plain, STARTTLS, AUTH PLAIN
(allowInsecureAuth, a trivial onAuth) and STARTTLS + AUTH sessions, each
sending a random number of messages with pipelining (MAIL, RCPT and DATA in
one write, the body, its final dot and the next envelope in the next; or
MAIL, RCPT and BDAT LAST with the body in a single write). About 5% of the
connections misbehave:

  drop_data   a few messages, then DATA, half a body, and a reset or close
  garbage     random bytes and control characters as commands (500/501,
              then 421 and close after 10 unrecognised ones)
  slow        a message body sent in pieces with pauses (must get 250)
  huge_line   a 20 KB command line (500 5.5.6, then a normal message) or a
              megabyte with no line end (421 4.4.2 and close)
  vanish_mail MAIL FROM answered, then a reset or close

The server runs scripts/default.lua (Maildir delivery through stream:save)
with allowInsecureAuth and an onAuth added; the Maildir is on /dev/shm when
there is one (fsync on tmpfs costs nothing: the run measures the server,
not the disk). Every message carries a unique X-Soak-Marker header.

Checks: every 250 has exactly one file in new/ (lost 0, duplicated 0), no
file that no 250 acknowledged (nor any of the dropped messages) is in new/,
tmp/ is empty, the well-behaved sessions saw no error, reset, timeout or
unexpected reply, the server logged no error line, its open fds at the end
are those at the start, RSS is flat (at the end within +10% or +5 MiB of
the value after the warm-up; reported only for the ASan build) and TERM
stops it with exit 0 (no sanitizer report).

usage: mixed_soak.py [--messages N] [--quick] [--threads N] [--seed N]
                     [--max-seconds S]

The server binary is $LUASMTPD_BIN (default build/luasmtpd). Prints the
figures (acknowledged / stored / lost, RSS at start / after warm-up / end)
and ends with "N passed, M failed" (checks); exit status 1 when anything
failed.
"""

import argparse
import base64
import os
import random
import re
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
E2E = os.path.join(os.path.dirname(HERE), "e2e")
if E2E not in sys.path:
    sys.path.insert(0, E2E)

import harness  # noqa: E402
from harness import DEFAULT_SCRIPT, lua_value  # noqa: E402

IO_TIMEOUT = 20.0          # every socket operation
MISBEHAVE_RATE = 0.05
MISBEHAVIOURS = ("drop_data", "garbage", "slow", "huge_line", "vanish_mail")
SESSION_KINDS = ("plain", "starttls", "auth", "starttls_auth")
AUTH_USER, AUTH_PASS = "soakuser", "soakpass"
MARKER_RE = re.compile(rb"\r\nX-Soak-Marker: ([A-Za-z0-9.-]+)\r\n")


def soak_script():
    return (('local smtp = require "smtp"\nlocal o = dofile(%s)\n' % lua_value(DEFAULT_SCRIPT)) + r'''
o.allowInsecureAuth = true
o.authOptional = true
o.socketTimeout = 15
o.onAuth = function(auth, session)
  if auth.username == %s and auth.password == %s then
    return {user = auth.username}
  end
  return nil, smtp.reject(535, "5.7.8 authentication failed")
end
return o
''' % (lua_value(AUTH_USER), lua_value(AUTH_PASS)))


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1


# ------------------------------------------------------------------ client

class Closed(Exception):
    pass


class BadReply(Exception):
    pass


class Conn:
    """A raw SMTP client socket; every read and write has IO_TIMEOUT."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        self.sock.settimeout(IO_TIMEOUT)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def reply(self):
        """(code, first line) of the next complete reply."""
        first = None
        while True:
            i = self.buf.find(b"\r\n")
            if i < 0:
                if len(self.buf) > 100_000:
                    raise BadReply("a reply line of %d bytes" % len(self.buf))
                d = self.sock.recv(65536)
                if not d:
                    raise Closed("closed by the server; partial %r" % self.buf[:100])
                self.buf += d
                continue
            line, self.buf = self.buf[:i], self.buf[i + 2:]
            if first is None:
                first = line
            if len(line) < 3 or not line[:3].isdigit():
                raise BadReply("malformed reply line %r" % line[:200])
            if len(line) == 3 or line[3:4] == b" ":
                return int(line[:3]), first
            if line[3:4] != b"-":
                raise BadReply("malformed reply line %r" % line[:200])

    def expect(self, code, what):
        got, line = self.reply()
        if got != code:
            raise BadReply("%s: expected %d, got %r" % (what, code, line[:200]))
        return line

    def starttls(self, ctx):
        if self.buf:
            raise BadReply("bytes after the 220 of STARTTLS: %r" % self.buf[:100])
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
        self.sock.settimeout(IO_TIMEOUT)

    def wait_close(self, timeout=IO_TIMEOUT):
        """Reads until the server closes (bounded); returns what came."""
        got = self.buf
        self.buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                break
            except (ConnectionResetError, ssl.SSLError, OSError):
                return got, True
            if not d:
                return got, True
            got += d
        return got, False

    def rst(self):
        import struct
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ------------------------------------------------------------------ the run

class Soak:
    def __init__(self, port, total, threads, seed, deadline):
        self.port = port
        self.total = total
        self.threads = threads
        self.seed = seed
        self.deadline = deadline
        self.lock = threading.Lock()
        self.remaining = total
        self.acked = []              # markers answered 250 (list.append is atomic)
        self.dropped = []            # markers of messages abandoned mid-DATA
        self.errors = []             # (kind, detail) of well-behaved sessions
        self.anomalies = []          # misbehaving sessions answered unexpectedly
        self.sessions = {k: 0 for k in SESSION_KINDS}
        self.misbehaved = {k: 0 for k in MISBEHAVIOURS}
        self.replies = {}            # code -> count, over misbehaving sessions
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE
        self.auth_line = b"AUTH PLAIN " + base64.b64encode(b"\0" + AUTH_USER.encode() + b"\0"
                                                           + AUTH_PASS.encode()) + b"\r\n"
        fill = random.Random(seed).randbytes(60_000)
        # printable filler lines (base64 of random bytes), 76 columns
        b64 = base64.b64encode(fill)
        self.filler = b"".join(b64[i:i + 76] + b"\r\n" for i in range(0, len(b64), 76))

    # -- slots
    def take(self, n):
        with self.lock:
            k = min(n, self.remaining)
            self.remaining -= k
            return k

    def count(self, table, key):
        with self.lock:
            table[key] = table.get(key, 0) + 1

    # -- messages
    def body(self, marker, rnd, size=None):
        n = size if size is not None else rnd.choice((300, 800, 1500, 3000, 6000, 20000))
        start = rnd.randrange(0, len(self.filler) - n - 80) if n < len(self.filler) - 80 else 0
        start = self.filler.find(b"\r\n", start) + 2
        chunk = self.filler[start:start + n]
        chunk = chunk[:chunk.rfind(b"\r\n") + 2] if b"\r\n" in chunk else b""
        return (b"From: <soak@example.com>\r\nTo: <rcpt@example.com>\r\nSubject: soak %s\r\n"
                b"X-Soak-Marker: %s\r\n\r\n%s\r\n..a dot-stuffed line\r\n%s" % (marker, marker, marker, chunk))

    def envelope(self, marker):
        return b"MAIL FROM:<soak-%s@example.com>\r\nRCPT TO:<rcpt@example.com>\r\n" % marker

    # -- sessions
    def open(self, kind):
        c = Conn(self.port)
        c.expect(220, "greeting")
        c.send(b"EHLO soak.example\r\n")
        c.expect(250, "EHLO")
        if kind in ("starttls", "starttls_auth"):
            c.send(b"STARTTLS\r\n")
            c.expect(220, "STARTTLS")
            c.starttls(self.ctx)
            c.send(b"EHLO soak.example\r\n")
            c.expect(250, "EHLO after STARTTLS")
        if kind in ("auth", "starttls_auth"):
            c.send(self.auth_line)
            c.expect(235, "AUTH PLAIN")
        return c

    def send_messages(self, c, markers, rnd, bdat, quit=True):
        """Pipelined transactions; appends each marker answered 250 to
        self.acked. Raises on anything unexpected."""
        if bdat:
            for i, m in enumerate(markers):
                body = self.body(m, rnd)
                tail = b"QUIT\r\n" if quit and i == len(markers) - 1 else b""
                c.send(self.envelope(m) + b"BDAT %d LAST\r\n" % len(body) + body + tail)
                c.expect(250, "MAIL")
                c.expect(250, "RCPT")
                c.expect(250, "BDAT LAST")
                self.acked.append(m)
        else:
            c.send(self.envelope(markers[0]) + b"DATA\r\n")
            for i, m in enumerate(markers):
                c.expect(250, "MAIL")
                c.expect(250, "RCPT")
                c.expect(354, "DATA")
                nxt = (self.envelope(markers[i + 1]) + b"DATA\r\n") if i + 1 < len(markers) else \
                      (b"QUIT\r\n" if quit else b"")
                c.send(self.body(m, rnd) + b".\r\n" + nxt)
                c.expect(250, "end of data")
                self.acked.append(m)
        if quit:
            c.expect(221, "QUIT")

    def normal(self, wid, rnd, seq):
        n = self.take(rnd.choice((1, 2, 5, 10, 20, 40)))
        if n == 0:
            return 0
        kind = SESSION_KINDS[seq % len(SESSION_KINDS)]
        self.count(self.sessions, kind)
        markers = [b"%d-%d-%d-%d" % (self.seed, wid, seq, i) for i in range(n)]
        before = len(self.acked)
        c = None
        try:
            c = self.open(kind)
            self.send_messages(c, markers, rnd, bdat=rnd.random() < 0.25)
        except Exception as e:  # noqa: BLE001 - every failure is counted (its slots stay unacknowledged)
            self.errors.append((kind, "%s: %s" % (type(e).__name__, e)))
            return len(self.acked) - before
        finally:
            if c:
                c.close()
        return n

    def misbehave(self, wid, rnd, seq):
        what = MISBEHAVIOURS[rnd.randrange(len(MISBEHAVIOURS))]
        self.count(self.misbehaved, what)
        kind = SESSION_KINDS[seq % len(SESSION_KINDS)]
        c = None
        tag = b"%d-%d-%d" % (self.seed, wid, seq)
        try:
            c = self.open(kind)
            if what == "drop_data":
                k = self.take(rnd.choice((0, 1, 2)))
                if k:
                    self.send_messages(c, [tag + b"-ok%d" % i for i in range(k)], rnd, bdat=False, quit=False)
                m = tag + b"-dropped"
                self.dropped.append(m)
                c.send(self.envelope(m) + b"DATA\r\n")
                c.expect(250, "MAIL")
                c.expect(250, "RCPT")
                c.expect(354, "DATA")
                body = self.body(m, rnd, 20000)
                c.send(body[:len(body) // 2])
                time.sleep(0.01)
                c.rst() if rnd.random() < 0.5 else c.close()
            elif what == "garbage":
                lines = []
                for _ in range(12):
                    g = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 80)))
                    lines.append(g.replace(b"\r", b"").replace(b"\n", b"") + b"\r\n")
                c.send(b"".join(lines))
                closed = False
                for _ in range(12):
                    try:
                        code, line = c.reply()
                    except (Closed, ConnectionResetError):
                        closed = True
                        break
                    self.count(self.replies, code)
                    if code not in (500, 501, 421):
                        self.anomalies.append(("garbage", line[:200]))
                    if code == 421:
                        _, closed = c.wait_close(5)
                        if not closed:
                            self.anomalies.append(("garbage", "not closed after 421"))
                        break
                if not closed:
                    c.send(b"QUIT\r\n")
                    code, line = c.reply()
                    if code != 221:
                        self.anomalies.append(("garbage", b"QUIT: " + line[:200]))
            elif what == "slow":
                if not self.take(1):
                    c.close()
                    return
                m = tag + b"-slow"
                c.send(self.envelope(m) + b"DATA\r\n")
                c.expect(250, "MAIL")
                c.expect(250, "RCPT")
                c.expect(354, "DATA")
                body = self.body(m, rnd, 3000) + b".\r\n"
                step = len(body) // 5 + 1
                for i in range(0, len(body), step):
                    c.send(body[i:i + step])
                    time.sleep(0.3)
                c.expect(250, "slow end of data")
                self.acked.append(m)
                c.send(b"QUIT\r\n")
                c.expect(221, "QUIT")
            elif what == "huge_line":
                if rnd.random() < 0.5:
                    c.send(b"NOOP " + b"x" * 20000 + b"\r\n")
                    line = c.expect(500, "20 KB line")
                    if b"5.5.6" not in line:
                        self.anomalies.append(("huge_line", line[:200]))
                    if self.take(1):
                        self.send_messages(c, [tag + b"-afterhuge"], rnd, bdat=False)
                else:
                    try:
                        c.send(b"MAIL FROM:<" + b"y" * (1024 * 1024 + 1000))
                    except OSError:
                        pass   # closed while the megabyte was on its way
                    got, closed = c.wait_close(10)
                    if not closed or b"421 4.4.2" not in got:
                        self.anomalies.append(("huge_line", "megabyte: closed=%s got %r" % (closed, got[:200])))
            elif what == "vanish_mail":
                c.send(b"MAIL FROM:<vanish-%s@example.com>\r\n" % tag)
                c.expect(250, "MAIL")
                c.rst() if rnd.random() < 0.5 else c.close()
        except Exception as e:  # noqa: BLE001
            # slow and huge_line (the 20 KB case) are well-behaved in the end
            self.errors.append(("misbehaving " + what, "%s: %s" % (type(e).__name__, e)))
        finally:
            if c:
                c.close()

    def worker(self, wid):
        rnd = random.Random(self.seed * 1000 + wid)
        seq = 0
        try:
            while time.monotonic() < self.deadline and seq < 10_000_000:
                seq += 1
                if rnd.random() < MISBEHAVE_RATE:
                    self.misbehave(wid, rnd, seq)
                    continue
                with self.lock:
                    if self.remaining <= 0:
                        return
                self.normal(wid, rnd, seq)
        except Exception:  # noqa: BLE001
            self.errors.append(("worker %d" % wid, traceback.format_exc()))


def scan_maildir(md):
    """marker -> number of files in new/; files without a marker; tmp/."""
    counts = {}
    unmarked = []
    new = os.path.join(md, "new")
    for name in os.listdir(new):
        with open(os.path.join(new, name), "rb") as f:
            data = f.read()
        m = MARKER_RE.search(data)
        if not m:
            unmarked.append(name)
            continue
        k = m.group(1)
        counts[k] = counts.get(k, 0) + 1
    return counts, unmarked, os.listdir(os.path.join(md, "tmp"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=None, help="messages to deliver (default 100000)")
    ap.add_argument("--quick", action="store_true", help="5,000 messages")
    ap.add_argument("--threads", type=int, default=8, help="client threads")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--max-seconds", type=float, default=1200, help="give up after this long")
    a = ap.parse_args()
    total = a.messages if a.messages is not None else (5000 if a.quick else 100_000)
    if total < 1 or a.threads < 1:
        ap.error("bad numbers")
    seed = a.seed if a.seed is not None else random.randrange(1, 1_000_000)
    warm_at = max(500, total // 10)

    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    md = tempfile.mkdtemp(prefix="luasmtpd-soak-mail-", dir=shm)
    print("luasmtpd mixed soak: binary %s, %d messages, %d threads, seed %d, Maildir %s"
          % (harness.binary(), total, a.threads, seed, md), flush=True)

    checks = []

    def check(name, ok, detail=""):
        checks.append((name, bool(ok)))
        print("%s %s%s" % ("ok  " if ok else "FAIL", name, (": " + detail) if detail and not ok else ""), flush=True)

    srv = None
    try:
        srv = harness.Server(soak_script(), env={"LUASMTPD_MAILDIR": md}, log_level="warn")
        pid = srv.proc.pid
        time.sleep(0.3)
        rss_start = rss_kb(pid)
        fds_start = fd_count(pid)
        t0 = time.monotonic()
        soak = Soak(srv.port, total, a.threads, seed, t0 + a.max_seconds)
        threads = [threading.Thread(target=soak.worker, args=(i,), daemon=True, name="client-%d" % i)
                   for i in range(a.threads)]
        for t in threads:
            t.start()
        rss_warm = None
        warm_msgs = 0
        rss_peak = rss_start
        last_print = t0
        while any(t.is_alive() for t in threads) and time.monotonic() < t0 + a.max_seconds + 60:
            time.sleep(0.25)
            r = rss_kb(pid)
            rss_peak = max(rss_peak, r)
            n = len(soak.acked)
            if rss_warm is None and n >= warm_at:
                rss_warm, warm_msgs = r, n
            if time.monotonic() - last_print >= 10:
                last_print = time.monotonic()
                dt = last_print - t0
                print("  %6.0fs  acknowledged %d (%.0f/s), errors %d, RSS %d KiB, fds %d"
                      % (dt, n, n / dt, len(soak.errors), r, fd_count(pid)), flush=True)
            if not srv.alive():
                break
        for t in threads:
            t.join(IO_TIMEOUT + 5)
        elapsed = time.monotonic() - t0
        alive = srv.alive()
        hung = [t.name for t in threads if t.is_alive()]
        time.sleep(1.0)
        rss_end = rss_kb(pid)
        fds_end = fd_count(pid)
        if fds_end != fds_start:
            # sessions closing right at the end: give them a moment
            deadline = time.monotonic() + 5
            while fds_end != fds_start and time.monotonic() < deadline:
                time.sleep(0.1)
                fds_end = fd_count(pid)
        if rss_warm is None:
            rss_warm, warm_msgs = rss_end, len(soak.acked)

        counts, unmarked, tmp_left = scan_maildir(md)
        acked = soak.acked
        acked_set = set(acked)
        stored = sum(counts.values())
        lost = [m for m in acked_set if counts.get(m, 0) == 0]
        dup = [m for m, k in counts.items() if k > 1]
        unexpected = [m for m in counts if m not in acked_set]
        dropped_stored = [m for m in soak.dropped if m in counts]
        log = srv.log()
        error_lines = [ln for ln in log.splitlines() if "level=error" in ln]

        print("messages: target %d, acknowledged %d, stored %d, lost %d, duplicated %d, stored unacknowledged %d, "
              "dropped mid-DATA %d (stored %d)"
              % (total, len(acked), stored, len(lost), len(dup), len(unexpected), len(soak.dropped),
                 len(dropped_stored)), flush=True)
        print("RSS: start %d KiB, after warm-up (%d messages) %d KiB, end %d KiB, peak %d KiB; fds start %d, end %d"
              % (rss_start, warm_msgs, rss_warm, rss_end, rss_peak, fds_start, fds_end), flush=True)
        print("time %.1f s, %.0f messages/s; sessions %s; misbehaving %s (%d); their replies %s"
              % (elapsed, len(acked) / max(elapsed, 0.001), soak.sessions, soak.misbehaved,
                 sum(soak.misbehaved.values()), dict(sorted(soak.replies.items()))), flush=True)

        check("server alive after the run", alive)
        check("client threads finished", not hung, ", ".join(hung))
        check("every message acknowledged", len(acked) == total and len(acked_set) == len(acked),
              "%d of %d" % (len(acked), total))
        check("no errors in well-behaved sessions", not soak.errors,
              "%d: %s" % (len(soak.errors), soak.errors[:5]))
        check("misbehaving sessions answered as expected", not soak.anomalies,
              "%d: %s" % (len(soak.anomalies), soak.anomalies[:5]))
        check("lost 0 (every 250 has a file)", not lost, "first %r" % lost[:5])
        check("no message stored twice", not dup, "first %r" % dup[:5])
        check("nothing stored that was not acknowledged", not unexpected and not unmarked,
              "unacknowledged %r, without a marker %r" % (unexpected[:5], unmarked[:5]))
        check("messages dropped mid-DATA not stored", not dropped_stored, "%r" % dropped_stored[:5])
        check("tmp/ empty", not tmp_left, "%d files: %r" % (len(tmp_left), tmp_left[:5]))
        check("no error lines in the server log", not error_lines, "\n".join(error_lines[:5]))
        check("open fds back to the start", fds_end == fds_start, "%d -> %d" % (fds_start, fds_end))
        limit = max(rss_warm * 1.10, rss_warm + 5 * 1024)
        if harness.sanitized():
            print("(RSS not checked for the sanitizer build: end %d KiB, limit would be %d KiB)"
                  % (rss_end, limit), flush=True)
        else:
            check("RSS flat (end within +10% or +5 MiB of after warm-up)", rss_end <= limit,
                  "%d KiB after warm-up, %d KiB at the end, limit %d KiB" % (rss_warm, rss_end, limit))
        try:
            srv.stop()
            check("TERM: exit 0, no sanitizer report", True)
        except Exception as e:  # noqa: BLE001
            check("TERM: exit 0, no sanitizer report", False, str(e)[:3000])
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        check("the soak ran", False)
    finally:
        if srv is not None and not srv.stopped:
            srv.kill()
    failed = sum(1 for _, ok in checks if not ok)
    passed = len(checks) - failed
    if failed:
        print("kept for inspection: Maildir %s, server files %s" % (md, srv.tmp if srv else "-"), flush=True)
    else:
        shutil.rmtree(md, ignore_errors=True)
        if srv is not None:
            srv.cleanup()
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
