"""PROXY protocol (useProxy = true or trusted CIDRs) behind a real HAProxy
started by the test (mode tcp, send-proxy and send-proxy-v2, plain and
implicit TLS passed through), plus raw headers: v1 TCP4/TCP6/UNKNOWN, v2
PROXY/LOCAL/TCP6, split over writes, followed by pipelined bytes; untrusted
peers and trusted peers without a valid header are closed without a
greeting."""

import os
import shutil
import signal
import smtplib
import socket
import struct
import subprocess
import tempfile
import threading
import time

import harness
from harness import Client, E2ETest, Lua, Server, SharedServerTest, free_port, wait_for
from tlsutil import certs, client_context, multi_script, tls_client

HAPROXY = "/usr/sbin/haproxy"

INFO = Lua(r'''function(s)
    local p = s.proxy
    local proxy = nil
    if type(p) == "table" then
      proxy = {version = p.version, sourceAddress = p.sourceAddress, sourcePort = p.sourcePort,
               destinationAddress = p.destinationAddress, destinationPort = p.destinationPort}
    end
    return {remoteAddress = s.remoteAddress, remotePort = s.remotePort, localAddress = s.localAddress,
            localPort = s.localPort, clientHostname = s.clientHostname, secure = s.secure,
            transmissionType = s.transmissionType, proxy = proxy, proxyType = type(p)}
  end''')

PRE = "local info = " + INFO + "\n"

HOOKS = {
    "onConnect": Lua(r'''function(session)
    record("connect", info(session))
    if session.remoteAddress == "1.2.3.4" then return nil, smtp.reject(421, "Blacklisted " .. session.remoteAddress) end
  end'''),
    "onMailFrom": Lua(r'''function(address, session)
    record("mail", info(session))
  end'''),
    "onData": Lua(r'''function(stream, session)
    local i = info(session)
    i.body = readall(stream)
    record("data", i)
    return "got it"
  end'''),
    "onClose": Lua(r'''function(session)
    record("close", info(session))
  end'''),
}


def listeners(plain_port, secure_port, use_proxy=True, **extra):
    common = dict(useProxy=use_proxy, **extra)
    return multi_script([
        (dict(common, listen="127.0.0.1:%d" % plain_port), HOOKS),
        (dict(common, listen="127.0.0.1:%d" % secure_port, secure=True, **certs().pair("localhost")), HOOKS),
    ], prelude=PRE)


def v1(src="198.51.100.22", dst="203.0.113.7", sport=35646, dport=25, fam="TCP4"):
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport, dport)).encode()


V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(src="198.51.100.22", dst="203.0.113.7", sport=35646, dport=25, cmd=0x21, fam=None, tlv=b""):
    if cmd == 0x20 and fam is None:
        return V2_SIG + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    if ":" in src:
        body = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
        fam = 0x21 if fam is None else fam
    else:
        body = socket.inet_aton(src) + socket.inet_aton(dst)
        fam = 0x11 if fam is None else fam
    body += struct.pack("!HH", sport, dport) + tlv
    return V2_SIG + bytes([cmd, fam]) + struct.pack("!H", len(body)) + body


