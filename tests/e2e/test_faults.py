"""Faults (issue 8 item 6): clients that vanish mid-DATA, mid-BDAT (after
a few chunks), mid-TLS-handshake and while a hook waits on a cosocket
that never answers, and a mail store that runs out of space.

After each vanish the server is still up, later clients are served, nothing
of the vanished message is in new/, tmp/ is empty (stream:save writes under
tmp/ and unlinks on abort) and the server's open fds are back to what they
were; the ASan build (LUASMTPD_BIN=build/luasmtpd-asan) must show no report
(the harness checks stderr when the server stops).

The full-disk test mounts a 256 KiB tmpfs as the Maildir (root and a
working `mount` are needed; without them the test fails and says so):
a message bigger than the free space gets 452 4.3.1, nothing is in new/
or tmp/, the session goes on, and once space is freed a small message in
the same session gets 250.
"""

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time

from harness import DEFAULT_SCRIPT, PRELUDE, E2ETest, Server, default_with, lua_value, wait_for
from tlsutil import DEV_CERT, DEV_KEY, client_context, half_client_hello, starttls, tls_client


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def body_with(marker, size):
    """A message of about `size` bytes naming `marker` in its subject and
    its first body line."""
    head = b"Subject: %s\r\nMessage-ID: <%s@faults.test>\r\n\r\n%s\r\n" % (marker, marker, marker)
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-fill\r\n"
    n = max(0, (size - len(head)) // len(line))
    return head + line * n


def bdat(data, last=False):
    return b"BDAT %d%s\r\n" % (len(data), b" LAST" if last else b"") + data


class FaultTest(E2ETest):
    """Helpers shared by the fault tests."""

    def files_with(self, paths, marker):
        out = []
        for p in paths:
            try:
                with open(p, "rb") as f:
                    if marker in f.read():
                        out.append(p)
            except FileNotFoundError:
                pass
        return out

    def baseline(self, srv):
        """One full session (so that whatever is made lazily exists), then
        the server's open fd count."""
        self.deliver(srv, b"warmup-" + os.urandom(4).hex().encode())
        time.sleep(0.2)
        return fd_count(srv.proc.pid)

    def deliver(self, srv, marker, tls=False, size=2000):
        with srv.client() as c:
            self.assertReply(c.ehlo(), 250)
            if tls:
                starttls(c, client_context(ca=None))
                self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("MAIL FROM:<good@example.com>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<rcpt@example.com>"), 250, "2.1.5")
            self.assertReply(c.cmd("DATA"), 354)
            c.send(body_with(marker, size) + b".\r\n")
            self.assertReply(c.read_reply(), 250, "2.6.0", "a message after the faults")
            self.assertReply(c.cmd("QUIT"), 221)
        self.assertEqual(len(self.files_with(srv.maildir_new(), marker)), 1,
                         "the good message %r is not stored exactly once" % marker)

    def assert_clean(self, srv, vanished, base_fds, maildir=None):
        """The server is alive, serves, tmp/ is empty, nothing of the
        vanished markers is in new/, the open fds are back to base_fds."""
        md = maildir or srv.maildir
        self.assertTrue(srv.alive(), "the server died")
        tmp = os.path.join(md, "tmp")
        self.assertTrue(wait_for(lambda: os.listdir(tmp) == [], 5), "tmp/ not emptied: %r" % os.listdir(tmp))
        new = [os.path.join(md, "new", n) for n in os.listdir(os.path.join(md, "new"))]
        for m in vanished:
            self.assertEqual(self.files_with(new, m), [], "a vanished message (%r) is in new/" % m)
        pid = srv.proc.pid
        self.assertTrue(wait_for(lambda: fd_count(pid) <= base_fds, 5),
                        "server fds %d, %d before the faults: %r"
                        % (fd_count(pid), base_fds, sorted(os.listdir("/proc/%d/fd" % pid), key=int)))

    def open_transaction(self, srv, tls=False):
        c = srv.client()
        self.assertReply(c.ehlo(), 250)
        if tls:
            starttls(c, client_context(ca=None))
            self.assertReply(c.ehlo(), 250)
        self.assertReply(c.cmd("MAIL FROM:<vanish@example.com>"), 250, "2.1.0")
        self.assertReply(c.cmd("RCPT TO:<rcpt@example.com>"), 250, "2.1.5")
        return c

    def wait_saving(self, srv, n=1):
        """onData has opened its file under tmp/ (the message is mid-save)."""
        self.assertTrue(wait_for(lambda: len(srv.maildir_tmp()) >= n, 5),
                        "no file under tmp/ while the body arrives (stream:save not started?)")


