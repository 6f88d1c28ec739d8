"""Real milter daemons for the milter tests: Debian's OpenDKIM, OpenDMARC
and rspamd, each started by a test on a free 127.0.0.1 port with its own
configuration in a temporary directory (mta.py's conventions: a Service in
the foreground, stopped by PID with its process group, killed at exit if a
test forgot it, never the system's service).

start_milter_dns()  dnsmasq on a loopback address of its own, port 53,
                    serving the DKIM key and DMARC policy TXT records and
                    answering NXDOMAIN for every other name (nothing is
                    forwarded, so no daemon asks a resolver off this host).
make_dkim_key()     a key pair made by opendkim-genkey in a temporary
                    directory (never committed) and its TXT record.
start_opendkim()    OpenDKIM signing (mode "s": mail of SMTP-authenticated
                    clients only, those with an {auth_type} macro
                    (OpenDKIM's default, as from Postfix),
                    through KeyTable/SigningTable) or
                    verifying (mode "v": keys from that dnsmasq through
                    `Nameservers`), Authentication-Results with our
                    authserv-id.
start_opendmarc()   OpenDMARC trusting OpenDKIM's Authentication-Results,
                    the DMARC policy from that dnsmasq.
start_rspamd()      rspamd's proxy worker in milter mode scanning itself
                    (no redis, no hyperscan compile, network modules off),
                    GTUBE rejected, its X-Spam/X-Rspamd headers added.
MilterProbe         a minimal milter (version 6) client for the fixtures'
                    self-tests; the real conversations go through luasmtpd.

OpenDMARC (through libresolv) and rspamd's main process (getaddrinfo) read
/etc/resolv.conf, which cannot name a port: so the resolver is a dnsmasq on
127.X.Y.1:53, and those two daemons run in a mount namespace of their own
(`unshare -m`, no fork: the PID stays the daemon's) where a resolv.conf
naming it is bind-mounted over /etc/resolv.conf. OpenDKIM (libunbound)
is pointed at it with `Nameservers`. All of it needs root, as `make test`
runs; a missing package is a test failure naming it, never a skip.
"""

import os
import random
import re
import socket
import struct
import subprocess
import tempfile

from mta import Daemon
from svcutil import Dnsmasq, Service, free_port, require_binary

DKIM_DOMAIN = "example.test"
DKIM_SELECTOR = "sel1"
OPENDKIM_AUTHSERV = "dkim.milter.test"
OPENDMARC_AUTHSERV = "dmarc.milter.test"
# a client address no test connects from: OpenDKIM's default (127.0.0.1)
# would sign every test message, so only SMTP AUTH makes it sign
NOT_INTERNAL = "192.0.2.254"
MILTER_START_TIMEOUT = 60.0  # rspamd loads its Lua rules for seconds on a busy host
IO_TIMEOUT = 30.0

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def _need_root(what):
    if os.geteuid() != 0:
        raise AssertionError("%s must be started as root (it binds port 53 or a mount "
                             "namespace); run the tests as root as `make test` does" % what)


def _write(path, text, mode=0o644):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)


class Milter(Daemon):
    """A running milter daemon (mta.Daemon: .port, log, stop() by PID with
    its children); .socket in Postfix's notation."""

    def __init__(self, service, kill_to_stop=False):
        super().__init__(service)
        self.socket = "inet:127.0.0.1:%d" % service.port
        self.pid = service.proc.pid
        self.kill_to_stop = kill_to_stop

    def stop(self):
        # OpenDKIM notices SIGTERM only at its accept loop's timeout, seconds
        # later; a test's instance keeps nothing, so it is killed by its PID
        if self.kill_to_stop and self.service.alive():
            self.service.proc.kill()
            self.service.proc.wait(IO_TIMEOUT)
        super().stop()


def _start(name, argv, port, tmp):
    return Service(name, argv, port, tmp, start_timeout=MILTER_START_TIMEOUT)


# ----------------------------------------------------------------------- DNS

class MilterDns(Daemon):
    """The dnsmasq of start_milter_dns: .address (port 53), .resolv_conf (a
    resolv.conf naming it), stop()."""

    def __init__(self, service, address, resolv_conf):
        super().__init__(service)
        self.address = address
        self.resolv_conf = resolv_conf