class HAProxy:
    """A real HAProxy in tcp mode, run in the foreground (-db) from a
    config in a temporary directory; stop() ends it."""

    def __init__(self, routes):
        """routes: list of (frontend port, backend port, server options)."""
        self.dir = tempfile.mkdtemp(prefix="luasmtpd-haproxy-")
        self.cfg = os.path.join(self.dir, "haproxy.cfg")
        self.log_path = os.path.join(self.dir, "haproxy.log")
        parts = ["global", "    maxconn 200", "",
                 "defaults", "    mode tcp", "    timeout connect 5s", "    timeout client 30s",
                 "    timeout server 30s", ""]
        for i, (fe, be, opts) in enumerate(routes):
            parts += ["frontend fe%d" % i, "    bind 127.0.0.1:%d" % fe, "    default_backend be%d" % i, "",
                      "backend be%d" % i, "    server s%d 127.0.0.1:%d %s" % (i, be, opts), ""]
        with open(self.cfg, "w") as f:
            f.write("\n".join(parts) + "\n")
        self.ports = [fe for fe, _, _ in routes]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([HAPROXY, "-f", self.cfg, "-db"], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=self._log, cwd=self.dir)
        deadline = time.monotonic() + 10
        pending = list(self.ports)
        while pending:
            if self.proc.poll() is not None:
                raise AssertionError("haproxy exited with %s:\n%s" % (self.proc.returncode, self.log()))
            if harness._listening(pending[0]) or (harness._listening(pending[0]) is None and
                                                  harness._connectable(pending[0])):
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("haproxy not listening on %s:\n%s" % (pending, self.log()))
            time.sleep(0.02)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-3000:]
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class ProxyTest(SharedServerTest):
    def mine(self, kind, port):
        return [e for e in self.srv.events(kind) if e.get("remotePort") == port]

    def assert_closed_silently(self, c, timeout=5.0):
        got = c.expect_close(timeout)
        self.assertEqual(got, b"", "closed without a greeting, but got %r" % got)


