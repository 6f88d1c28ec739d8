"""The asynchronous Lua platform (issue 6): smtp.sleep yields (200
sleeping sessions at once), smtp.tcp cosockets against a real redis-server
(AUTH checked over RESP) and small Python servers (refused, timeout,
receive patterns, echo, TLS with and without verification, against the
system store or a per-call CA, the client
leaving while a hook waits on a socket), and read-only globals with
per-session data on `session`."""

import os
import resource
import selectors
import shutil
import smtplib
import socket
import tempfile
import time

import svcutil
import tlsutil
from harness import E2ETest, Lua, Server, lua_value, script, wait_for
from svcutil import CASES_PRELUDE, case_hook, run_case


def raise_fd_limit(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ------------------------------------------------------------- smtp.sleep

class SleepConcurrency(E2ETest):
    """200 sessions whose onRcptTo sleeps 1 s: they sleep together, not in
    turn (each hook is a coroutine suspended on a libev timer)."""

    N = 200
    LIMIT = 10.0

    def test_200_sessions_sleeping_1s_in_rcpt_finish_within_10s(self):
        limit = raise_fd_limit(4 * self.N + 64)
        self.assertGreaterEqual(limit, 2 * self.N + 64, "fd limit too low for %d clients" % self.N)
        hooks = {"onRcptTo": Lua(r'''function(address, session)
    smtp.sleep(1)
    record("rcpt", {port = session.remotePort})
  end''')}
        with Server(script(hooks=hooks, disableReverseLookup=True, closeTimeout=3), log_level="info") as srv:
            t0 = time.monotonic()
            results = self.run_clients(srv.port, self.N, deadline=t0 + 30)
            dt = time.monotonic() - t0
            bad = {k: v for k, v in results.items() if v["error"]}
            self.assertEqual(bad, {}, "%d of %d sessions failed; first: %r"
                             % (len(bad), self.N, list(bad.values())[:3]))
            self.assertLess(dt, self.LIMIT, "%d sessions sleeping 1 s each took %.2f s" % (self.N, dt))
            rcpt = sorted(v["rcpt_time"] for v in results.values())
            self.assertGreaterEqual(rcpt[0], 0.95, "smtp.sleep(1) returned after %.3f s" % rcpt[0])
            self.assertEqual(len(srv.events("rcpt")), self.N)
            self.assertTrue(srv.alive())

    def run_clients(self, port, n, deadline):
        """n clients on non-blocking sockets in one bounded selector loop:
        greeting, EHLO, MAIL, RCPT (timed), QUIT."""
        script_ = [(None, 220), (b"EHLO c.example\r\n", 250), (b"MAIL FROM:<s@example.com>\r\n", 250),
                   (b"RCPT TO:<r@example.com>\r\n", 250), (b"QUIT\r\n", 221)]
        sel = selectors.DefaultSelector()
        st = {}
        try:
            for i in range(n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                st[s] = {"i": i, "step": 0, "buf": b"", "error": None, "sent_at": None,
                         "rcpt_time": None, "done": False}
                sel.register(s, selectors.EVENT_READ)
            pending = n
            while pending and time.monotonic() < deadline:
                for key, _ in sel.select(timeout=0.5):
                    s = key.fileobj
                    c = st[s]
                    try:
                        d = s.recv(4096)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as e:
                        d, c["error"] = b"", "recv: %r" % e
                    if not d:
                        c["error"] = c["error"] or "closed at step %d; got %r" % (c["step"], c["buf"])
                    c["buf"] += d
                    while not c["error"] and not c["done"]:
                        # one complete reply: lines until "NNN " (not "NNN-")
                        lines = c["buf"].split(b"\r\n")
                        end = next((k for k, l in enumerate(lines[:-1]) if l[3:4] == b" "), None)
                        if end is None:
                            break
                        reply = lines[end]
                        c["buf"] = b"\r\n".join(lines[end + 1:])
                        want = script_[c["step"]][1]
                        if not reply.startswith(str(want).encode()):
                            c["error"] = "step %d: got %r, expected %d" % (c["step"], reply, want)
                            break
                        if script_[c["step"]][0] == script_[3][0]:
                            c["rcpt_time"] = time.monotonic() - c["sent_at"]
                        c["step"] += 1
                        if c["step"] == len(script_):
                            c["done"] = True
                            break
                        c["sent_at"] = time.monotonic()
                        s.sendall(script_[c["step"]][0])
                    if c["error"] or c["done"]:
                        sel.unregister(s)
                        s.close()
                        pending -= 1
            for s, c in st.items():
                if not c["done"] and not c["error"]:
                    c["error"] = "unfinished at step %d after the deadline" % c["step"]
            return {c["i"]: c for c in st.values()}
        finally:
            for s in st:
                try:
                    s.close()
                except OSError:
                    pass
            sel.close()


# --------------------------------------------------------------- smtp.tcp

TCP_CASES = r'''
local P = PORTS
CASES.refused = function()
  local sock = smtp.tcp()
  sock:settimeout(3)
  return R(sock:connect("127.0.0.1", P.closed))
end
CASES.receive_timeout = function()
  local sock = smtp.tcp()
  sock:settimeout(0.5)
  local ok, cerr = sock:connect("127.0.0.1", P.silent)
  local t0 = smtp.now()
  local r = R(sock:receive("*l"))
  r.connected = ok
  r.connect_err = cerr
  r.waited = smtp.now() - t0
  sock:close()
  return r
end
CASES.timeout_then_reuse = function()
  local sock = smtp.tcp()
  sock:settimeout(0.3)
  assert(sock:connect("127.0.0.1", P.echo))
  local first = R(sock:receive("*l"))
  local sent = R(sock:send("after timeout\r\n"))
  local second = R(sock:receive("*l"))
  sock:close()
  return {first = first, sent = sent, second = second}
end
CASES.patterns = function()
  local sock = smtp.tcp()
  sock:settimeout(3)
  assert(sock:connect("127.0.0.1", P.scripted))
  local r = {}
  r.line1 = R(sock:receive("*l"))
  r.line2 = R(sock:receive("*l"))
  r.empty = R(sock:receive("*l"))
  r.default = R(sock:receive())
  r.four = R(sock:receive(4))
  r.zero = R(sock:receive(0))
  r.all = R(sock:receive("*a"))
  r.after_all = R(sock:receive("*l"))
  r.all_again = R(sock:receive("*a"))
  r.close = R(sock:close())
  r.close_again = R(sock:close())
  r.receive_closed = R(sock:receive("*l"))
  r.send_closed = R(sock:send("x"))
  return r
end
CASES.short_read = function()
  local sock = smtp.tcp()
  sock:settimeout(3)
  assert(sock:connect("127.0.0.1", P.short))
  local r = R(sock:receive(100))
  sock:close()
  return r
end
CASES.unterminated_line = function()
  local sock = smtp.tcp()
  sock:settimeout(3)
  assert(sock:connect("127.0.0.1", P.short))
  local r = R(sock:receive("*l"))
  sock:close()
  return r
end
CASES.setoption = function()
  local sock = smtp.tcp()
  sock:settimeout(5)
  local r = {unconnected = R(sock:setoption("quickack", true))}
  assert(sock:connect("127.0.0.1", P.echo))
  r.bad = R(sock:setoption("no-such-option", true))
  r.bad_size = R(pcall(sock.setoption, sock, "sndbuf", 0))
  r.keepalive = R(sock:setoption("keepalive", true))
  r.reuseaddr = R(sock:setoption("reuseaddr", 1))
  r.nodelay = R(sock:setoption("tcp-nodelay", true))
  r.sndbuf = R(sock:setoption("sndbuf", 65536))
  r.rcvbuf = R(sock:setoption("rcvbuf", 65536))
  r.quickack = R(sock:setoption("quickack", true))
  -- each read re-arms quickack: the conversation goes on as before
  r.lines = {}
  for i = 1, 5 do
    sock:send("line " .. i .. "\r\n")
    r.lines[i] = sock:receive("*l")
  end
  r.off = R(sock:setoption("quickack", false))
  sock:send("after\r\n")
  r.after = sock:receive("*l")
  sock:close()
  r.closed = R(sock:setoption("tcp-nodelay", true))
  local u = smtp.tcp()
  u:settimeout(5)
  r.unix_connect = R(u:connect("unix:" .. UNIX_PATH))
  r.unix = R(u:setoption("quickack", true))
  u:close()
  return r
end
CASES.echo = function()
  local sock = smtp.tcp()
  sock:settimeout(5)
  local r = {connect = R(sock:connect("localhost", P.echo))}
  r.send = R(sock:send("hello cosocket\r\n"))
  r.line = R(sock:receive("*l"))
  local big = {}
  for i = 1, 200 * 1024 / 16 do big[i] = string.format("%015d\n", i) end
  big = table.concat(big)
  r.big_len = #big
  r.big_send = R(sock:send(big))
  local back = sock:receive(#big)
  r.big_same = back == big
  r.big_back_len = back and #back or -1
  -- a table whose pieces outgrow Lua's string buffer (a BDAT line and its chunk)
  local tbl = {"BDAT ", #big, "\r\n", {big, 7}, "!"}
  local flat = "BDAT " .. #big .. "\r\n" .. big .. "7!"
  r.table_send = R(sock:send(tbl))
  r.table_len = #flat
  back = sock:receive(#flat)
  r.table_same = back == flat
  sock:close()
  return r
end
CASES.tls_noverify = function()
  local sock = smtp.tcp()
  sock:settimeout(5)
  assert(sock:connect("127.0.0.1", P.tls))
  local r = {handshake = R(sock:sslhandshake("localhost", false))}
  r.send = R(sock:send("ping over tls\r\n"))
  r.line = R(sock:receive("*l"))
  r.again = R(sock:sslhandshake("localhost", false))
  sock:close()
  return r
end
CASES.tls_verify = function()
  local sock = smtp.tcp()
  sock:settimeout(5)
  assert(sock:connect("127.0.0.1", P.tls))
  local r = R(sock:sslhandshake("localhost", true))
  sock:close()
  return r
end
CASES.tls_to_plain = function()
  local sock = smtp.tcp()
  sock:settimeout(2)
  assert(sock:connect("127.0.0.1", P.scripted))
  local r = R(sock:sslhandshake("localhost", false))
  sock:close()
  return r
end
CASES.hang = function(session)
  -- the client goes away while this waits on a socket
  local sock = smtp.tcp()
  sock:settimeout(3)
  assert(sock:connect("127.0.0.1", P.silent))
  record("hang_waiting", {port = session.remotePort})
  return R(sock:receive("*l"))
end
CASES.stuck = function()
  local sock = smtp.tcp()
  sock:settimeout(10)
  assert(sock:connect("127.0.0.1", P.silent))
  return R(sock:receive("*l"))
end
CASES.gc_open = function()
  -- an open socket never closed by the script: the GC closes it
  local sock = smtp.tcp()
  sock:settimeout(2)
  assert(sock:connect("127.0.0.1", P.echo))
  return {ok = true}
end
'''

TLS_VERIFY_CASES = r"""
-- one handshake on a fresh connection; the line echoed back when it worked
local function handshake(...)
  local sock = smtp.tcp()
  sock:settimeout(5)
  assert(sock:connect("127.0.0.1", P.ca_tls))
  local r = R(sock:sslhandshake(...))
  if r.v then
    sock:send("verified\r\n")
    r.line = sock:receive("*l")
  end
  sock:close()
  return r
end
CASES.system_store = function() return handshake("localhost", true) end
CASES.ca_path = function() return handshake("localhost", true, {ca = CA_PATH}) end
CASES.ca_pem = function() return handshake("localhost", true, {ca = CA_PEM}) end
CASES.ca_list = function() return handshake("localhost", true, {ca = {OTHER_PATH, CA_PEM}}) end
CASES.wrong_ca = function() return handshake("localhost", true, {ca = OTHER_PATH}) end
CASES.wrong_name = function() return handshake("mail.example.com", true, {ca = CA_PATH}) end
CASES.no_verify_with_ca = function() return handshake("localhost", false, {ca = OTHER_PATH}) end
CASES.openresty_order = function() return handshake(nil, "localhost", true, false, {ca = CA_PATH}) end
CASES.openresty_wrong_name = function() return handshake(nil, "mail.example.com", true, nil, {ca = CA_PATH}) end
CASES.openresty_no_verify = function() return handshake(nil, "localhost", false) end
CASES.bad_ca = function()
  local sock = smtp.tcp()
  sock:settimeout(5)
  assert(sock:connect("127.0.0.1", P.ca_tls))
  local r = {missing = R(sock:sslhandshake("localhost", true, {ca = "/nonexistent/ca.pem"})),
             empty = R(sock:sslhandshake("localhost", true, {ca = {}})),
             number = R(sock:sslhandshake("localhost", true, {ca = 42}))}
  r.then_right = R(sock:sslhandshake("localhost", true, {ca = CA_PATH}))
  sock:close()
  return r
end
"""

class UnixListener:
    """A unix socket that listens: a connect completes in its backlog."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="luasmtpd-unix-")
        self.path = os.path.join(self.dir, "s")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)

    def stop(self):
        self.sock.close()
        shutil.rmtree(self.dir, True)


SCRIPTED_DATA = b"first line\r\nsecond line\n\r\ndefault pattern\r\nABCDEFGHIJ" + b"the rest" * 2000


class TcpCosocket(svcutil.CaseSessions, svcutil.Fixtures, E2ETest):
    """smtp.tcp against small Python servers: every call returns data or
    nil, err; the server stays healthy (and ASan clean) throughout."""

    @classmethod
    def start_fixtures(cls):
        cert, key = svcutil.self_signed()
        cls.echo = cls.use(svcutil.EchoServer())
        cls.silent = cls.use(svcutil.SilentServer())
        cls.scripted = cls.use(svcutil.ScriptedServer(SCRIPTED_DATA))
        cls.short = cls.use(svcutil.ScriptedServer(b"only 20 bytes here.."))
        cls.tls = cls.use(svcutil.TLSServer(cert, key))
        pki = tlsutil.certs()  # a server certificate signed by the test CA
        cls.unix = cls.use(UnixListener())
        cls.ca_tls = cls.use(svcutil.TLSServer(pki.crt("localhost"), pki.key("localhost")))
        ports = {"closed": svcutil.closed_port(), "echo": cls.echo.port, "silent": cls.silent.port,
                 "scripted": cls.scripted.port, "short": cls.short.port, "tls": cls.tls.port,
                 "ca_tls": cls.ca_tls.port}
        prelude = (CASES_PRELUDE + "local PORTS = %s\n" % _lua_table(ports)
                   + "local UNIX_PATH = %s\n" % lua_value(cls.unix.path) + TCP_CASES
                   + "local CA_PATH = %s\n" % lua_value(pki.ca)
                   + "local CA_PEM = %s\n" % lua_value(tlsutil.read(pki.ca))
                   + "local OTHER_PATH = %s\n" % lua_value(pki.self_crt) + TLS_VERIFY_CASES)
        hooks = {"onRcptTo": case_hook(),
                 "onClose": Lua('function(session) record("close", {port = session.remotePort}) end')}
        cls.srv = cls.use(Server(script(hooks=hooks, prelude=prelude, disableReverseLookup=True, hookTimeout=2,
                                        closeTimeout=3)))

    def test_connect_refused(self):
        r = self.case("refused")
        self.assertIsNone(r.get("v"))
        self.assertEqual(r.get("err"), "connection refused", r)
        self.assertLess(r["elapsed"], 2)

    def test_receive_timeout(self):
        r = self.case("receive_timeout")
        self.assertTrue(r.get("connected"), r)
        self.assertIsNone(r.get("v"), r)
        self.assertEqual(r.get("err"), "timeout", r)
        self.assertGreaterEqual(r["waited"], 0.45, r)
        self.assertLess(r["waited"], 2.0, r)

    def test_socket_usable_after_a_timeout(self):
        r = self.case("timeout_then_reuse")
        self.assertEqual(r["first"].get("err"), "timeout", r)
        self.assertEqual(r["sent"].get("v"), len("after timeout\r\n"), r)
        self.assertEqual(r["second"].get("v"), "after timeout", r)

    def test_receive_patterns(self):
        r = self.case("patterns")
        self.assertEqual(r["line1"].get("v"), "first line", "*l strips CRLF")
        self.assertEqual(r["line2"].get("v"), "second line", "*l strips a bare LF")
        self.assertEqual(r["empty"].get("v"), "", "an empty line")
        self.assertEqual(r["default"].get("v"), "default pattern", "receive() reads a line")
        self.assertEqual(r["four"].get("v"), "ABCD", "receive(4)")
        self.assertEqual(r["zero"].get("v"), "", "receive(0)")
        self.assertEqual(r["all"].get("v"), "EFGHIJ" + "the rest" * 2000, "*a reads to the peer's close")
        self.assertIsNone(r["after_all"].get("v"))
        self.assertEqual(r["after_all"].get("err"), "closed")
        self.assertEqual(r["all_again"].get("v"), "", "*a at the end: an empty string")
        self.assertEqual(r["close"].get("v"), True)
        self.assertIsNone(r["close_again"].get("v"))
        self.assertEqual(r["close_again"].get("err"), "closed")
        self.assertEqual(r["receive_closed"].get("err"), "closed")
        self.assertEqual(r["send_closed"].get("err"), "closed")

    def test_receive_cut_short_by_close(self):
        """nil, "closed" and the partial data, as in OpenResty."""
        r = self.case("short_read")
        self.assertIsNone(r.get("v"), r)
        self.assertEqual(r.get("err"), "closed", r)
        self.assertEqual(r.get("extra"), "only 20 bytes here..", "receive(100): the partial data")
        r = self.case("unterminated_line")
        self.assertIsNone(r.get("v"), r)
        self.assertEqual(r.get("err"), "closed", r)
        self.assertEqual(r.get("extra"), "only 20 bytes here..", "*l: the partial line")

    def test_setoption(self):
        """lua-nginx-module's tcpsock:setoption options plus "quickack":
        true, or nil, err (a socket option the kernel refuses passes on
        its own message)."""
        r = self.case("setoption")
        self.assertEqual(r["unconnected"].get("err"), "closed", r)
        self.assertIsNone(r["bad"].get("v"), r)
        self.assertEqual(r["bad"].get("err"), "unsupported option", r)
        self.assertEqual(r["bad_size"].get("v"), False, "a size of 0 is an argument error")
        for name in ("keepalive", "reuseaddr", "nodelay", "sndbuf", "rcvbuf", "quickack", "off"):
            self.assertEqual(r[name].get("v"), True, "%s: %r" % (name, r[name]))
        self.assertEqual(r["lines"], ["line %d" % i for i in range(1, 6)])
        self.assertEqual(r["after"], "after")
        self.assertEqual(r["closed"].get("err"), "closed", r)
        self.assertEqual(r["unix_connect"].get("v"), True, r)
        self.assertIsNone(r["unix"].get("v"), "a unix socket has no TCP options")
        self.assertTrue(r["unix"].get("err"), r)
        self.assertTrue(self.srv.alive())

    def test_echo_send_receive(self):
        r = self.case("echo")
        self.assertEqual(r["connect"].get("v"), True, "connect to \"localhost\"")
        self.assertEqual(r["send"].get("v"), len("hello cosocket\r\n"))
        self.assertEqual(r["line"].get("v"), "hello cosocket")
        self.assertEqual(r["big_send"].get("v"), r["big_len"], "send returns the byte count")
        self.assertTrue(r["big_same"], "200 KiB echoed back (got %d bytes)" % r["big_back_len"])
        self.assertEqual(r["table_send"].get("v"), r["table_len"], "a table is sent whole")
        self.assertTrue(r["table_same"], "a table with a 200 KiB piece arrives in order, nothing lost")

    def test_sslhandshake_without_verification(self):
        before = self.tls.handshakes
        r = self.case("tls_noverify")
        self.assertEqual(r["handshake"].get("v"), True, r)
        self.assertEqual(r["send"].get("v"), len("ping over tls\r\n"))
        self.assertEqual(r["line"].get("v"), "TLS:ping over tls")
        self.assertIsNone(r["again"].get("v"), "a second handshake on the same socket")
        self.assertTrue(r["again"].get("err"))
        self.assertEqual(self.tls.handshakes, before + 1)

    def test_sslhandshake_verify_fails_on_self_signed(self):
        r = self.case("tls_verify")
        self.assertIsNone(r.get("v"), r)
        self.assertRegex(r.get("err") or "", "(?i)certificate|verify", r)
        self.assertTrue(self.srv.alive())

    def assertVerified(self, r, result=True):
        self.assertEqual(r.get("v"), result, r)
        self.assertEqual(r.get("line"), "TLS:verified", r)

    def assertNotVerified(self, r, reason):
        self.assertIsNone(r.get("v"), r)
        self.assertRegex(r.get("err") or "", "(?i)^certificate verify failed: .*" + reason, r)

    def test_sslhandshake_system_store_does_not_know_the_test_ca(self):
        self.assertNotVerified(self.case("system_store"), "issuer")

    def test_sslhandshake_per_call_ca_as_path_pem_or_list(self):
        for case in ("ca_path", "ca_pem", "ca_list"):
            with self.subTest(case=case):
                self.assertVerified(self.case(case))

    def test_sslhandshake_wrong_ca_fails(self):
        self.assertNotVerified(self.case("wrong_ca"), "issuer")

    def test_sslhandshake_name_not_in_the_certificate_fails(self):
        self.assertNotVerified(self.case("wrong_name"), "hostname mismatch")

    def test_sslhandshake_ca_is_not_used_without_verify(self):
        self.assertVerified(self.case("no_verify_with_ca"))

    def test_sslhandshake_openresty_argument_order(self):
        # OpenResty's order returns the TLS session, as lua-nginx-module does
        self.assertVerified(self.case("openresty_order"), "<userdata>")
        self.assertNotVerified(self.case("openresty_wrong_name"), "hostname mismatch")
        self.assertVerified(self.case("openresty_no_verify"), "<userdata>")

    def test_sslhandshake_unusable_ca_is_an_error_before_the_handshake(self):
        # The server thread counts an earlier test's failed handshake when
        # it gets to it: take the count once it has been still for a while.
        before = self.settled_failed_handshakes()
        r = self.case("bad_ca")
        self.assertIsNone(r["missing"].get("v"), r)
        self.assertRegex(r["missing"].get("err") or "", "^option 'ca': cannot open /nonexistent/ca.pem", r)
        self.assertIsNone(r["empty"].get("v"), r)
        self.assertRegex(r["empty"].get("err") or "", "^option 'ca': ", r)
        self.assertIsNone(r["number"].get("v"), r)
        self.assertRegex(r["number"].get("err") or "", "^option 'ca': expected a string", r)
        self.assertEqual(r["then_right"].get("v"), True, "the socket is still usable: %r" % r)
        self.assertEqual(self.settled_failed_handshakes(), before)

    def settled_failed_handshakes(self, still=0.5, limit=5.0):
        deadline = time.monotonic() + limit
        n = self.ca_tls.failed_handshakes
        while time.monotonic() < deadline:
            time.sleep(still)
            if self.ca_tls.failed_handshakes == n:
                break
            n = self.ca_tls.failed_handshakes
        return n

    def test_sslhandshake_against_plain_server(self):
        r = self.case("tls_to_plain")
        self.assertIsNone(r.get("v"), r)
        self.assertTrue(r.get("err"), r)
        self.assertLess(r["elapsed"], 3)

    def test_client_disconnects_during_cosocket_call(self):
        """The client resets while its hook waits on a socket: the hook may
        finish its call (the core reads the client again only afterwards),
        then the session ends, onClose runs, the socket is closed."""
        closed_before = self.silent.closed_by_peer
        c = self.session()
        c.line("RCPT TO:<hang@cases.test>")
        self.assertTrue(wait_for(lambda: [e for e in self.srv.events("hang_waiting")
                                          if e["port"] == c.local_port], 3), "the hook did not start")
        c.rst()
        self.assertTrue(wait_for(lambda: [e for e in self.srv.events("close") if e["port"] == c.local_port], 6),
                        "onClose not called after the client left")
        self.assertTrue(wait_for(lambda: self.silent.closed_by_peer > closed_before, 2),
                        "the hook's socket stayed open after its session ended")
        with self.session() as c2:
            r = run_case(self, c2, "echo")
            self.assertEqual(r["line"].get("v"), "hello cosocket")
        self.assertTrue(self.srv.alive())

    def test_hook_timeout_cancels_a_cosocket_call(self):
        """hookTimeout (2 s here) ends a hook stuck in receive (timeout 10 s):
        451 4.3.0, the socket is closed at once, the session goes on."""
        closed_before = self.silent.closed_by_peer
        with self.session() as c:
            t0 = time.monotonic()
            r = c.cmd("RCPT TO:<stuck@cases.test>")
            dt = time.monotonic() - t0
            self.assertEqual((r.code, r.enh), (451, "4.3.0"), r)
            self.assertGreater(dt, 1.8)
            self.assertLess(dt, 4.0)
            self.assertTrue(wait_for(lambda: self.silent.closed_by_peer > closed_before, 2),
                            "the cancelled call's socket stayed open")
            self.assertEqual(run_case(self, c, "echo")["line"].get("v"), "hello cosocket")
        self.assertRegex(self.srv.log(), r'msg="hook failed".*hook=onRcptTo error=hookTimeout')

    def test_many_disconnects_during_cosocket_calls(self):
        clients = []
        for _ in range(20):
            c = self.session()
            c.line("RCPT TO:<hang@cases.test>")
            clients.append(c)
        self.assertTrue(wait_for(lambda: len({e["port"] for e in self.srv.events("hang_waiting")}
                                             & {c.local_port for c in clients}) == 20, 5))
        for i, c in enumerate(clients):
            c.rst() if i % 2 else c.close()
        with self.session() as c2:
            self.assertEqual(run_case(self, c2, "echo")["line"].get("v"), "hello cosocket")
        self.assertTrue(self.srv.alive())

    def test_unclosed_socket_is_collected(self):
        for _ in range(5):
            r = self.case("gc_open")
            self.assertTrue(r.get("ok"))
        self.assertTrue(self.srv.alive())

    def test_concurrent_cosocket_sessions(self):
        import threading
        errors = []

        def one(i):
            try:
                with self.srv.client() as c:
                    c.ehlo()
                    c.cmd("MAIL FROM:<s@example.com>")
                    r = c.cmd("RCPT TO:<echo@cases.test>")
                    assert r.code == 250, r
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
        ts = [threading.Thread(target=one, args=(i,)) for i in range(20)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        self.assertEqual(errors, [])


def _lua_table(d):
    return "{" + ", ".join("%s = %d" % (k, v) for k, v in d.items()) + "}"


# ------------------------------------------------------------ redis + AUTH

REDIS_AUTH = r'''
-- A minimal RESP client over smtp.tcp: one connection per call.
local function redis(port, ...)
  local args = {...}
  local sock = smtp.tcp()
  sock:settimeout(2)
  local ok, err = sock:connect("127.0.0.1", port)
  if not ok then return nil, "connect: " .. err end
  local out = {"*" .. #args .. "\r\n"}
  for _, a in ipairs(args) do out[#out + 1] = "$" .. #a .. "\r\n" .. a .. "\r\n" end
  local sent, serr = sock:send(table.concat(out))
  if not sent then sock:close() return nil, "send: " .. serr end
  local line, rerr = sock:receive("*l")
  if not line then sock:close() return nil, "receive: " .. rerr end
  local t, rest = line:sub(1, 1), line:sub(2)
  local value
  if t == "$" then
    local n = tonumber(rest)
    if n >= 0 then
      local data, derr = sock:receive(n + 2)
      if not data then sock:close() return nil, "receive: " .. derr end
      value = data:sub(1, n)
    else
      value = false -- no such key
    end
  elseif t == "+" or t == ":" then
    value = rest
  else
    sock:close()
    return nil, "redis: " .. rest
  end
  sock:close()
  return value
end
'''

REDIS_HOOKS = {
    "onAuth": Lua(r'''function(auth, session)
    local port = REDIS_PORT
    if auth.username:match("^down%-") then port = DOWN_PORT end
    local stored, err = redis(port, "HGET", "smtp:users", auth.username)
    record("auth", {username = auth.username, found = stored and true or false, err = err,
                    port = session.remotePort})
    if stored == nil then
      smtp.log.warn("user database unavailable", {error = err})
      return nil, smtp.reject(454, "4.7.0 Temporary authentication failure")
    end
    if stored == false or stored ~= auth.password then
      return nil, "5.7.8 Invalid username or password"
    end
    return {user = auth.username}
  end'''),
    "onMailFrom": Lua(r'''function(address, session)
    record("mail", {user = session.user, port = session.remotePort})
  end'''),
}

USERS = {"alice@example.org": "s3cret: with spaces $and* stars", "bob@example.org": "hunter2"}


class RedisAuth(svcutil.Fixtures, E2ETest):
    """onAuth looks the password up in a real redis-server over smtp.tcp
    (RESP), AUTH PLAIN from smtplib: right password 235, wrong 535, no
    such user 535, redis unreachable 454."""

    @classmethod
    def start_fixtures(cls):
        cls.redis = cls.use(svcutil.Redis())
        for u, p in USERS.items():
            cls.redis.command("HSET", "smtp:users", u, p)
        prelude = (REDIS_AUTH + "local REDIS_PORT = %d\nlocal DOWN_PORT = %d\n"
                   % (cls.redis.port, svcutil.closed_port()))
        # many wrong passwords from 127.0.0.1 on purpose: no per-address AUTH limit
        cls.srv = cls.use(Server(script(hooks=REDIS_HOOKS, prelude=prelude, authOptional=False,
                                        allowInsecureAuth=True, disableReverseLookup=True, closeTimeout=3,
                                        maxAuthFailuresPerIp=False)))

    def smtp(self):
        s = smtplib.SMTP("127.0.0.1", self.srv.port, timeout=10)
        self.addCleanup(s.close)
        s.ehlo("client.example")
        self.assertIn("PLAIN", s.esmtp_features.get("auth", ""))
        return s

    def plain(self, s, user, password):
        s.user, s.password = user, password
        try:
            return s.auth("PLAIN", s.auth_plain)
        except smtplib.SMTPAuthenticationError as e:
            return e.smtp_code, e.smtp_error

    def test_right_password(self):
        s = self.smtp()
        code, _ = self.plain(s, "alice@example.org", USERS["alice@example.org"])
        self.assertEqual(code, 235)
        self.assertEqual(s.mail("alice@example.org")[0], 250)
        port = s.sock.getsockname()[1]
        m = wait_for(lambda: [e for e in self.srv.events("mail") if e["port"] == port], 3)
        self.assertEqual(m[0]["user"], "alice@example.org")

    def test_wrong_password(self):
        s = self.smtp()
        code, text = self.plain(s, "bob@example.org", "hunter3")
        self.assertEqual(code, 535, text)
        self.assertTrue(text.startswith(b"5.7.8"), text)
        self.assertEqual(s.mail("bob@example.org")[0], 530, "MAIL still needs AUTH")
        # the session goes on: the right password works next
        self.assertEqual(self.plain(s, "bob@example.org", "hunter2")[0], 235)

    def test_unknown_user(self):
        s = self.smtp()
        code, _ = self.plain(s, "mallory@example.org", "hunter2")
        self.assertEqual(code, 535)
        port = s.sock.getsockname()[1]
        a = wait_for(lambda: [e for e in self.srv.events("auth") if e["port"] == port], 3)
        self.assertEqual(a[0]["found"], False)
        self.assertIsNone(a[0].get("err"))

    def test_redis_unreachable_is_a_temporary_failure(self):
        s = self.smtp()
        code, text = self.plain(s, "down-alice@example.org", "x")
        self.assertEqual(code, 454, text)
        self.assertIn("user database unavailable", self.srv.log())
        self.assertEqual(self.plain(s, "alice@example.org", USERS["alice@example.org"])[0], 235)

    def test_password_changed_in_redis_is_seen_at_once(self):
        svcutil.redis_command(self.redis.port, "HSET", "smtp:users", "carol@example.org", "old")
        s = self.smtp()
        self.assertEqual(self.plain(s, "carol@example.org", "old")[0], 235)
        svcutil.redis_command(self.redis.port, "HSET", "smtp:users", "carol@example.org", "new")
        s = self.smtp()
        self.assertEqual(self.plain(s, "carol@example.org", "old")[0], 535)
        s = self.smtp()
        self.assertEqual(self.plain(s, "carol@example.org", "new")[0], 235)

    def test_parallel_logins(self):
        import threading
        errors = []

        def one(i):
            try:
                s = smtplib.SMTP("127.0.0.1", self.srv.port, timeout=10)
                try:
                    s.ehlo()
                    good = i % 2 == 0
                    code = self.plain(s, "alice@example.org",
                                      USERS["alice@example.org"] if good else "nope")[0]
                    if code != (235 if good else 535):
                        errors.append("%d: %s" % (i, code))
                finally:
                    s.close()
            except Exception as e:  # noqa: BLE001
                errors.append("%d: %r" % (i, e))
        ts = [threading.Thread(target=one, args=(i,)) for i in range(30)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        self.assertEqual(errors, [])
        self.assertTrue(self.redis.alive())


# --------------------------------------------------------- read-only globals

GLOBALS_PRELUDE = r'''
POLICY_NAME = "strict"          -- a global defined at the top level
LIMITS = {maxPerSession = 3}
hits = 0                         -- a top-level global a hook might try to bump
'''

GLOBALS_HOOKS = {
    "onMailFrom": Lua(r'''function(address, session)
    local a = address.address
    if a:match("^read@") then
      record("read", {port = session.remotePort, name = POLICY_NAME, max = LIMITS.maxPerSession})
      return
    end
    if a:match("^newglobal@") then leaked = session.id end
    if a:match("^oldglobal@") then hits = hits + 1 end
    if a:match("^tag%-") then
      session.tag = a
      session.count = (session.count or 0) + 1
    end
    record("mail", {port = session.remotePort, tag = session.tag, count = session.count,
                    hits = hits, leaked = rawget(_G, "leaked")})
  end'''),
}


class Globals(E2ETest):
    """Globals are read-only while serving; session data stays per session."""

    @classmethod
    def setUpClass(cls):
        cls.srv = Server(script(hooks=GLOBALS_HOOKS, prelude=GLOBALS_PRELUDE, disableReverseLookup=True,
                                closeTimeout=3))

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def session(self):
        c = self.srv.client()
        self.assertEqual(c.ehlo().code, 250)
        return c

    def mine(self, kind, c):
        return [e for e in self.srv.events(kind) if e["port"] == c.local_port]

    def test_top_level_globals_are_readable_in_hooks(self):
        with self.session() as c:
            self.assertEqual(c.cmd("MAIL FROM:<read@example.com>").code, 250)
        r = self.mine("read", c)
        self.assertEqual(r, [{"port": c.local_port, "name": "strict", "max": 3}])

    def test_assigning_a_new_global_in_a_hook_fails(self):
        with self.session() as c:
            r = c.cmd("MAIL FROM:<newglobal@example.com>")
            self.assertEqual((r.code, r.enh), (451, "4.3.0"), r)
            self.assertEqual(c.cmd("MAIL FROM:<tag-after@example.com>").code, 250, "the session goes on")
        log = self.srv.log()
        line = [l for l in log.splitlines() if "hook failed" in l and "assignment to global" in l]
        self.assertTrue(line, "no 'hook failed' log line naming the global assignment")
        self.assertIn("'leaked'", line[-1])
        self.assertIn("while serving", line[-1])
        with self.session() as c:
            self.assertEqual(c.cmd("MAIL FROM:<tag-x@example.com>").code, 250)
        self.assertIsNone(self.mine("mail", c)[0].get("leaked"), "the global was set anyway")

    def test_assigning_an_existing_global_in_a_hook_fails(self):
        """`hits = hits + 1` on a global the script defined: the same rule
        (read-only while serving), else state leaks between sessions."""
        with self.session() as c:
            r = c.cmd("MAIL FROM:<oldglobal@example.com>")
            self.assertEqual((r.code, r.enh), (451, "4.3.0"),
                             "a hook assigned the top-level global 'hits' without an error: %r" % r)
        with self.session() as c:
            self.assertEqual(c.cmd("MAIL FROM:<tag-y@example.com>").code, 250)
        self.assertEqual(self.mine("mail", c)[0]["hits"], 0, "a global's value leaked into another session")

    def test_session_data_is_per_session(self):
        a, b = self.session(), self.session()
        try:
            for _ in range(2):
                self.assertEqual(a.cmd("MAIL FROM:<tag-a@example.com>").code, 250)
                self.assertEqual(a.cmd("RSET").code, 250)
            self.assertEqual(b.cmd("MAIL FROM:<tag-b@example.com>").code, 250)
            self.assertEqual(b.cmd("RSET").code, 250)
            self.assertEqual(a.cmd("MAIL FROM:<plain@example.com>").code, 250)
            self.assertEqual(b.cmd("MAIL FROM:<plain@example.com>").code, 250)
        finally:
            a.close()
            b.close()
        ma, mb = self.mine("mail", a), self.mine("mail", b)
        self.assertEqual([(m["tag"], m["count"]) for m in ma],
                         [("tag-a@example.com", 1), ("tag-a@example.com", 2), ("tag-a@example.com", 2)])
        self.assertEqual([(m["tag"], m["count"]) for m in mb],
                         [("tag-b@example.com", 1), ("tag-b@example.com", 1)])
        with self.session() as c:
            self.assertEqual(c.cmd("MAIL FROM:<plain@example.com>").code, 250)
        m = self.mine("mail", c)[0]
        self.assertIsNone(m.get("tag"), "session data leaked into a new session")
        self.assertIsNone(m.get("count"))
