#!/usr/bin/python3
"""Performance benchmark (not a test): luasmtpd with scripts/bench.lua
against the floor (tests/bench/floor.c, a deliberately minimal responder).

Figures, each the server's user+sys CPU from /proc/PID/stat around a
lock-step Python client on 127.0.0.1 (cost, not rate: client and server
share the cores), median of several rounds, interleaved between servers:

  (1) CPU per 10k messages, 100 messages/connection, 1 KiB bodies
  (2) CPU per 10k connections, 1 message each
  (3) CPU per GB, 10 MiB bodies
  (4) CPU per 10k STARTTLS sessions (TLS 1.3, ECDSA P-256, X25519)
  (5) RSS per idle plain connection (held after EHLO, fresh process)

Runs are scaled down (default: 3,000 messages, 2,000 connections, 200 MiB,
500 STARTTLS sessions, 2,000 idle connections; --quick uses less) and the
results scaled up.  A second ratio from /proc/PID/task/*/schedstat
(nanoseconds, not 10 ms ticks) is printed as a cross-check.

Optional anchors (reference servers, --anchors; default: all that can be
made available, a missing one is reported as "skipped: why"):
  aiosmtpd   Debian python3-aiosmtpd, tests/bench/anchors/aiosmtpd_sink.py
  node       smtp-server 3.21 (npm, installed at run time under
             build/anchors/), tests/bench/anchors/node_sink.js
  smtp-sink  Postfix's smtp-sink (Debian postfix); no STARTTLS, so (4) n/a
To keep the default run near 4 minutes, anchors run the same workloads with
volumes scaled by --anchor-scale (default 0.05) in --anchor-rounds rounds
(default 1, so a single sample, not a median); figures are per unit like the
others.  An anchor whose RSS run fails keeps its CPU figures, (5) n/a.

usage: compare.py [--quick] [-r ROUNDS] [--anchors LIST|all|none] [--anchor-scale F]
                  [--anchor-rounds N]
Exit status 0 unless a server or the client failed.
"""

import argparse
import os
import resource
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FLOOR_BIN = os.path.join(ROOT, "build", "bench_floor")
LUASMTPD_BIN = os.environ.get("LUASMTPD_BIN", os.path.join(ROOT, "build", "luasmtpd"))
IO_TIMEOUT = 20.0
TICK = os.sysconf("SC_CLK_TCK")
ANCHOR_DIR = os.path.join(HERE, "anchors")
ANCHOR_BUILD = os.path.join(ROOT, "build", "anchors")
ANCHORS = ["aiosmtpd", "node", "smtp-sink"]
NO_TLS = {"smtp-sink"}  # servers without STARTTLS: figure (4) n/a


class Skip(Exception):
    pass


def _run(cmd, timeout, **kw):
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, **kw)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    return r.returncode == 0, r.stdout.decode(errors="replace")[-300:]


def apt_install(pkgs, preseed=None):
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False, "not root or no apt-get"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if preseed:
        subprocess.run(["debconf-set-selections"], input=preseed.encode(), check=False)
    print("installing %s with apt-get" % " ".join(pkgs), flush=True)
    return _run(["apt-get", "install", "-y", "-q"] + pkgs, 300, env=env)


