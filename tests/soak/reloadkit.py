"""Helpers for the reload and process-model tests (Python 3 stdlib only),
shared by tests/e2e/test_reload.py, tests/e2e/test_workers.py and
tests/soak/reload_soak.py.

Pairs        self-signed P-256 key/certificate pairs made with openssl req,
             their SHA-256 fingerprints, and installing one over another
             the way renewals do (write + rename, in place, symlink swap).
probe()      one short session that reports the banner, the worker pid and
             the script version (scripts made by versioned_script() answer
             MAIL FROM:<whoami@probe.test> with "pid=N ver=V").
fingerprint() the certificate a STARTTLS client gets (optionally with SNI).
/proc        children(), fd_count(), rss_kb(), uid_of().
LogWatch     counts log lines matching a pattern, reading stderr.log
             incrementally.
run_soak()   clients (plain and STARTTLS, smtplib) sending continuously
             while the server is reloaded; returns the figures and checks.
"""

import hashlib
import itertools
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
E2E = os.path.join(os.path.dirname(HERE), "e2e")
if E2E not in sys.path:
    sys.path.insert(0, E2E)

import harness  # noqa: E402
from harness import Lua, lua_value, wait_for  # noqa: E402

IO_TIMEOUT = 10.0  # every socket operation of these helpers


# ------------------------------------------------------------- certificates

class Pair:
    """A key and a certificate on disk, plus the certificate's SHA-256
    fingerprint (lower-case hex of the DER)."""

    def __init__(self, key, crt):
        self.key = key
        self.crt = crt
        self.fp = cert_fingerprint(crt)

    def opts(self):
        return {"key": self.key, "cert": self.crt}

    def __repr__(self):
        return "Pair(%s, fp=%s)" % (os.path.basename(self.crt), self.fp[:16])


def cert_fingerprint(path):
    with open(path, "rb") as f:
        pem = f.read().decode("ascii")
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def make_pair(directory, name, cn="localhost"):
    """Generates directory/name.key and directory/name.crt (EC P-256,
    self-signed, subjectAltName DNS:cn)."""
    key = os.path.join(directory, name + ".key")
    crt = os.path.join(directory, name + ".crt")
    argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", crt, "-days", "3", "-subj", "/CN=%s/O=luasmtpd reload test %s" % (cn, name),
            "-addext", "subjectAltName=DNS:%s" % cn]
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    if r.returncode != 0:
        raise AssertionError("openssl req failed: %s" % r.stdout.decode("utf-8", "replace"))
    return Pair(key, crt)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write_atomic(path, data):
    """Writes a new file beside path, then renames it over path (what
    certbot and most deploy tools do)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    tmp = path + ".new-%d" % os.getpid()
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def write_inplace(path, data):
    """Truncates and rewrites path (same inode)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def install(src, dst_key, dst_crt, mode="rename"):
    """Puts the key and certificate of Pair src at dst_key / dst_crt.
    mode: "rename" (both written beside, fsync'd, then renamed over one
    right after the other) or "inplace" (rewritten one after the other)."""
    if mode == "inplace":
        write_inplace(dst_key, read(src.key))
        write_inplace(dst_crt, read(src.crt))
        return
    staged = []
    for dst, data in ((dst_key, read(src.key)), (dst_crt, read(src.crt))):
        tmp = dst + ".new-%d" % os.getpid()
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        staged.append((tmp, dst))
    for tmp, dst in staged:
        os.rename(tmp, dst)


def live_copy(directory, src, name="live"):
    """Copies Pair src to directory/name.key and .crt; returns the Pair."""
    key = os.path.join(directory, name + ".key")
    crt = os.path.join(directory, name + ".crt")
    shutil.copyfile(src.key, key)
    shutil.copyfile(src.crt, crt)
    return Pair(key, crt)


class TempDir:
    """A temporary directory removed by cleanup()."""

    def __init__(self, prefix="luasmtpd-reload-"):
        self.path = tempfile.mkdtemp(prefix=prefix)

    def join(self, *a):
        return os.path.join(self.path, *a)

    def cleanup(self):
        shutil.rmtree(self.path, ignore_errors=True)


