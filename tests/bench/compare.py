#!/usr/bin/python3
"""Performance benchmark (not a test): luasmtpd with scripts/bench.lua
against the floor (tests/bench/floor.c, a deliberately minimal responder)
and anchors (reference servers), all load from our C load generator
tests/bench/loadgen.c (build/bench_load: one thread, epoll, lock-step
connections with MAIL/RCPT/DATA pipelined, STARTTLS with full TLS 1.3
handshakes and no resumption, and with a client that resumes (4r), client
addresses spread over 127.1.0.0/16).

Figures, server CPU user+sys from /proc/PID/stat summed over the server's
process tree (cost, not rate: client and server share the 2 cores), read
before and after each bench_load run; rounds interleaved between servers,
order reversed every other round; median, min and max of the samples:

  (1) CPU s per 10k messages, 100 messages/connection, 1 KiB bodies
  (2) CPU s per 10k connections, 1 message each
  (3) CPU s per GB, 10 MiB bodies (10 messages/connection); bodies are
      base64-like lines (pseudo-random, fixed seed), what a big message
      mostly is
  (3u) floor and luasmtpd only: the same with uniform lines of x's, the
      worst case for LuaJIT's string interning (identical-looking chunks
      collide in its sparse string hash and are hashed densely and
      compared): the cost of a pathological body, shown, not hidden
  (4) CPU s per 10k STARTTLS sessions (TLS 1.3, ECDSA P-256, X25519; the
      client sends no tickets back and keeps no session cache: every
      handshake a full one)
  (4r) the second client profile (bench_load --resume): as Python's
      smtplib or Postfix with its TLS session cache, EHLO again after the
      handshake, OpenSSL's default groups (X25519 key share), the newest
      session ticket kept and offered on the next STARTTLS; the note gives
      the handshakes resumed / total of the samples. The floor issues and
      accepts tickets as luasmtpd does (OpenSSL's stateless tickets, the
      same ticket count), so resumed is compared with resumed
  (4h) luasmtpd only: (4r) with a HUP to the server when half the
      sessions have started (bench_load --hup): the note gives the
      handshakes resumed / total of those started after it, which
      resumption across a reload makes all but none full; the CPU
      includes the reload's
  (5) RSS KiB per idle plain connection, held after EHLO, 5,000 held, a
      fresh server process per sample: (RSS after - RSS before) / N
  (5t) luasmtpd only: RSS KiB per idle TLS connection (STARTTLS + EHLO),
      set up one at a time (what a held session costs) and 200 at a time
      (the same plus what the allocator keeps from 200 handshakes in
      flight: their record buffers are freed once each ends, but the heap
      they grew is not returned)
  (6) scale, luasmtpd only: 20,000 concurrent idle plain connections
      against --workers 2 (two bench_load processes of 10,000: the hard
      RLIMIT_NOFILE here is 20,000 per process), RSS of the process tree
      and open fds per worker; and single-process luasmtpd at 19,000 (what
      that limit allows)
  (W) luasmtpd --workers 2 against 1 worker (both fresh, not pinned) on (2)
      and (4), same volume, -c 16: CPU per unit (tree sum) and throughput
      (units per wall second); on 2 cores shared with the client a speedup
      below 2 is expected
Samples: -r (default 5; --quick 3) for the CPU figures, 3 for RSS figures.

Logging: luasmtpd runs at its default log level (info: a summary line per
message, a line per connection opened and closed, one per TLS handshake),
its stderr a file, as users run it. Beside it on (1), (2) and (4), in the
same rounds: lua-warn, the same with --log-level warn (hardly a line), and
lua-pipe, the default level with stderr a pipe drained by cat (as journald
drains a service's). "log cost" rows give, per unit and per line, the
default level minus lua-warn, round by round (min/median/max of the
differences); the goal is at most 2 us of server CPU per line.

Concurrency and pinning: (1)-(4) run with bench_load -c 16 for every
server, the server pinned to CPU 0 and bench_load to CPU 1 (--no-pin to
not).  Measured on the floor and luasmtpd (pinned, 3 samples each):
c=1 costs 1.2-3x more server CPU per unit than c=4 (at c=1 the server goes
to sleep and is woken for every reply: floor (2) 2.3e-4 s/conn at c=1,
7.6e-5 at c=4, 6.6e-5 at c=16) and its samples scatter most; c=16 is
another 5-15% below c=4, with the tightest spread; unpinned, samples
scatter ~10-15% more.  Per-unit cost at c=16 is the cost of a busy server,
which is what the figures are for.  The anchors get the same c=16 (node's
per-unit CPU also falls 20-35% from c=4 to c=32).  node smtp-server answers
EHLO ~100 ms late (idle time, not CPU), which is why its volumes are small.

Anchors (--anchors; default all that can be made available, a missing one
is reported as "skipped: why"), each with its own volumes (3-25x costlier
than luasmtpd, so fewer units still give a stable per-unit figure) and the
same number of samples:
  aiosmtpd   Debian python3-aiosmtpd, tests/bench/anchors/aiosmtpd_sink.py
  node       smtp-server 3.21 (npm, installed at run time under
             build/anchors/), tests/bench/anchors/node_sink.js
  smtp-sink  Postfix's smtp-sink (Debian postfix, installed with "No
             configuration", the postfix daemon not started); no STARTTLS,
             so (4) n/a

A schedstat cross-check (/proc/PID/task/*/schedstat, ns rather than 10 ms
ticks) of luasmtpd/floor is printed under the table.

Time: the default run took 4.5-5.5 minutes (260 s and 320 s measured) on
the 2-core bench machine with the anchors already installed (most of it the anchors and the idle
runs) before lua-warn and lua-pipe ran beside luasmtpd; with them, 557 s
measured (the machine shared with other work, npm's install included); a first run adds the npm install of smtp-server (1.3 s measured with
npm's cache warm; some seconds more from the network) and the apt-get
install of postfix and python3-aiosmtpd (not measured from scratch here;
typically 10-60 s depending on the mirror).  --quick --anchors none takes about 45 s.

usage: compare.py [--quick] [-r ROUNDS] [--anchors LIST|all|none] [--anchor-scale F]
                  [-c CONCURRENCY] [--no-pin] [--only-5t]
Environment: LUASMTPD_BIN (default build/luasmtpd), BENCH_LOAD_BIN
(default build/bench_load).
Exit status 0 unless the floor, luasmtpd or bench_load failed.
This tree's luasmtpd against a build of another commit, on the same
scenarios: tests/bench/base_compare.py (make bench-compare BASE=<commit>).
"""

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from benchutil import TICK, free_port, sched_cpu_s, stat_cpu_s

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FLOOR_BIN = os.path.join(ROOT, "build", "bench_floor")
LOAD_BIN = os.environ.get("BENCH_LOAD_BIN", os.path.join(ROOT, "build", "bench_load"))
# the luasmtpd binaries by server name; base_compare.py and callgrind.py add "base"
LUASMTPD = {"luasmtpd": os.environ.get("LUASMTPD_BIN", os.path.join(ROOT, "build", "luasmtpd"))}
ANCHOR_DIR = os.path.join(HERE, "anchors")
ANCHOR_BUILD = os.path.join(ROOT, "build", "anchors")
ANCHORS = ["aiosmtpd", "node", "smtp-sink"]
NO_TLS = {"smtp-sink"}  # servers without STARTTLS: figure (4) n/a
# luasmtpd runs at its default log level (info) with its log to a file, as
# users run it; the same binary beside it with --log-level warn and with
# the log to a pipe (as under journald) gives what logging costs
LOG_VARIANTS = {"lua-warn": {"log_level": "warn"}, "lua-pipe": {"log_to": "pipe"}}
LOG_FIGURES = ("msgs", "conns", "tls")  # where the variants run (a summary line per unit)
OURS = ("floor", "luasmtpd") + tuple(LOG_VARIANTS)
CONC = 16          # bench_load -c for (1)-(4)
CONC_WORKERS = 16  # bench_load -c for the --workers comparison
SERVER_CPUS, CLIENT_CPUS = {0}, {1}  # pinning for (1)-(4), unless --no-pin
BIG = 10 * 1024 * 1024