class BehindHAProxy(ProxyTest):
    @classmethod
    def setUpClass(cls):
        if not os.access(HAPROXY, os.X_OK):
            raise AssertionError("%s is not installed (make deps installs it)" % HAPROXY)
        cls.plain, cls.secure = free_port(), free_port()
        cls.srv = Server(listeners(cls.plain, cls.secure), listen=False, ports=[cls.plain, cls.secure])
        cls.fe = {"v1": free_port(), "v2": free_port(), "tls1": free_port(), "tls2": free_port()}
        try:
            cls.haproxy = HAProxy([(cls.fe["v1"], cls.plain, "send-proxy"), (cls.fe["v2"], cls.plain, "send-proxy-v2"),
                                   (cls.fe["tls1"], cls.secure, "send-proxy"),
                                   (cls.fe["tls2"], cls.secure, "send-proxy-v2")])
        except BaseException:
            cls.srv.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.haproxy.stop()
        finally:
            cls.srv.stop()

    def check_session(self, s, port, fe, version, secure=False):
        self.assertEqual(s["remoteAddress"], "127.0.0.1")
        self.assertEqual(s["remotePort"], port, "the client's own port, not HAProxy's")
        self.assertEqual(s["localPort"], fe, "the address the client connected to")
        self.assertEqual(s["proxy"], {"version": version, "sourceAddress": "127.0.0.1", "sourcePort": port,
                                      "destinationAddress": "127.0.0.1", "destinationPort": fe})
        self.assertIs(s["secure"], secure)

    def test_plain(self):
        for kind, version in [("v1", 1), ("v2", 2)]:
            with self.subTest(kind=kind):
                with Client(self.fe[kind]) as c:
                    self.assertReply(c.greeting, 220)
                    self.assertReply(c.ehlo(), 250)
                    self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
                    self.assertReply(c.cmd("QUIT"), 221)
                [cn] = self.mine("connect", c.local_port)
                self.check_session(cn, c.local_port, self.fe[kind], version)
                [m] = self.mine("mail", c.local_port)
                self.check_session(m, c.local_port, self.fe[kind], version)
                self.assertEqual(m["clientHostname"], "[127.0.0.1]")
                wait_for(lambda: self.mine("close", c.local_port))
                self.assertEqual(len(self.mine("close", c.local_port)), 1)

    def test_smtplib_message(self):
        for kind, version in [("v1", 1), ("v2", 2)]:
            with self.subTest(kind=kind):
                with smtplib.SMTP("127.0.0.1", self.fe[kind], local_hostname="client.example", timeout=10) as s:
                    port = s.sock.getsockname()[1]
                    self.assertEqual(s.sendmail("a@example.com", ["b@example.com"],
                                                b"Subject: via haproxy\r\n\r\n%s\r\n" % kind.encode()), {})
                [d] = self.mine("data", port)
                self.check_session(d, port, self.fe[kind], version)
                self.assertIn(kind, d["body"])
                self.assertEqual(d["transmissionType"], "ESMTP")

    def test_implicit_tls(self):
        for kind, version in [("tls1", 1), ("tls2", 2)]:
            with self.subTest(kind=kind):
                with tls_client(self.fe[kind]) as c:
                    self.assertReply(c.greeting, 220)
                    self.assertReply(c.ehlo(), 250)
                    self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
                [m] = self.mine("mail", c.local_port)
                self.check_session(m, c.local_port, self.fe[kind], version, secure=True)
                self.assertEqual(m["transmissionType"], "ESMTPS")

    def test_smtplib_ssl(self):
        with smtplib.SMTP_SSL("127.0.0.1", self.fe["tls2"], local_hostname="client.example", timeout=10,
                              context=client_context()) as s:
            port = s.sock.getsockname()[1]
            self.assertEqual(s.sendmail("a@example.com", ["b@example.com"], b"Subject: tls\r\n\r\nsecret\r\n"), {})
        [d] = self.mine("data", port)
        self.check_session(d, port, self.fe["tls2"], 2, secure=True)
        self.assertEqual(d["body"], "Subject: tls\r\n\r\nsecret\r\n")

    def test_swaks(self):
        r = self.run_cmd(["swaks", "--server", "127.0.0.1:%d" % self.fe["v2"], "--from", "a@example.com",
                          "--to", "b@example.com", "--helo", "client.example", "--body", "swaks via haproxy"])
        self.assertEqual(r.returncode, 0, r.stdout.decode(errors="replace")[-2000:])
        ds = [d for d in self.srv.events("data") if "swaks via haproxy" in d["body"]]
        self.assertEqual(len(ds), 1)
        self.assertEqual(ds[0]["proxy"]["version"], 2)
        self.assertNotEqual(ds[0]["remotePort"], None)

    def test_parallel_clients(self):
        """Each of many simultaneous clients is seen with its own port."""
        results, errors = {}, []

        def one(kind):
            try:
                with smtplib.SMTP("127.0.0.1", self.fe[kind], local_hostname="client.example", timeout=10) as s:
                    port = s.sock.getsockname()[1]
                    s.sendmail("a@example.com", ["b@example.com"], b"port %d\r\n" % port)
                    results[port] = kind
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

        threads = [threading.Thread(target=one, args=("v1" if i % 2 else "v2",)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        self.assertEqual(errors, [])
        self.assertEqual(len(results), 16)
        for port, kind in results.items():
            [d] = self.mine("data", port)
            self.assertEqual(d["body"], "port %d\r\n" % port)
            self.assertEqual(d["proxy"]["version"], 1 if kind == "v1" else 2)


class RawHeaders(ProxyTest):
    @classmethod
    def setUpClass(cls):
        cls.plain, cls.secure = free_port(), free_port()
        cls.srv = Server(listeners(cls.plain, cls.secure, socketTimeout=0.5), listen=False,
                         ports=[cls.plain, cls.secure])

    def proxied(self, header, pieces=1, delay=0.05, then=b""):
        c = Client(self.plain, greet=False)
        step = max(1, -(-len(header) // pieces))
        for i in range(0, len(header), step):
            c.send(header[i:i + step])
            if i + step < len(header):
                time.sleep(delay)
        if then:
            c.send(then)
        c.greeting = c.read_reply()
        return c

    def test_v1_tcp4(self):
        with self.proxied(v1()) as c:
            self.assertReply(c.greeting, 220)
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
        [m] = self.mine("mail", 35646)
        self.assertEqual(m["remoteAddress"], "198.51.100.22")
        self.assertEqual(m["clientHostname"], "[198.51.100.22]")
        self.assertEqual(m["localAddress"], "203.0.113.7")
        self.assertEqual(m["localPort"], 25)
        self.assertEqual(m["proxy"], {"version": 1, "sourceAddress": "198.51.100.22", "sourcePort": 35646,
                                      "destinationAddress": "203.0.113.7", "destinationPort": 25})
        [cn] = self.mine("connect", 35646)
        self.assertEqual(cn["proxy"]["sourceAddress"], "198.51.100.22")

    def test_v1_split_over_writes(self):
        # the whole header must arrive within socketTimeout (0.5 s here)
        h = v1(src="192.0.2.10", sport=1111)
        with self.proxied(h, pieces=len(h), delay=0.003) as c:
            self.assertReply(c.greeting, 220)
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
        [m] = self.mine("mail", 1111)
        self.assertEqual(m["remoteAddress"], "192.0.2.10")
        with self.proxied(v1(src="192.0.2.11", sport=1112), pieces=3, delay=0.1) as c:
            self.assertReply(c.greeting, 220)
            self.assertReply(c.ehlo(), 250)

    def test_v2_split_over_writes(self):
        h = v2(src="192.0.2.20", sport=2222, tlv=b"\x01\x00\x04smtp")
        with self.proxied(h, pieces=7, delay=0.02) as c:
            self.assertReply(c.greeting, 220)
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
        [m] = self.mine("mail", 2222)
        self.assertEqual(m["proxy"], {"version": 2, "sourceAddress": "192.0.2.20", "sourcePort": 2222,
                                      "destinationAddress": "203.0.113.7", "destinationPort": 25})

    def test_pipelined_after_header(self):
        """The bytes after the header are the session's first bytes."""
        for header in [v1(src="192.0.2.30", sport=3030), v2(src="192.0.2.31", sport=3031)]:
            c = Client(self.plain, greet=False)
            with c:
                c.send(header + b"EHLO client.example\r\nMAIL FROM:<a@example.com>\r\nNOOP\r\n")
                self.assertCodes(c.read_replies(4), [220, 250, 250, 250])
        self.assertEqual(len(self.mine("mail", 3030)), 1)
        self.assertEqual(len(self.mine("mail", 3031)), 1)

    def test_tcp6(self):
        for header, port in [(v1(src="2001:db8::1", dst="2001:db8::25", sport=4001, fam="TCP6"), 4001),
                             (v2(src="2001:db8::2", dst="2001:db8::25", sport=4002), 4002)]:
            with self.proxied(header) as c:
                self.assertReply(c.greeting, 220)
                self.assertReply(c.ehlo(), 250)
                self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
            [m] = self.mine("mail", port)
            self.assertTrue(m["remoteAddress"].startswith("2001:db8::"), m)
            self.assertEqual(m["proxy"]["destinationAddress"], "2001:db8::25")

    def test_unknown_and_local(self):
        """PROXY UNKNOWN and v2 LOCAL: the connection's own addresses stand."""
        for header, version in [(b"PROXY UNKNOWN\r\n", 1), (v2(cmd=0x20), 2)]:
            with self.subTest(version=version):
                c = Client(self.plain, greet=False)
                with c:
                    c.send(header)
                    self.assertReply(c.read_reply(), 220)
                    self.assertReply(c.ehlo(), 250)
                    self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
                [m] = self.mine("mail", c.local_port)
                self.assertEqual(m["remoteAddress"], "127.0.0.1")
                self.assertEqual(m["localPort"], self.plain)
                self.assertEqual(m["proxy"], {"version": version})

    def test_garbage_closed_without_greeting(self):
        for junk in [b"EHLO client.example\r\n", b"GET / HTTP/1.0\r\n\r\n", b"PROXY TCP4 1.2.3.4\r\n",
                     b"PROXY TCP4 999.2.3.4 5.6.7.8 1 2\r\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
                     b"NOTPROXY garbage line\r\n", b"A" * 1500, b"PROXY TCP4 " + b"A" * 2048,
                     V2_SIG + b"\x21\x11\xff\xff", b"\x16\x03\x01\x02\x00"]:
            with self.subTest(junk=junk[:30]):
                c = Client(self.plain, greet=False)
                with c:
                    try:
                        c.send(junk)
                    except OSError:
                        pass
                    t0 = time.monotonic()
                    self.assert_closed_silently(c)
                    self.assertLess(time.monotonic() - t0, 3)
                self.assertEqual(self.mine("connect", c.local_port), [], "onConnect ran for a bad header")

    def test_nothing_within_socket_timeout(self):
        for partial in [b"", b"PROXY TCP4 ", b"PROXY TCP4 198.51.100.22 203.0.113.7 35646 25", V2_SIG[:8],
                        v2()[:20]]:
            with self.subTest(partial=partial):
                c = Client(self.plain, greet=False)
                with c:
                    t0 = time.monotonic()
                    if partial:
                        c.send(partial)
                    self.assert_closed_silently(c, timeout=5)
                    dt = time.monotonic() - t0
                    self.assertGreater(dt, 0.3, "closed before socketTimeout (0.5 s)")
                    self.assertLess(dt, 3)

    def test_onconnect_sees_proxied_address(self):
        """onConnect runs after the header and judges the real client."""
        for header in [v1(src="1.2.3.4", sport=9001), v2(src="1.2.3.4", sport=9002)]:
            c = Client(self.plain, greet=False)
            with c:
                c.send(header)
                r = c.read_reply()
                self.assertReply(r, 421)
                self.assertIn("Blacklisted 1.2.3.4", r.text)
                c.expect_close()

    def test_onconnect_reject_after_header_and_tls(self):
        raw = socket.create_connection(("127.0.0.1", self.secure), timeout=10)
        raw.sendall(v2(src="1.2.3.4", sport=9003))
        s = client_context().wrap_socket(raw, server_hostname="localhost")
        with Client(self.secure, sock=s, greet=False) as c:
            r = c.read_reply()
            self.assertReply(r, 421)
            self.assertIn("Blacklisted 1.2.3.4", r.text)
            c.expect_close()

    def test_fin_before_header(self):
        c = Client(self.plain, greet=False)
        with c:
            c.sock.shutdown(socket.SHUT_WR)
            self.assert_closed_silently(c, timeout=3)
        c = Client(self.plain, greet=False)
        with c:
            c.send(b"PROXY TCP4 198.51.100.22 203.0")
            c.sock.shutdown(socket.SHUT_WR)
            self.assert_closed_silently(c, timeout=3)
        time.sleep(0.1)
        self.assertEqual([e for e in self.srv.events("connect") if e["remotePort"] == c.local_port], [])

    def test_idle_after_header_times_out(self):
        with self.proxied(v1(src="192.0.2.40", sport=4040)) as c:
            self.assertReply(c.greeting, 220)
            r = c.read_reply(timeout=5)
            self.assertReply(r, 421, "4.4.2")
            c.expect_close()

    def test_rst_mid_header(self):
        c = Client(self.plain, greet=False)
        c.send(b"PROXY TCP4 198.51")
        time.sleep(0.05)
        c.rst()
        c = Client(self.plain, greet=False)
        c.send(V2_SIG + b"\x21")
        c.rst()
        time.sleep(0.1)
        self.assertTrue(self.srv.alive())
        with self.proxied(v1(src="192.0.2.50", sport=5050)) as c:
            self.assertReply(c.greeting, 220)

    def test_header_twice(self):
        """A second header is an SMTP line like any other (an unknown command)."""
        with self.proxied(v1(src="192.0.2.60", sport=6060)) as c:
            self.assertReply(c.greeting, 220)
            r = c.cmd(v1(src="192.0.2.61", sport=6061)[:-2].decode())
            self.assertEqual(r.code, 500, r)
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
        [m] = self.mine("mail", 6060)
        self.assertEqual(m["remoteAddress"], "192.0.2.60")

    def test_implicit_tls_after_header(self):
        for header, src, port in [(v1(src="192.0.2.70", sport=7070), "192.0.2.70", 7070),
                                  (v2(src="192.0.2.71", sport=7071), "192.0.2.71", 7071)]:
            raw = socket.create_connection(("127.0.0.1", self.secure), timeout=10)
            raw.sendall(header)
            s = client_context().wrap_socket(raw, server_hostname="localhost")
            with Client(self.secure, sock=s) as c:
                self.assertReply(c.greeting, 220)
                self.assertReply(c.ehlo(), 250)
                self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
            [m] = self.mine("mail", port)
            self.assertIs(m["secure"], True)
            self.assertEqual(m["remoteAddress"], src)
            self.assertEqual(m["proxy"]["sourceAddress"], src)
            self.assertEqual(m["transmissionType"], "ESMTPS")

    def test_tls_without_header_refused(self):
        """On a useProxy listener a ClientHello is not a PROXY header."""
        raw = socket.create_connection(("127.0.0.1", self.secure), timeout=5)
        try:
            with self.assertRaises((OSError, socket.timeout)):
                client_context().wrap_socket(raw, server_hostname="localhost")
        finally:
            raw.close()


class Untrusted(ProxyTest):
    @classmethod
    def setUpClass(cls):
        cls.plain, cls.secure = free_port(), free_port()
        cls.srv = Server(listeners(cls.plain, cls.secure, use_proxy=["192.0.2.0/24", "2001:db8::/32"]),
                         listen=False, ports=[cls.plain, cls.secure])

    def test_refused_without_greeting(self):
        for header in [b"", v1(), v2()]:
            with self.subTest(header=header[:10]):
                c = Client(self.plain, greet=False)
                with c:
                    if header:
                        try:
                            c.send(header)
                        except OSError:
                            pass
                    t0 = time.monotonic()
                    self.assert_closed_silently(c, timeout=3)
                    self.assertLess(time.monotonic() - t0, 1.5, "an untrusted peer is closed at once")
        self.assertEqual(self.srv.events("connect"), [])


class MaxClientsWhileWaiting(ProxyTest):
    """maxClients counts sockets still waiting for their PROXY header."""

    @classmethod
    def setUpClass(cls):
        cls.plain, cls.secure = free_port(), free_port()
        cls.srv = Server(listeners(cls.plain, cls.secure, maxClients=2, socketTimeout=5), listen=False,
                         ports=[cls.plain, cls.secure])

    def test_third_refused_quickly(self):
        waiting = [Client(self.plain, greet=False) for _ in range(2)]
        try:
            time.sleep(0.1)
            c = Client(self.plain, greet=False)
            with c:
                t0 = time.monotonic()
                got = c.expect_close(timeout=3)
                self.assertLess(time.monotonic() - t0, 1.0)
                self.assertTrue(got == b"" or got.startswith(b"421 "), got)
        finally:
            for w in waiting:
                w.close()
        # the slots free up again
        def ok():
            c = Client(self.plain, greet=False)
            with c:
                c.send(v1(src="192.0.2.90", sport=9090))
                try:
                    return c.read_reply(timeout=2).code == 220
                except AssertionError:
                    return False
        self.assertTrue(wait_for(ok, timeout=5, interval=0.1))


class TrustedList(ProxyTest):
    @classmethod
    def setUpClass(cls):
        cls.plain, cls.secure = free_port(), free_port()
        cls.srv = Server(listeners(cls.plain, cls.secure, use_proxy=["192.0.2.0/24", "127.0.0.1/32"]),
                         listen=False, ports=[cls.plain, cls.secure])

    def test_trusted_peer(self):
        c = Client(self.plain, greet=False)
        with c:
            c.send(v1(src="198.51.100.1", sport=8080))
            self.assertReply(c.read_reply(), 220)
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
        [m] = self.mine("mail", 8080)
        self.assertEqual(m["remoteAddress"], "198.51.100.1")


class NoProxy(E2ETest):
    def test_header_is_not_special_without_useProxy(self):
        port, sport = free_port(), free_port()
        with Server(listeners(port, sport, use_proxy=False), listen=False, ports=[port, sport]) as srv:
            with srv.client(port) as c:
                self.assertReply(c.greeting, 220)
                r = c.cmd(v1()[:-2].decode())
                self.assertEqual(r.code, 500, r)
                self.assertReply(c.ehlo(), 250)
                self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
            [m] = [e for e in srv.events("mail") if e["remotePort"] == c.local_port]
            self.assertEqual(m["remoteAddress"], "127.0.0.1")
            self.assertEqual(m["proxyType"], "nil")