# ------------------------------------------------------------------ scripts

# Hooks that expose the script version (a Lua local VER) and the serving
# process: MAIL FROM:<whoami@probe.test> is answered 550 "pid=N ver=V";
# RCPT TO:<deny@...> is refused with a text naming the version; onData
# answers "data accepted by V pid=N". Other commands are accepted and
# recorded with the version (record() of the harness prelude).
VERSION_HOOKS = {
    "onMailFrom": Lua(r'''function(address, session)
    if address.address == "whoami@probe.test" then
      return nil, smtp.reject(550, "5.7.1 whoami pid=" .. smtp.pid() .. " ver=" .. VER)
    end
    if RECORD then record("mail", {ver = VER, id = session.id, pid = smtp.pid()}) end
  end'''),
    "onRcptTo": Lua(r'''function(address, session)
    if address.address:match("^deny@") then
      return nil, smtp.reject(550, "5.1.1 denied by " .. VER)
    end
    if RECORD then record("rcpt", {ver = VER, id = session.id, pid = smtp.pid()}) end
  end'''),
    "onData": Lua(r'''function(stream, session)
    local body = readall(stream)
    if RECORD then record("data", {ver = VER, id = session.id, pid = smtp.pid(), len = #body}) end
    return "data accepted by " .. VER .. " pid=" .. smtp.pid()
  end'''),
}


def versioned_script(ver, hooks=None, prelude="", record=True, **opts):
    """A harness script whose banner and hooks name version `ver`."""
    h = dict(VERSION_HOOKS)
    h.update(hooks or {})
    pre = "local VER = %s\nlocal RECORD = %s\n%s" % (lua_value(ver), lua_value(record), prelude)
    opts.setdefault("banner", "banner-" + ver)
    return harness.script(hooks=h, prelude=pre, **opts)


# ------------------------------------------------------------------ clients