# units per bench_load run: msgs (messages), conns (connections), bulk
# (10 MiB messages), tls (STARTTLS sessions)
VOLUMES = {
    "floor": {"msgs": 40000, "conns": 10000, "bulk": 300, "bulku": 100, "tls": 3000, "tlsr": 3000},
    "luasmtpd": {"msgs": 40000, "conns": 10000, "bulk": 300, "bulku": 100, "tls": 3000, "tlsr": 3000,
                 "tlsh": 3000},
    "lua-warn": {"msgs": 40000, "conns": 10000, "tls": 3000},
    "lua-pipe": {"msgs": 40000, "conns": 10000, "tls": 3000},
    "smtp-sink": {"msgs": 10000, "conns": 3000, "bulk": 60},
    "node": {"msgs": 3000, "conns": 600, "bulk": 20, "tls": 300},
    "aiosmtpd": {"msgs": 3000, "conns": 1000, "bulk": 10, "tls": 300},
}
QUICK_DIV = 5
IDLE_N, IDLE_TLS_N, SCALE_W2, SCALE_W1 = 5000, 5000, 20000, 19000


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
        if not shutil.which("node") or not shutil.which("npm"):
            apt_install(["nodejs", "npm"])  # Debian's node 18 runs smtp-server 3.21
        node = shutil.which("node")
        if not node:
            raise Skip("no node binary (apt-get install nodejs failed)")
        mods = os.path.join(ANCHOR_BUILD, "node_modules")
        if not os.path.exists(os.path.join(mods, "smtp-server", "package.json")):
            if not shutil.which("npm"):
                raise Skip("no npm to install smtp-server (apt-get install npm failed)")
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
        argv += ["-m", "30000"]  # default 256 simultaneous connections would stall (5)
        return argv + ["127.0.0.1:%d" % port, "1000"], None
    raise Skip("unknown anchor")


