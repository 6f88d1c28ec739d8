"""The TLS transport under load and at awkward moments: many pipelined
commands in TLS records, a big message, input arriving while a hook
yields, clients leaving while SNICallback or onSecure sleep, RFC 3207's
reset of AUTH on STARTTLS."""

import base64
import hashlib
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import time

from harness import E2ETest, Lua, Server, SharedServerTest, free_port, lua_value
from tlsutil import client_context, certs, multi_script, starttls, tls_client

HOOKS = {
    "SNICallback": Lua(r'''function(servername)
    if servername == "slow.example" then
      smtp.sleep(0.6)
      return smtp.tls.context(SLOW)
    end
  end'''),
    "onSecure": Lua(r'''function(conn, session)
    record("secure", {port = session.remotePort, servername = session.servername})
    if session.servername == "dyn.example" then smtp.sleep(0.5) end
  end'''),
    "onAuth": Lua(r'''function(auth, session)
    if auth.username == "testuser" and auth.password == "testpass" then return {user = "testuser"} end
    return nil, "bad credentials"
  end'''),
    "onMailFrom": Lua(r'''function(address, session)
    record("mail", {port = session.remotePort, user = session.user, secure = session.secure,
                    transmissionType = session.transmissionType})
    if address.address == "slow@example.com" then smtp.sleep(0.2) end
  end'''),
    "onData": Lua(r'''function(stream, session)
    local parts, n = {}, 0
    for chunk in stream:chunks() do
      n = n + 1
      parts[n] = chunk
      if session.envelope.mailFrom.address == "slow@example.com" and n % 16 == 0 then smtp.sleep(0.001) end
    end
    writefile(OUT .. "/body-" .. session.remotePort, table.concat(parts))
    record("data", {port = session.remotePort, byteLength = stream.byteLength})
  end'''),
}


def b64(s):
    return base64.b64encode(s.encode()).decode()


def prelude():
    c = certs()
    return "SLOW = {key = %s, cert = %s}\n" % (lua_value(c.key("slow.example")), lua_value(c.crt("slow.example")))


