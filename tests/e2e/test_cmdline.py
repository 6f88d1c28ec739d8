"""The command line: -t/--check, --listen, --log-level, bad scripts, and
SIGTERM/SIGINT during an in-flight DATA."""

import os
import re
import signal
import socket
import tempfile
import time

from harness import DEFAULT_SCRIPT, E2ETest, Lua, Server, binary, default_with, free_port, script, split_received


class Check(E2ETest):
    def write(self, text, suffix=".lua"):
        fd, path = tempfile.mkstemp(suffix=suffix, prefix="e2e-check-")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self.addCleanup(os.unlink, path)
        return path

    def check(self, path, flag="-t"):
        return self.server_cmd([flag, path])

    def server_cmd(self, args, **kw):
        """Runs the server binary with args; fails on a sanitizer report."""
        r = self.run_cmd([binary()] + list(args), timeout=10, **kw)
        self.check_sanitizer_text(r.stderr.decode("utf-8", "replace"), "luasmtpd " + " ".join(args))
        return r

    def test_good_script(self):
        for flag in ["-t", "--check"]:
            with self.subTest(flag=flag):
                r = self.check(self.write(script()), flag)
                self.assertEqual(r.returncode, 0, r.stderr)

    def test_default_script(self):
        env_dir = tempfile.mkdtemp(prefix="e2e-maildir-")
        r = self.server_cmd(["-t", DEFAULT_SCRIPT], env={"LUASMTPD_MAILDIR": env_dir})
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_check_does_not_listen(self):
        p = free_port()
        t0 = time.monotonic()
        r = self.check(self.write(script(listen="127.0.0.1:%d" % p)))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertLess(time.monotonic() - t0, 5)

    def test_syntax_error(self):
        path = self.write("return {\n  name = 'x'\n  size = 10,\n}\n")
        r = self.check(path)
        self.assertEqual(r.returncode, 1, r.stderr)
        err = r.stderr.decode("utf-8", "replace")
        self.assertTrue(err.strip(), "no message on stderr")
        self.assertIn(os.path.basename(path), err, "the message should name the script")
        self.assertRegex(err, r":3\b", "the message should give the line")

    def test_broken_reply_catalogue(self):
        """The reply catalogue is compiled in (core/proto/replies.c, checked
        by build/test_replies): a broken lua/smtp/replies.lua beside the
        binary, the testing kit's copy, changes no reply of the server."""
        import shutil
        lua = tempfile.mkdtemp(prefix="e2e-lua-")
        self.addCleanup(shutil.rmtree, lua)
        shutil.copytree(os.path.join(os.path.dirname(binary()), "..", "lua", "smtp"), os.path.join(lua, "smtp"))
        catalogue = os.path.join(lua, "smtp", "replies.lua")
        with open(catalogue) as f:
            text = f.read()
        with open(catalogue, "w") as f:
            f.write(text.replace('"Accepted" }', '"Accepted\\r\\nX" }', 1).replace('[550] = "5.1.1"', '[550] = "4.1.1"', 1))
        hooks = {"onRcptTo": Lua('function(a) if a.address:match("^no@") then return nil, "no" end end')}
        with Server(script(hooks=hooks), env={"LUASMTPD_LUA_DIR": lua}) as srv:
            with srv.client() as c:
                c.ehlo()
                self.assertEqual(str(c.cmd("MAIL FROM:<a@example.com>")), "250 2.1.0 Accepted")
                self.assertEqual(str(c.cmd("RCPT TO:<no@example.com>")), "550 5.1.1 no")

    def test_unknown_option(self):
        r = self.check(self.write(script(fooBarOption=1)))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(b"fooBarOption", r.stderr)

    def test_misspelled_hook(self):
        r = self.check(self.write(script(hooks={"onRcpt": "function() end"})))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(b"onRcpt", r.stderr)

    def test_bad_option_types(self):
        for opts, key in [({"size": "big"}, b"size"), ({"socketTimeout": "soon"}, b"socketTimeout"),
                          ({"authOptional": "yes"}, b"authOptional"), ({"bareLineEndings": "sometimes"},
                                                                       b"bareLineEndings"),
                          ({"authMethods": ["PLAIN", "NTLM"]}, b"authMethods"),
                          ({"listen": "not-an-address"}, b"listen"), ({"listen": "127.0.0.1:99999"}, b"listen"),
                          ({"listen": ["127.0.0.1:2525", 7]}, b"listen")]:
            with self.subTest(opts=opts):
                r = self.check(self.write(script(**opts)))
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertIn(key, r.stderr)

    def test_runtime_error_at_load(self):
        r = self.check(self.write('error("load failure here")\n'))
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"load failure here", r.stderr)

    def test_script_not_returning_table(self):
        for body in ["return 42\n", "return nil\n", "-- nothing\n"]:
            with self.subTest(body=body):
                r = self.check(self.write(body))
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertTrue(r.stderr.strip())

    def test_missing_script(self):
        r = self.check("/nonexistent/dir/script.lua")
        self.assertEqual(r.returncode, 1)
        self.assertTrue(r.stderr.strip())

    def test_bad_script_without_check_exits(self):
        path = self.write("return {\n  name = \n")
        p = free_port()
        r = self.server_cmd(["--listen", "127.0.0.1:%d" % p, path])
        self.assertNotEqual(r.returncode, 0)
        self.assertTrue(r.stderr.strip())

    def test_bad_command_line(self):
        for argv in [["--no-such-flag", DEFAULT_SCRIPT], ["--log-level", "loud", DEFAULT_SCRIPT], [],
                     ["--listen"], ["--log-flush", "sometimes", DEFAULT_SCRIPT]]:
            with self.subTest(argv=argv):
                r = self.server_cmd(argv)
                self.assertNotEqual(r.returncode, 0, r.stderr)
                self.assertTrue(r.stderr.strip())

    def test_port_in_use(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        try:
            r = self.server_cmd(["--listen", "127.0.0.1:%d" % port, self.write(script())])
            self.assertNotEqual(r.returncode, 0)
            self.assertTrue(r.stderr.strip())
        finally:
            s.close()


class Logging(E2ETest):
    def session(self, srv):
        with srv.client() as c:
            c.ehlo()
            c.transaction(b"Subject: log\r\n\r\nx\r\n")
            c.cmd("QUIT")
            c.expect_close()

    def test_logfmt_lines_with_session(self):
        with Server(DEFAULT_SCRIPT, log_level="info") as srv:
            self.session(srv)
            time.sleep(0.2)
        lines = [l for l in srv.log().splitlines() if l.strip()]
        self.assertTrue(lines)
        for l in lines:
            self.assertRegex(l, r"^[A-Za-z_][\w.-]*=", "not a logfmt line: %r" % l)
            self.assertRegex(l, r"(^|\s)level=(debug|info|warn|error)(\s|$)", l)
            self.assertRegex(l, r"(^|\s)msg=", l)
        ids = set(re.findall(r"(?:^|\s)session=(\S+)", srv.log()))
        self.assertEqual(len(ids), 1, "one session, one id in the logs: %r" % ids)

    def test_level_error_hides_info(self):
        with Server(DEFAULT_SCRIPT, log_level="error") as srv:
            self.session(srv)
            time.sleep(0.2)
        self.assertNotRegex(srv.log(), r"level=(info|debug)")

    def test_level_debug_shows_more(self):
        with Server(DEFAULT_SCRIPT, log_level="info") as srv:
            self.session(srv)
        n_info = len(srv.log().splitlines())
        with Server(DEFAULT_SCRIPT, log_level="debug") as srv:
            self.session(srv)
        self.assertRegex(srv.log(), r"level=debug")
        self.assertGreater(len(srv.log().splitlines()), n_info)


class Signals(E2ETest):
    def mid_data(self, sig):
        with Server(default_with(closeTimeout=5)) as srv:
            c = srv.client()
            c.ehlo()
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<b@example.com>"), 250, "2.1.5")
            self.assertReply(c.cmd("DATA"), 354)
            first = b"Subject: in flight\r\n\r\n" + b"first half\r\n" * 1000
            c.send(first)
            time.sleep(0.2)
            srv.send_signal(sig)
            time.sleep(0.3)
            self.assertTrue(srv.alive(), "the server exited with a transfer in flight")
            # no new connections once stopping
            with self.assertRaises(OSError):
                socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
            second = b"second half\r\n" * 1000
            c.send(second + b".\r\n")
            self.assertReply(c.read_reply(), 250, "2.6.0")
            r = c.cmd("QUIT")
            self.assertIn(r.code, (221, 421), r)
            c.expect_close(5)
            self.assertEqual(srv.wait_exit(8), 0)
            srv.stop()
            files = srv.maildir_new()
            self.assertEqual(len(files), 1)
            with open(files[0], "rb") as f:
                self.assertEqual(split_received(f.read())[1], first + second)

    def test_sigterm_mid_data(self):
        self.mid_data(signal.SIGTERM)

    def test_sigint_mid_data(self):
        self.mid_data(signal.SIGINT)

    def test_sigterm_idle_exit_zero(self):
        srv = Server(script())
        with srv.client() as c:
            c.ehlo()
        srv.stop(signal.SIGTERM)
        self.assertEqual(srv.exit_code, 0)

    def test_sigint_exit_zero(self):
        srv = Server(script())
        srv.stop(signal.SIGINT)
        self.assertEqual(srv.exit_code, 0)