def tree(pid):
    """PID and all its descendants (via /proc/*/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir("/proc/%d/task" % p):
                with open("/proc/%d/task/%s/children" % (p, tid)) as f:
                    todo += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return sorted(set(out))


def cpu1(pid):
    """(user+sys s from /proc/PID/stat, on-CPU s from schedstat or None) of one process."""
    return stat_cpu_s(pid), sched_cpu_s(pid)


def cpu_tree(pid):
    """{pid: (stat s, sched s)} over the process tree."""
    return {p: cpu1(p) for p in tree(pid)}


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for %d" % pid)


def rss_tree(pid):
    return sum(rss_kib(p) for p in tree(pid))


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


class LoadError(RuntimeError):
    pass


def pinned(cpus):
    """preexec_fn: run the child (and every thread it makes) on CPUS; None: anywhere."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)



def load(port, scen, n, conc=CONC, extra=(), timeout=120, cpus=None):
    """Run bench_load; its JSON result; LoadError on any error."""
    base = {"bulku": "bulk", "tlsr": "tls", "tlsh": "tls"}.get(scen, scen)
    cmd = [LOAD_BIN, "-p", str(port), "-s", base, "-n", str(n), "-c", str(conc), "--timeout", str(timeout)] + list(extra)
    if scen in ("tlsr", "tlsh"):
        cmd.append("--resume")
    if scen in ("bulk", "bulku"):
        cmd += ["--size", str(BIG)] + (["--uniform"] if scen == "bulku" else [])
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout + 30,
                           preexec_fn=pinned(cpus))
    except subprocess.TimeoutExpired:
        raise LoadError("%s: hung" % " ".join(cmd))
    out = r.stdout.decode(errors="replace").strip().splitlines()
    try:
        res = json.loads(out[-1])
    except (IndexError, ValueError):
        res = None
    if r.returncode != 0 or not res or res.get("errors"):
        raise LoadError("%s: exit %d, %s; %s" % (" ".join(cmd[1:]), r.returncode,
                                                 out[-1] if out else "no output",
                                                 r.stderr.decode(errors="replace").strip()[-600:]))
    return res


def lua_dir_env(binary):
    """The base binary loads its own commit's lua/, found as BINARY/../../lua
    in a build tree (build/luasmtpd) as in tests/bench/build_base.sh's
    bin/luasmtpd, not the lua/ of this tree."""
    lua = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(binary))), "lua")
    return {"LUASMTPD_LUA_DIR": lua} if os.path.isdir(lua) else {}


