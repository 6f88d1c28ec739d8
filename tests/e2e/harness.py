"""End-to-end test harness for luasmtpd (Python 3 stdlib only).

Server   runs build/luasmtpd (or $LUASMTPD_BIN) on a free 127.0.0.1 port
         with a script given as text or as a path, captures stderr to a file,
         and on stop sends SIGTERM, waits, and checks the exit code and the
         sanitizer markers (ASan/UBSan/LSan) in stderr.
Client   a raw-socket SMTP client: send bytes, read one complete (multi-line)
         reply, read N replies, expect the server to close. Every read is
         bounded by a timeout, and a transcript is kept for failure reports.
script() builds a Lua policy script from Python values plus Lua snippets;
         the prelude gives hooks `record(kind, table)` (a JSON line in
         $OUT/events.jsonl, read back with Server.events()) and
         `snap(session)` (a plain copy of the session's fields).
Maildir  helpers: maildir_new(), split_received().
"""

import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_SCRIPT = os.path.join(ROOT, "scripts", "default.lua")

READ_TIMEOUT = 10.0   # every socket read
START_TIMEOUT = 10.0  # server readiness
STOP_TIMEOUT = 15.0   # SIGTERM -> exit

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")

# Filled while a test runs, so that run.py can print transcripts and server
# logs next to a failure. run.py resets them before each test.
TEST_CLIENTS = []
TEST_SERVERS = []


# The published lua-resty-* libraries (../shared/compat/lib next to the
# checkout; a worktree sits one level deeper) are test data the project may
# not copy: tests that need them skip, with COMPAT_SKIP leading the reason,
# where the folder is absent. run.py counts only that skip as skipped; any
# other skip is a failure.
COMPAT_SKIP = "no ../shared/compat/lib"
COMPAT = next((p for p in (os.path.join(ROOT, "..", "shared", "compat", "lib"),
                           os.path.join(ROOT, "..", "..", "shared", "compat", "lib")) if os.path.isdir(p)), None)


def compat_reason():
    return "%s: the published lua-resty-* libraries are not here" % COMPAT_SKIP


def binary():
    b = os.environ.get("LUASMTPD_BIN", "build/luasmtpd")
    if not os.path.isabs(b):
        b = os.path.join(ROOT, b)
    return b


def sanitized():
    """True when the binary under test is the ASan/UBSan build: its RSS
    (allocator quarantine, shadow memory) says nothing about our memory use."""
    return "asan" in os.path.basename(binary())


