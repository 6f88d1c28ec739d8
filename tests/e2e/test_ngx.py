"""require "smtp.ngx" (issue 17): the global `ngx` inside the real server —
ngx.ctx per session and fresh for each, ngx.sleep in seconds, the phase,
a field we do not offer raising an error that names it (a hook reading it
gets 451 and the log names it), cjson and cjson.safe round trips, and the
published lua-resty libraries loading from ../shared/compat/lib."""

import os
import re
import tempfile

from harness import COMPAT, ROOT, E2ETest, Lua, Server, binary, compat_reason, script

# ../shared next to the main checkout; a worktree under /work/wt is one
# level deeper.

PRELUDE = r'''
require "smtp.ngx"
local cjson = require "cjson"
local cjson_safe = require "cjson.safe"
'''

RCPT = Lua(r'''function(address, session)
    if address.address:find("^unknown") then
      return ngx.foo
    end
    ngx.ctx.n = (ngx.ctx.n or 0) + 1
    local t0 = ngx.now()
    ngx.sleep(0.05)
    local doc = cjson.decode('{"a":[1,2,null],"b":"x"}')
    local _, bad = cjson_safe.decode("{")
    record("rcpt", {n = ngx.ctx.n, phase = ngx.get_phase(), slept = ngx.now() - t0,
                    json = cjson.encode(doc.a), null = doc.a[3] == ngx.null,
                    safe_err = type(bad), b = doc.b})
  end''')


class NgxInHooks(E2ETest):
    def test_ctx_sleep_phase_and_cjson(self):
        with Server(script(hooks={"onRcptTo": RCPT}, prelude=PRELUDE)) as srv:
            for rcpts in (2, 1):
                c = srv.client()
                c.cmd("EHLO x")
                self.assertEqual(c.cmd("MAIL FROM:<a@x.test>").code, 250)
                for i in range(rcpts):
                    self.assertEqual(c.cmd("RCPT TO:<r%d@x.test>" % i).code, 250)
                c.cmd("QUIT")
            events = srv.wait_events("rcpt", 3)
            self.assertEqual([e["n"] for e in events], [1, 2, 1], "ngx.ctx is per session and fresh for each")
            for e in events:
                self.assertEqual(e["phase"], "content")
                self.assertGreaterEqual(e["slept"], 0.04, "ngx.sleep takes seconds")
                self.assertEqual(e["json"], "[1,2,null]")
                self.assertTrue(e["null"], "cjson.null == ngx.null")
                self.assertEqual(e["safe_err"], "string")
                self.assertEqual(e["b"], "x")

    def test_a_field_not_offered_raises_naming_it(self):
        with Server(script(hooks={"onRcptTo": RCPT}, prelude=PRELUDE)) as srv:
            c = srv.client()
            c.cmd("EHLO x")
            c.cmd("MAIL FROM:<a@x.test>")
            r = c.cmd("RCPT TO:<unknown@x.test>")
            self.assertEqual(r.code, 451)
            self.assertIn("ngx.foo is not offered by luasmtpd", srv.log())
            self.assertEqual(c.cmd("RCPT TO:<ok@x.test>").code, 250, "the session goes on")
            c.cmd("QUIT")


WORKER = Lua(r'''function(address, session)
    return nil, smtp.reject(550, "5.7.1 id=" .. ngx.worker.id() .. " count=" .. ngx.worker.count()
      .. " pid=" .. ngx.worker.pid())
  end''')


class NgxWorker(E2ETest):
    """ngx.worker.id() is the worker's slot of --workers N and count() is N;
    a single process is worker 0 of 1."""

    def ask(self, srv):
        c = srv.client()
        c.cmd("EHLO x")
        r = c.cmd("MAIL FROM:<a@x.test>")
        c.close()
        return r.text

    def test_single_process(self):
        with Server(script(hooks={"onMailFrom": WORKER}, prelude=PRELUDE)) as srv:
            self.assertRegex(self.ask(srv), r"id=0 count=1 pid=\d+$")

    def test_two_workers(self):
        with Server(script(hooks={"onMailFrom": WORKER}, prelude=PRELUDE), args=["--workers", "2"]) as srv:
            seen = {}
            for _ in range(300):
                m = re.search(r"id=(\d+) count=(\d+) pid=(\d+)$", self.ask(srv))
                self.assertTrue(m)
                self.assertEqual(m.group(2), "2")
                seen[m.group(1)] = m.group(3)
                if len(seen) == 2:
                    break
            self.assertEqual(sorted(seen), ["0", "1"], "both workers answered, each with its own id")
            self.assertNotEqual(seen["0"], seen["1"])


class RestyLibrariesLoad(E2ETest):
    """The published libraries load unchanged: resty.http_connect (ngx.re,
    ngx.log, resty.string), resty.redis and resty.http (ngx.socket)."""

    def setUp(self):
        if not COMPAT:
            self.skipTest(compat_reason())

    def check(self, body):
        src = ('package.path = %r .. "/?.lua;" .. package.path\nrequire "smtp.ngx"\n%s\n'
               'return {name = "mx.test"}\n' % (COMPAT, body))
        fd, path = tempfile.mkstemp(suffix=".lua", prefix="e2e-ngx-")
        with os.fdopen(fd, "w") as f:
            f.write(src)
        self.addCleanup(os.unlink, path)
        r = self.run_cmd([binary(), "-t", path], timeout=10)
        self.check_sanitizer_text(r.stderr.decode("utf-8", "replace"), "luasmtpd -t")
        return r

    def test_http_connect_loads(self):
        r = self.check('local c = require "resty.http_connect"\nassert(type(c) == "function")')
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_redis_and_http_load(self):
        for lib in ("resty.redis", "resty.http"):
            r = self.check('require %r' % lib)
            self.assertEqual(r.returncode, 0, r.stderr)