# ------------------------------------------------------------------ DATA/BDAT

class VanishMidMessage(FaultTest):
    def vanish_mid_data(self, srv, how, tls=False, size=200_000):
        marker = b"vanished-data-" + os.urandom(6).hex().encode()
        c = self.open_transaction(srv, tls)
        self.assertReply(c.cmd("DATA"), 354)
        body = body_with(marker, size)
        c.send(body[: len(body) // 2])
        self.wait_saving(srv)
        if how == "rst":
            c.rst()
        else:
            c.close()
        return marker

    def test_reset_and_close_mid_data(self):
        with Server(DEFAULT_SCRIPT) as srv:
            base = self.baseline(srv)
            vanished = [self.vanish_mid_data(srv, "rst"), self.vanish_mid_data(srv, "close")]
            self.assert_clean(srv, vanished, base)
            self.deliver(srv, b"after-data-vanish")
            # many at once: twenty clients mid-DATA, then all gone
            clients = []
            for i in range(20):
                m = b"vanished-many-%d-" % i + os.urandom(4).hex().encode()
                c = self.open_transaction(srv)
                self.assertReply(c.cmd("DATA"), 354)
                c.send(body_with(m, 60_000)[:30_000])
                clients.append(c)
                vanished.append(m)
            self.wait_saving(srv, 20)
            for i, c in enumerate(clients):
                c.rst() if i % 2 else c.close()
            self.assert_clean(srv, vanished, base)
            self.deliver(srv, b"after-many-vanish")
            self.assertEqual(len(srv.maildir_new()), 3, "only the warm-up and the two good messages are stored")

    def test_reset_mid_data_inside_tls(self):
        with Server(DEFAULT_SCRIPT) as srv:
            base = self.baseline(srv)
            vanished = [self.vanish_mid_data(srv, "rst", tls=True), self.vanish_mid_data(srv, "close", tls=True)]
            self.assert_clean(srv, vanished, base)
            self.deliver(srv, b"after-tls-data-vanish", tls=True)

    def vanish_mid_bdat(self, srv, how, partial):
        """Three chunks answered 250, then (partial) the head of a fourth
        chunk, then gone."""
        marker = b"vanished-bdat-" + os.urandom(6).hex().encode()
        c = self.open_transaction(srv)
        body = body_with(marker, 160_000)
        chunks = [body[i * 40_000:(i + 1) * 40_000] for i in range(4)]
        for i in range(3):
            c.send(bdat(chunks[i]))
            self.assertReply(c.read_reply(), 250, msg="BDAT chunk %d" % (i + 1))
        self.wait_saving(srv)
        if partial:
            c.send(b"BDAT %d LAST\r\n" % len(chunks[3]) + chunks[3][:10_000])
            time.sleep(0.1)
        c.rst() if how == "rst" else c.close()
        return marker

    def test_vanish_mid_bdat(self):
        with Server(DEFAULT_SCRIPT) as srv:
            base = self.baseline(srv)
            vanished = [self.vanish_mid_bdat(srv, "rst", True), self.vanish_mid_bdat(srv, "close", True),
                        self.vanish_mid_bdat(srv, "rst", False), self.vanish_mid_bdat(srv, "close", False)]
            self.assert_clean(srv, vanished, base)
            # and BDAT still works
            with srv.client() as c:
                self.assertReply(c.ehlo(), 250)
                self.assertReply(c.cmd("MAIL FROM:<good@example.com>"), 250)
                self.assertReply(c.cmd("RCPT TO:<r@example.com>"), 250)
                body = body_with(b"after-bdat-vanish", 50_000)
                c.send(bdat(body[:20_000]))
                self.assertReply(c.read_reply(), 250)
                c.send(bdat(body[20_000:], last=True))
                self.assertReply(c.read_reply(), 250, "2.6.0")
            self.assertEqual(len(self.files_with(srv.maildir_new(), b"after-bdat-vanish")), 1)
            self.assert_clean(srv, vanished, base)


# ---------------------------------------------------------------------- TLS

class VanishMidHandshake(FaultTest):
    def hello_then_flight(self, sock):
        """Sends a whole ClientHello, reads the server's first flight
        (ServerHello ... ) and returns how many bytes came."""
        ctx = client_context(ca=None)
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        sock.sendall(out.read())
        sock.settimeout(5)
        got = b""
        deadline = time.monotonic() + 5
        while len(got) < 200 and time.monotonic() < deadline:
            try:
                d = sock.recv(65536)
            except socket.timeout:
                break
            if not d:
                break
            got += d
        return len(got)

    def starttls_then(self, srv, action):
        c = srv.client()
        self.assertReply(c.ehlo(), 250)
        self.assertReply(c.cmd("STARTTLS"), 220, "2.0.0")
        if action == "nothing":
            pass
        elif action == "half":
            c.sock.sendall(half_client_hello())
            time.sleep(0.1)
        elif action == "flight":
            self.assertGreater(self.hello_then_flight(c.sock), 0, "no ServerHello")
        return c

    def test_vanish_mid_starttls_handshake(self):
        with Server(DEFAULT_SCRIPT) as srv:
            base = self.baseline(srv)
            for action in ("nothing", "half", "flight"):
                for how in ("rst", "close"):
                    c = self.starttls_then(srv, action)
                    c.rst() if how == "rst" else c.close()
            # and twenty at once, in every state
            cs = [self.starttls_then(srv, ("nothing", "half", "flight")[i % 3]) for i in range(21)]
            for i, c in enumerate(cs):
                c.rst() if i % 2 else c.close()
            self.assert_clean(srv, [], base)
            self.deliver(srv, b"after-handshake-vanish", tls=True)
            self.deliver(srv, b"after-handshake-vanish-plain")

    def test_vanish_mid_implicit_tls_handshake(self):
        with Server(default_with(secure=True, key=DEV_KEY, cert=DEV_CERT)) as srv:
            def served(marker):
                c = tls_client(srv.port, client_context(ca=None))
                self.assertReply(c.greeting, 220)
                self.assertReply(c.ehlo(), 250)
                r = c.transaction(body_with(marker, 3000))
                self.assertReply(r, 250, "2.6.0")
                c.close()
                self.assertEqual(len(self.files_with(srv.maildir_new(), marker)), 1)

            served(b"implicit-warmup")
            time.sleep(0.2)
            base = fd_count(srv.proc.pid)
            for action in ("nothing", "half", "flight"):
                for how in ("rst", "close"):
                    c = srv.client(greet=False)
                    if action == "half":
                        c.sock.sendall(half_client_hello())
                        time.sleep(0.1)
                    elif action == "flight":
                        self.assertGreater(self.hello_then_flight(c.sock), 0, "no ServerHello")
                    c.rst() if how == "rst" else c.close()
            self.assert_clean(srv, [], base)
            served(b"after-implicit-vanish")


# ------------------------------------------------------------------ cosocket

class SilentServer:
    """Accepts connections and never answers; counts the connections the
    peer (the hook's cosocket) closed. Bounded: stops after `life` s."""

    def __init__(self, life=60.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.closed_by_peer = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.deadline = time.monotonic() + life
        self.conns = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopping.is_set() and time.monotonic() < self.deadline:
            try:
                s, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.accepted += 1
            t = threading.Thread(target=self.hold, args=(s,), daemon=True)
            t.start()

    def hold(self, s):
        s.settimeout(0.2)
        try:
            while not self.stopping.is_set() and time.monotonic() < self.deadline:
                try:
                    d = s.recv(4096)
                except socket.timeout:
                    continue
                except OSError:
                    d = b""
                if not d:
                    with self.lock:
                        self.closed_by_peer += 1
                    return
        finally:
            s.close()

    def stop(self):
        self.stopping.set()
        self.sock.close()
        self.thread.join(2)


def cosocket_script(port):
    """The default policy, plus an onRcptTo that, for hang@..., asks the
    silent server a question it never answers (timeout 3 s), and an onClose
    that records the session's end."""
    return (PRELUDE + "\nlocal SILENT = %d\nlocal o = dofile(%s)\n" % (port, lua_value(DEFAULT_SCRIPT)) + r'''
o.onRcptTo = function(address, session)
  if not address.address:match("^hang@") then return end
  local sock = smtp.tcp()
  sock:settimeout(3)
  assert(sock:connect("127.0.0.1", SILENT))
  sock:send("QUESTION\r\n")
  record("hang_waiting", {port = session.remotePort})
  local line, err = sock:receive("*l")
  sock:close()
  record("hang_done", {port = session.remotePort, err = err})
  return nil, smtp.reject(451, "4.4.3 lookup failed: " .. tostring(err))
end
o.onClose = function(session)
  record("close", {port = session.remotePort})
end
return o
''')


class VanishMidCosocket(FaultTest):
    def setUp(self):
        self.silent = SilentServer()
        self.addCleanup(self.silent.stop)

    def waiting(self, srv, port, timeout=3):
        return wait_for(lambda: [e for e in srv.events("hang_waiting") if e["port"] == port], timeout)

    def closed(self, srv, port, timeout=8):
        return wait_for(lambda: [e for e in srv.events("close") if e["port"] == port], timeout)

    def test_client_resets_while_onrcptto_waits_on_a_silent_server(self):
        with Server(cosocket_script(self.silent.port)) as srv:
            base = self.baseline(srv)
            vanished = []
            for pipelined in (False, True):
                marker = b"vanished-hook-%d-" % pipelined + os.urandom(4).hex().encode()
                vanished.append(marker)
                c = srv.client()
                self.assertReply(c.ehlo(), 250)
                self.assertReply(c.cmd("MAIL FROM:<s@example.com>"), 250)
                if pipelined:
                    c.send(b"RCPT TO:<hang@example.com>\r\nRCPT TO:<ok@example.com>\r\nDATA\r\n"
                           + body_with(marker, 20_000)[:10_000])
                else:
                    c.line("RCPT TO:<hang@example.com>")
                port = c.local_port
                self.assertTrue(self.waiting(srv, port), "the hook did not start its call")
                # the server serves others while the hook waits
                t0 = time.monotonic()
                with srv.client() as other:
                    self.assertReply(other.greeting, 220)
                    self.assertReply(other.cmd("NOOP"), 250)
                self.assertLess(time.monotonic() - t0, 1.0, "another client waited on the suspended hook")
                closed_before = self.silent.closed_by_peer
                c.rst()
                self.assertTrue(self.closed(srv, port), "onClose not called after the client reset")
                self.assertTrue(wait_for(lambda: self.silent.closed_by_peer > closed_before, 3),
                                "the hook's socket stayed open after its session ended")
                self.assert_clean(srv, vanished, base)
                self.deliver(srv, b"after-hook-vanish-%d" % pipelined)

    def test_twenty_resets_during_cosocket_calls(self):
        with Server(cosocket_script(self.silent.port)) as srv:
            base = self.baseline(srv)
            clients = []
            for i in range(20):
                c = srv.client()
                self.assertReply(c.ehlo(), 250)
                self.assertReply(c.cmd("MAIL FROM:<s@example.com>"), 250)
                c.line("RCPT TO:<hang@example.com>")
                clients.append(c)
            ports = {c.local_port for c in clients}
            self.assertTrue(wait_for(lambda: ports <= {e["port"] for e in srv.events("hang_waiting")}, 5),
                            "not every hook started its call")
            for i, c in enumerate(clients):
                c.rst() if i % 2 else c.close()
            self.assertTrue(wait_for(lambda: ports <= {e["port"] for e in srv.events("close")}, 10),
                            "onClose missing for %r" % (ports - {e["port"] for e in srv.events("close")}))
            self.assertTrue(wait_for(lambda: self.silent.closed_by_peer >= 20, 5),
                            "hook sockets left open: %d of 20 closed" % self.silent.closed_by_peer)
            self.assert_clean(srv, [], base)
            self.deliver(srv, b"after-twenty-hook-vanish")


# ---------------------------------------------------------------- full disk

TMPFS_SIZE = "256k"


class FullDisk(FaultTest):
    def mount_tmpfs(self):
        d = tempfile.mkdtemp(prefix="luasmtpd-fulldisk-")
        self.addCleanup(shutil.rmtree, d, True)
        try:
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + TMPFS_SIZE, "tmpfs", d],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        except OSError as e:
            self.fail("cannot run mount (%r): the full-disk test needs root and a working "
                      "`mount -t tmpfs` (a small file system to fill)" % e)
        if r.returncode != 0:
            self.fail("mount -t tmpfs -o size=%s failed (%d: %s): the full-disk test needs root and a "
                      "working `mount -t tmpfs` (a small file system to fill)"
                      % (TMPFS_SIZE, r.returncode, r.stdout.decode("utf-8", "replace").strip()))

        def umount():
            u = subprocess.run(["umount", d], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
            if u.returncode != 0:
                subprocess.run(["umount", "-l", d], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        # cleanups run last-in first-out: umount before the rmtree
        self.addCleanup(umount)
        return d

    def free_bytes(self, d):
        st = os.statvfs(d)
        return st.f_bavail * st.f_frsize

    def test_message_bigger_than_free_space(self):
        md = self.mount_tmpfs()
        with Server(DEFAULT_SCRIPT, env={"LUASMTPD_MAILDIR": md}) as srv:
            self.assertTrue(wait_for(lambda: os.path.isdir(os.path.join(md, "new")), 3), "Maildir not created")
            # leave about 64 KiB free
            filler = os.path.join(md, "filler")
            with open(filler, "wb") as f:
                f.write(b"\0" * max(0, self.free_bytes(md) - 64 * 1024))
            free = self.free_bytes(md)
            self.assertLess(free, 100 * 1024, "could not fill the tmpfs (free %d)" % free)
            big = b"too-big-" + os.urandom(4).hex().encode()
            with srv.client() as c:
                self.assertReply(c.ehlo(), 250)
                self.assertReply(c.cmd("MAIL FROM:<big@example.com>"), 250, "2.1.0")
                self.assertReply(c.cmd("RCPT TO:<r@example.com>"), 250, "2.1.5")
                self.assertReply(c.cmd("DATA"), 354)
                c.send(body_with(big, 4 * free) + b".\r\n")
                self.assertReply(c.read_reply(timeout=15), 452, "4.3.1", "a message bigger than the free space")
                self.assertEqual(os.listdir(os.path.join(md, "new")), [], "something is in new/")
                self.assertEqual(os.listdir(os.path.join(md, "tmp")), [], "the partial file stayed in tmp/")
                # the session goes on
                self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
                self.assertReply(c.cmd("RSET"), 250, "2.0.0")
                # space freed: a small message in the same session is taken
                os.unlink(filler)
                small = b"small-after-free-" + os.urandom(4).hex().encode()
                r = c.transaction(body_with(small, 2000))
                self.assertReply(r, 250, "2.6.0", "a small message once space is free again")
                self.assertReply(c.cmd("QUIT"), 221)
            new = [os.path.join(md, "new", n) for n in os.listdir(os.path.join(md, "new"))]
            self.assertEqual(len(new), 1, new)
            self.assertEqual(self.files_with(new, small), new)
            self.assertEqual(self.files_with(new, big), [])
            self.assertEqual(os.listdir(os.path.join(md, "tmp")), [])
            self.assertRegex(srv.log(), r"delivery failed")
            self.assertTrue(srv.alive())

    def test_disk_full_mid_stream_then_many_small(self):
        """The store fills while several sessions send at once: every one
        gets 250 or 452 4.3.1, each 250 is exactly one file, tmp/ ends
        empty."""
        md = self.mount_tmpfs()
        with Server(DEFAULT_SCRIPT, env={"LUASMTPD_MAILDIR": md}) as srv:
            self.assertTrue(wait_for(lambda: os.path.isdir(os.path.join(md, "new")), 3))
            clients = []
            for i in range(6):
                c = srv.client()
                self.assertReply(c.ehlo(), 250)
                self.assertReply(c.cmd("MAIL FROM:<s@example.com>"), 250)
                self.assertReply(c.cmd("RCPT TO:<r@example.com>"), 250)
                self.assertReply(c.cmd("DATA"), 354)
                clients.append(c)
            markers = [b"parallel-%d-" % i + os.urandom(4).hex().encode() for i in range(6)]
            bodies = [body_with(m, 70_000) for m in markers]   # 6 x 70 KiB > 256 KiB
            for off in range(0, 70_000, 10_000):
                for c, b in zip(clients, bodies):
                    c.send(b[off:off + 10_000])
            codes = {}
            for c, b, m in zip(clients, bodies, markers):
                c.send(b[70_000:] + b".\r\n")
            for c, m in zip(clients, markers):
                r = c.read_reply(timeout=15)
                self.assertIn((r.code, r.enh), [(250, "2.6.0"), (452, "4.3.1")], r)
                codes[m] = r.code
                self.assertReply(c.cmd("QUIT"), 221)
                c.close()
            self.assertIn(452, codes.values(), "the store never filled: %r" % codes)
            new = [os.path.join(md, "new", n) for n in os.listdir(os.path.join(md, "new"))]
            for m, code in codes.items():
                self.assertEqual(len(self.files_with(new, m)), 1 if code == 250 else 0, (m, code))
            self.assertEqual(len(new), list(codes.values()).count(250))
            self.assertTrue(wait_for(lambda: os.listdir(os.path.join(md, "tmp")) == [], 3),
                            os.listdir(os.path.join(md, "tmp")))
            # room again: remove what was stored, and small messages pass
            for p in new:
                os.unlink(p)
            for i in range(3):
                with srv.client() as c:
                    self.assertReply(c.ehlo(), 250)
                    self.assertReply(c.transaction(body_with(b"small-%d" % i, 1000)), 250, "2.6.0")
            self.assertEqual(len(os.listdir(os.path.join(md, "new"))), 3)
