"""make install / uninstall into a temporary DESTDIR: the installed binary
finds its Lua module without LUA_PATH and checks an installed policy."""
import os
import subprocess
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make(*args, cwd=ROOT):
    return subprocess.run(["make", "--no-print-directory", *args], cwd=cwd, capture_output=True, timeout=120)


class Install(unittest.TestCase):
    def test_install_check_uninstall(self):
        with tempfile.TemporaryDirectory() as dest:
            r = make("install", "PREFIX=/usr/local", "DESTDIR=" + dest)
            self.assertEqual(r.returncode, 0, r.stderr)
            prefix = os.path.join(dest, "usr/local")
            binary = os.path.join(prefix, "sbin/luasmtpd")
            for path in ("sbin/luasmtpd", "share/luasmtpd/lua/smtp/init.lua", "share/luasmtpd/lua/smtp/maildir.lua",
                         "share/luasmtpd/scripts/default.lua", "share/man/man8/luasmtpd.8",
                         "lib/systemd/system/luasmtpd.service"):
                self.assertTrue(os.path.isfile(os.path.join(prefix, path)), path)
            unit = open(os.path.join(prefix, "lib/systemd/system/luasmtpd.service")).read()
            self.assertIn("ExecReload=/bin/kill -HUP $MAINPID", unit)
            self.assertIn("ExecStart=/usr/local/sbin/luasmtpd", unit)
            self.assertIn("NoNewPrivileges=true", unit)
            env = {k: v for k, v in os.environ.items() if k not in ("LUA_PATH", "LUASMTPD_LUA_DIR")}
            with tempfile.TemporaryDirectory() as work:
                script = os.path.join(prefix, "share/luasmtpd/scripts/dnsbl.lua")
                r = subprocess.run([binary, "-t", script], cwd=work, env=env, capture_output=True, timeout=30)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn(b"is ok", r.stdout)
                # An unknown option is still caught by the installed binary.
                bad = os.path.join(work, "bad.lua")
                with open(bad, "w") as f:
                    f.write('local smtp = require "smtp"\nreturn { nosuchoption = 1 }\n')
                r = subprocess.run([binary, "-t", bad], cwd=work, env=env, capture_output=True, timeout=30)
                self.assertEqual(r.returncode, 1)
                self.assertIn(b"nosuchoption", r.stderr)
            man = subprocess.run(["man", "-l", os.path.join(prefix, "share/man/man8/luasmtpd.8")],
                                 capture_output=True, timeout=30, env=dict(env, MANPAGER="cat", PAGER="cat"))
            if man.returncode == 0:
                self.assertIn(b"luasmtpd", man.stdout)
            r = make("uninstall", "PREFIX=/usr/local", "DESTDIR=" + dest)
            self.assertEqual(r.returncode, 0, r.stderr)
            left = [os.path.join(d, f) for d, _, fs in os.walk(dest) for f in fs]
            self.assertEqual(left, [])

    def test_installed_testing_kit(self):
        """The kit (lua/smtp/testing.lua and lua/smtp/testing/) works from an
        install: it runs the installed binary, its recorder and its CA."""
        with tempfile.TemporaryDirectory() as dest:
            r = make("install", "PREFIX=/usr/local", "DESTDIR=" + dest)
            self.assertEqual(r.returncode, 0, r.stderr)
            prefix = os.path.join(dest, "usr/local")
            lua = os.path.join(prefix, "share/luasmtpd/lua")
            spec = """
                package.path = %r .. "/?.lua;" .. %r .. "/?/init.lua;" .. package.path
                local testing = require "smtp.testing"
                assert(testing.binary() == %r, tostring(testing.binary()))
                local pki = testing.pki()
                local server = assert(testing.server({ authOptional = true },
                  { options = { key = pki.key("localhost"), cert = pki.cert("localhost") } }))
                local c = assert(server:client())
                c:ehlo("me.example")
                assert(c:starttls { servername = "localhost", cafile = pki.ca } == 220)
                c:ehlo("me.example"); c:mail("a@example.org"); c:rcpt("b@example.org")
                testing.assert_reply(c, 250, "2.1.5")
                c:data("hi")
                testing.assert_reply(c, 250)
                assert(server:messages()[1].body == "hi\\r\\n")
                assert(server:stop())
                print("kit ok")
            """ % (lua, lua, os.path.join(prefix, "sbin/luasmtpd"))
            env = {k: v for k, v in os.environ.items() if k not in ("LUA_PATH", "LUASMTPD_LUA_DIR", "LUASMTPD_BIN")}
            with tempfile.TemporaryDirectory() as work:
                r = subprocess.run(["luajit", "-e", spec], cwd=work, env=env, capture_output=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn(b"kit ok", r.stdout)


class SystemdNotify(unittest.TestCase):
    """Type=notify: READY=1 once listening, RELOADING=1/READY=1 around a
    HUP, STOPPING=1 on TERM, sent to $NOTIFY_SOCKET as systemd expects."""

    def run_and_collect(self, extra):
        import signal
        import socket
        import time
        import harness
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "notify")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(path)
            sock.settimeout(10)
            srv = harness.Server(harness.script(), env={"NOTIFY_SOCKET": path}, args=extra)
            try:
                states = [sock.recv(256)]
                srv.send_signal(signal.SIGHUP)
                states += [sock.recv(256), sock.recv(256)]
                srv.send_signal(signal.SIGTERM)
                states.append(sock.recv(256))
                # The TERM is ours: collect the exit (it may come before stop()).
                srv.wait_exit()
            finally:
                srv.stop()
                sock.close()
            return states

    def test_single_process(self):
        self.assertEqual(self.run_and_collect([]), [b"READY=1", b"RELOADING=1", b"READY=1", b"STOPPING=1"])

    def test_master(self):
        self.assertEqual(self.run_and_collect(["--workers", "2"]),
                         [b"READY=1", b"RELOADING=1", b"READY=1", b"STOPPING=1"])