class Server:
    """NAME is "floor", an anchor, or a key of LUASMTPD (luasmtpd, base);
    WRAP prefixes the command (valgrind); START is the seconds allowed
    until the greeting. luasmtpd runs at LOG_LEVEL (None: its default, as
    users run it) with its log (stderr) going to LOG_TO: "file" (a file in
    TMP) or "pipe" (a pipe drained by cat on the client's CPUs, as
    journald drains a service's stderr)."""

    def __init__(self, name, key, cert, tmp, workers=1, cpus=None, wrap=(), start=10, log_level="warn",
                 log_to="file", drain_cpus=None):
        self.name = name
        self.drain = None
        if name in LOG_VARIANTS:
            log_level, log_to = LOG_VARIANTS[name].get("log_level"), LOG_VARIANTS[name].get("log_to", "file")
            name = "luasmtpd"
        self.port = free_port()
        env = dict(os.environ, LUASMTPD_BENCH_KEY=key, LUASMTPD_BENCH_CERT=cert)
        if name == "floor":
            argv = [FLOOR_BIN, str(self.port), cert, key]
        elif name in LUASMTPD:
            argv = [LUASMTPD[name], "--listen", "127.0.0.1:%d" % self.port]
            if log_level:
                argv += ["--log-level", log_level]
            if workers > 1:
                argv += ["--workers", str(workers)]
            argv.append(os.path.join(ROOT, "scripts", "bench.lua"))
            if name != "luasmtpd":
                env.update(lua_dir_env(LUASMTPD[name]))
        else:
            argv, extra = prepare_anchor(name, self.port, key, cert)  # may raise Skip
            env.update(extra or {})
        self.log = open(os.path.join(tmp, "%s-%d.log" % (name, self.port)), "w+")
        err = subprocess.STDOUT
        if log_to == "pipe":
            r, err = os.pipe()
            self.drain = subprocess.Popen(["cat"], stdin=r, stdout=subprocess.DEVNULL, preexec_fn=pinned(drain_cpus))
            os.close(r)
        try:
            self.proc = subprocess.Popen(list(wrap) + argv, cwd=ROOT, env=env, stdout=self.log,
                                         stderr=err, preexec_fn=pinned(cpus))
        finally:
            if self.drain:
                os.close(err)
        self.pid = self.proc.pid
        deadline = time.monotonic() + start
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    if s.recv(512).startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("%s did not start: %s" % (name, self.tail()))
            time.sleep(0.05)
        if workers > 1:  # wait for the workers to be forked
            while len(tree(self.pid)) < workers + 1 and time.monotonic() < deadline:
                time.sleep(0.05)

    def tail(self):
        self.log.seek(0)
        return self.log.read()[-2000:]

    def check(self):
        if self.proc.poll() is not None:
            raise RuntimeError("%s exited (%s): %s" % (self.name, self.proc.returncode, self.tail()))

    def stop(self, grace=5):
        kids = [p for p in tree(self.pid) if p != self.pid] if self.proc.poll() is None else []
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for p in kids:  # workers left behind (should not happen)
            try:
                os.kill(p, 9)
            except OSError:
                pass
        if self.drain:
            try:
                self.drain.wait(grace)  # ends when every writer of the pipe has exited
            except subprocess.TimeoutExpired:
                self.drain.kill()
                self.drain.wait()
        self.log.close()


RESUMED = {}  # (scenario, server name) -> [(resumed, handshakes)] of the tlsr/tlsh samples


def measure(srv, scen, n, conc=CONC, cpus=None):
    """(stat CPU s per unit, sched CPU s per unit or None, units per wall second, units)."""
    srv.check()
    c0 = cpu_tree(srv.pid)
    res = load(srv.port, scen, n, conc, cpus=cpus, extra=("--hup", str(srv.pid)) if scen == "tlsh" else ())
    c1 = cpu_tree(srv.pid)
    srv.check()
    if set(c0) != set(c1):
        raise RuntimeError("%s: process tree changed during the run (%s -> %s)"
                           % (srv.name, sorted(c0), sorted(c1)))
    units = {"msgs": res["messages"], "bulk": res["bytes"], "bulku": res["bytes"],
             "conns": res["connections"], "tls": res["connections"], "tlsr": res["connections"],
             "tlsh": res["connections"]}[scen]
    if scen == "tlsr":
        RESUMED.setdefault((scen, srv.name), []).append((res["resumed"], res["connections"]))
    if scen == "tlsh":
        RESUMED.setdefault((scen, srv.name), []).append((res["resumed_after_hup"], res["after_hup"]))
    done = res["messages"] if scen in ("bulk", "bulku") else units
    if done != n:
        raise RuntimeError("%s: %s units done, %d asked" % (srv.name, done, n))
    st = sum(c1[p][0] - c0[p][0] for p in c0)
    ns = None if any(c0[p][1] is None or c1[p][1] is None for p in c0) else \
        sum(c1[p][1] - c0[p][1] for p in c0)
    return st / units, (None if ns is None else ns / units), units / max(res["seconds"], 1e-6), units


