"""TLS helpers for the end-to-end tests (Python 3 stdlib only).

certs()          the test PKI made by certs/mkca.sh, once per test run, in
                 a temporary directory (removed at exit): paths by name.
client_context() a Python ssl client context (CA, versions, client cert).
starttls()       STARTTLS on a harness Client, then its socket is TLS.
tls_client()     a harness Client over implicit TLS (TLS from the first byte).
multi_script()   a script returning several listeners (an array of options).
TLS_PRELUDE      Lua helpers for hooks: tlsinfo(session), conninfo(conn).
"""

import atexit
import hashlib
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile

import harness
from harness import PRELUDE, READ_TIMEOUT, ROOT, Client, Lua, lua_value

MKCA = os.path.join(ROOT, "certs", "mkca.sh")
DEV_KEY = os.path.join(ROOT, "certs", "dev", "localhost.key")
DEV_CERT = os.path.join(ROOT, "certs", "dev", "localhost.crt")

# Server certificates signed by the test CA. slow.example and dyn.example
# are served by SNICallback tests.
CERT_NAMES = ["localhost", "mail.example.com", "smtp.another.com", "slow.example", "dyn.example"]
PFX_PASS = "test-pass"
CA_CN = "luasmtpd test CA"

_certs = None


class Certs:
    """Paths of the test PKI. c.key(name) / c.crt(name) for server names,
    c.ca, c.ca_key, c.client_key, c.client_crt, c.self_key, c.self_crt,
    c.p12."""

    def __init__(self, d):
        self.dir = d
        self.ca = os.path.join(d, "ca.crt")
        self.ca_key = os.path.join(d, "ca.key")
        self.client_key = os.path.join(d, "client.key")
        self.client_crt = os.path.join(d, "client.crt")
        self.self_key = os.path.join(d, "selfsigned.key")
        self.self_crt = os.path.join(d, "selfsigned.crt")
        self.p12 = os.path.join(d, "server.p12")

    def key(self, name="localhost"):
        return os.path.join(self.dir, name + ".key")

    def crt(self, name="localhost"):
        return os.path.join(self.dir, name + ".crt")

    def pair(self, name="localhost"):
        """{key = ..., cert = ...} for a script."""
        return {"key": self.key(name), "cert": self.crt(name)}