def prepare_anchor(name, port, key, cert):
    """(argv, env) to start anchor NAME on PORT; installs it if needed; raises Skip(why)."""
    if name == "aiosmtpd":
        py = "/usr/bin/python3"
        if subprocess.run([py, "-c", "import aiosmtpd"], stderr=subprocess.DEVNULL).returncode != 0:
            ok, out = apt_install(["python3-aiosmtpd"])
            if not ok or subprocess.run([py, "-c", "import aiosmtpd"], stderr=subprocess.DEVNULL).returncode:
                raise Skip("python3-aiosmtpd not installable: %s" % out.strip().splitlines()[-1:])
        return [py, os.path.join(ANCHOR_DIR, "aiosmtpd_sink.py"), str(port), cert, key], None
    if name == "node":
        node = shutil.which("node")
        if not node:
            raise Skip("no node binary")
        mods = os.path.join(ANCHOR_BUILD, "node_modules")
        if not os.path.exists(os.path.join(mods, "smtp-server", "package.json")):
            if not shutil.which("npm"):
                raise Skip("no npm to install smtp-server")
            os.makedirs(ANCHOR_BUILD, exist_ok=True)
            print("installing smtp-server@3.21 with npm under build/anchors/", flush=True)
            ok, out = _run(["npm", "install", "--no-audit", "--no-fund", "--prefix", ANCHOR_BUILD,
                            "smtp-server@3.21"], 300)
            if not ok:
                raise Skip("npm install smtp-server@3.21 failed: %s" % out.strip().splitlines()[-1:])
        return [node, os.path.join(ANCHOR_DIR, "node_sink.js"), str(port), cert, key], {"NODE_PATH": mods}
    if name == "smtp-sink":
        sink = "/usr/sbin/smtp-sink"
        if not os.path.exists(sink):
            # "No configuration": the package installs without configuring or starting an MTA
            ok, out = apt_install(["postfix"], "postfix postfix/main_mailer_type select No configuration\n")
            subprocess.run("systemctl stop postfix 2>/dev/null || service postfix stop 2>/dev/null || true",
                           shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if not os.path.exists(sink):
                raise Skip("postfix not installable: %s" % out.strip().splitlines()[-1:])
        argv = [sink]
        if os.geteuid() == 0:
            argv += ["-u", "nobody"]  # smtp-sink refuses to keep root privileges
        argv += ["-m", "10000"]  # default 256 simultaneous connections would stall (5)
        return argv + ["127.0.0.1:%d" % port, "1000"], None
    raise Skip("unknown anchor")


def cpu(pid):
    """(user+sys seconds from /proc/PID/stat, on-CPU seconds from schedstat or None)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    st = (int(fields[11]) + int(fields[12])) / TICK
    ns = 0
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                ns += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return st, None
    return st, ns / 1e9


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for %d" % pid)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def build_floor():
    if os.path.exists(FLOOR_BIN):
        return
    # the lead's command; floor.c uses OpenSSL for STARTTLS, hence the libraries
    cmd = ["cc", "-O2", "-o", "build/bench_floor", "tests/bench/floor.c", "-lssl", "-lcrypto"]
    print("building the floor:", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def make_cert(tmp):
    key, cert = os.path.join(tmp, "bench.key"), os.path.join(tmp, "bench.crt")
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return key, cert
    except (OSError, subprocess.CalledProcessError):
        d = os.path.join(ROOT, "certs", "dev")
        print("warning: openssl failed; using the development certificate", file=sys.stderr)
        return os.path.join(d, "localhost.key"), os.path.join(d, "localhost.crt")


class Server:
    def __init__(self, name, key, cert, tmp):
        self.name = name
        self.port = free_port()
        env = dict(os.environ, LUASMTPD_BENCH_KEY=key, LUASMTPD_BENCH_CERT=cert)
        if name == "floor":
            argv = [FLOOR_BIN, str(self.port), cert, key]
        elif name == "luasmtpd":
            argv = [LUASMTPD_BIN, "--listen", "127.0.0.1:%d" % self.port, "--log-level", "warn",
                    os.path.join(ROOT, "scripts", "bench.lua")]
        else:
            argv, extra = prepare_anchor(name, self.port, key, cert)  # may raise Skip
            env.update(extra or {})
        self.log = open(os.path.join(tmp, "%s-%d.log" % (name, self.port)), "w+")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                c = Conn(self.port, ehlo=False)
                c.close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("%s did not start: %s" % (name, self.tail()))
                time.sleep(0.05)

    def tail(self):
        self.log.seek(0)
        return self.log.read()[-2000:]

    def check(self):
        if self.proc.poll() is not None:
            raise RuntimeError("%s exited (%s): %s" % (self.name, self.proc.returncode, self.tail()))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Conn:
    def __init__(self, port, ehlo=True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.expect(b"220")
        if ehlo:
            self.cmd(b"EHLO bench.client\r\n", b"250")

    def reply(self):
        while True:
            i = self.buf.find(b"\r\n")
            while i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                if line[3:4] != b"-":
                    return line
                i = self.buf.find(b"\r\n")
            d = self.sock.recv(65536)
            if not d:
                raise RuntimeError("server closed the connection")
            self.buf += d

    def expect(self, code):
        line = self.reply()
        if not line.startswith(code):
            raise RuntimeError("expected %s, got %r" % (code.decode(), line))

    def cmd(self, line, code):
        self.sock.sendall(line)
        self.expect(code)

    def message(self, body):
        self.sock.sendall(b"MAIL FROM:<bench@example.com>\r\nRCPT TO:<rcpt@example.com>\r\nDATA\r\n")
        self.expect(b"250")
        self.expect(b"250")
        self.expect(b"354")
        self.sock.sendall(body)
        self.expect(b"250")

    def starttls(self, ctx):
        self.cmd(b"STARTTLS\r\n", b"220")
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
        self.buf = b""
        v = self.sock.version()
        if v != "TLSv1.3":
            raise RuntimeError("negotiated %s" % v)
        self.cmd(b"EHLO bench.client\r\n", b"250")

    def quit(self):
        self.cmd(b"QUIT\r\n", b"221")
        self.sock.close()

    def close(self):
        self.sock.close()

    def abort(self):
        """Close with RST: no TIME_WAIT left on the client's ports."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.sock.close()


def body_of(size):
    line = b"x" * 76 + b"\r\n"
    head = b"Subject: bench\r\n\r\n"
    n = max(1, (size - len(head)) // len(line))
    return head + line * n + b".\r\n"


# Each workload takes (server, scale) and returns the number of units done.

def w_messages(srv, n, body):
    per = 100
    done = 0
    while done < n:
        c = Conn(srv.port)
        for _ in range(min(per, n - done)):
            c.message(body)
            done += 1
        c.quit()
    return done


def w_connections(srv, n, body):
    for _ in range(n):
        c = Conn(srv.port)
        c.message(body)
        c.quit()
    return n


def w_tls(srv, n, ctx):
    for _ in range(n):
        c = Conn(srv.port)
        c.starttls(ctx)
        c.quit()
    return n


def measure(srv, fn, *args):
    srv.check()
    pid = srv.proc.pid
    st0, ns0 = cpu(pid)
    units = fn(srv, *args)
    st1, ns1 = cpu(pid)
    srv.check()
    return (st1 - st0) / units, (None if ns0 is None else (ns1 - ns0) / units)


def idle_rss(name, key, cert, tmp, n):
    """KiB per idle connection held after EHLO, in a fresh process."""
    srv = Server(name, key, cert, tmp)
    conns = []
    try:
        time.sleep(0.2)
        before = rss_kib(srv.proc.pid)
        for _ in range(n):
            conns.append(Conn(srv.port))
        time.sleep(0.3)
        srv.check()
        after = rss_kib(srv.proc.pid)
        return (after - before) / n
    finally:
        for c in conns:
            c.abort()
        srv.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs (< 1 minute)")
    ap.add_argument("-r", "--rounds", type=int, default=3)
    ap.add_argument("--anchors", default="all",
                    help="comma-separated from %s, or all (default) or none" % ",".join(ANCHORS))
    ap.add_argument("--anchor-scale", type=float, default=0.05,
                    help="anchors' run volumes as a fraction of the others' (default 0.05)")
    ap.add_argument("--anchor-rounds", type=int, default=1, help="rounds for anchors (default 1)")
    a = ap.parse_args()
    if a.anchors in ("all", ""):
        anchors = list(ANCHORS)
    elif a.anchors == "none":
        anchors = []
    else:
        anchors = [x.strip() for x in a.anchors.split(",") if x.strip()]
        bad = [x for x in anchors if x not in ANCHORS]
        if bad:
            ap.error("unknown anchor(s) %s; known: %s" % (",".join(bad), ",".join(ANCHORS)))
    if a.quick:
        n_msg, n_conn, mib, n_tls, n_idle = 10000, 3000, 1000, 800, 1000
    else:
        n_msg, n_conn, mib, n_tls, n_idle = 30000, 8000, 3000, 2000, 2000

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, n_idle + 512)) if hard != resource.RLIM_INFINITY else max(soft, n_idle + 512)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < n_idle + 100:
        n_idle = max(100, want - 200)

    build_floor()
    t_start = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="luasmtpd-bench-")
    key, cert = make_cert(tmp)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    try:
        ctx.set_ecdh_curve("X25519")
    except ssl.SSLError:
        pass  # some Python builds refuse it on a client context; X25519 is OpenSSL's first choice anyway
    ctx.options |= ssl.OP_NO_TICKET  # every session a full handshake

    small, big = body_of(1024), body_of(10 * 1024 * 1024)
    n_big = max(1, mib // 10)
    figures = [
        # key, label, unit scale, goal, workload, args
        ("msg", "(1) CPU s / 10k msgs (100/conn, 1 KiB)", 10000, 1.2, w_messages, (n_msg, small)),
        ("conn", "(2) CPU s / 10k conns (1 msg each)", 10000, 1.2, w_connections, (n_conn, small)),
        ("bulk", "(3) CPU s / GB (10 MiB bodies)", 1e9 / len(big), 2.0, w_messages, (n_big, big)),
        ("tls", "(4) CPU s / 10k STARTTLS (TLS1.3 P-256)", 10000, 1.2, w_tls, (n_tls, ctx)),
    ]

    def scaled(n, args):
        if n in ("floor", "luasmtpd"):
            return args
        return (max(1, int(args[0] * a.anchor_scale)),) + args[1:]
    names = ["floor", "luasmtpd"]
    skipped = {}  # anchor -> why
    rss_failed = {}  # anchor -> why (5) is n/a
    res = {}
    rss = {}
    failed = False
    servers = {}
    try:
        for n in names + anchors:
            try:
                servers[n] = Server(n, key, cert, tmp)
                w_messages(servers[n], 300, small)  # warm-up (JIT, allocator, caches)
                if n not in NO_TLS:
                    w_tls(servers[n], 20, ctx)
            except (Skip, RuntimeError, OSError) as e:
                if n in ("floor", "luasmtpd"):
                    raise
                skipped[n] = str(e) if isinstance(e, Skip) else "did not work: %s" % str(e)[:200]
                if n in servers:
                    servers.pop(n).stop()
                continue
            if n not in names:
                names.append(n)
        res = {(f[0], n): ([], []) for f in figures for n in names}
        rss = {n: [] for n in names}
        for r in range(a.rounds):
            for key_, _, _, _, fn, args in figures:
                order = names if r % 2 == 0 else names[::-1]
                for n in order:
                    if n in skipped or (key_ == "tls" and n in NO_TLS) or (
                            n in anchors and r >= a.anchor_rounds):
                        continue
                    try:
                        st, ns = measure(servers[n], fn, *scaled(n, args))
                    except (RuntimeError, OSError) as e:
                        if n in ("floor", "luasmtpd"):
                            raise
                        skipped[n] = "failed during the run: %s" % str(e)[:200]
                        servers.pop(n).stop()
                        continue
                    res[(key_, n)][0].append(st)
                    if ns is not None:
                        res[(key_, n)][1].append(ns)
            print("round %d done (%.0f s)" % (r + 1, time.monotonic() - t_start), flush=True)
        for s in servers.values():
            s.stop()
        servers = {}
        for r in range(a.rounds):
            for n in names:
                if n in skipped or n in rss_failed or (n in anchors and r >= a.anchor_rounds):
                    continue
                try:
                    rss[n].append(idle_rss(n, key, cert, tmp, n_idle))
                except (RuntimeError, OSError) as e:
                    if n in ("floor", "luasmtpd"):
                        raise
                    rss_failed[n] = str(e)[:200]
    except Exception as e:  # noqa: BLE001
        print("FAILED: %s" % e, file=sys.stderr)
        failed = True
    finally:
        for s in servers.values():
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    shown = [n for n in names if n not in skipped]
    anc = [n for n in shown if n not in ("floor", "luasmtpd")]
    print()
    print("luasmtpd (scripts/bench.lua, --log-level warn) vs floor%s; median of %d; %s"
          % (" and anchors" if anc else "", a.rounds, "quick" if a.quick else "default"))
    print("runs: %d msgs, %d conns, %d x 10 MiB, %d STARTTLS, %d idle conns"
          % (n_msg, n_conn, n_big, n_tls, n_idle))
    if anc:
        print("anchors (%s): %d round(s), volumes x %g (figures per unit); idle conns the same"
              % (", ".join(anc), min(a.rounds, a.anchor_rounds), a.anchor_scale))
    for n in anchors:
        if n in skipped:
            print("anchor %s skipped: %s" % (n, skipped[n]))
        elif n in NO_TLS:
            print("anchor %s: no STARTTLS, (4) n/a" % n)
        if n in rss_failed:
            print("anchor %s: RSS run failed (%s), (5) n/a" % (n, rss_failed[n]))
    cols = ["floor", "luasmtpd"] + anc
    hdr = "%-40s" % "figure" + "".join(" %9s" % c for c in cols) + " %7s %8s %5s %-7s" % (
        "l/floor", "(sched)", "goal", "") + "".join(" %9s" % ("l/" + c)[:9] for c in anc)
    print(hdr)
    print("-" * len(hdr))

    def med(xs):
        return statistics.median(xs) if xs else float("nan")

    def val(key_, n, scale):
        v = res.get((key_, n))
        return med(v[0]) * scale if v and v[0] else None

    def ratio(x, y):
        if x is None or y is None:
            return "%9s" % "n/a"
        return "%8.3fx" % (x / y) if y > 0 else "%9s" % "inf"
    met = []
    for key_, label, scale, goal, _, _ in figures:
        vals = {n: val(key_, n, scale) for n in cols}
        fv, lv = vals["floor"], vals["luasmtpd"]
        line = "%-40s" % label + "".join(" %9s" % ("n/a" if vals[n] is None else "%.2f" % vals[n]) for n in cols)
        if fv is not None and lv is not None:
            f, l = res[(key_, "floor")], res[(key_, "luasmtpd")]
            r_ = lv / fv if fv > 0 else float("inf")
            sratio = med(l[1]) / med(f[1]) if f[1] and l[1] and med(f[1]) > 0 else float("nan")
            ok = r_ <= goal
            met.append((label, ok))
            line += " %6.3fx %7.3fx %4.1fx %-7s" % (r_, sratio, goal, "met" if ok else "NOT met")
        else:
            line += " %7s %8s %5s %-7s" % ("n/a", "", "", "")
        line += "".join(" " + ratio(lv, vals[n]) for n in anc)
        print(line)
    rv = {n: (med(rss[n]) if rss.get(n) else None) for n in cols}
    if rv["floor"] is not None and rv["luasmtpd"] is not None:
        fv, lv = rv["floor"], rv["luasmtpd"]
        print("%-40s" % "(5) RSS KiB / idle plain conn"
              + "".join(" %9s" % ("n/a" if rv[n] is None else "%.2f" % rv[n]) for n in cols)
              + " %6.2fx %8s %5s %-7s" % (lv / fv if fv > 0 else float("inf"), "", "-", "no goal")
              + "".join(" " + ratio(lv, rv[n]) for n in anc))
    print()
    if met:
        print("goals met: %s" % (", ".join(l.split()[0] for l, ok in met if ok) or "none"))
        print("goals NOT met: %s" % (", ".join(l.split()[0] for l, ok in met if not ok) or "none"))
    print("(CPU from /proc/PID/stat in %d Hz ticks; 'sched' = luasmtpd/floor from schedstat ns; "
          "l/X = luasmtpd/X, below 1 means luasmtpd cheaper; total %.0f s)" % (TICK, time.monotonic() - t_start))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