def free_port(host="127.0.0.1"):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(pred, timeout=5.0, interval=0.02):
    """Polls pred() until it returns a truthy value; returns it (or the last
    falsy value after the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def _listening(port):
    """True when some socket LISTENs on 127.0.0.1:port (Linux /proc/net/tcp).
    Checking the kernel table instead of connecting keeps readiness probes
    from creating sessions (which would show up in onConnect/onClose)."""
    want = "0100007F:%04X" % port
    anyaddr = "00000000:%04X" % port
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[3] == "0A" and parts[1] in (want, anyaddr):
                    return True
    except OSError:
        return None  # unknown: caller falls back to connecting
    return False


def _connectable(port):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=0.5)
        s.close()
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- Lua scripts

class Lua(str):
    """Raw Lua code inserted as is by lua_value()."""


def lua_value(v):
    if isinstance(v, Lua):
        return str(v)
    if v is None:
        return "nil"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, bytes):
        return '"' + "".join("\\%d" % c for c in v) + '"'
    if isinstance(v, str):
        return lua_value(v.encode("utf-8"))
    if isinstance(v, (list, tuple)):
        return "{" + ", ".join(lua_value(x) for x in v) + "}"
    if isinstance(v, dict):
        return "{" + ", ".join("[%s] = %s" % (lua_value(k), lua_value(x)) for k, x in v.items()) + "}"
    raise TypeError("no Lua literal for %r" % (v,))


PRELUDE = r'''
local smtp = require "smtp"
local OUT = os.getenv("OUT")

local function J(v, seen)
  seen = seen or {}
  local t = type(v)
  if t == "nil" then return "null"
  elseif t == "boolean" then return tostring(v)
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return '"' .. tostring(v) .. '"' end
    return string.format("%.17g", v)
  elseif t == "string" then
    return '"' .. (v:gsub('[%c"\\\128-\255]', function(c) return string.format("\\u%04x", c:byte()) end)) .. '"'
  elseif t == "table" then
    if seen[v] then return '"<cycle>"' end
    seen[v] = true
    local n = 0
    for _ in pairs(v) do n = n + 1 end
    local parts = {}
    if n > 0 and n == #v then
      for i = 1, #v do parts[i] = J(v[i], seen) end
      seen[v] = nil
      return "[" .. table.concat(parts, ",") .. "]"
    end
    for k, x in pairs(v) do parts[#parts + 1] = J(tostring(k)) .. ":" .. J(x, seen) end
    seen[v] = nil
    return "{" .. table.concat(parts, ",") .. "}"
  else
    return '"<' .. t .. '>"'
  end
end

local function record(kind, data)
  local f = assert(io.open(OUT .. "/events.jsonl", "ab"))
  f:write(J({kind = kind, data = data}), "\n")
  f:close()
end

local function addr(a)
  if a == nil then return nil end
  local args = {}
  if type(a.args) == "table" then for k, x in pairs(a.args) do args[k] = x end end
  return {address = a.address, args = args, argsType = type(a.args)}
end

local function snap(s)
  local env = s.envelope
  local r = {
    id = s.id, remoteAddress = s.remoteAddress, remotePort = s.remotePort,
    localAddress = s.localAddress, localPort = s.localPort,
    clientHostname = s.clientHostname, hostNameAppearsAs = s.hostNameAppearsAs,
    openingCommand = s.openingCommand, transmissionType = s.transmissionType,
    transaction = s.transaction, secure = s.secure, servername = s.servername,
    tlsOptionsType = type(s.tlsOptions), user = s.user, envelopeType = type(env),
  }
  if type(env) == "table" or type(env) == "userdata" then
    r.mailFrom = addr(env.mailFrom)
    r.rcptTo = {}
    if env.rcptTo then for i, a in ipairs(env.rcptTo) do r.rcptTo[i] = addr(a) end end
    r.rcptCount = env.rcptTo and #env.rcptTo or -1
  end
  return r
end

local function readall(stream)
  local body = {}
  for chunk in stream:chunks() do body[#body + 1] = chunk end
  return table.concat(body)
end

-- the same by stream:read() until it returns nil: the body, and the
-- error read() ended with (a milter's refusal), if any
local function read_to_end(stream)
  local parts = {}
  while true do
    local chunk, err = stream:read()
    if chunk == nil then return table.concat(parts), err end
    parts[#parts + 1] = chunk
  end
end

local function writefile(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end
'''

# A sink onData used by many tests: stores the body in $OUT/body-<id>-<n>
# and records the stream facts.
STORE_ONDATA = Lua(r'''function(stream, session)
    local body = readall(stream)
    writefile(OUT .. "/body-" .. session.id .. "-" .. tostring(session.transaction), body)
    record("data", {session = snap(session), byteLength = stream.byteLength,
                    sizeExceeded = stream.sizeExceeded, len = #body})
    return "stored " .. tostring(stream.byteLength)
  end''')


def script(hooks=None, prelude="", **opts):
    """Builds a script: the standard prelude, extra Lua `prelude`, and a
    returned options table from `opts` (Python values or Lua(...)) plus
    `hooks` (name -> Lua function source)."""
    base = {"name": "mx.test", "authOptional": True}
    base.update(opts)
    fields = ["  %s = %s," % (k, lua_value(v)) for k, v in base.items() if v is not None]
    for name, code in (hooks or {}).items():
        fields.append("  %s = %s," % (name, code))
    return PRELUDE + "\n" + prelude + "\nreturn {\n" + "\n".join(fields) + "\n}\n"


def script_with(path, **opts):
    """The script at path (one of scripts/) with some options changed."""
    sets = "\n".join("o[%s] = %s" % (lua_value(k), lua_value(v)) for k, v in opts.items())
    return ('local o = dofile(%s)\n%s\nreturn o\n' % (lua_value(path), sets))


def default_with(**opts):
    """The default script (Maildir delivery) with some options changed."""
    return script_with(DEFAULT_SCRIPT, **opts)


# --------------------------------------------------------------------- Server

class ServerError(AssertionError):
    pass


class Server:
    """Runs the server. Use as a context manager:

        with Server(script(...)) as srv:
            c = srv.client()
            ...

    script: Lua text, or a path (an existing file name ending in .lua).
    listen: True (default) = one free port passed with --listen; False = no
            --listen (the script's own listen is used; give `ports` to wait
            for); a list of "host:port" strings = those --listen options.
    """

    def __init__(self, script_src=DEFAULT_SCRIPT, env=None, args=(), listen=True, ports=None,
                 log_level="debug", expect_exit=0, start=True, log_flush="line"):
        self.tmp = tempfile.mkdtemp(prefix="luasmtpd-e2e-")
        self.out = os.path.join(self.tmp, "out")
        self.maildir = os.path.join(self.tmp, "mail")
        os.makedirs(self.out)
        if "\n" not in script_src and script_src.endswith(".lua") and os.path.isfile(script_src):
            self.script_path = os.path.abspath(script_src)
        else:
            self.script_path = os.path.join(self.tmp, "script.lua")
            with open(self.script_path, "w") as f:
                f.write(script_src)
        self.env = dict(os.environ)
        self.env.update({"OUT": self.out, "LUASMTPD_MAILDIR": self.maildir})
        if env:
            self.env.update(env)
        self.extra_args = list(args)
        self.log_level = log_level
        # Tests read the log as soon as a reply arrives: with "line" each
        # line is written before the reply leaves. None: the default (once
        # per loop turn), which test_logging.py tests.
        self.log_flush = log_flush
        self.expect_exit = expect_exit
        if listen is True:
            self.port = free_port()
            self.listen_args = ["127.0.0.1:%d" % self.port]
            self.ports = [self.port]
        elif listen is False:
            self.listen_args = []
            self.ports = list(ports or [])
            self.port = self.ports[0] if self.ports else None
        else:
            self.listen_args = list(listen)
            self.ports = list(ports) if ports else [int(a.rsplit(":", 1)[1]) for a in self.listen_args]
            self.port = self.ports[0] if self.ports else None
        self.stderr_path = os.path.join(self.tmp, "stderr.log")
        self.proc = None
        self.stopped = False
        self.exit_code = None
        if start:
            self.start()

    # -- lifecycle
    def argv(self):
        a = [binary()]
        for l in self.listen_args:
            a += ["--listen", l]
        if self.log_level:
            a += ["--log-level", self.log_level]
        if self.log_flush:
            a += ["--log-flush", self.log_flush]
        a += self.extra_args
        a.append(self.script_path)
        return a

    def start(self):
        if not os.path.exists(binary()):
            raise ServerError("server binary %s does not exist (build it first)" % binary())
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(self.argv(), cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self._stderr, stderr=self._stderr)
        TEST_SERVERS.append(self)
        self.wait_ready()

    def wait_ready(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        pending = list(self.ports)
        while pending:
            if self.proc.poll() is not None:
                raise ServerError("server exited with %s before listening on %s\n%s"
                                  % (self.proc.returncode, pending, self.log_tail()))
            p = pending[0]
            ok = _listening(p)
            if ok is None:
                ok = _connectable(p)
            if ok:
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                self.kill()
                raise ServerError("server not listening on %d after %.0fs\n%s" % (p, timeout, self.log_tail()))
            time.sleep(0.02)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def kill(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait()
        self.stopped = True

    def wait_exit(self, timeout=STOP_TIMEOUT):
        try:
            self.exit_code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise ServerError("server did not exit within %.0fs after the signal\n%s" % (timeout, self.log_tail()))
        return self.exit_code

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """SIGTERM, wait, then check exit code and sanitizer output.
        Raises ServerError on a bad exit or a sanitizer report."""
        if self.stopped or self.proc is None:
            return
        self.stopped = True
        problems = []
        if self.exit_code is not None:
            pass  # the test signalled the server and collected its exit itself
        elif self.proc.poll() is not None:
            problems.append("server died during the test (exit %s)" % self.proc.returncode)
        else:
            self.proc.send_signal(sig)
            try:
                self.wait_exit(timeout)
            except ServerError as e:
                problems.append(str(e))
        self.exit_code = self.proc.returncode
        self._stderr.close()
        if self.exit_code != self.expect_exit and not problems:
            problems.append("server exit code %s, expected %s" % (self.exit_code, self.expect_exit))
        san = self.sanitizer_report()
        if san:
            problems.append("sanitizer report in server stderr:\n" + san)
        if problems:
            raise ServerError("\n".join(problems) + "\n--- server log tail ---\n" + self.log_tail(60))

    def cleanup(self):
        """Removes the server's temporary directory (script, out/, mail/,
        stderr.log). run.py calls it for tests that passed."""
        if self.stopped:
            import shutil
            shutil.rmtree(self.tmp, ignore_errors=True)

    def sanitizer_report(self):
        log = self.log()
        for m in SANITIZER_MARKERS:
            i = log.find(m)
            if i >= 0:
                return log[max(0, i - 200):i + 4000]
        return ""

    def __enter__(self):
        return self

    def __exit__(self, etype, exc, tb):
        try:
            self.stop()
        except ServerError:
            if exc is None:
                raise
            # the test already failed: keep its exception, add ours as a note
            import traceback
            exc.add_note("while stopping the server: " + traceback.format_exc(limit=0))
        return False

    # -- observation
    def log(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_bytes(self):
        with open(self.stderr_path, "rb") as f:
            return f.read()

    def log_tail(self, n=40):
        lines = self.log().splitlines()
        return "\n".join(lines[-n:])

    def events(self, kind=None):
        path = os.path.join(self.out, "events.jsonl")
        evs = []
        try:
            with open(path, "rb") as f:
                for line in f:
                    if line.strip():
                        evs.append(json.loads(line.decode("ascii")))
        except OSError:
            pass
        if kind is not None:
            evs = [e["data"] for e in evs if e["kind"] == kind]
        return evs

    def wait_events(self, kind, n, timeout=5.0):
        wait_for(lambda: len(self.events(kind)) >= n, timeout)
        return self.events(kind)

    def out_file(self, name):
        with open(os.path.join(self.out, name), "rb") as f:
            return f.read()

    def out_files(self, prefix=""):
        return sorted(n for n in os.listdir(self.out) if n.startswith(prefix))

    def rss_kb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def client(self, port=None, **kw):
        c = Client(port or self.port, **kw)
        c.server = self
        return c

    def maildir_new(self):
        return maildir_new(self.maildir)

    def maildir_tmp(self):
        return maildir_files(self.maildir, "tmp")


# --------------------------------------------------------------------- Client

REPLY_LINE = re.compile(rb"^(\d{3})([ -])(.*)$", re.S)
ENH = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?: |$)")


class Reply:
    def __init__(self, lines, raw):
        self.raw = raw
        self.code = int(lines[0][0])
        self.lines = [t for (_, t) in lines]
        self.text = self.lines[0]
        m = ENH.match(self.lines[0])
        self.enh = m.group(1) if m else None

    def __repr__(self):
        return "Reply(%r)" % self.raw

    def __str__(self):
        return self.raw.decode("latin-1").rstrip("\r\n")


class Closed(AssertionError):
    pass


class Client:
    def __init__(self, port, host="127.0.0.1", timeout=READ_TIMEOUT, greet=True, sock=None):
        self.timeout = timeout
        self.buf = b""
        self.transcript = []
        self.server = None
        self.sock = sock or socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.local_port = self.sock.getsockname()[1]
        self.greeting = None
        TEST_CLIENTS.append(self)
        if greet:
            self.greeting = self.read_reply()

    # -- writing
    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.transcript.append(("C", data))
        self.sock.sendall(data)

    def line(self, s):
        if isinstance(s, str):
            s = s.encode("utf-8")
        self.send(s + b"\r\n")

    def cmd(self, s, timeout=None):
        self.line(s)
        return self.read_reply(timeout)

    # -- reading
    def _fill(self, timeout):
        self.sock.settimeout(timeout)
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            raise
        except ConnectionResetError:
            d = b""
        if d:
            self.transcript.append(("S", d))
        return d

    def _line(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("timeout (%.1fs) waiting for a reply line; partial %r" % (timeout, self.buf[:200]))
            try:
                d = self._fill(left)
            except socket.timeout:
                raise AssertionError("timeout (%.1fs) waiting for a reply line; partial %r" % (timeout, self.buf[:200]))
            if not d:
                raise Closed("connection closed while waiting for a reply; partial %r" % self.buf[:200])
            self.buf += d
        i = self.buf.index(b"\n")
        line, self.buf = self.buf[:i + 1], self.buf[i + 1:]
        return line

    def read_reply(self, timeout=None):
        timeout = self.timeout if timeout is None else timeout
        raw = b""
        parts = []
        while True:
            line = self._line(timeout)
            raw += line
            if not line.endswith(b"\r\n"):
                raise AssertionError("reply line not ended by CRLF: %r" % line)
            body = line[:-2]
            if b"\r" in body or b"\0" in body:
                raise AssertionError("control byte inside a reply line: %r" % line)
            m = REPLY_LINE.match(body)
            if not m:
                raise AssertionError("malformed reply line %r" % line)
            if parts and m.group(1).decode() != parts[0][0]:
                raise AssertionError("multi-line reply changes its code: %r" % raw)
            parts.append((m.group(1).decode(), m.group(3).decode("utf-8", "replace")))
            if m.group(2) == b" ":
                return Reply(parts, raw)

    def read_replies(self, n, timeout=None):
        return [self.read_reply(timeout) for _ in range(n)]

    def expect_close(self, timeout=5.0):
        """Reads until the server closes; returns the bytes received meanwhile
        (after any already-buffered ones). Fails if still open after timeout."""
        got = self.buf
        self.buf = b""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("connection still open after %.1fs; received %r" % (timeout, got[-300:]))
            try:
                d = self._fill(left)
            except socket.timeout:
                continue
            except OSError:
                return got
            if not d:
                return got
            got += d

    def no_reply(self, wait=0.3):
        """Asserts that nothing more arrives within `wait` seconds."""
        if self.buf:
            raise AssertionError("unexpected extra bytes from server: %r" % self.buf)
        try:
            d = self._fill(wait)
        except socket.timeout:
            return
        if d:
            raise AssertionError("unexpected extra bytes from server: %r" % d)

    def is_closed(self, wait=0.3):
        try:
            d = self._fill(wait)
        except socket.timeout:
            return False
        except OSError:
            return True
        if d:
            self.buf += d
            return False
        return True

    # -- conveniences
    def ehlo(self, name="client.example"):
        return self.cmd("EHLO " + name)

    def transaction(self, body, mail="<sender@example.com>", rcpts=("<rcpt@example.com>",)):
        """EHLO must have been done. Sends MAIL/RCPT/DATA/body (already
        stuffed, without the final dot) and returns the final reply."""
        r = self.cmd("MAIL FROM:" + mail)
        if r.code != 250:
            raise AssertionError("MAIL refused: %s" % r)
        for rc in rcpts:
            r = self.cmd("RCPT TO:" + rc)
            if r.code != 250:
                raise AssertionError("RCPT refused: %s" % r)
        r = self.cmd("DATA")
        if r.code != 354:
            raise AssertionError("DATA refused: %s" % r)
        self.send(body + b".\r\n")
        return self.read_reply()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def rst(self):
        """Closes with a TCP RST (SO_LINGER 0)."""
        import struct
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()
        return False

    def format_transcript(self, limit=40, width=400):
        merged = []
        for who, data in self.transcript:
            if merged and merged[-1][0] == who:
                merged[-1][1] += data
            else:
                merged.append([who, data])
        out = []
        if len(merged) > limit:
            out.append("... (%d earlier exchanges)" % (len(merged) - limit))
        for who, data in merged[-limit:]:
            s = repr(data)
            if len(s) > width:
                s = s[:width] + "...(%d bytes)" % len(data)
            out.append("%s: %s" % (who, s))
        return "\n".join(out)


# -------------------------------------------------------------------- Maildir

def maildir_files(maildir, sub="new"):
    d = os.path.join(maildir, sub)
    try:
        names = [n for n in os.listdir(d) if not n.startswith(".")]
    except FileNotFoundError:
        return []
    paths = [os.path.join(d, n) for n in names]
    paths.sort(key=lambda p: (os.stat(p).st_mtime_ns, p))
    return paths


def maildir_new(maildir):
    return maildir_files(maildir, "new")


def split_received(data):
    """Splits a stored message into (Received header incl. its final CRLF,
    the rest). Raises AssertionError if it does not start with one."""
    if not data.startswith(b"Received:"):
        raise AssertionError("stored message does not start with a Received header: %r" % data[:200])
    pos = 0
    while True:
        i = data.find(b"\r\n", pos)
        if i < 0:
            raise AssertionError("Received header not ended by CRLF: %r" % data[:500])
        if b"\n" in data[pos:i] or b"\r" in data[pos:i]:
            raise AssertionError("bare CR/LF inside the Received header: %r" % data[:500])
        pos = i + 2
        if pos < len(data) and data[pos:pos + 1] in (b" ", b"\t"):
            continue
        return data[:pos], data[pos:]


def stuff(body):
    """Dot-stuffs a body (bytes with CRLF line ends) for DATA, and makes sure
    it ends with CRLF. Returns (wire bytes without the final '.\\r\\n',
    expected stored body)."""
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    lines = body.split(b"\r\n")
    wire = b"\r\n".join((b"." + l) if l.startswith(b".") else l for l in lines)
    return wire, body


# ------------------------------------------------------------------ TestCase

class E2ETest(unittest.TestCase):
    maxDiff = 4000

    def assertReply(self, r, code, enh=None, msg=None):
        detail = "got %r, expected %s%s" % (r.raw, code, (" " + enh) if enh else "")
        if msg:
            detail = msg + ": " + detail
        if isinstance(code, (tuple, list, set)):
            self.assertIn(r.code, code, detail)
        else:
            self.assertEqual(r.code, code, detail)
        if enh is not None:
            self.assertEqual(r.enh, enh, detail)

    def assertCodes(self, replies, codes, msg=None):
        got = [r.code for r in replies]
        self.assertEqual(got, list(codes), (msg + ": " if msg else "") + "replies %r" % [r.raw for r in replies])

    def run_cmd(self, argv, timeout=20, env=None, input=None):
        e = dict(os.environ)
        if env:
            e.update(env)
        return subprocess.run(argv, cwd=ROOT, env=e, input=input, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=timeout)

    def check_sanitizer_text(self, text, what="process"):
        for m in SANITIZER_MARKERS:
            if m in text:
                i = text.find(m)
                self.fail("sanitizer report in %s stderr:\n%s" % (what, text[max(0, i - 200):i + 3000]))


class SharedServerTest(E2ETest):
    """One server for the whole class (started in setUpClass). Subclasses
    set SCRIPT (Lua text or a path) and optionally SERVER_KW."""
    SCRIPT = None
    SERVER_KW = {}

    @classmethod
    def setUpClass(cls):
        cls.srv = Server(cls.SCRIPT if cls.SCRIPT is not None else DEFAULT_SCRIPT, **cls.SERVER_KW)

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def client(self, **kw):
        return self.srv.client(**kw)

    def ehlo_client(self, name="client.example"):
        c = self.client()
        r = c.ehlo(name)
        self.assertReply(r, 250)
        return c