def certs():
    """Runs certs/mkca.sh once per process (every test_tls* module shares it)."""
    global _certs
    if _certs is None:
        d = tempfile.mkdtemp(prefix="luasmtpd-tlscerts-")
        atexit.register(shutil.rmtree, d, True)
        r = subprocess.run(["/bin/sh", MKCA, d] + CERT_NAMES, cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        if r.returncode != 0:
            raise AssertionError("certs/mkca.sh failed (%d): %s" % (r.returncode, r.stdout.decode("utf-8", "replace")))
        _certs = Certs(d)
    return _certs


def read(path):
    with open(path, "rb") as f:
        return f.read()


# ------------------------------------------------------------------ clients

VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def client_context(ca=True, min_version=None, max_version=None, cert=None, key=None, ciphers=None,
                   check_hostname=True):
    """ca: True = the test CA, a path, or None/False = no verification."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca:
        ctx.load_verify_locations(certs().ca if ca is True else ca)
        ctx.check_hostname = check_hostname
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if min_version:
        ctx.minimum_version = VERSIONS[min_version]
    if max_version:
        ctx.maximum_version = VERSIONS[max_version]
    if cert:
        ctx.load_cert_chain(cert, key)
    if ciphers:
        ctx.set_ciphers(ciphers)
    return ctx


def wrap(sock, ctx, server_hostname="localhost", session=None, timeout=READ_TIMEOUT):
    """Handshake on a connected socket, bounded by timeout."""
    sock.settimeout(timeout)
    return ctx.wrap_socket(sock, server_hostname=server_hostname, session=session)


def starttls(c, ctx=None, server_hostname="localhost", session=None):
    """STARTTLS on a harness Client that has said EHLO: expects 220 2.0.0,
    then does the handshake; c talks TLS afterwards. Returns the SSL socket."""
    r = c.cmd("STARTTLS")
    if r.code != 220 or r.enh != "2.0.0":
        raise AssertionError("STARTTLS answered %r" % r.raw)
    if c.buf:
        raise AssertionError("plaintext after the 220 of STARTTLS: %r" % c.buf)
    c.transcript.append(("C", b"<TLS handshake, SNI %r>" % (server_hostname or "").encode()))
    c.sock = wrap(c.sock, ctx or client_context(), server_hostname, session, c.timeout)
    c.transcript.append(("S", b"<TLS %s %s>" % (c.sock.version().encode(), c.sock.cipher()[0].encode())))
    return c.sock


def tls_client(port, ctx=None, server_hostname="localhost", greet=True, session=None, timeout=READ_TIMEOUT):
    """A harness Client on an implicit-TLS listener (handshake first, then
    the greeting)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s = wrap(raw, ctx or client_context(), server_hostname, session, timeout)
    except BaseException:
        raw.close()
        raise
    c = Client(port, sock=s, greet=greet, timeout=timeout)
    c.transcript.insert(0, ("S", b"<TLS %s %s>" % (s.version().encode(), s.cipher()[0].encode())))
    return c


def ehlo_keywords(r):
    """EHLO reply -> set of upper-case keywords (first word of each line
    after the first)."""
    return {ln.split(" ")[0].upper() for ln in r.lines[1:]}


def peer_cn(sslsock):
    """Subject CN of the server certificate (the socket must have verified it)."""
    for rdn in sslsock.getpeercert().get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                return v
    return None


def der_cn(der):
    """Subject CN of a DER certificate (for unverified sockets), via openssl."""
    pem = ssl.DER_cert_to_PEM_cert(der).encode()
    r = subprocess.run(["openssl", "x509", "-noout", "-subject", "-nameopt", "multiline"], input=pem,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
    m = re.search(rb"commonName\s*=\s*(.+)", r.stdout)
    return m.group(1).strip().decode() if m else None


def cert_facts(path):
    """What openssl says of a certificate: serial (int), notBefore, notAfter
    (strings, Node's format), sha256 fingerprint (AA:BB:..), PEM text."""
    r = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-serial", "-startdate", "-enddate"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10, check=True)
    out = dict(line.split("=", 1) for line in r.stdout.decode().splitlines() if "=" in line)
    pem = read(path).decode()
    der = ssl.PEM_cert_to_DER_cert(pem)
    fp = hashlib.sha256(der).hexdigest().upper()
    return {
        "serial": int(out["serial"], 16),
        "valid_from": out["notBefore"],
        "valid_to": out["notAfter"],
        "fingerprint256": ":".join(fp[i:i + 2] for i in range(0, len(fp), 2)),
        "der": der,
    }


def client_hello():
    """The bytes of a real ClientHello (Python's ssl, never completed)."""
    ctx = client_context(ca=None)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def half_client_hello(n=None):
    """The first bytes of a real ClientHello (half of it by default)."""
    hello = client_hello()
    return hello[:n if n is not None else len(hello) // 2]


def run_tool(argv, input=None, timeout=15, env=None):
    e = dict(os.environ)
    if env:
        e.update(env)
    return subprocess.run(argv, cwd=ROOT, env=e, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout)


def s_client(port, *args, input=b"QUIT\n", starttls=True, timeout=15):
    """openssl s_client (with -starttls smtp unless starttls=False), brief
    output, CRLF line ends, waits for the server to close."""
    argv = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-brief", "-crlf", "-ign_eof"]
    if starttls:
        argv += ["-starttls", "smtp"]
    return run_tool(argv + list(args), input=input, timeout=timeout)


# ------------------------------------------------------------------ scripts

TLS_PRELUDE = r'''
local function copy(t)
  if type(t) ~= "table" then return t end
  local r = {}
  for k, v in pairs(t) do r[k] = copy(v) end
  return r
end

-- What a hook sees of TLS in the session.
local function tlsinfo(s)
  return {
    port = s.remotePort, secure = s.secure, servername = s.servername,
    tlsOptionsType = type(s.tlsOptions), tlsOptions = copy(s.tlsOptions),
    transmissionType = s.transmissionType, user = s.user, localPort = s.localPort,
  }
end

-- What onSecure sees of the connection.
local function conninfo(conn)
  local ok, cert = pcall(conn.getPeerCertificate, conn)
  local ok2, cipher = pcall(conn.getCipher, conn)
  local ok3, proto = pcall(conn.getProtocol, conn)
  return {
    certType = type(cert), cert = copy(cert), certOk = ok,
    authorized = conn.authorized, authorizationError = conn.authorizationError,
    cipher = copy(cipher), cipherOk = ok2, protocol = proto, protocolOk = ok3,
  }
end

local function appendline(path, line)
  local f = assert(io.open(path, "ab"))
  f:write(line, "\n")
  f:close()
end
'''

# Hooks that record what they see of TLS (kind = the hook's name).
RECORD_HOOKS = {
    "onSecure": Lua(r'''function(conn, session)
    record("secure", {session = tlsinfo(session), conn = conninfo(conn)})
    if session.servername == "deny.example" then return nil, "not you" end
  end'''),
    "onAuth": Lua(r'''function(auth, session)
    record("auth", tlsinfo(session))
    if auth.username == "testuser" and auth.password == "testpass" then return {user = "testuser"} end
    return nil, "bad credentials"
  end'''),
    "onMailFrom": Lua(r'''function(address, session)
    record("mail", tlsinfo(session))
  end'''),
    "onRcptTo": Lua(r'''function(address, session)
    record("rcpt", tlsinfo(session))
  end'''),
    "onData": Lua(r'''function(stream, session)
    local body = readall(stream)
    local info = tlsinfo(session)
    info.body = body
    record("data", info)
  end'''),
}


def tls_script(hooks=None, prelude="", **opts):
    """harness.script() with TLS_PRELUDE available to the hooks."""
    return harness.script(hooks=hooks, prelude=TLS_PRELUDE + prelude, **opts)


def _fields(opts, hooks):
    base = {"name": "mx.test", "authOptional": True}
    base.update(opts)
    fields = ["    %s = %s," % (k, lua_value(v)) for k, v in base.items() if v is not None]
    for name, code in (hooks or {}).items():
        fields.append("    %s = %s," % (name, code))
    return "  {\n" + "\n".join(fields) + "\n  },"


def multi_script(listeners, prelude=""):
    """A script returning an array of listeners. listeners: list of
    (opts dict, hooks dict) or opts dicts."""
    parts = []
    for ln in listeners:
        opts, hooks = ln if isinstance(ln, tuple) else (ln, None)
        parts.append(_fields(opts, hooks))
    return PRELUDE + TLS_PRELUDE + "\n" + prelude + "\nreturn {\n" + "\n".join(parts) + "\n}\n"


def mine(events, port):
    """Events recorded by tlsinfo()-style hooks for the client on port."""
    out = []
    for e in events:
        s = e.get("session", e)
        if s.get("port") == port:
            out.append(e)
    return out