class Transport(SharedServerTest):
    @classmethod
    def setUpClass(cls):
        c = certs()
        cls.plain, cls.secure, cls.insecure_auth = free_port(), free_port(), free_port()
        cls.srv = Server(multi_script([
            # test_many_pipelined_commands sends 3000 NOOPs: no maxJunkCommands here
            (dict(c.pair(), listen="127.0.0.1:%d" % cls.plain, maxJunkCommands=False), HOOKS),
            (dict(c.pair(), listen="127.0.0.1:%d" % cls.secure, secure=True), HOOKS),
            (dict(c.pair(), listen="127.0.0.1:%d" % cls.insecure_auth, allowInsecureAuth=True, authOptional=False),
             HOOKS),
        ], prelude=prelude()), listen=False, ports=[cls.plain, cls.secure, cls.insecure_auth])

    def tls(self):
        c = self.client(port=self.plain)
        self.assertReply(c.ehlo(), 250)
        starttls(c)
        self.assertReply(c.ehlo(), 250)
        return c

    def test_many_pipelined_commands(self):
        n = 3000  # 18 KB: more than one TLS record
        with self.tls() as c:
            c.send(b"NOOP\r\n" * n)
            replies = c.read_replies(n, timeout=10)
            self.assertEqual({r.code for r in replies}, {250})
            self.assertReply(c.cmd("QUIT"), 221)

    def test_big_message(self):
        line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-_+/=%*\r\n"
        body = b"Subject: big\r\n\r\n" + line * (2 * 1024 * 1024 // len(line))
        for sender in ["a@example.com", "slow@example.com"]:
            with self.subTest(sender=sender), self.tls() as c:
                self.assertReply(c.transaction(body, mail="<%s>" % sender), 250)
                self.assertEqual(hashlib.sha256(self.srv.out_file("body-%d" % c.local_port)).hexdigest(),
                                 hashlib.sha256(body).hexdigest())

    def test_pipelined_transaction_while_hook_sleeps(self):
        body = b"Subject: pipelined over TLS\r\n\r\n" + b"x" * 40000 + b"\r\n"
        with self.tls() as c:
            c.send(b"MAIL FROM:<slow@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
            self.assertCodes(c.read_replies(3), [250, 250, 354])
            c.send(body + b".\r\nMAIL FROM:<slow@example.com>\r\nRCPT TO:<c@example.com>\r\nRSET\r\nQUIT\r\n")
            self.assertCodes(c.read_replies(5, timeout=10), [250, 250, 250, 250, 221])
        self.assertEqual(self.srv.out_file("body-%d" % c.local_port), body)

    def test_implicit_tls_pipelined(self):
        with tls_client(self.secure) as c:
            c.send(b"EHLO client.example\r\nMAIL FROM:<slow@example.com>\r\nRCPT TO:<b@example.com>\r\nNOOP\r\n")
            self.assertCodes(c.read_replies(4), [250, 250, 250, 250])

    def test_client_leaves_during_sni_callback_sleep(self):
        ctx = client_context(ca=None)
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, out, server_hostname="slow.example")
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = out.read()
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", self.secure), timeout=5) as s:
                s.sendall(hello)
                time.sleep(0.1)
        c = self.client(port=self.plain)
        c.ehlo()
        c.send(b"STARTTLS\r\n")
        self.assertReply(c.read_reply(), 220)
        c.send(hello)
        time.sleep(0.1)
        c.close()
        time.sleep(0.8)  # the callbacks answer for connections that are gone
        self.assertTrue(self.srv.alive())
        with tls_client(self.secure, server_hostname="slow.example") as c2:
            self.assertReply(c2.greeting, 220)
            self.assertReply(c2.ehlo(), 250)

    def test_on_secure_sleeps_input_waits(self):
        t0 = time.monotonic()
        with tls_client(self.secure, client_context(check_hostname=False), "dyn.example", greet=False) as c:
            c.send(b"EHLO client.example\r\nNOOP\r\n")  # before the greeting: kept, not lost
            r = c.read_reply()
            self.assertReply(r, 220)
            self.assertGreaterEqual(time.monotonic() - t0, 0.45)
            self.assertCodes(c.read_replies(2), [250, 250])
        c2 = self.client(port=self.plain)
        c2.ehlo()
        starttls(c2, client_context(check_hostname=False), "dyn.example")
        c2.send(b"EHLO client.example\r\nNOOP\r\n")
        self.assertCodes(c2.read_replies(2), [250, 250])
        c2.close()

    def test_client_leaves_during_on_secure_sleep(self):
        for _ in range(3):
            c = tls_client(self.secure, client_context(check_hostname=False), "dyn.example", greet=False)
            c.send(b"EHLO client.example\r\n")
            c.close()
        time.sleep(0.7)
        self.assertTrue(self.srv.alive())
        with tls_client(self.secure) as c2:
            self.assertReply(c2.greeting, 220)

    def test_starttls_forgets_auth(self):
        with self.client(port=self.insecure_auth) as c:
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("AUTH PLAIN " + b64("\0testuser\0testpass")), 235, "2.7.0")
            starttls(c)
            r = c.ehlo()
            self.assertIn("AUTH PLAIN LOGIN", [ln.upper() for ln in r.lines], "AUTH is offered again")
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 530, "5.7.0")
            self.assertReply(c.cmd("AUTH PLAIN " + b64("\0testuser\0testpass")), 235, "2.7.0")
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")
        [m] = [e for e in self.srv.events("mail") if e["port"] == c.local_port]
        self.assertEqual(m["user"], "testuser")
        self.assertEqual(m["transmissionType"], "ESMTPSA")

    def test_many_handshakes(self):
        ctx = client_context()
        for _ in range(30):
            c = tls_client(self.secure, ctx)
            c.close()
        with tls_client(self.secure, ctx) as c:
            self.assertReply(c.ehlo(), 250)

    def test_key_update_after_the_handshake(self):
        """TLS 1.3 KeyUpdate once the handshake is over and its key shares
        are dropped (core/tls/tls_keyshare.c): openssl s_client's "K" sends
        one that asks the server to update its keys too; the session goes
        on in the new keys both ways, twice."""
        p = subprocess.Popen(["openssl", "s_client", "-connect", "127.0.0.1:%d" % self.plain, "-starttls", "smtp",
                              "-crlf", "-tls1_3", "-msg"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        seen = b""

        def until(pattern, start=0):
            nonlocal seen
            deadline = time.monotonic() + 10
            while not re.compile(pattern, re.M).search(seen, start):
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([p.stdout], [], [], left)[0]:
                    self.fail("no %r from s_client in 10 s:\n%s" % (pattern, seen.decode("utf-8", "replace")))
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    self.fail("s_client ended before %r:\n%s" % (pattern, seen.decode("utf-8", "replace")))
                seen += chunk

        def send(line):
            p.stdin.write(line + b"\n")
            p.stdin.flush()

        try:
            until(rb"^250 STARTTLS")  # the EHLO reply s_client printed
            until(rb"NewSessionTicket")
            for n in (1, 2):
                mark = len(seen)
                send(b"K")  # a line of its own: s_client drops the rest of the read
                until(rb">>> TLS 1\.3, Handshake \[length 0005\], KeyUpdate", mark)
                send(b"NOOP")
                until(rb"^250 2\.0\.0", mark)
                after = seen[mark:]
                self.assertEqual(len(re.findall(rb"^250 2\.0\.0", after, re.M)), 1, after)
                # the server's own KeyUpdate, which the client's asked for, before its reply
                self.assertRegex(after, rb"(?ms)<<< TLS 1\.3, Handshake \[length 0005\], KeyUpdate.*^250 2\.0\.0")
            send(b"quit")  # "Q" would be s_client's own command
            until(rb"^221 ")
            self.assertEqual(p.wait(10), 0)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdin.close()
            p.stdout.close()


class Lifecycle(E2ETest):
    """Timeouts and shutdown with TLS sessions open (a server per test)."""

    def start(self, **opts):
        c = certs()
        self.plain, self.secure = free_port(), free_port()
        srv = Server(multi_script([
            (dict(c.pair(), listen="127.0.0.1:%d" % self.plain, **opts), HOOKS),
            (dict(c.pair(), listen="127.0.0.1:%d" % self.secure, secure=True, **opts), HOOKS),
        ], prelude=prelude()), listen=False, ports=[self.plain, self.secure])
        return srv

    def assert_closed_within(self, sock, seconds):
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.fail("connection still open after %.1f s" % seconds)
            sock.settimeout(left)
            try:
                d = sock.recv(4096)
            except socket.timeout:
                continue
            except ConnectionError:
                return
            if not d:
                return

    def test_silent_client_during_handshake_times_out(self):
        with self.start(socketTimeout=1) as srv:
            raw = socket.create_connection(("127.0.0.1", self.secure), timeout=5)
            c = srv.client(port=self.plain)
            c.ehlo()
            self.assertReply(c.cmd("STARTTLS"), 220)
            t0 = time.monotonic()
            self.assert_closed_within(raw, 4)
            self.assert_closed_within(c.sock, 4)
            self.assertGreater(time.monotonic() - t0, 0.5)
            raw.close()
            c.close()

    def test_idle_tls_session_times_out_with_421(self):
        with self.start(socketTimeout=1) as srv:
            c = srv.client(port=self.plain)
            c.ehlo()
            starttls(c)
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.read_reply(timeout=4), 421, "4.4.2")
            c.expect_close(3)

    def test_sigterm_with_tls_sessions(self):
        srv = self.start(closeTimeout=1)
        try:
            c = srv.client(port=self.plain)
            c.ehlo()
            starttls(c)
            self.assertReply(c.ehlo(), 250)
            c2 = tls_client(self.secure)
            self.assertReply(c2.ehlo(), 250)
            raw = socket.create_connection(("127.0.0.1", self.secure), timeout=5)  # mid-handshake
            time.sleep(0.1)
            srv.send_signal(signal.SIGTERM)
            for x in (c, c2):
                self.assertReply(x.read_reply(timeout=5), 421, "4.4.2")
                x.expect_close(5)
            try:
                srv.exit_code = srv.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                srv.kill()
                self.fail("server still running 5 s after SIGTERM with closeTimeout=1 "
                          "(a connection in the TLS handshake is open)")
            self.assertEqual(srv.exit_code, 0)
            self.assert_closed_within(raw, 2)
            raw.close()
        finally:
            srv.stop()
