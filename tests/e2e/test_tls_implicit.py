"""Implicit TLS (`secure = true`): TLS from the first byte, the greeting
after the handshake, no STARTTLS; one script with a STARTTLS listener and a
secure one served by one process."""

import smtplib
import socket
import time

from harness import Lua, Server, SharedServerTest, free_port
from tlsutil import (RECORD_HOOKS, certs, client_context, ehlo_keywords, mine, multi_script, peer_cn,
                     starttls, tls_client)

ON_CONNECT = Lua(r'''function(session)
    local info = tlsinfo(session)
    info.clientHostname = session.clientHostname
    record("connect", info)
  end''')


def two_listeners(plain_port, secure_port, **extra):
    hooks = dict(RECORD_HOOKS, onConnect=ON_CONNECT)
    common = dict(certs().pair("localhost"), **extra)
    return multi_script([
        (dict(common, listen="127.0.0.1:%d" % plain_port, name="submission.test"), hooks),
        (dict(common, listen="127.0.0.1:%d" % secure_port, name="smtps.test", secure=True), hooks),
    ])


class Implicit(SharedServerTest):
    @classmethod
    def setUpClass(cls):
        cls.plain, cls.secure = free_port(), free_port()
        cls.srv = Server(two_listeners(cls.plain, cls.secure), listen=False, ports=[cls.plain, cls.secure])

    def test_greeting_after_handshake(self):
        with tls_client(self.secure) as c:
            self.assertTrue(c.greeting.text.startswith("smtps.test"), c.greeting.raw)
            self.assertReply(c.greeting, 220)
            self.assertEqual(peer_cn(c.sock), "localhost")
            r = c.ehlo()
            self.assertReply(r, 250)
            kw = ehlo_keywords(r)
            self.assertNotIn("STARTTLS", kw)
            self.assertIn("AUTH", kw, "AUTH is offered on a secure listener")
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")
        [m] = mine(self.srv.events("mail"), c.local_port)
        self.assertIs(m["secure"], True)
        self.assertEqual(m["transmissionType"], "ESMTPS")
        self.assertEqual(m["servername"], "localhost")
        self.assertEqual(m["tlsOptions"]["version"], "TLSv1.3")
        self.assertEqual(m["localPort"], self.secure)
        # onConnect runs after the handshake on a secure listener
        [cn] = mine(self.srv.events("connect"), c.local_port)
        self.assertIs(cn["secure"], True)
        # What lua_session_new wrote, as on a plain connection (test_hooks'
        # session fields): the handshake's fields leave it as it is.
        self.assertEqual(cn["clientHostname"], "[127.0.0.1]")
        [sec] = mine(self.srv.events("secure"), c.local_port)
        self.assertEqual(sec["conn"]["protocol"], "TLSv1.3")

    def test_nothing_sent_before_handshake(self):
        with socket.create_connection(("127.0.0.1", self.secure), timeout=5) as s:
            s.settimeout(0.7)
            try:
                d = s.recv(100)
            except socket.timeout:
                d = None
            self.assertIsNone(d, "the server spoke before the TLS handshake")

    def test_plaintext_client_gets_no_greeting(self):
        with socket.create_connection(("127.0.0.1", self.secure), timeout=5) as s:
            s.sendall(b"EHLO plain.example\r\n")
            got = b""
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                s.settimeout(max(0.05, deadline - time.monotonic()))
                try:
                    d = s.recv(4096)
                except socket.timeout:
                    self.fail("connection still open 5 s after plaintext on a secure listener")
                except ConnectionResetError:
                    break
                if not d:
                    break
                got += d
            self.assertNotIn(b"220", got)
            self.assertNotIn(b"250", got)

    def test_starttls_on_secure_listener(self):
        with tls_client(self.secure) as c:
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("STARTTLS"), 503, "5.5.1")

    def test_plain_listener_same_process(self):
        with self.client(port=self.plain) as c:
            self.assertTrue(c.greeting.text.startswith("submission.test"), c.greeting.raw)
            r = c.ehlo()
            self.assertIn("STARTTLS", ehlo_keywords(r))
            starttls(c)
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
        [m] = mine(self.srv.events("mail"), c.local_port)
        self.assertEqual(m["localPort"], self.plain)
        self.assertEqual(m["transmissionType"], "ESMTPS")
        [cn] = mine(self.srv.events("connect"), c.local_port)
        self.assertIs(cn["secure"], False)

    def test_smtplib_smtp_ssl(self):
        with smtplib.SMTP_SSL("127.0.0.1", self.secure, local_hostname="client.example", timeout=10,
                              context=client_context(check_hostname=False)) as s:
            s.ehlo()
            self.assertFalse(s.has_extn("starttls"))
            s.login("testuser", "testpass")
            self.assertEqual(s.sendmail("a@example.com", ["b@example.com"], b"Subject: ssl\r\n\r\nsmtps\r\n"), {})
            port = s.sock.getsockname()[1]
        [d] = mine(self.srv.events("data"), port)
        self.assertEqual(d["body"], "Subject: ssl\r\n\r\nsmtps\r\n")
        self.assertEqual(d["transmissionType"], "ESMTPSA")
        self.assertEqual(d["user"], "testuser")

    def test_on_secure_reject_implicit(self):
        ctx = client_context(check_hostname=False)
        with tls_client(self.secure, ctx, "deny.example", greet=False) as c:
            r = c.read_reply()
            self.assertReply(r, 554)
            c.expect_close(5)

    def test_many_in_parallel(self):
        # several TLS sessions open at once on both listeners
        clients = [tls_client(self.secure) for _ in range(4)]
        plains = []
        for _ in range(4):
            c = self.client(port=self.plain)
            c.ehlo()
            starttls(c)
            plains.append(c)
        for c in clients + plains:
            self.assertReply(c.ehlo(), 250)
        for c in clients + plains:
            self.assertReply(c.cmd("QUIT"), 221, "2.0.0")
            c.close()