class Line:
    """A minimal line reader over a socket; every read has a timeout."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def reply(self):
        lines = []
        deadline = time.monotonic() + IO_TIMEOUT
        while True:
            while b"\n" not in self.buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timeout waiting for a reply (partial %r)" % self.buf[:200])
                self.sock.settimeout(left)
                d = self.sock.recv(65536)
                if not d:
                    raise AssertionError("connection closed while waiting for a reply (partial %r, so far %r)"
                                         % (self.buf[:200], lines))
                self.buf += d
            i = self.buf.index(b"\n")
            line, self.buf = self.buf[:i + 1].rstrip(b"\r\n").decode("utf-8", "replace"), self.buf[i + 1:]
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return lines

    def cmd(self, text):
        self.sock.sendall(text.encode() + b"\r\n")
        return self.reply()


def connect(port, host="127.0.0.1"):
    return socket.create_connection((host, port), timeout=IO_TIMEOUT)


PID_RE = re.compile(r"pid=(\d+)")
VER_RE = re.compile(r"ver=(\S+)")


def probe(port):
    """One session: greeting, EHLO, MAIL FROM:<whoami@probe.test>, QUIT.
    Returns {"banner", "pid", "ver", "mail"} (pid/ver from the MAIL reply of
    a versioned_script, or None)."""
    s = connect(port)
    try:
        r = Line(s)
        banner = r.reply()[0]
        r.cmd("EHLO probe.example")
        mail = r.cmd("MAIL FROM:<whoami@probe.test>")[-1]
        try:
            s.sendall(b"QUIT\r\n")
        except OSError:
            pass
    finally:
        s.close()
    pm, vm = PID_RE.search(mail), VER_RE.search(mail)
    return {"banner": banner, "mail": mail, "pid": int(pm.group(1)) if pm else None,
            "ver": vm.group(1) if vm else None}


def banner_of(port):
    s = connect(port)
    try:
        return Line(s).reply()[0]
    finally:
        s.close()


def _insecure_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def fingerprint(port, servername="localhost", implicit=False):
    """The SHA-256 fingerprint (hex) of the certificate the server presents
    to a STARTTLS client (or an implicit-TLS one), with SNI servername
    (None: no SNI)."""
    s = connect(port)
    try:
        if not implicit:
            r = Line(s)
            r.reply()
            r.cmd("EHLO fp.example")
            st = r.cmd("STARTTLS")
            if not st[-1].startswith("220"):
                raise AssertionError("STARTTLS answered %r" % st)
        ts = _insecure_ctx().wrap_socket(s, server_hostname=servername)
        der = ts.getpeercert(binary_form=True)
        try:
            ts.close()
        except OSError:
            pass
        return hashlib.sha256(der).hexdigest()
    finally:
        s.close()


def wait_value(fn, want, timeout, interval=0.05):
    """Calls fn() until it returns want or timeout passes. Returns
    (elapsed seconds or None, last value, errors seen)."""
    t0 = time.monotonic()
    last, errors = None, []
    while True:
        try:
            last = fn()
        except (OSError, AssertionError, ssl.SSLError) as e:
            errors.append(repr(e))
            last = None
        if last == want:
            return time.monotonic() - t0, last, errors
        if time.monotonic() - t0 >= timeout:
            return None, last, errors
        time.sleep(interval)


# -------------------------------------------------------------------- /proc

def _proc_state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
        return s[s.rindex(")") + 2:].split()[0]
    except (OSError, ValueError):
        return None


def children(pid):
    """Live (non-zombie) child pids of pid."""
    kids = set()
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return []
    found_children_file = False
    for t in tasks:
        try:
            with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                found_children_file = True
                kids.update(int(x) for x in f.read().split())
        except OSError:
            pass
    if not found_children_file:  # kernels without CONFIG_PROC_CHILDREN
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open("/proc/%s/stat" % d) as f:
                        s = f.read()
                    if int(s[s.rindex(")") + 2:].split()[1]) == pid:
                        kids.add(int(d))
                except (OSError, ValueError, IndexError):
                    pass
    return sorted(k for k in kids if _proc_state(k) not in (None, "Z"))


def alive(pid):
    return _proc_state(pid) not in (None, "Z")


def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return 0


def fd_list(pid):
    out = []
    try:
        for n in sorted(os.listdir("/proc/%d/fd" % pid), key=int):
            try:
                out.append("%s->%s" % (n, os.readlink("/proc/%d/fd/%s" % (pid, n))))
            except OSError:
                pass
    except OSError:
        pass
    return out


def status_field(pid, name):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(name + ":"):
                    return line.split(":", 1)[1].split()
    except OSError:
        pass
    return None


def rss_kb(pid):
    v = status_field(pid, "VmRSS")
    return int(v[0]) if v else 0


def uid_of(pid):
    """(real, effective, saved, fs) uids."""
    v = status_field(pid, "Uid")
    return tuple(int(x) for x in v) if v else None


def exe_of(pid):
    try:
        return os.readlink("/proc/%d/exe" % pid)
    except OSError:
        return None


# ---------------------------------------------------------------------- log

class LogWatch:
    """Counts regex matches in a growing log file, reading it incrementally."""

    def __init__(self, path):
        self.path = path
        self.offset = 0
        self.partial = b""
        self.lines = []

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        self.offset += len(data)
        data = self.partial + data
        parts = data.split(b"\n")
        self.partial = parts.pop()
        self.lines.extend(p.decode("utf-8", "replace") for p in parts)

    def matching(self, pattern):
        self.poll()
        rx = re.compile(pattern)
        return [l for l in self.lines if rx.search(l)]

    def count(self, pattern):
        return len(self.matching(pattern))

    def wait_count(self, pattern, n, timeout):
        """Waits until at least n lines match; returns the matching lines."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.matching(pattern)
            if len(m) >= n or time.monotonic() >= deadline:
                return m
            time.sleep(0.02)


RELOADED = r"\bmsg=reloaded\b"
RELOAD_FAILED = r"reload failed"