def _free_loopback_53():
    """A 127.X.Y.1 address where UDP and TCP port 53 are free."""
    for _ in range(50):
        addr = "127.%d.%d.1" % (random.randint(100, 250), random.randint(0, 255))
        socks = []
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                s = socket.socket(socket.AF_INET, kind)
                socks.append(s)
                s.bind((addr, 53))
            return addr
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no loopback address with a free port 53")


def txt_record_line(name, text):
    """A dnsmasq txt-record line for `text`, cut into character-strings of
    at most 250 bytes (a DKIM key is longer than one may be)."""
    chunks = [text[i:i + 250] for i in range(0, len(text), 250)]
    return "txt-record=%s,%s" % (name, ",".join('"%s"' % c for c in chunks))


def start_milter_dns(txt_records):
    """dnsmasq on 127.X.Y.1:53 answering the given {name: text} TXT records
    and NXDOMAIN for every other name."""
    _need_root("the milters' dnsmasq")
    address = _free_loopback_53()
    lines = ["local=/#/"] + [txt_record_line(n, t) for n, t in txt_records.items()]
    svc = Dnsmasq(lines, address=address, port=53)
    resolv = os.path.join(svc.tmp, "resolv.conf")
    _write(resolv, "nameserver %s\noptions timeout:1 attempts:1\n" % address)
    return MilterDns(svc, address, resolv)


def _in_own_resolver(argv, dns):
    """argv run in a mount namespace of its own where /etc/resolv.conf names
    the test's dnsmasq (unshare and sh exec, so the PID is the daemon's)."""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /etc/resolv.conf && exec "$@"', dns.resolv_conf] + argv


def dmarc_record(policy="reject"):
    return "v=DMARC1; p=%s; adkim=r; aspf=r" % policy


# ---------------------------------------------------------------------- DKIM

class DkimKey:
    """A DKIM key pair: .private (PEM path), .record (the TXT text),
    .dns_name (selector._domainkey.domain)."""

    def __init__(self, domain, selector, private, record):
        self.domain = domain
        self.selector = selector
        self.private = private
        self.record = record
        self.dns_name = "%s._domainkey.%s" % (selector, domain)


