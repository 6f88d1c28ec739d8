"""metrics = "host:port": Prometheus text exposition over HTTP, scraped with
curl; counters move by exactly what a conversation did, and the output
parses as the exposition format (promtool is used too when installed)."""
import re
import shutil
import smtplib
import subprocess
import tempfile
import time

from harness import E2ETest, Lua, Server, free_port, script, wait_for

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
                    r'(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*)?\})? (-?[0-9.eE+-]+|\+Inf|NaN)$')


def scrape(port):
    r = subprocess.run(["curl", "-sf", "http://127.0.0.1:%d/metrics" % port], capture_output=True, timeout=10)
    if r.returncode != 0:
        raise AssertionError("curl failed: %r" % r)
    return r.stdout.decode()


def parse(text):
    """{(name, labels): value}; raises on a line that is not the format."""
    out, typed = {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram"), line
            assert name not in typed, "TYPE twice for " + name
            typed[name] = kind
            continue
        m = SAMPLE.match(line)
        assert m, "not the exposition format: %r" % line
        key = (m.group(1), m.group(3) or "")
        assert key not in out, "sample twice: %r" % (key,)
        out[key] = float(m.group(5))
    return out


HOOKS = {
    "onAuth": Lua(r'''function(auth) if auth.password == "pw" then return {user = auth.username} end end'''),
    "onRcptTo": Lua(r'''function(address)
        if address.address:match("^no@") then
          rejected:inc({reason = "unknown"})
          return nil, "no such user"
        end
      end'''),
    "onData": Lua(r'''function(stream) for _ in stream:chunks() do end end'''),
}
PRELUDE = 'rejected = smtp.metrics.counter("policy_rejected_total", "Recipients the policy refused.")\n'


class Metrics(E2ETest):
    def conversation(self, port):
        s = smtplib.SMTP("127.0.0.1", port, timeout=10)
        s.login("bob", "pw")
        s.sendmail("a@example.com", ["x@example.org"], b"Subject: 1\r\n\r\nhello\r\n")
        s.sendmail("a@example.com", ["y@example.org"], b"Subject: 2\r\n\r\nhello\r\n")
        try:
            s.sendmail("a@example.com", ["no@example.org"], b"x\r\n")
        except smtplib.SMTPRecipientsRefused:
            pass
        s.quit()
        s = smtplib.SMTP("127.0.0.1", port, timeout=10)
        try:
            s.login("bob", "wrong")
        except smtplib.SMTPAuthenticationError:
            pass
        s.quit()

    def check_deltas(self, before, after):
        def d(name, labels=""):
            return after.get((name, labels), 0) - before.get((name, labels), 0)
        self.assertEqual(d("luasmtpd_connections_total"), 2)
        self.assertEqual(after[("luasmtpd_connections", "")], 0)
        self.assertEqual(d("luasmtpd_messages_total", 'class="2xx"'), 2)
        self.assertEqual(d("luasmtpd_auth_total", 'method="PLAIN",result="success"'), 1)
        self.assertEqual(d("luasmtpd_auth_total", 'method="PLAIN",result="failure"'), 1)
        self.assertEqual(d("luasmtpd_hook_duration_seconds_count", 'hook="onRcptTo"'), 3)
        self.assertEqual(d("luasmtpd_hook_duration_seconds_count", 'hook="onData"'), 2)
        # smtplib tries PLAIN, then LOGIN, with the wrong password.
        self.assertEqual(d("luasmtpd_auth_total", 'method="LOGIN",result="failure"'), 1)
        self.assertEqual(d("luasmtpd_hook_duration_seconds_count", 'hook="onAuth"'), 3)
        self.assertEqual(d("luasmtpd_hook_duration_seconds_bucket", 'hook="onData",le="+Inf"'), 2)
        self.assertEqual(d("policy_rejected_total", 'reason="unknown"'), 1)

    def test_counters_move_by_the_conversation(self):
        port = free_port()
        src = script(HOOKS, prelude=PRELUDE, authOptional=True, allowInsecureAuth=True,
                     metrics="127.0.0.1:%d" % port)
        with Server(src) as srv:
            wait_for(lambda: subprocess.run(["curl", "-sf", "http://127.0.0.1:%d/metrics" % port],
                                            capture_output=True).returncode == 0, 10)
            before = parse(scrape(port))
            self.conversation(srv.port)
            wait_for(lambda: parse(scrape(port)).get(("luasmtpd_connections", ""), 1) == 0, 5)
            text = scrape(port)
            self.check_deltas(before, parse(text))
            self.assertIn("# TYPE luasmtpd_hook_duration_seconds histogram", text)
            promtool = shutil.which("promtool")
            if promtool:
                r = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True)
                self.assertEqual(r.returncode, 0, r.stderr)

    def test_workers_are_summed_by_the_master(self):
        port = free_port()
        src = script(HOOKS, prelude=PRELUDE, authOptional=True, allowInsecureAuth=True,
                     metrics="127.0.0.1:%d" % port)
        with Server(src, args=["--workers", "2"]) as srv:
            wait_for(lambda: subprocess.run(["curl", "-sf", "http://127.0.0.1:%d/metrics" % port],
                                            capture_output=True).returncode == 0, 10)
            before = parse(scrape(port))
            for _ in range(3):
                self.conversation(srv.port)
            wait_for(lambda: parse(scrape(port)).get(("luasmtpd_connections", ""), 1) == 0, 5)
            after = parse(scrape(port))
            self.assertEqual(after[("luasmtpd_connections_total", "")] - before.get(("luasmtpd_connections_total", ""), 0), 6)
            self.assertEqual(after[("luasmtpd_messages_total", 'class="2xx"')], 6)
            self.assertEqual(after[("policy_rejected_total", 'reason="unknown"')], 3)

    def test_other_paths_404_and_reloads_counted(self):
        port = free_port()
        with Server(script(metrics="127.0.0.1:%d" % port)) as srv:
            wait_for(lambda: subprocess.run(["curl", "-sf", "http://127.0.0.1:%d/metrics" % port],
                                            capture_output=True).returncode == 0, 10)
            r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                "http://127.0.0.1:%d/" % port], capture_output=True, timeout=10)
            self.assertEqual(r.stdout, b"404")
            srv.send_signal(__import__("signal").SIGHUP)
            wait_for(lambda: parse(scrape(port)).get(("luasmtpd_reloads_total", 'result="success"')) == 1, 5)