# --------------------------------------------------------------------- soak

SOAK_SCRIPT = r'''
local smtp = require "smtp"
local maildir = require "smtp.maildir"
local VER = %(ver)s
local box = assert(maildir.open(os.getenv("LUASMTPD_MAILDIR")))

return {
  name = "soak.test",
  banner = "soak ver=" .. VER,
  authOptional = true,
  size = 1024 * 1024,
  key = %(key)s,
  cert = %(cert)s,
  socketTimeout = 30,
  closeTimeout = 10,
  onData = function(stream, session)
    local path, err = box:deliver(stream, session, "soak.test")
    if not path then
      smtp.log.error("delivery failed", { error = err })
      return nil, smtp.reject(451, "4.3.0 delivery failed")
    end
    return "OK ver=" .. VER .. " pid=" .. smtp.pid()
  end,
}
'''

_MARKERS = itertools.count(1)  # unique across threads and phases
MARKER_RE = re.compile(rb"^X-Soak-Marker: (\S+)\r?$", re.M)


class SoakClient(threading.Thread):
    """Sends messages until stop is set: connect, EHLO, [STARTTLS, EHLO],
    1..3 messages, QUIT. Every 250 is recorded with its marker; anything
    else (4xx, 5xx, reset, timeout) is an error. Each session's replies
    must all come from one script version (the one in its banner)."""

    def __init__(self, port, idx, tls, stop, fps):
        super().__init__(name="soak-client-%d" % idx, daemon=True)
        self.port, self.idx, self.tls, self.stop, self.fps = port, idx, tls, stop, fps
        self.accepted = []
        self.errors = []
        self.sessions = 0
        self.attempted = 0
        self.seen_fps = set()
        self.seq = 0

    def message(self, marker):
        body = ("From: <soak%d@client.test>\r\nTo: <box@soak.test>\r\nSubject: soak %s\r\n"
                "Message-ID: <%s@soak.test>\r\nX-Soak-Marker: %s\r\n\r\n" % (self.idx, marker, marker, marker))
        body += "line %s\r\n" % ("x" * 60) * (1 + self.seq % 20)
        body += ".leading dot %s\r\n" % marker
        return body.encode("ascii")

    def one_session(self):
        s = smtplib.SMTP(timeout=IO_TIMEOUT)
        s._host = "localhost"  # the SNI name smtplib's starttls() sends
        code, greeting = s.connect("127.0.0.1", self.port)
        try:
            if code != 220:
                self.errors.append("greeting %d %r" % (code, greeting))
                return
            m = re.search(rb"ver=(\S+)", greeting)
            banner_ver = m.group(1).decode() if m else None
            code, msg = s.ehlo("soak%d.client.test" % self.idx)
            if code != 250:
                self.errors.append("EHLO %d %r" % (code, msg))
                return
            if self.tls:
                s.starttls(context=_insecure_ctx())
                fp = hashlib.sha256(s.sock.getpeercert(binary_form=True)).hexdigest()
                self.seen_fps.add(fp)
                if self.fps and fp not in self.fps:
                    self.errors.append("STARTTLS certificate %s is none of the installed ones" % fp[:16])
                code, msg = s.ehlo("soak%d.client.test" % self.idx)
                if code != 250:
                    self.errors.append("EHLO after STARTTLS %d %r" % (code, msg))
                    return
            versions = set()
            for _ in range(1 + self.seq % 3):
                if self.stop.is_set():
                    break
                self.seq += 1
                marker = "m%d-c%d-%d" % (next(_MARKERS), self.idx, self.seq)
                self.attempted += 1
                code, msg = s.mail("<soak%d@client.test>" % self.idx)
                if code != 250:
                    self.errors.append("MAIL %d %r" % (code, msg))
                    return
                code, msg = s.rcpt("<box@soak.test>")
                if code != 250:
                    self.errors.append("RCPT %d %r" % (code, msg))
                    return
                code, msg = s.data(self.message(marker))
                if code != 250:
                    self.errors.append("DATA %d %r (marker %s)" % (code, msg, marker))
                    return
                self.accepted.append(marker)
                vm = re.search(rb"ver=(\S+)", msg)
                if vm:
                    versions.add(vm.group(1).decode())
            if banner_ver is not None:
                versions.add(banner_ver)
            if len(versions) > 1:
                self.errors.append("one session saw several script versions (greeting %s): %s"
                                   % (banner_ver, sorted(versions)))
            code, msg = s.docmd("QUIT")
            if code != 221:
                self.errors.append("QUIT %d %r" % (code, msg))
        finally:
            s.close()

    def run(self):
        deadline = time.monotonic() + 600  # hard bound; stop normally ends it
        while not self.stop.is_set() and time.monotonic() < deadline:
            self.sessions += 1
            try:
                self.one_session()
            except Exception as e:  # noqa: BLE001 - every failure is a finding
                self.errors.append("%s: %s" % (type(e).__name__, e))
            if len(self.errors) > 50:
                break