def make_dkim_key(domain=DKIM_DOMAIN, selector=DKIM_SELECTOR, bits=2048):
    """A key made by opendkim-genkey in a new temporary directory."""
    genkey = require_binary("opendkim-genkey", ["/usr/sbin/opendkim-genkey", "opendkim-genkey"],
                            "opendkim-tools")
    tmp = tempfile.mkdtemp(prefix="luasmtpd-dkimkey-")
    r = subprocess.run([genkey, "-b", str(bits), "-d", domain, "-s", selector, "-D", tmp],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    if r.returncode != 0:
        raise AssertionError("opendkim-genkey failed: %s" % r.stdout.decode("utf-8", "replace"))
    private = os.path.join(tmp, selector + ".private")
    os.chmod(private, 0o600)
    with open(os.path.join(tmp, selector + ".txt"), encoding="ascii") as f:
        zone = f.read()
    # the zone file's record: ( "v=DKIM1; h=sha256; k=rsa; " "p=MIIB..." "..." )
    record = "".join(re.findall(r'"([^"]*)"', zone))
    if "p=" not in record:
        raise AssertionError("no key in opendkim-genkey's record: %r" % zone)
    return DkimKey(domain, selector, private, record)


def start_opendkim(mode, key, dns=None, authserv_id=OPENDKIM_AUTHSERV, internal=NOT_INTERNAL,
                   on_no_signature="accept"):
    """OpenDKIM (`opendkim -f`) on a free port. mode "s": signs with `key`
    the mail of SMTP-authenticated clients (and of the `internal` hosts)
    whose From is in key.domain; mode "v": verifies, fetching keys from
    `dns` (a MilterDns), and adds Authentication-Results with authserv_id;
    an unsigned message gets `on_no_signature` (accept, reject, discard,
    tempfail)."""
    _need_root("OpenDKIM")
    exe = require_binary("opendkim", ["/usr/sbin/opendkim"], "opendkim")
    tmp = tempfile.mkdtemp(prefix="luasmtpd-opendkim-")
    port = free_port()
    lines = [
        "Syslog no",
        "Background no",
        "Mode %s" % mode,
        "Socket inet:%d@127.0.0.1" % port,
        "PidFile %s/opendkim.pid" % tmp,
        "AuthservID %s" % authserv_id,
        "Canonicalization relaxed/simple",
        "InternalHosts %s" % internal,
        "On-Default accept",
        "On-BadSignature accept",
        "On-KeyNotFound accept",
        "On-NoSignature %s" % on_no_signature,
        # OpenDKIM stamps an unsigned message dkim=none with this and then
        # takes no On-NoSignature action: only for the default accept
        "AlwaysAddARHeader %s" % ("yes" if on_no_signature == "accept" else "no"),
        "DNSTimeout 5",
    ]
    if "s" in mode:
        keytable = os.path.join(tmp, "KeyTable")
        signing = os.path.join(tmp, "SigningTable")
        _write(keytable, "k1 %s:%s:%s\n" % (key.domain, key.selector, key.private))
        _write(signing, "*@%s k1\n" % key.domain)
        lines += ["KeyTable file:%s" % keytable, "SigningTable refile:%s" % signing,
                  # the key is under /tmp, which everyone may write
                  "RequireSafeKeys false"]
    if "v" in mode:
        if dns is None:
            raise AssertionError("a verifying OpenDKIM needs the DNS of start_milter_dns")
        # libunbound asks no loopback resolver and answers .test itself
        # (RFC 6761) unless told otherwise
        unbound = os.path.join(tmp, "unbound.conf")
        _write(unbound, "server:\n  do-not-query-localhost: no\n  local-zone: \"test.\" nodefault\n"
                        "forward-zone:\n  name: \".\"\n  forward-addr: %s@53\n" % dns.address)
        lines.append("ResolverConfiguration %s" % unbound)
    conf = os.path.join(tmp, "opendkim.conf")
    _write(conf, "\n".join(lines) + "\n")
    return Milter(_start("opendkim", [exe, "-f", "-x", conf], port, tmp), kill_to_stop=True)


def start_opendmarc(dns, authserv_id=OPENDMARC_AUTHSERV, trusted=(OPENDKIM_AUTHSERV,)):
    """OpenDMARC (`opendmarc -f`) on a free port: trusts the
    Authentication-Results of the authserv-ids in `trusted` (OpenDKIM's),
    reads policies from `dns`, adds its own result, rejects nothing."""
    _need_root("OpenDMARC")
    exe = require_binary("opendmarc", ["/usr/sbin/opendmarc"], "opendmarc")
    tmp = tempfile.mkdtemp(prefix="luasmtpd-opendmarc-")
    os.chmod(tmp, 0o755)
    port = free_port()
    ignore = os.path.join(tmp, "ignore-hosts")
    # its default (127.0.0.1) would ignore every test client
    _write(ignore, NOT_INTERNAL + "\n")
    lines = [
        "Syslog false",
        "IgnoreHosts %s" % ignore,
        "Background false",
        "Socket inet:%d@127.0.0.1" % port,
        "PidFile %s/opendmarc.pid" % tmp,
        "AuthservID %s" % authserv_id,
        "TrustedAuthservIDs %s" % ",".join(trusted),
        "IgnoreAuthenticatedClients true",
        "RejectFailures false",
        "FailureReports false",
        "RequiredHeaders false",
        # SPF is not what these tests are about: DMARC passes on DKIM alone
        "SPFIgnoreResults true",
        "SPFSelfValidate false",
        "DNSTimeout 5",
    ]
    conf = os.path.join(tmp, "opendmarc.conf")
    _write(conf, "\n".join(lines) + "\n")
    return Milter(_start("opendmarc", _in_own_resolver([exe, "-f", "-c", conf], dns), port, tmp))


# -------------------------------------------------------------------- rspamd

RSPAMD_CONF = """\
# generated by tests/e2e/milterd.py: rspamd's rules, one proxy worker in
# milter mode scanning itself, everything else in this directory
.include "$CONFDIR/common.conf"
options {{
  pidfile = "$RUNDIR/rspamd.pid";
  # compiled rules are kept across runs: compiling them takes a core
  # for tens of seconds, loading them a second (before options.inc: the
  # first of two values counts)
  hs_cache_dir = "{hs_cache}";
  .include "$CONFDIR/options.inc"
  dns {{ nameserver = ["{dns}:53"]; timeout = 1s; retransmits = 1; }}
}}
logging {{ type = "console"; level = "notice"; }}
worker "rspamd_proxy" {{
  bind_socket = "127.0.0.1:{port}";
  milter = yes;
  timeout = 120s;
  upstream "local" {{ default = yes; self_scan = yes; }}
  count = 1;
  spam_header = "X-Spam";
  reject_message = "Spam message rejected";
}}
"""

# the headers every scanned message gets, local client or not
RSPAMD_MILTER_HEADERS = """\
use = ["x-spamd-result", "x-rspamd-server", "x-rspamd-queue-id", "x-spam-level", "x-spam-status"];
skip_local = false;
skip_authenticated = false;
"""

# modules that ask the network (DNS lists, fuzzy servers, maps, SPF/DKIM
# lookups) or need redis: off, so a scan is local and quick
RSPAMD_OFF = ("fuzzy_check", "rbl", "asn", "emails", "phishing", "spf", "dmarc", "dkim", "arc",
              "mx_check", "url_redirector", "rspamd_update", "neural", "ratelimit", "greylist",
              "replies", "reputation", "dkim_signing", "history_redis", "dcc", "antivirus", "external_services")


def start_rspamd(dns):
    """rspamd (`rspamd -f`) whose proxy worker speaks milter on a free port;
    its own config, state and pid under a temporary directory."""
    _need_root("rspamd")
    exe = require_binary("rspamd", ["/usr/bin/rspamd", "/usr/sbin/rspamd"], "rspamd")
    tmp = tempfile.mkdtemp(prefix="luasmtpd-rspamd-")
    for d in ("local.d", "db", "run"):
        os.makedirs(os.path.join(tmp, d))
    port = free_port()
    conf = os.path.join(tmp, "rspamd.conf")
    hs_cache = os.path.join(tempfile.gettempdir(), "luasmtpd-rspamd-hs-cache")
    os.makedirs(hs_cache, exist_ok=True)
    _write(conf, RSPAMD_CONF.format(dns=dns.address, port=port, hs_cache=hs_cache))
    _write(os.path.join(tmp, "local.d", "milter_headers.conf"), RSPAMD_MILTER_HEADERS)
    for m in RSPAMD_OFF:
        _write(os.path.join(tmp, "local.d", m + ".conf"), "enabled = false;\n")
    argv = [exe, "-f", "-i", "-u", "root", "-g", "root", "-c", conf,
            "--var=CONFDIR=/etc/rspamd", "--var=LOCAL_CONFDIR=" + tmp,
            "--var=DBDIR=" + os.path.join(tmp, "db"), "--var=RUNDIR=" + os.path.join(tmp, "run"),
            "--var=LOGDIR=" + tmp]
    return Milter(_start("rspamd", _in_own_resolver(argv, dns), port, tmp))


# ------------------------------------------------------------- milter probe

SMFI_VERSION = 6
ALL_ACTIONS = 0x1FF       # add/change headers and recipients, body, quarantine, ...
ALL_PROTOCOL = 0x1FFFFF   # every SMFIP_NO* / SMFIP_NR* step flag a milter may want
NO = {"C": 0x1, "H": 0x2, "M": 0x4, "R": 0x8, "B": 0x10, "L": 0x20, "N": 0x40, "T": 0x200}
NR = {"C": 0x1000, "H": 0x2000, "M": 0x4000, "R": 0x8000, "T": 0x10000, "L": 0x80,
      "N": 0x40000, "B": 0x80000}
FINAL = set(b"artdy")      # accept, reject, tempfail, discard, reply code


class MilterProbe:
    """One milter conversation, as an MTA has it (for self-tests only).
    negotiate() returns the milter's (version, actions, protocol);
    message() sends a whole transaction and returns (final reply, the
    modification packets at end of message) — final is (cmd, data) of the
    first non-continue reply of any step."""

    def __init__(self, port, timeout=IO_TIMEOUT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.protocol = 0

    def close(self):
        try:
            self._send(b"Q")
        except OSError:
            pass
        self.sock.close()

    def _send(self, cmd, data=b""):
        self.sock.sendall(struct.pack(">I", len(data) + 1) + cmd + data)

    def _recvn(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise AssertionError("milter closed the connection")
            buf += chunk
        return buf

    def read(self):
        (n,) = struct.unpack(">I", self._recvn(4))
        pkt = self._recvn(n)
        return pkt[:1], pkt[1:]

    def negotiate(self):
        self._send(b"O", struct.pack(">III", SMFI_VERSION, ALL_ACTIONS, ALL_PROTOCOL))
        cmd, data = self.read()
        if cmd != b"O":
            raise AssertionError("milter answered OPTNEG with %r %r" % (cmd, data))
        version, actions, protocol = struct.unpack(">III", data[:12])
        self.protocol = protocol
        return version, actions, protocol

    def _step(self, cmd, data=b"", macros=None):
        """Sends one step unless the milter asked not to get it; returns
        None for continue (or no reply wanted), else the reply."""
        c = cmd.decode()
        if self.protocol & NO.get(c, 0):
            return None
        if macros:
            self._send(b"D", cmd + b"".join(k.encode() + b"\0" + v.encode() + b"\0"
                                            for k, v in macros.items()))
        self._send(cmd, data)
        if self.protocol & NR.get(c, 0):
            return None
        while True:
            r = self.read()
            if r[0] == b"p":  # progress: still working
                continue
            return None if r[0] == b"c" else r

    def message(self, message, mail_from="sender@example.test", rcpts=("rcpt@example.test",),
                macros_mail=None, helo="client.example.test"):
        z = b"\0"
        steps = [
            (b"C", b"localhost\0" + b"4" + struct.pack(">H", 40000) + b"127.0.0.1\0",
             {"j": "mx.luasmtpd.test", "{daemon_name}": "luasmtpd", "_": "localhost [127.0.0.1]",
              "{client_addr}": "127.0.0.1"}),
            (b"H", helo.encode() + z, None),
            (b"M", b"<" + mail_from.encode() + b">\0", dict({"i": "PROBE1"}, **(macros_mail or {}))),
        ]
        for r in rcpts:
            steps.append((b"R", b"<" + r.encode() + b">\0", {"{rcpt_addr}": r}))
        steps.append((b"T", b"", None))
        head, _, body = message.partition(b"\r\n\r\n")
        for name, value in re.findall(rb"(?m)^([^:\r\n]+):[ \t]?([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", head + b"\r\n"):
            steps.append((b"L", name + z + value + z, None))
        steps.append((b"N", b"", None))
        for i in range(0, len(body), 65535):
            steps.append((b"B", body[i:i + 65535], None))
        for cmd, data, macros in steps:
            r = self._step(cmd, data, macros)
            if r is not None and r[0] != b"s":  # skip: no more body wanted
                return r, []
        self._send(b"E")
        mods = []
        while True:
            cmd, data = self.read()
            if cmd == b"p":
                continue
            if cmd[0] in FINAL or cmd == b"c":
                return (cmd, data), mods
            mods.append((cmd, data))


def added_headers(mods):
    """{lower-cased name: [values]} of the add/insert header packets."""
    out = {}
    for cmd, data in mods:
        if cmd == b"h":
            name, value = data.split(b"\0")[:2]
        elif cmd == b"i":
            name, value = data[4:].split(b"\0")[:2]
        else:
            continue
        out.setdefault(name.decode().lower(), []).append(value.decode("utf-8", "replace"))
    return out


def with_header(name, value, message):
    """The message with a header field on top, a milter's LF folding turned
    into CRLF as an MTA stores it."""
    return b"%s:%s\r\n" % (name.encode(), value.replace("\n", "\r\n").encode()) + message


def probe_sign(signer, message):
    """The DKIM-Signature value a signing OpenDKIM gives `message` from an
    authenticated client, by the probe."""
    p = MilterProbe(signer.port)
    try:
        p.negotiate()
        final, mods = p.message(message, macros_mail={"{auth_type}": "PLAIN", "{auth_authen}": "alice"})
    finally:
        p.close()
    sigs = added_headers(mods).get("dkim-signature", [])
    if final != (b"a", b"") or len(sigs) != 1:
        raise AssertionError("OpenDKIM did not sign: %r %r" % (final, mods))
    return sigs[0]