def idle_rss(name, key, cert, tmp, n, tls=False, workers=1, procs=1, conc=200):
    """(KiB per idle connection, tree RSS KiB before, after, [open fds per worker]) with N held
    in a fresh server, set up CONC at a time."""
    srv = Server(name, key, cert, tmp, workers=workers, log_level=None)
    clients = []
    try:
        time.sleep(0.2)
        before = rss_tree(srv.pid)
        per = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
        for k in per:
            cmd = [LOAD_BIN, "-p", str(srv.port), "-s", "idle", "-n", str(k), "-c", str(conc),
                   "--timeout", "120", "--hold-max", "300"] + (["--tls"] if tls else [])
            clients.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE))
        held = 0
        for p, k in zip(clients, per):
            line = p.stdout.readline().decode().split()  # bench_load's --timeout bounds this
            if len(line) != 3 or line[0] != "ready" or int(line[1]) != k:
                p.stdin.close()
                err = p.stderr.read().decode(errors="replace").strip()[-600:]
                raise LoadError("%s idle%s -n %d: %s; %s" % (name, " --tls" if tls else "", k,
                                                             " ".join(line) or "no ready line", err))
            held += k
        time.sleep(0.5)
        srv.check()
        after = rss_tree(srv.pid)
        fds = []
        if workers > 1:
            for p in tree(srv.pid)[1:]:
                try:
                    fds.append(len(os.listdir("/proc/%d/fd" % p)))
                except OSError:
                    pass
        return (after - before) / n, before, after, fds
    finally:
        for p in clients:
            try:
                p.stdin.close()
            except OSError:
                pass
        for p in clients:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        srv.stop()


def idle_tls_rows(row, rss_tls, rss_tls_burst, idle_tls_n):
    tv = statistics.median(rss_tls) if rss_tls else None
    row("(5t) RSS KiB/idle TLS conn, N=%d" % idle_tls_n, "luasmtpd", rss_tls, "",
        "" if tv is None else "set up 1 at a time; goal <=16 KiB: %s" % ("met" if tv <= 16 else "NOT met"))
    row("", "luasmtpd", rss_tls_burst, "", "set up 200 at a time (allocator high water of handshakes)")


