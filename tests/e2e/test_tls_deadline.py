"""The TLS handshake's deadline (handshakeTimeout, default socketTimeout),
counted from accept (implicit TLS) or from the 220 of STARTTLS: a client
dripping its ClientHello a byte at a time is closed at the deadline although
bytes keep coming, onError says why (ERR_TLS_HANDSHAKE_TIMEOUT), and its
maxClients place is free for the next client."""

import socket
import time

from harness import E2ETest, Lua, Server
from tlsutil import certs, client_hello, starttls, tls_client, tls_script

ON_ERROR = Lua(r'''function(err)
    record("error", {code = err.code, message = err.message, meta = copy(err.meta)})
  end''')

DRIP_EVERY = 0.3
DRIP_BUDGET = 15.0  # the connection must be gone well before this


def drip_until_closed(sock, data, budget=DRIP_BUDGET):
    """Sends data one byte every DRIP_EVERY seconds until the server closes
    the connection. Returns (seconds until closed or None, bytes sent)."""
    t0 = time.monotonic()
    sent = 0
    while time.monotonic() - t0 < budget:
        try:
            sock.sendall(data[sent % len(data):sent % len(data) + 1])
            sent += 1
            sock.settimeout(DRIP_EVERY)
            if sock.recv(4096) == b"":
                return time.monotonic() - t0, sent
        except socket.timeout:
            continue
        except OSError:  # reset, broken pipe: closed too
            return time.monotonic() - t0, sent
    return None, sent


class HandshakeDeadline(E2ETest):
    def start(self, **opts):
        srv = Server(tls_script(hooks={"onError": ON_ERROR}, **dict(certs().pair(), **opts)))
        self.addCleanup(srv.stop)
        return srv

    def assert_deadline_error(self, srv):
        evs = srv.wait_events("error", 1, 5)
        self.assertEqual(len(evs), 1, "onError was not called once: %r\n%s" % (evs, srv.log_tail(10)))
        self.assertEqual(evs[0]["code"], "ERR_TLS_HANDSHAKE_TIMEOUT", evs[0])
        self.assertEqual(evs[0]["message"], "TLS handshake timeout", evs[0])
        self.assertEqual(evs[0]["meta"]["remoteAddress"], "127.0.0.1")
        self.assertIn("TLS handshake timeout", srv.log())

    def test_implicit_drip_closed_at_deadline(self):
        srv = self.start(secure=True, handshakeTimeout=2, socketTimeout=60, maxClients=1)
        hello = client_hello()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            closed, sent = drip_until_closed(s, hello)
        self.assertIsNotNone(closed, "still open after %.0fs of dripping (%d bytes)" % (DRIP_BUDGET, sent))
        self.assertGreaterEqual(closed, 1.5)
        self.assertLess(sent, len(hello), "the whole ClientHello went out before the deadline")
        self.assert_deadline_error(srv)
        # its maxClients place is free: a real client gets in
        with tls_client(srv.port) as c:
            self.assertReply(c.greeting, 220)
            self.assertReply(c.ehlo(), 250)

    def test_starttls_drip_closed_at_deadline(self):
        srv = self.start(handshakeTimeout=2, socketTimeout=60, maxClients=1)
        c = srv.client()
        self.assertReply(c.ehlo(), 250)
        self.assertReply(c.cmd("STARTTLS"), 220, "2.0.0")
        closed, sent = drip_until_closed(c.sock, client_hello())
        c.close()
        self.assertIsNotNone(closed, "still open after %.0fs of dripping (%d bytes)" % (DRIP_BUDGET, sent))
        self.assertGreaterEqual(closed, 1.5)
        self.assert_deadline_error(srv)
        c2 = srv.client()
        self.assertReply(c2.ehlo(), 250)
        starttls(c2)
        self.assertReply(c2.ehlo(), 250)
        c2.close()

    def test_default_deadline_is_socket_timeout(self):
        srv = self.start(secure=True, socketTimeout=2)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            closed, sent = drip_until_closed(s, client_hello())
        self.assertIsNotNone(closed, "still open after %.0fs of dripping (%d bytes)" % (DRIP_BUDGET, sent))
        self.assert_deadline_error(srv)

    def test_deadline_does_not_cut_the_session_after_the_handshake(self):
        srv = self.start(secure=True, handshakeTimeout=1, socketTimeout=60)
        with tls_client(srv.port) as c:
            self.assertReply(c.greeting, 220)
            time.sleep(1.5)
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("NOOP"), 250)
        self.assertEqual(srv.events("error"), [])

    def test_bad_value_refused(self):
        srv = Server(tls_script(handshakeTimeout="soon"), start=False)
        self.addCleanup(srv.cleanup)
        argv = srv.argv()
        r = self.run_cmd(argv[:-1] + ["--check", argv[-1]])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"handshakeTimeout", r.stdout + r.stderr)
