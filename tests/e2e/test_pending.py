"""A hook's pending operation outlived by its hook (issue 16, the coroutine
runner): smtp.sleep, a cosocket receive and a DNS query, each ended by
hookTimeout or by the end of its session (TERM, closeTimeout). The hook
fails with 451 4.3.0, or its session is gone; the operation's late end --
the sleep's time passing, a line reaching the socket, the resolver's
answer -- resumes nothing (the hook's code after the call never runs); the
server stays healthy and, under ASan, clean."""

import socket
import struct
import threading
import time

import svcutil
from harness import E2ETest, Lua, Server, script, wait_for

LATE = 2.0  # seconds until each operation would end by itself; hookTimeout is 1

WAIT_ON = r'''
local function wait_on(kind, session)
  record("waiting", {kind = kind, port = session.remotePort})
  local v, err
  if kind == "sleep" then
    v = smtp.sleep(LATE)
  elseif kind == "tcp" then
    local sock = smtp.tcp()
    sock:settimeout(10)
    assert(sock:connect("127.0.0.1", LATE_TCP))
    v, err = sock:receive("*l")
  elseif kind == "dns" then
    v, err = smtp.dns.query("late.test.example", "A")
  end
  record("resumed", {kind = kind, port = session.remotePort, err = err})
end
'''

# A socket kept where every session reaches it (a script's own table).
SHARE = r'''
local SHARED = {}
local function share(kind, session)
  if kind == "owner" then
    SHARED.sock = smtp.tcp()
    assert(SHARED.sock:connect("127.0.0.1", LATE_TCP))
    record("waiting", {kind = kind, port = session.remotePort})
    local v, err = SHARED.sock:receive("*l")
    record("resumed", {kind = kind, v = v, err = err})
  else
    local ok, err = pcall(SHARED.sock.receive, SHARED.sock, "*l")
    record("intruder", {ok = ok, err = tostring(err)})
  end
end
'''

HOOKS = {"onRcptTo": Lua('function(address, session) wait_on(address.address:match("^(.-)@"), session) end')}


class LateLineServer(svcutil.ThreadedServer):
    """Sends one line LATE seconds after the connection, then waits for the
    peer to go."""

    def handle(self, s):
        time.sleep(LATE)
        try:
            s.sendall(b"too late\r\n")
            self.sent = getattr(self, "sent", 0) + 1
            while s.recv(65536):
                pass
        except OSError:
            pass


class LateDNS:
    """A resolver that answers every query LATE seconds after it came, with
    NXDOMAIN."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.answered = 0
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop:
            try:
                q, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Timer(LATE, self._answer, (q, peer)).start()

    def _answer(self, q, peer):
        if self._stop or len(q) < 12:
            return
        qid, flags = struct.unpack("!HH", q[:4])
        flags = 0x8000 | (flags & 0x0100) | 0x0080 | 3  # QR, RD copied, RA, NXDOMAIN
        try:
            self.sock.sendto(struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 0) + q[12:], peer)
            self.answered += 1
        except OSError:
            pass

    def stop(self):
        self._stop = True
        self.thread.join(2)
        self.sock.close()


def late_script(tcp_port, dns_port, hooks=HOOKS, hookTimeout=1, **opts):
    prelude = ("local LATE, LATE_TCP = %s, %d\n" % (LATE, tcp_port)
               + 'smtp.dns.configure{servers = {"127.0.0.1:%d"}, timeout = 10, tries = 1}\n' % dns_port
               + WAIT_ON + SHARE)
    return script(hooks=hooks, prelude=prelude, disableReverseLookup=True, hookTimeout=hookTimeout, **opts)


class PendingTest(E2ETest):
    def setUp(self):
        super().setUp()
        self.tcp = LateLineServer()
        self.dns = LateDNS()
        self.addCleanup(self.dns.stop)
        self.addCleanup(self.tcp.stop)

    def session(self, srv):
        c = srv.client()
        self.assertEqual(c.ehlo().code, 250)
        self.assertEqual(c.cmd("MAIL FROM:<s@example.com>").code, 250)
        return c

    def late_end_passed(self, kind):
        """The operation's own end has come (and gone) by now."""
        if kind == "tcp":
            return wait_for(lambda: getattr(self.tcp, "sent", 0) > 0, LATE + 2)
        if kind == "dns":
            return wait_for(lambda: self.dns.answered > 0, LATE + 2)
        time.sleep(LATE)
        return True


class OutlivedByHookTimeout(PendingTest):
    def check(self, kind):
        with Server(late_script(self.tcp.port, self.dns.port)) as srv:
            with self.session(srv) as c:
                t0 = time.monotonic()
                r = c.cmd("RCPT TO:<%s@late.test>" % kind)
                self.assertEqual((r.code, r.enh), (451, "4.3.0"), r)
                self.assertLess(time.monotonic() - t0, LATE - 0.3, "hookTimeout did not end the wait")
                self.assertTrue(self.late_end_passed(kind), "the late end never came")
                time.sleep(0.3)  # a resume would have run by now
                self.assertEqual(c.cmd("RSET").code, 250, "the session goes on")
                self.assertEqual(c.cmd("NOOP").code, 250)
            self.assertEqual(len(srv.events("waiting")), 1)
            self.assertEqual(srv.events("resumed"), [], "a late end resumed a hook that was over")
            self.assertRegex(srv.log(), r'msg="hook failed".*hook=onRcptTo error=hookTimeout')

    def test_sleep(self):
        self.check("sleep")

    def test_cosocket_receive(self):
        self.check("tcp")

    def test_dns_query(self):
        self.check("dns")


class OutlivedBySession(PendingTest):
    def test_sessions_ended_by_term_while_each_operation_waits(self):
        """TERM with closeTimeout 0.3 s drops the sessions whose hooks wait
        (on a sleep, a socket, a lookup) before hookTimeout: the process
        exits 0 with every pending operation cleaned up."""
        srv = Server(late_script(self.tcp.port, self.dns.port, closeTimeout=0.3))
        with srv:
            clients = []
            for kind in ("sleep", "tcp", "dns") * 2:
                c = self.session(srv)
                self.addCleanup(c.close)
                c.line("RCPT TO:<%s@late.test>" % kind)
                clients.append(c)
            self.assertTrue(wait_for(lambda: len(srv.events("waiting")) == len(clients), 5),
                            "the hooks did not all start waiting")
            srv.stop()  # exit code and sanitizer report checked here
            self.assertEqual(srv.events("resumed"), [], "a hook resumed after TERM")


class SharedSocket(PendingTest):
    def test_a_socket_another_hook_waits_on_is_busy(self):
        """A second session's hook calling a socket that a first session's
        hook waits on gets an error; the first hook's call goes on."""
        hooks = {"onRcptTo": Lua('function(address, session) share(address.address:match("^(.-)@"), session) end')}
        with Server(late_script(self.tcp.port, self.dns.port, hooks=hooks, hookTimeout=10)) as srv:
            with self.session(srv) as owner, self.session(srv) as intruder:
                owner.line("RCPT TO:<owner@late.test>")
                self.assertTrue(wait_for(lambda: srv.events("waiting"), 5), "the owner's hook did not wait")
                self.assertEqual(intruder.cmd("RCPT TO:<intruder@late.test>").code, 250)
                [e] = srv.events("intruder")
                self.assertFalse(e["ok"])
                self.assertIn("socket busy", e["err"])
                self.assertEqual(owner.read_reply().code, 250)
                [r] = srv.events("resumed")
                self.assertEqual(r.get("v"), "too late", r)
