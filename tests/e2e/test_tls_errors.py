"""Failed handshakes: onError(err) with err.code "TLSError" (garbage, a
TLS 1.2 client against minVersion TLSv1.3) or "SocketError" (the client
goes away mid-handshake), err.meta {remoteAddress, tlsProtocol, reason};
the connection is closed and the server keeps serving."""

import socket
import time

from harness import Lua, Server, SharedServerTest, free_port
from tlsutil import RECORD_HOOKS, certs, client_context, half_client_hello, multi_script, starttls, tls_client

ON_ERROR = Lua(r'''function(err)
    record("error", {code = err.code, message = err.message, meta = copy(err.meta),
                     errType = type(err), metaType = type(err.meta)})
  end''')

GARBAGE = b"\x16\x03\x01\x00\x05hello"


class TLSErrors(SharedServerTest):
    @classmethod
    def setUpClass(cls):
        cls.secure, cls.plain = free_port(), free_port()
        hooks = dict(RECORD_HOOKS, onError=ON_ERROR)
        cls.srv = Server(multi_script([
            (dict(certs().pair(), listen="127.0.0.1:%d" % cls.secure, secure=True), hooks),
            (dict(certs().pair(), listen="127.0.0.1:%d" % cls.plain, minVersion="TLSv1.3"), hooks),
        ]), listen=False, ports=[cls.secure, cls.plain])

    def setUp(self):
        self.n_errors = len(self.srv.events("error"))

    def new_error(self):
        evs = self.srv.wait_events("error", self.n_errors + 1)
        self.assertEqual(len(evs), self.n_errors + 1, "onError was not called (log:\n%s)" % self.srv.log_tail(10))
        time.sleep(0.05)
        evs = self.srv.events("error")
        self.assertEqual(len(evs), self.n_errors + 1, "onError called more than once: %r" % evs[self.n_errors:])
        return evs[-1]

    def assert_closed(self, sock, timeout=5):
        deadline = time.monotonic() + timeout
        got = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.fail("connection still open after a failed handshake; got %r" % got[:200])
            sock.settimeout(left)
            try:
                d = sock.recv(4096)
            except socket.timeout:
                continue
            except ConnectionError:
                return got
            if not d:
                return got
            got += d

    def assert_meta(self, err, code):
        self.assertEqual(err["errType"], "table")
        self.assertEqual(err["code"], code, err)
        self.assertEqual(err["metaType"], "table")
        meta = err["meta"]
        self.assertEqual(meta["remoteAddress"], "127.0.0.1")
        self.assertIsInstance(meta.get("tlsProtocol"), str, meta)
        self.assertTrue(meta["tlsProtocol"])
        self.assertIsInstance(meta.get("reason"), str, meta)
        self.assertTrue(meta["reason"])
        return meta

    def assert_still_serving(self):
        with tls_client(self.secure) as c:
            self.assertReply(c.greeting, 220)
            self.assertReply(c.ehlo(), 250)
        c = self.client(port=self.plain)
        c.ehlo()
        starttls(c)
        self.assertReply(c.ehlo(), 250)
        c.close()

    def test_garbage_on_secure_listener(self):
        with socket.create_connection(("127.0.0.1", self.secure), timeout=5) as s:
            s.sendall(GARBAGE)
            got = self.assert_closed(s)
            self.assertNotIn(b"220", got)
        meta = self.assert_meta(self.new_error(), "TLSError")
        self.assertNotIn("Socket closed", meta["reason"])
        self.assert_still_serving()

    def test_garbage_after_starttls(self):
        c = self.client(port=self.plain)
        c.ehlo()
        self.assertReply(c.cmd("STARTTLS"), 220, "2.0.0")
        c.send(GARBAGE)
        got = c.expect_close(5)
        self.assertNotIn(b"250", got)
        self.assert_meta(self.new_error(), "TLSError")
        self.assert_still_serving()

    def test_tls12_client_against_min_tls13(self):
        c = self.client(port=self.plain)
        c.ehlo()
        with self.assertRaises((OSError,)):
            starttls(c, client_context(max_version="TLSv1.2"))
        c.close()
        meta = self.assert_meta(self.new_error(), "TLSError")
        self.assertIn("unsupported protocol", meta["reason"].lower())
        self.assert_still_serving()

    def test_half_client_hello_then_close(self):
        hello = half_client_hello()
        self.assertTrue(hello.startswith(b"\x16\x03"), hello[:10])
        with socket.create_connection(("127.0.0.1", self.secure), timeout=5) as s:
            s.sendall(hello)
            time.sleep(0.1)
        self.assert_meta(self.new_error(), "SocketError")
        self.assert_still_serving()

    def test_half_client_hello_after_starttls(self):
        c = self.client(port=self.plain)
        c.ehlo()
        self.assertReply(c.cmd("STARTTLS"), 220, "2.0.0")
        c.send(half_client_hello())
        time.sleep(0.1)
        c.close()
        self.assert_meta(self.new_error(), "SocketError")
        self.assert_still_serving()

    def test_good_sessions_call_no_on_error(self):
        self.assert_still_serving()
        c = self.client(port=self.plain)
        c.ehlo()
        starttls(c)
        self.assertReply(c.cmd("QUIT"), 221)
        c.close()
        time.sleep(0.2)
        self.assertEqual(self.srv.events("error")[self.n_errors:], [])