def stored_markers(maildir):
    """{marker: count} over maildir/new, and the number of files in tmp/."""
    counts = {}
    for path in harness.maildir_files(maildir, "new"):
        try:
            data = read(path)
        except OSError:
            continue
        for m in MARKER_RE.findall(data):
            k = m.decode()
            counts[k] = counts.get(k, 0) + 1
    return counts, len(harness.maildir_files(maildir, "tmp"))


class Figures:
    """The process tree's open fds and RSS: the master (the pid the test
    started) plus its live children."""

    def __init__(self, pid):
        pids = [pid] + children(pid)
        self.pids = pids
        self.fds = sum(fd_count(p) for p in pids)
        self.rss = sum(rss_kb(p) for p in pids)
        self.detail = {p: (fd_count(p), rss_kb(p)) for p in pids}

    def __repr__(self):
        return "fds=%d rss=%dKiB pids=%s" % (self.fds, self.rss, self.pids)


def run_soak(reloads=50, workers=1, clients=4, interval=0.25, warmup_reloads=2, warmup=2.0, tail=1.0,
             log=print, check_rss=None):
    """Runs one soak. Returns a dict: sent, stored, lost, duplicates,
    extra, attempted, errors (client errors), checks = [(name, ok, detail)],
    figures. Never raises for a failed check; raises only when the server
    cannot be started."""
    if check_rss is None:
        check_rss = not harness.sanitized()
    tmp = TempDir("luasmtpd-soak-")
    checks = []
    res = {"checks": checks, "sent": 0, "stored": 0, "lost": 0, "duplicates": 0, "extra": 0,
           "attempted": 0, "errors": [], "tmp": tmp.path}

    def check(name, ok, detail=""):
        checks.append((name, bool(ok), detail))
        log("%s %s%s" % ("ok  " if ok else "FAIL", name, (": " + detail) if detail else ""))

    pairs = [make_pair(tmp.path, "pair-a"), make_pair(tmp.path, "pair-b")]
    live = live_copy(tmp.path, pairs[0])
    script_path = tmp.join("soak.lua")
    versions = []
    for i, v in enumerate(("v1", "v2")):
        p = tmp.join("script-%s.lua" % v)
        with open(p, "w") as f:
            f.write(SOAK_SCRIPT % {"ver": lua_value(v), "key": lua_value(live.key), "cert": lua_value(live.crt)})
        versions.append(p)
    shutil.copyfile(versions[0], script_path)
    fps = {p.fp for p in pairs}

    args = ["--workers", str(workers)] if workers > 1 else []
    srv = harness.Server(script_path, args=args, log_level="info")
    res["server"] = srv
    lw = LogWatch(srv.stderr_path)
    state = {"n": 0}

    def do_reload():
        state["n"] += 1
        k = state["n"] % 2
        before = lw.count(RELOADED)
        write_atomic(script_path, read(versions[k]))
        install(pairs[k], live.key, live.crt, "rename")
        t0 = time.monotonic()
        srv.send_signal(signal.SIGHUP)
        got = lw.wait_count(RELOADED, before + 1, 5.0)
        if workers > 1:
            seen_pids.update(children(srv.proc.pid))
        if len(got) < before + 1:
            return None
        return time.monotonic() - t0

    def settle_workers():
        """With workers: waits until exactly `workers` children are left
        (old generations drained)."""
        if workers <= 1:
            return True
        return wait_for(lambda: len(children(srv.proc.pid)) == workers, 15.0, 0.05)

    def run_clients(duration_fn):
        stop = threading.Event()
        ths = [SoakClient(srv.port, i, tls=(i % 2 == 1), stop=stop, fps=fps) for i in range(clients)]
        for t in ths:
            t.start()
        try:
            duration_fn()
        finally:
            stop.set()
            for t in ths:
                t.join(IO_TIMEOUT * 3 + 5)
        stuck = [t.name for t in ths if t.is_alive()]
        return ths, stuck

    seen_pids = set()
    exe = exe_of(srv.proc.pid)

    def idle_figures(expect=None):
        """Figures once sessions are gone: polls until fds equal `expect`
        (when given) or stay unchanged for a while."""
        settle_workers()
        deadline = time.monotonic() + 10.0
        last = None
        stable = 0
        while True:
            f = Figures(srv.proc.pid)
            seen_pids.update(f.pids[1:])
            if expect is not None and f.fds == expect:
                return f
            if last is not None and f.fds == last.fds and f.pids == last.pids:
                stable += 1
            else:
                stable = 0
            last = f
            if (expect is None and stable >= 10) or time.monotonic() >= deadline:
                return f
            time.sleep(0.05)

    all_threads = []
    reload_times = []
    failed_reloads = 0
    try:
        # ---- warm-up: traffic and a couple of reloads, then idle figures
        def warm():
            nonlocal failed_reloads
            t_end = time.monotonic() + warmup
            for _ in range(warmup_reloads):
                time.sleep(max(0.0, warmup / (warmup_reloads + 1)))
                dt = do_reload()
                if dt is None:
                    failed_reloads += 1
                else:
                    reload_times.append(dt)
            while time.monotonic() < t_end:
                time.sleep(0.05)

        ths, stuck = run_clients(warm)
        all_threads += ths
        if stuck:
            check("warm-up clients finished", False, "stuck: %s" % stuck)
        base = idle_figures()
        log("warm-up done: %s" % base)

        # ---- the soak: continuous traffic, `reloads` reloads
        def soak():
            nonlocal failed_reloads
            for _ in range(reloads):
                t0 = time.monotonic()
                dt = do_reload()
                if dt is None:
                    failed_reloads += 1
                else:
                    reload_times.append(dt)
                left = interval - (time.monotonic() - t0)
                if left > 0:
                    time.sleep(left)
            time.sleep(tail)

        t_soak = time.monotonic()
        ths, stuck = run_clients(soak)
        res["soak_seconds"] = time.monotonic() - t_soak
        all_threads += ths
        check("clients finished", not stuck, "stuck: %s" % stuck if stuck else "")
        check("server alive", srv.alive(), "" if srv.alive() else "exit %s" % srv.proc.poll())
        end = idle_figures(expect=base.fds)
        log("after the soak: %s" % end)

        # ---- figures
        accepted = []
        errors = []
        for t in all_threads:
            accepted += t.accepted
            errors += ["%s: %s" % (t.name, e) for t in [t] for e in t.errors]
            res["attempted"] += t.attempted
        stored, in_tmp = stored_markers(srv.maildir)
        acc = set(accepted)
        res["sent"] = len(accepted)
        res["stored"] = sum(1 for m in acc if stored.get(m, 0) >= 1)
        res["lost"] = len(acc) - res["stored"]
        res["duplicates"] = sum(1 for m in acc if stored.get(m, 0) > 1) + (len(accepted) - len(acc))
        res["extra"] = sum(1 for m in stored if m not in acc)
        res["errors"] = errors
        res["reload_times"] = reload_times
        res["sessions"] = sum(t.sessions for t in all_threads)
        res["figures"] = (base, end)
        seen = set()
        for t in all_threads:
            seen |= t.seen_fps
        log("sent %d, stored %d, lost %d (attempted %d in %d sessions, duplicates %d, stored without a 250 %d, "
            "tmp/ %d)" % (res["sent"], res["stored"], res["lost"], res["attempted"], res["sessions"],
                          res["duplicates"], res["extra"], in_tmp))
        if reload_times:
            log("reloads: %d applied, %d not seen in the log; HUP -> 'reloaded' max %.3fs, mean %.3fs"
                % (len(reload_times), failed_reloads, max(reload_times), sum(reload_times) / len(reload_times)))
        check("messages sent", res["sent"] > 0, "%d" % res["sent"])
        check("every 250 stored exactly once", res["lost"] == 0 and res["duplicates"] == 0,
              "lost %d, duplicates %d" % (res["lost"], res["duplicates"]))
        check("nothing stored without a 250", res["extra"] == 0, "%d" % res["extra"])
        check("no partial file left in tmp/", in_tmp == 0, "%d" % in_tmp)
        check("no client error (reset, 4xx, 5xx, timeout)", not errors,
              "%d errors, first: %s" % (len(errors), errors[:5]) if errors else "")
        check("every HUP reloaded", failed_reloads == 0 and len(reload_times) == reloads + warmup_reloads,
              "%d of %d" % (len(reload_times), reloads + warmup_reloads))
        check("both certificates served over STARTTLS", seen == fps or clients < 2,
              "%d distinct" % len(seen))
        # The certificate watcher may look at the files between the rename of
        # the key and that of the certificate: it must log it and keep the
        # old pair, and the next look must succeed. Any other error fails.
        cert_failed = lw.matching(r"certificate reload failed")
        log_lines = [l for l in lw.matching(r"level=error|reload failed") if l not in cert_failed]
        check("no error in the server log", not log_lines, "; ".join(log_lines[:5]))
        if cert_failed:
            last_fail = max(i for i, l in enumerate(lw.lines) if "certificate reload failed" in l)
            recovered = any(re.search(r"certificates reloaded|" + RELOADED, l) for l in lw.lines[last_fail + 1:])
            log("certificate watcher saw a half-renewed pair %d times (logged, old pair kept)" % len(cert_failed))
            check("certificate watcher recovered after a half-renewed pair", recovered,
                  "" if recovered else cert_failed[-1])
        if workers > 1:
            check("%d workers at the end" % workers, len(end.pids) == workers + 1, "pids %s" % end.pids)
        check("open fds back to the start (%d)" % base.fds, end.fds == base.fds,
              "%d -> %d; %s" % (base.fds, end.fds, "" if end.fds == base.fds else
                               "start %s / end %s" % (base.detail, end.detail)))
        if check_rss:
            limit = max(base.rss * 1.2, base.rss + 5 * 1024)
            check("RSS back near the start", end.rss <= limit,
                  "%d KiB -> %d KiB (limit %d KiB)" % (base.rss, end.rss, limit))
        else:
            log("RSS not checked (sanitizer build): %d KiB -> %d KiB" % (base.rss, end.rss))
    finally:
        try:
            srv.stop()
            check("server stopped cleanly (TERM, exit 0, no sanitizer report)", True)
        except harness.ServerError as e:
            check("server stopped cleanly (TERM, exit 0, no sanitizer report)", False, str(e)[:2000])
        if workers > 1 and srv.proc is not None:
            wait_for(lambda: not [p for p in seen_pids if alive(p) and exe_of(p) == exe], 5.0)
            left = [p for p in sorted(seen_pids) if alive(p) and exe_of(p) == exe]
            check("no worker left after TERM", not left, "%s" % left)
    res["passed"] = sum(1 for c in checks if c[1])
    res["failed"] = sum(1 for c in checks if not c[1])
    if res["failed"] == 0:
        srv.cleanup()
        tmp.cleanup()
    return res
