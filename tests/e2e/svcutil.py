"""Helper services for the async-platform end-to-end tests (Python 3 stdlib
only): the things a hook talks to through smtp.tcp and smtp.dns.

Redis()            a real redis-server on a free 127.0.0.1 port (no
                   persistence), with command() / redis_command() to seed it.
Dnsmasq(zone)      dnsmasq serving a local zone on a free 127.0.0.1 port
                   (UDP and TCP), nothing forwarded anywhere.
SilentUDP          a bound UDP port that never answers (DNS timeouts).
EchoServer, SilentServer, ScriptedServer, TLSServer
                   small threaded TCP servers on free ports.
HttpServer         a real HTTP/1.1 (or HTTPS) server whose answers a test
                   decides; it keeps the requests and counts connections.
self_signed()      a self-signed certificate for localhost made with openssl.
Fixtures           a mixin: a test class's daemons and servers started once
                   (start_fixtures, use) and all stopped after its tests.
CASES_PRELUDE, case_hook(), run_case()
                   a Lua "case runner": RCPT TO:<name@cases.test> runs the
                   Lua function CASES[name] inside onRcptTo and records
                   what it returned; run_case() sends the RCPT and returns
                   that record.

Every service is stopped by stop() / the context manager / Fixtures, and anything
still running when the test process exits is killed (atexit), so a failing
test never leaves a daemon behind. A missing redis-server or dnsmasq is a
test failure with a clear message, never a skip: `make test` installs them.
"""

import atexit
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time

from harness import Lua, wait_for

SERVICE_START_TIMEOUT = 10.0
SERVICE_STOP_TIMEOUT = 5.0
IO_TIMEOUT = 10.0  # every socket read of the helper servers

_running = []  # every Service and helper server started and not yet stopped


def _shut_down(lock, conns):
    """Shuts down (both ways) the connections a helper server still holds,
    so its threads blocked on them return."""
    with lock:
        conns = list(conns)
    for s in conns:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _stop_all():
    for s in list(_running):
        try:
            s.stop()
        except Exception:  # noqa: BLE001
            pass


atexit.register(_stop_all)


# ------------------------------------------------------------------ binaries

REDIS_CANDIDATES = ["redis-server", "/usr/bin/redis-server", "/usr/local/bin/redis-server"]
DNSMASQ_CANDIDATES = ["dnsmasq", "/usr/sbin/dnsmasq", "/usr/local/sbin/dnsmasq"]


def require_binary(what, candidates, package):
    """The path of the first candidate that exists; else fails the test
    (never skips it): the async tests need the real daemon."""
    for c in candidates:
        p = shutil.which(c) if "/" not in c else (c if os.access(c, os.X_OK) else None)
        if p:
            return p
    raise AssertionError("%s not found (tried %s): install the Debian package %s "
                         "(`make test` installs it on a fresh machine)"
                         % (what, ", ".join(candidates), package))


def redis_binary():
    return require_binary("redis-server", REDIS_CANDIDATES, "redis-server")


def dnsmasq_binary():
    return require_binary("dnsmasq", DNSMASQ_CANDIDATES, "dnsmasq-base")


# --------------------------------------------------------------------- ports

def free_port(udp_too=False):
    """A port free on 127.0.0.1 for TCP (and UDP when udp_too)."""
    for _ in range(50):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        if not udp_too:
            t.close()
            return port
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            u.close()
            t.close()
        return port
    raise AssertionError("no free port on 127.0.0.1")


def closed_port():
    """A TCP port on 127.0.0.1 where nothing listens (connect is refused)."""
    return free_port()


def _tcp_listening(port, host="127.0.0.1"):
    want = "%08X:%04X" % (int.from_bytes(socket.inet_aton(host), "little"), port)
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[3] == "0A" and parts[1] == want:
                    return True
    except OSError:
        return False
    return False


# ------------------------------------------------------------------ services

class StopsOnExit:
    """Stopped (self.stop()) when its `with` block ends, however it ends."""

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()
        return False