def only_idle_tls(key, cert, tmp, idle_tls_n, t_start):
    """--only-5t: the (5t) samples alone, as the whole run takes them."""
    one, burst = [], []
    try:
        for _ in range(3):
            one.append(idle_rss("luasmtpd", key, cert, tmp, idle_tls_n, tls=True, conc=1)[0])
            burst.append(idle_rss("luasmtpd", key, cert, tmp, idle_tls_n, tls=True)[0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def row(label, server, xs, ratio="", note=""):
        print("%-36s %-11s %8.2f %8.2f %8.2f  %-8s %s" % (label, server, statistics.median(xs), min(xs), max(xs),
                                                        ratio, note))
    print("%-36s %-11s %8s %8s %8s  %-8s %s" % ("figure", "server", "median", "min", "max", "", "note"))
    idle_tls_rows(row, one, burst, idle_tls_n)
    print("total run time %.0f s" % (time.monotonic() - t_start))
    return 0


def main():
    t_start = time.monotonic()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs (about a minute)")
    ap.add_argument("-r", "--rounds", type=int, default=None,
                    help="samples per figure and server (default 5, --quick 3)")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin servers to CPU 0 and bench_load to CPU 1 for (1)-(4)")
    ap.add_argument("--anchors", default="all",
                    help="comma-separated from %s, or all (default) or none" % ",".join(ANCHORS))
    ap.add_argument("--anchor-scale", type=float, default=1.0,
                    help="multiply the anchors' run volumes (default 1)")
    ap.add_argument("-c", "--concurrency", type=int, default=CONC,
                    help="bench_load -c for figures (1)-(4) (default %d)" % CONC)
    ap.add_argument("--only-5t", action="store_true",
                    help="run only figure (5t), idle TLS memory (3 samples of each; about a minute)")
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
    rounds = max(1, a.rounds or (3 if a.quick else 5))
    scpu, ccpu = (None, None) if a.no_pin else (SERVER_CPUS, CLIENT_CPUS)
    conc = a.concurrency
    div = QUICK_DIV if a.quick else 1
    vol = {}
    for n, v in VOLUMES.items():
        s = 1.0 if n in OURS else a.anchor_scale
        vol[n] = {k: max(1, int(x * s / div)) for k, x in v.items()}
    idle_n, idle_tls_n = (1000, 500) if a.quick else (IDLE_N, IDLE_TLS_N)
    scale_w2, scale_w1 = (4000, 4000) if a.quick else (SCALE_W2, SCALE_W1)

    # children inherit it: servers and bench_load hold thousands of sockets
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY:
        scale_w1 = min(scale_w1, hard - 1000)
        scale_w2 = min(scale_w2, 2 * (hard - 1000))
        idle_n, idle_tls_n = min(idle_n, hard - 1000), min(idle_tls_n, hard - 1000)

    for b in (FLOOR_BIN, LOAD_BIN):
        if not os.access(b, os.X_OK):
            print("FAILED: %s missing: make build/bench_floor build/bench_load" % b, file=sys.stderr)
            return 1
    tmp = tempfile.mkdtemp(prefix="luasmtpd-bench-")
    key, cert = make_cert(tmp)
    if a.only_5t:
        return only_idle_tls(key, cert, tmp, idle_tls_n, t_start)

    figures = [
        # key, label, per-unit scale, floor goal, bench_load scenario
        ("msgs", "(1) CPU s/10k msgs, 100/conn, 1 KiB", 10000, 1.15, "msgs"),
        ("conns", "(2) CPU s/10k conns, 1 msg each", 10000, 1.15, "conns"),
        ("bulk", "(3) CPU s/GB, 10 MiB bodies", 1e9, 2.0, "bulk"),
        ("bulku", "(3u) same, uniform x-line bodies", 1e9, 2.0, "bulku"),
        ("tls", "(4) CPU s/10k STARTTLS, TLS1.3 P-256", 10000, 1.15, "tls"),
        ("tlsr", "(4r) same, client resuming (smtplib)", 10000, 1.15, "tlsr"),
        ("tlsh", "(4h) same, a HUP halfway", 10000, None, "tlsh"),
    ]
    names = list(OURS)
    skipped = {}  # anchor -> why
    rss_failed = {}  # anchor -> why (5) is n/a
    cpu_res = {}  # (fig, name) -> [(st, ns)]
    wres = {}  # (fig, workers) -> [(st, ns, rate)]
    rss = {}  # name -> [KiB/conn]
    rss_tls, rss_tls_burst, scale = [], [], {}  # scale: workers -> [(per, before, after)]
    failed = False
    servers = {}
    try:
        for n in list(OURS) + anchors:
            try:
                servers[n] = Server(n, key, cert, tmp, cpus=scpu, log_level=None, drain_cpus=ccpu)
                load(servers[n].port, "msgs", 1000, cpus=ccpu)  # warm-up (JIT, allocator, caches)
                load(servers[n].port, "conns", 100, cpus=ccpu)
                if n not in NO_TLS:
                    load(servers[n].port, "tls", 50, cpus=ccpu)
                if "tlsr" in vol[n]:
                    load(servers[n].port, "tlsr", 50, cpus=ccpu)
            except (Skip, RuntimeError, OSError) as e:
                if n in OURS:
                    raise
                skipped[n] = str(e) if isinstance(e, Skip) else "did not work: %s" % str(e)[:300]
                if n in servers:
                    servers.pop(n).stop()
                continue
            if n not in names:
                names.append(n)
        for w in (1, 2):  # for (W): not pinned
            srv = servers["luasmtpd-w%d" % w] = Server("luasmtpd", key, cert, tmp, workers=w, log_level=None)
            load(srv.port, "msgs", 1000, conc=CONC_WORKERS)
            load(srv.port, "conns", 200, conc=CONC_WORKERS)
            load(srv.port, "tls", 100, conc=CONC_WORKERS)
        print("servers up (%.0f s): %s" % (time.monotonic() - t_start, ", ".join(names)), flush=True)

        for r in range(rounds):
            for fkey, _, _, _, scen in figures:
                order = names if r % 2 == 0 else names[::-1]
                for n in order:
                    if n in skipped or fkey not in vol[n]:
                        continue
                    try:
                        st, ns, _, _ = measure(servers[n], scen, vol[n][fkey], conc, cpus=ccpu)
                    except (RuntimeError, OSError) as e:
                        if n in OURS:
                            raise
                        skipped[n] = "failed during the run: %s" % str(e)[:300]
                        servers.pop(n).stop()
                        continue
                    cpu_res.setdefault((fkey, n), []).append((st, ns))
            # --workers 2 against 1 worker, same volume, -c 8
            for fkey in ("conns", "tls"):
                order = [1, 2] if r % 2 == 0 else [2, 1]
                for w in order:
                    srv = servers["luasmtpd-w%d" % w]
                    st, ns, rate, _ = measure(srv, fkey, vol["luasmtpd"][fkey], CONC_WORKERS)
                    wres.setdefault((fkey, w), []).append((st, ns, rate))
            print("round %d of %d done (%.0f s)" % (r + 1, rounds, time.monotonic() - t_start), flush=True)
        for s in servers.values():
            s.stop()
        servers = {}

        for r in range(min(rounds, 3)):  # RSS figures vary by < 1%
            for n in names:
                if n in skipped or n in rss_failed or n in LOG_VARIANTS:
                    continue
                try:
                    rss.setdefault(n, []).append(idle_rss(n, key, cert, tmp, idle_n)[0])
                except (RuntimeError, OSError) as e:
                    if n in OURS:
                        raise
                    rss_failed[n] = str(e)[:300]
            rss_tls.append(idle_rss("luasmtpd", key, cert, tmp, idle_tls_n, tls=True, conc=1)[0])
            rss_tls_burst.append(idle_rss("luasmtpd", key, cert, tmp, idle_tls_n, tls=True)[0])
        print("idle RSS done (%.0f s)" % (time.monotonic() - t_start), flush=True)
        for r in range(min(rounds, 3)):
            scale.setdefault(2, []).append(idle_rss("luasmtpd", key, cert, tmp, scale_w2, workers=2, procs=2))
            scale.setdefault(1, []).append(idle_rss("luasmtpd", key, cert, tmp, scale_w1, workers=1, procs=1))
        print("scale done (%.0f s)" % (time.monotonic() - t_start), flush=True)
    except Exception as e:  # noqa: BLE001
        print("FAILED: %s" % e, file=sys.stderr)
        failed = True
    finally:
        for s in servers.values():
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    report(a, names, anchors, skipped, rss_failed, figures, cpu_res, wres, rss, (rss_tls, rss_tls_burst), scale, vol,
           idle_n, idle_tls_n, scale_w2, scale_w1, conc, rounds, scpu)
    print("total run time %.0f s" % (time.monotonic() - t_start))
    return 1 if failed else 0


def log_cost(cpu_res, shown, row):
    """What logging costs: luasmtpd at its default level minus --log-level
    warn, each round's pair of samples (taken seconds apart), in us
    of server CPU per unit, from schedstat (ns; the 10 ms ticks of
    /proc/PID/stat are too coarse for a difference this small) when there
    is one; the goal is for (1), one summary line a message."""
    for fkey, what, lines in (("msgs", "(1) us/msg (1.03 lines)", 1.03),
                              ("conns", "(2) us/conn (3 lines)", 3),
                              ("tls", "(4) us/STARTTLS (3 lines)", 3)):
        first = True
        for n, dest in (("luasmtpd", "file"), ("lua-pipe", "pipe")):
            a, b = cpu_res.get((fkey, n), []), cpu_res.get((fkey, "lua-warn"), [])
            if n not in shown or "lua-warn" not in shown or not a or len(a) != len(b):
                continue
            k = 1 if all(x[1] is not None for x in a + b) else 0
            d = [(x[k] - y[k]) * 1e6 for x, y in zip(a, b)]
            note = "log to a %s; per line %.2f us (%s)" % (dest, statistics.median(d) / lines,
                                                          "schedstat" if k else "stat ticks")
            if fkey == "msgs":
                note += "; goal <=2 us: %s" % ("met" if statistics.median(d) / lines <= 2 else "NOT met")
            row("log cost " + what if first else "", "info-warn", d, "", note)
            first = False


def report(a, names, anchors, skipped, rss_failed, figures, cpu_res, wres, rss, rss_tls, scale, vol,
           idle_n, idle_tls_n, scale_w2, scale_w1, conc, rounds, scpu):
    shown = [n for n in names if n not in skipped]
    anc = [n for n in shown if n not in OURS]
    print()
    print("luasmtpd (scripts/bench.lua, default log level, log to a file) vs floor%s; samples: %d per CPU "
          "figure, %d per RSS figure; %s run" % (" and anchors" if anc else "", rounds, min(rounds, 3),
                                                 "quick" if a.quick else "default"))
    print("beside it on (1), (2), (4): lua-warn (--log-level warn), lua-pipe (default level, log to a pipe "
          "drained by cat, as journald)")
    print("load: build/bench_load -c %d%s; units per sample: %s" % (
        conc, ", server on CPU 0, bench_load on CPU 1" if scpu else ", not pinned", "; ".join(
        "%s %s" % (n, "/".join(str(vol[n].get(f[0], "-")) for f in figures)) for n in shown)))
    print("      (msgs/conns/10 MiB msgs/STARTTLS/resuming); idle %d plain, %d TLS; scale %d (--workers 2), %d (1)"
          % (idle_n, idle_tls_n, scale_w2, scale_w1))
    for n in anchors:
        if n in skipped:
            print("anchor %s skipped: %s" % (n, skipped[n]))
        if n in rss_failed:
            print("anchor %s: RSS run failed (%s), (5) n/a" % (n, rss_failed[n]))
    print()
    hdr = "%-36s %-11s %8s %8s %8s  %-8s %s" % ("figure", "server", "median", "min", "max", "lua/x", "note")
    print(hdr)
    print("-" * 100)

    def fmt(v):
        return "n/a" if v is None else ("%.3f" % v if abs(v) < 10 else "%.1f" % v if abs(v) < 1000 else "%.0f" % v)

    def row(label, server, xs, ratio="", note=""):
        if xs:
            m, lo, hi = statistics.median(xs), min(xs), max(xs)
        else:
            m = lo = hi = None
        print("%-36s %-11s %8s %8s %8s  %-8s %s" % (label, server, fmt(m), fmt(lo), fmt(hi), ratio, note))

    def med(xs):
        return statistics.median(xs) if xs else None

    def rat(x, y):
        if x is None or y is None:
            return "n/a"
        return "%.2fx" % (x / y) if y > 0 else "inf"

    sched = []
    for fkey, label, scale_, goal, _ in figures:
        vals = {n: [s[0] * scale_ for s in cpu_res.get((fkey, n), [])] for n in shown}
        lv = med(vals["luasmtpd"])
        first = True
        for n in shown:
            if fkey not in vol[n]:
                continue
            note = ""
            if n in ("luasmtpd",) + tuple(LOG_VARIANTS) and med(vals.get("floor")):
                note = "%s the floor" % rat(med(vals[n]), med(vals["floor"]))
            got = RESUMED.get((fkey, n))
            if got:
                note += "%sresumed %d/%d%s" % ("; " if note else "", sum(x[0] for x in got), sum(x[1] for x in got),
                                               " after the HUPs" if fkey == "tlsh" else "")
            if n == "floor":
                fv = med(vals["floor"])
                if lv is not None and fv:
                    note = "goal <=%gx: %s" % (goal, "met" if lv / fv <= goal else "NOT met")
                fl = [s[1] for s in cpu_res.get((fkey, "floor"), []) if s[1] is not None]
                ll = [s[1] for s in cpu_res.get((fkey, "luasmtpd"), []) if s[1] is not None]
                if fl and ll and med(fl) > 0:
                    sched.append("%s %.2fx" % (label.split()[0], med(ll) / med(fl)))
            row(label if first else "", n, vals[n], "" if n == "luasmtpd" else rat(lv, med(vals[n])), note)
            first = False
    log_cost(cpu_res, shown, row)
    # (5) idle plain
    lv = med(rss.get("luasmtpd"))
    first = True
    for n in shown:
        if n in LOG_VARIANTS:
            continue
        note = ""
        if n == "luasmtpd" and lv is not None:
            note = "goal <=2 KiB: %s" % ("met" if lv <= 2 else "NOT met")
        row("(5) RSS KiB/idle plain conn, N=%d" % idle_n if first else "", n, rss.get(n, []),
            "" if n == "luasmtpd" else rat(lv, med(rss.get(n))), note)
        first = False
    idle_tls_rows(row, rss_tls[0], rss_tls[1], idle_tls_n)
    for w, nconn in ((2, scale_w2), (1, scale_w1)):
        xs = scale.get(w, [])
        note = ""
        if xs:
            note = "tree RSS %.1f -> %.1f MiB" % (statistics.median(x[1] for x in xs) / 1024,
                                                  statistics.median(x[2] for x in xs) / 1024)
            if xs[-1][3]:
                note += "; fds/worker " + "/".join(str(f) for f in xs[-1][3])
        row("(6) RSS KiB/conn, %d idle plain" % nconn, "lua %dw" % w, [x[0] for x in xs], "", note)
    # (W) workers
    for fkey, label, scale_ in (("conns", "(W2) CPU s/10k conns, -c %d" % CONC_WORKERS, 10000),
                                ("tls", "(W4) CPU s/10k STARTTLS, -c %d" % CONC_WORKERS, 10000)):
        c1 = [x[0] * scale_ for x in wres.get((fkey, 1), [])]
        c2 = [x[0] * scale_ for x in wres.get((fkey, 2), [])]
        row(label, "lua 1w", c1)
        row("", "lua 2w", c2, "", "2w/1w CPU %s" % rat(med(c2), med(c1)))
        r1 = [x[2] for x in wres.get((fkey, 1), [])]
        r2 = [x[2] for x in wres.get((fkey, 2), [])]
        row(label.split(" CPU")[0] + " %s/s wall" % ("conns" if fkey == "conns" else "sessions"), "lua 1w", r1)
        row("", "lua 2w", r2, "", "2w/1w speedup %s" % rat(med(r2), med(r1)))
    print("-" * 100)
    print("lua/x = luasmtpd median / x median (below 1: luasmtpd cheaper); CPU = user+sys of the process")
    print("tree from /proc/PID/stat in %d Hz ticks; schedstat cross-check luasmtpd/floor: %s"
          % (TICK, ", ".join(sched) or "n/a"))
    print("(5)/(5t)/(6): (tree RSS with N held - before) / N in a fresh process; (6) 1w/2w: luasmtpd "
          "without/with --workers 2; (W): same volume, 2 cores shared with bench_load")


if __name__ == "__main__":
    sys.exit(main())