class Service(StopsOnExit):
    """A daemon started by a test: argv runs in the foreground with its
    output in a log file; ready when `port` LISTENs on `host` (127.0.0.1
    unless another loopback address is given)."""

    def __init__(self, name, argv, port, tmp, ready=None, host="127.0.0.1",
                 start_timeout=SERVICE_START_TIMEOUT):
        self.name = name
        self.argv = argv
        self.port = port
        self.tmp = tmp
        self.log_path = os.path.join(tmp, name + ".log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=tmp, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        _running.append(self)
        deadline = time.monotonic() + start_timeout
        while True:
            if self.proc.poll() is not None:
                log = self.log()
                self.stop()
                raise AssertionError("%s exited with %s at start:\n%s\n%s"
                                     % (name, self.proc.returncode, " ".join(argv), log[-3000:]))
            if _tcp_listening(port, host) and (ready is None or ready(self)):
                break
            if time.monotonic() > deadline:
                log = self.log()
                self.stop()
                raise AssertionError("%s not ready on %s:%d after %.0fs:\n%s"
                                     % (name, host, port, start_timeout, log[-3000:]))
            time.sleep(0.02)

    def _start_on_a_free_port(self, name, argv_for, ready, udp_too=False, host="127.0.0.1", port=None):
        """Starts argv_for(port, tmp) on a free port (or the given one) in a
        fresh temporary directory, trying three times: another process may
        take a free port before the daemon binds it."""
        fixed = port
        for attempt in range(3):
            tmp = tempfile.mkdtemp(prefix="luasmtpd-%s-" % name)  # a failed start removed the last one
            port = fixed or free_port(udp_too)
            try:
                Service.__init__(self, name, argv_for(port, tmp), port, tmp, ready, host=host)
                return
            except AssertionError:
                if attempt == 2:
                    raise

    def alive(self):
        return self.proc.poll() is None

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        if self in _running:
            _running.remove(self)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(SERVICE_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(SERVICE_STOP_TIMEOUT)
        if not self._log.closed:
            self._log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------- redis

def resp(*args):
    """A RESP command (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode("utf-8")
        elif isinstance(a, int):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def _resp_read(f):
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise AssertionError("redis: truncated reply %r" % line)
    t, rest = line[:1], line[1:-2]
    if t in (b"+", b"-", b":"):
        if t == b"-":
            raise AssertionError("redis error: %s" % rest.decode("utf-8", "replace"))
        return rest.decode() if t == b"+" else int(rest)
    if t == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2]
    if t == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise AssertionError("redis: unexpected reply %r" % line)


def redis_command(port, *args):
    """Runs one command against the redis on port; returns the decoded reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as s:
        s.settimeout(IO_TIMEOUT)
        s.sendall(resp(*args))
        with s.makefile("rb") as f:
            return _resp_read(f)


class Redis(Service):
    """redis-server on a free loopback port (.port), no persistence, in a
    temporary directory of its own; stopped by PID (stop(), or as a context
    manager, or by Fixtures)."""

    def __init__(self):
        exe = redis_binary()
        self._start_on_a_free_port("redis", lambda port, tmp: [
            exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--dir", tmp, "--protected-mode", "yes", "--databases", "1",
            "--loglevel", "warning"], Redis._ready)

    @staticmethod
    def _ready(svc):
        try:
            return redis_command(svc.port, "PING") == "PONG"
        except (OSError, AssertionError):
            return False

    def command(self, *args):
        """Runs one command (redis_command) and returns the decoded reply."""
        return redis_command(self.port, *args)


# ------------------------------------------------------------------- dnsmasq

def dns_query_udp(port, name, qtype=1, timeout=2.0, host="127.0.0.1"):
    """A minimal DNS client (for readiness probes and diagnostics): returns
    the response code (0 NOERROR, 3 NXDOMAIN, ...) and the answer count."""
    import struct
    qid = os.getpid() & 0xFFFF
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", qtype, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.sendto(q, (host, port))
        data, _ = s.recvfrom(4096)
    finally:
        s.close()
    flags, _qd, an = struct.unpack(">HHH", data[2:8])
    return flags & 0xF, an


class Dnsmasq(Service):
    """dnsmasq answering only from zone_lines (dnsmasq.conf lines such as
    "address=/a.test/192.0.2.1", "ptr-record=...", "local=/test/") on a free
    127.0.0.1 port (.port), UDP and TCP (or on the given loopback address
    and port: a resolver that resolv.conf can name must be on port 53).
    Nothing is read from /etc (no-resolv, no-hosts) and nothing is
    forwarded. Stopped by PID."""

    def __init__(self, zone_lines, address="127.0.0.1", port=None):
        exe = dnsmasq_binary()

        def argv(port, tmp):
            conf = os.path.join(tmp, "dnsmasq.conf")
            lines = ["no-resolv", "no-hosts", "no-poll", "bind-interfaces", "listen-address=" + address,
                     "port=%d" % port, "cache-size=0", "log-queries", "log-facility=-",
                     "pid-file="]
            if os.geteuid() == 0:
                lines.append("user=root")  # no switch to nobody: the temp files stay ours
            lines += list(zone_lines)
            with open(conf, "w") as f:
                f.write("\n".join(lines) + "\n")
            return [exe, "--keep-in-foreground", "--conf-file=" + conf]

        def ready(svc):
            try:
                dns_query_udp(svc.port, "ready.probe.invalid", timeout=0.5, host=address)
                return True
            except OSError:
                return False
        self._start_on_a_free_port("dnsmasq", argv, ready, udp_too=True, host=address, port=port)


class SilentUDP(StopsOnExit):
    """A UDP port that receives and never answers (a DNS server that times
    out). Counts the datagrams it got."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = 0
        self._stop = False
        self.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        _running.append(self)

    def _run(self):
        while not self._stop:
            try:
                self.sock.recvfrom(4096)
                self.received += 1
            except socket.timeout:
                continue
            except OSError:
                return

    def stop(self):
        if self in _running:
            _running.remove(self)
        self._stop = True
        self.thread.join(2)
        self.sock.close()


# ------------------------------------------------------------ TCP test servers

class ThreadedServer(StopsOnExit):
    """A listener on a free 127.0.0.1 port; each connection runs
    handle(sock) in a daemon thread with IO_TIMEOUT on every read. stop()
    closes the listener and every connection and joins the threads."""

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.accepted = 0
        self.closed_by_peer = 0  # connections the peer closed (EOF or reset)
        self.errors = []
        self.lock = threading.Lock()
        self.conns = []
        self.threads = []
        self._stop = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()
        _running.append(self)

    def _accept(self):
        while not self._stop:
            try:
                s, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            s.settimeout(IO_TIMEOUT)
            with self.lock:
                self.accepted += 1
                self.conns.append(s)
            t = threading.Thread(target=self._serve, args=(s,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, s):
        try:
            self.handle(s)
        except Exception as e:  # noqa: BLE001
            with self.lock:
                self.errors.append(repr(e))
        finally:
            try:
                s.close()
            except OSError:
                pass

    def peer_closed(self):
        with self.lock:
            self.closed_by_peer += 1

    def handle(self, s):
        raise NotImplementedError

    def stop(self):
        if self in _running:
            _running.remove(self)
        self._stop = True
        try:
            self.lsock.close()
        except OSError:
            pass
        _shut_down(self.lock, self.conns)
        self.thread.join(2)
        for t in self.threads:
            t.join(2)


class EchoServer(ThreadedServer):
    """Sends back every byte it receives, until the peer closes."""

    def handle(self, s):
        while not self._stop:
            try:
                d = s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                self.peer_closed()
                return
            if not d:
                self.peer_closed()
                return
            s.sendall(d)


class SilentServer(ThreadedServer):
    """Accepts and never says anything; notices when the peer closes."""

    def handle(self, s):
        s.settimeout(0.2)
        deadline = time.monotonic() + 60
        while not self._stop and time.monotonic() < deadline:
            try:
                d = s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                self.peer_closed()
                return
            if not d:
                self.peer_closed()
                return


class ScriptedServer(ThreadedServer):
    """Sends `data` (bytes) at once, then closes (after `linger` seconds)."""

    def __init__(self, data, linger=0.0):
        self.data = data
        self.linger = linger
        super().__init__()

    def handle(self, s):
        s.sendall(self.data)
        if self.linger:
            time.sleep(self.linger)
        s.shutdown(socket.SHUT_WR)
        # wait for the peer's close (bounded) so that nothing is reset early
        try:
            while s.recv(65536):
                pass
        except OSError:
            pass


class TLSServer(ThreadedServer):
    """TLS from the first byte with cert/key: reads one line and answers
    "TLS:<line>\\r\\n", then closes. Failed handshakes are counted."""

    def __init__(self, cert, key):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.handshakes = 0
        self.failed_handshakes = 0
        super().__init__()

    def handle(self, s):
        try:
            t = self.ctx.wrap_socket(s, server_side=True)
        except (ssl.SSLError, OSError):
            with self.lock:
                self.failed_handshakes += 1
            return
        with self.lock:
            self.handshakes += 1
        try:
            buf = b""
            while b"\n" not in buf:
                d = t.recv(4096)
                if not d:
                    return
                buf += d
            t.sendall(b"TLS:" + buf.split(b"\n")[0].rstrip(b"\r") + b"\r\n")
            try:
                t.unwrap()
            except (ssl.SSLError, OSError):
                pass
        finally:
            t.close()


class HttpRequest:
    """What an HttpServer received: method, path, headers (an
    email.message.Message, case-insensitive), body (bytes) and the number
    of the connection it came on (1 for the first accepted)."""

    def __init__(self, method, path, headers, body, conn):
        self.method, self.path, self.headers, self.body, self.conn = method, path, headers, body, conn


class HttpServer(StopsOnExit):
    """A real HTTP/1.1 server (the stdlib's http.server, keepalive on) on a
    free 127.0.0.1 port; HTTPS when cert and key are given (the handshake
    runs in the connection's thread). respond(request) -> (status, headers,
    body) decides each answer: body bytes (sent with Content-Length), a
    list of bytes (sent chunked, one chunk each), or None to never answer
    (the connection is held until the peer closes or stop()). Counts the
    connections accepted and failed handshakes; keeps every request."""

    def __init__(self, respond, cert=None, key=None, max_tls=None):
        import http.server
        outer = self
        self.respond = respond
        self.requests = []
        self.accepted = 0
        self.failed_handshakes = 0
        self.resumed = 0  # TLS handshakes that resumed a session
        self.lock = threading.Lock()
        self.conns = []
        self._stopping = threading.Event()
        self.ctx = None
        if cert:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(cert, key)
            if max_tls:
                self.ctx.maximum_version = max_tls

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = IO_TIMEOUT

            def setup(self):
                with outer.lock:
                    outer.accepted += 1
                    self.conn_no = outer.accepted
                    outer.conns.append(self.request)
                if outer.ctx:
                    self.request.settimeout(IO_TIMEOUT)
                    try:
                        self.request = outer.ctx.wrap_socket(self.request, server_side=True)
                    except (ssl.SSLError, OSError):
                        with outer.lock:
                            outer.failed_handshakes += 1
                        raise
                    if self.request.session_reused:
                        with outer.lock:
                            outer.resumed += 1
                super().setup()

            def log_message(self, *a):
                pass

            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                req = HttpRequest(self.command, self.path, self.headers, body, self.conn_no)
                with outer.lock:
                    outer.requests.append(req)
                status, headers, body = outer.respond(req)
                if body is None:
                    # never answers: waits for the peer's close (bounded)
                    self.request.settimeout(0.2)
                    deadline = time.monotonic() + 60
                    while not outer._stopping.is_set() and time.monotonic() < deadline:
                        try:
                            if not self.request.recv(4096):
                                break
                        except socket.timeout:
                            continue
                        except OSError:
                            break
                    self.close_connection = True
                    return
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if isinstance(body, list):
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for chunk in body:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _any

        class Httpd(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # handshakes refused by the client, peers gone: counted above

        self.httpd = Httpd(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()
        _running.append(self)

    def bodies(self, path=None):
        with self.lock:
            return [r.body for r in self.requests if path is None or r.path == path]

    def stop(self):
        if self in _running:
            _running.remove(self)
        self._stopping.set()
        self.httpd.shutdown()
        _shut_down(self.lock, self.conns)
        self.httpd.server_close()
        self.thread.join(2)


_self_signed = None


def self_signed():
    """(cert, key) paths of a self-signed certificate for CN=localhost, made
    once per process with openssl and removed at exit."""
    global _self_signed
    if _self_signed is None:
        d = tempfile.mkdtemp(prefix="luasmtpd-selfsigned-")
        atexit.register(shutil.rmtree, d, True)
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                            "-keyout", key, "-out", cert],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        if r.returncode != 0:
            raise AssertionError("openssl req failed: %s" % r.stdout.decode("utf-8", "replace"))
        _self_signed = (cert, key)
    return _self_signed


# ------------------------------------------------------------------ fixtures

class Fixtures:
    """Mixin for a test class whose tests share daemons and servers:

        class MyTest(svcutil.Fixtures, E2ETest):
            @classmethod
            def start_fixtures(cls):
                cls.redis = cls.use(svcutil.Redis())
                cls.srv = cls.use(Server(script(...)))

    use(x) keeps anything with a stop() (Redis, Dnsmasq, HttpServer, the
    helper servers, the luasmtpd Server) and returns it. setUpClass runs
    start_fixtures and, when it fails, stops what it had started;
    tearDownClass stops them all, newest first (the Server before the
    daemons it talks to), and raises the first error once every one was
    tried."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._fixtures = []
        try:
            cls.start_fixtures()
        except BaseException:
            cls._stop_fixtures()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls._stop_fixtures()
        finally:
            super().tearDownClass()

    @classmethod
    def start_fixtures(cls):
        raise NotImplementedError

    @classmethod
    def use(cls, fixture):
        cls._fixtures.append(fixture)
        return fixture

    @classmethod
    def _stop_fixtures(cls):
        first = None
        while cls._fixtures:
            try:
                cls._fixtures.pop().stop()
            except BaseException as e:  # noqa: BLE001 - the others still stop
                first = first or e
        if first:
            raise first


# -------------------------------------------------------------- case runner

# Lua: cases are functions of the session returning a table of facts; R()
# packs a call's results (value, error, extra) for the record.
CASES_PRELUDE = r'''
local CASES = {}
local function R(a, b, c) return {v = a, err = b, extra = c, vtype = type(a)} end
'''


def case_hook():
    """An onRcptTo that runs CASES[local part] and records its result (kind
    "case": the returned table plus case, port, elapsed)."""
    return Lua(r'''function(address, session)
    local name = address.address:match("^(.-)@")
    local f = CASES[name]
    if not f then return nil, smtp.reject(550, "5.1.1 no such case: " .. tostring(name)) end
    local t0 = smtp.now()
    local r = f(session) or {}
    r.case = name
    r.port = session.remotePort
    r.elapsed = smtp.now() - t0
    record("case", r)
  end''')


def run_case(test, client, name, expect=250, timeout=None):
    """Sends RCPT TO:<name@cases.test> on a client that has said MAIL FROM;
    checks the reply code and returns the case's record."""
    r = client.cmd("RCPT TO:<%s@cases.test>" % name, timeout)
    test.assertEqual(r.code, expect, "case %s: RCPT answered %r" % (name, r.raw))
    if expect != 250:
        return r
    srv = client.server
    evs = wait_for(lambda: [e for e in srv.events("case")
                            if e.get("case") == name and e.get("port") == client.local_port], 3)
    test.assertTrue(evs, "case %s left no record" % name)
    return evs[-1]


class CaseSessions:
    """For a test class whose cls.srv runs CASES_PRELUDE's cases in onRcptTo:
    session() is a client that has said EHLO and MAIL FROM; case(name) runs
    one case in a session of its own and returns its record."""

    def session(self):
        c = self.srv.client()
        self.assertEqual(c.ehlo().code, 250)
        self.assertEqual(c.cmd("MAIL FROM:<s@example.com>").code, 250)
        return c

    def case(self, name, **kw):
        with self.session() as c:
            return run_case(self, c, name, **kw)
