"""Runaway scripts cannot take the service down (issue 6): hookTimeout
ends a hook suspended too long (451, the session goes on) and interrupts
one running interpreted Lua too long; a hook stuck in JIT-compiled code
(`while true do end`) cannot be interrupted, so after hookTimeout + 5 s
the process logs "stuck in compiled Lua code" and exits 70 -- a single
process ends (a supervisor restarts it), with --workers the master
replaces the worker while the other workers serve on; luaMemoryLimit
turns a memory blow-up into a 451 and the server stays usable."""

import os
import re
import time

from harness import E2ETest, Lua, Server, sanitized, script, wait_for

HOOK_TIMEOUT = 1
GRACE = 5          # lua_guard.c: the watchdog's grace past hookTimeout
SLACK = 3.0        # scheduling, the watchdog's 100 ms tick, ASan

RUNAWAY_HOOKS = {
    "onConnect": Lua(r'''function(session)
    record("connect", {port = session.remotePort, pid = smtp.pid()})
  end'''),
    "onMailFrom": Lua(r'''function(address, session)
    if address.address:match("^busy@") then
      -- keeps this process busy (not suspended) for 0.5 s
      record("busy", {port = session.remotePort, pid = smtp.pid()})
      local t0 = smtp.now()
      while smtp.now() - t0 < 0.5 do end
    end
  end'''),
    "onRcptTo": Lua(r'''function(address, session)
    local a = address.address
    if a:match("^spin@") then
      while true do end                      -- compiled by the JIT: uninterruptible
    elseif a:match("^sleep30@") then
      smtp.sleep(30)
    elseif a:match("^sleepshort@") then
      smtp.sleep(0.2); smtp.sleep(0.2); smtp.sleep(0.2)
    elseif a:match("^cowrap@") then
      -- closures (bytecode FNEW) are not compiled by LuaJIT 2.1: this loop
      -- stays in the interpreter, where the timeout hook reaches it
      while true do coroutine.wrap(function() end)() end
    elseif a:match("^closures@") then
      local n = 0
      while true do local f = function() return 1 end; n = n + f() end
    elseif a:match("^rep@") then
      local s = string.rep("x", 2^30)          -- 1 GiB at once
      return nil, smtp.reject(550, "allocated " .. #s)
    elseif a:match("^grow@") then
      local t = {}                              -- the heap really fills up
      for i = 1, 1e9 do t[i] = string.rep("y", 1000) .. i end
    elseif a:match("^work@") then
      local t = {}                              -- an ordinary hook: ~1 MB
      for i = 1, 1000 do t[i] = string.rep("z", 1000) .. i end
      return nil, smtp.reject(550, "5.0.0 worked " .. #t)
    elseif a:match("^heap@") then
      collectgarbage("collect")
      record("heap", {port = session.remotePort, kb = collectgarbage("count")})
    end
  end'''),
}


def runaway_script(**opts):
    o = {"hookTimeout": HOOK_TIMEOUT, "disableReverseLookup": True, "closeTimeout": 3}
    o.update(opts)
    return script(hooks=RUNAWAY_HOOKS, **o)


class RunawayBase(E2ETest):
    def session(self, srv, **kw):
        c = srv.client(**kw)
        self.assertEqual(c.greeting.code, 220)
        self.assertEqual(c.ehlo().code, 250)
        self.assertEqual(c.cmd("MAIL FROM:<s@example.com>").code, 250)
        return c

    def assertServes(self, srv, msg="a new client"):
        with self.session(srv) as c:
            r = c.cmd("RCPT TO:<ok@example.com>")
            self.assertEqual(r.code, 250, "%s: %r" % (msg, r))

    def hook_failures(self, srv, error):
        return [l for l in srv.log().splitlines()
                if 'msg="hook failed"' in l and re.search(r"\berror=\"?%s" % re.escape(error), l)]


def running(pid):
    """Is pid a live (not zombie) process?"""
    try:
        with open("/proc/%s/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


# ------------------------------------------------------------ compiled loops

class CompiledLoopSingleProcess(RunawayBase):
    def test_single_process_exits_70_after_hook_timeout_plus_5s(self):
        """Without --workers the server ENDS (exit code 70): a supervisor
        (systemd Restart=on-failure) has to start it again."""
        srv = Server(runaway_script(), expect_exit=70)
        with srv:
            bystander = self.session(srv)
            c = self.session(srv)
            t0 = time.monotonic()
            c.line("RCPT TO:<spin@example.com>")
            code = srv.wait_exit(HOOK_TIMEOUT + GRACE + SLACK + 5)
            dt = time.monotonic() - t0
            self.assertEqual(code, 70, "exit code of a process stuck in compiled Lua")
            self.assertGreaterEqual(dt, HOOK_TIMEOUT + GRACE - 0.5, "exited after %.2f s" % dt)
            self.assertLess(dt, HOOK_TIMEOUT + GRACE + SLACK, "exited after %.2f s" % dt)
            log = srv.log()
            self.assertRegex(log, r"level=error .*stuck in compiled Lua code.*hookTimeout=1")
            self.assertEqual(c.expect_close(2), b"", "the stuck session gets no reply")
            bystander.expect_close(2)


class CompiledLoopWorkers(RunawayBase):
    def test_stuck_worker_is_replaced_and_the_others_serve(self):
        srv = Server(runaway_script(), args=["--workers", "2"])
        with srv:
            started = lambda: set(re.findall(r"worker started\"? worker=(\d+)", srv.log()))  # noqa: E731
            self.assertTrue(wait_for(lambda: len(started()) >= 2, 5), "two workers did not start")
            workers = started()
            self.assertEqual(len(workers), 2, workers)

            # one session on each worker: while the first one's worker is
            # busy in a hook, the next connection can only go to the other
            stuck = srv.client()
            self.assertEqual(stuck.ehlo().code, 250)
            stuck.line("MAIL FROM:<busy@example.com>")
            busy = wait_for(lambda: [e for e in srv.events("busy") if e["port"] == stuck.local_port], 3)
            self.assertTrue(busy, "the busy hook did not start")
            other = self.session(srv)
            self.assertEqual(stuck.read_reply().code, 250)
            ev = [e for e in srv.events("connect") if e["port"] == other.local_port]
            stuck_pid, other_pid = str(busy[0]["pid"]), str(ev[0]["pid"])
            self.assertNotEqual(stuck_pid, other_pid, "a connection went to a worker busy in a hook")
            self.assertEqual({stuck_pid, other_pid}, workers)

            t0 = time.monotonic()
            stuck.line("RCPT TO:<spin@example.com>")
            time.sleep(0.3)
            # the other worker serves its open session and new clients meanwhile
            t1 = time.monotonic()
            self.assertEqual(other.cmd("RCPT TO:<ok@example.com>").code, 250)
            self.assertEqual(other.cmd("DATA").code, 354)
            other.send(b"Subject: during the stall\r\n\r\nhi\r\n.\r\n")
            self.assertEqual(other.read_reply().code, 250)
            self.assertEqual(other.cmd("MAIL FROM:<again@example.com>").code, 250)
            for i in range(5):
                with self.session(srv, timeout=3) as c:
                    self.assertEqual(c.cmd("RCPT TO:<ok@example.com>").code, 250)
                ev = [e for e in srv.events("connect") if e["port"] == c.local_port]
                self.assertEqual(str(ev[0]["pid"]), other_pid, "a fresh client went to the stuck worker")
            self.assertLess(time.monotonic() - t1, 3.0, "the healthy worker was slow during the stall")

            # the stuck worker exits 70 and the master starts another
            deadline = HOOK_TIMEOUT + GRACE + SLACK
            exited = wait_for(lambda: re.search(r"worker exited\"? worker=%s status=\"exit 70\"" % stuck_pid,
                                                srv.log()), deadline + 2)
            dt = time.monotonic() - t0
            self.assertTrue(exited, "no 'worker exited ... exit 70' for worker %s" % stuck_pid)
            self.assertLess(dt, deadline, "the stuck worker lasted %.2f s" % dt)
            self.assertRegex(srv.log(), r"stuck in compiled Lua code")
            stuck.expect_close(3)
            new = wait_for(lambda: started() - workers, 3)
            self.assertTrue(new, "no new worker started after the stuck one exited")
            new_pid = new.pop()
            self.assertTrue(os.path.exists("/proc/%s" % new_pid))
            with open("/proc/%s/status" % new_pid) as f:
                ppid = [l.split()[1] for l in f if l.startswith("PPid:")][0]
            self.assertEqual(int(ppid), srv.proc.pid, "the new worker is the master's child")
            self.assertFalse(running(stuck_pid), "the stuck worker still runs")

            # everything serves: the old session, fresh clients, the master
            self.assertEqual(other.cmd("RCPT TO:<ok@example.com>").code, 250)
            for _ in range(5):
                self.assertServes(srv, "a client after the restart")
            self.assertTrue(srv.alive(), "the master ended")
            other.close()


# ----------------------------------------------------------- hookTimeout

class HookTimeout(RunawayBase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server(runaway_script())

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def test_sleep_past_hook_timeout_fails_and_the_session_goes_on(self):
        with self.session(self.srv) as c:
            t0 = time.monotonic()
            r = c.cmd("RCPT TO:<sleep30@example.com>")
            dt = time.monotonic() - t0
            self.assertEqual((r.code, r.enh), (451, "4.3.0"), r)
            self.assertGreaterEqual(dt, HOOK_TIMEOUT - 0.1)
            self.assertLess(dt, HOOK_TIMEOUT + 1.5, "451 after %.2f s" % dt)
            self.assertEqual(c.cmd("RCPT TO:<ok@example.com>").code, 250, "the next RCPT works")
            self.assertEqual(c.cmd("DATA").code, 354)
            c.send(b"x\r\n.\r\n")
            self.assertEqual(c.read_reply().code, 250)
        lines = self.hook_failures(self.srv, "hookTimeout")
        self.assertTrue(lines, "no msg=\"hook failed\" ... error=hookTimeout line")
        self.assertIn("hook=onRcptTo", lines[-1])

    def test_other_sessions_are_served_while_a_hook_overstays(self):
        with self.session(self.srv) as slow:
            slow.line("RCPT TO:<sleep30@example.com>")
            t0 = time.monotonic()
            self.assertServes(self.srv, "a client while another hook sleeps")
            self.assertLess(time.monotonic() - t0, 0.8)
            self.assertEqual(slow.read_reply().code, 451)

    def test_suspensions_under_the_limit_are_fine(self):
        with self.session(self.srv) as c:
            self.assertEqual(c.cmd("RCPT TO:<sleepshort@example.com>").code, 250, "3 x 0.2 s within 1 s")

    def test_interpreted_loop_is_interrupted(self):
        for who in ("cowrap", "closures"):
            with self.subTest(loop=who), self.session(self.srv) as c:
                t0 = time.monotonic()
                r = c.cmd("RCPT TO:<%s@example.com>" % who, timeout=HOOK_TIMEOUT + GRACE + SLACK)
                dt = time.monotonic() - t0
                self.assertEqual((r.code, r.enh), (451, "4.3.0"), r)
                self.assertLess(dt, HOOK_TIMEOUT + 2.0, "interrupted after %.2f s" % dt)
                self.assertEqual(c.cmd("RCPT TO:<ok@example.com>").code, 250, "the session goes on")
        self.assertTrue(self.srv.alive())
        self.assertServes(self.srv)
        lines = [l for l in self.srv.log().splitlines() if 'msg="hook failed"' in l and "interrupted" in l]
        self.assertGreaterEqual(len(lines), 2, "the interruption is not logged")
        self.assertIn("hookTimeout", lines[-1])


def context_switches(pid):
    """Voluntary context switches of all of pid's threads."""
    n = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
            n += sum(int(l.split()[1]) for l in f if l.startswith("voluntary_ctxt_switches:"))
    return n


class WatchdogTimer(RunawayBase):
    """The watchdog is a timer signal on the loop's thread: a second thread
    would cost every socket read and write a reference on the file (the
    kernel's fdget on a shared file table). It ticks while hooks run and
    stops after a tick with none."""

    def test_the_serving_process_has_one_thread(self):
        with Server(runaway_script()) as srv:
            self.assertServes(srv)
            with open("/proc/%d/status" % srv.proc.pid) as f:
                threads = [int(l.split()[1]) for l in f if l.startswith("Threads:")][0]
            self.assertEqual(threads, 1, "threads in the serving process")

    def test_an_idle_server_is_not_woken_and_the_next_hook_is_still_watched(self):
        with Server(runaway_script()) as srv:
            self.assertServes(srv)  # the hooks ran: the timer ticked
            time.sleep(0.5)         # a tick with no hook stops it
            before = context_switches(srv.proc.pid)
            time.sleep(1.5)
            woken = context_switches(srv.proc.pid) - before
            self.assertLessEqual(woken, 2, "an idle server woke %d times in 1.5 s" % woken)
            with self.session(srv) as c:
                t0 = time.monotonic()
                r = c.cmd("RCPT TO:<cowrap@example.com>", timeout=HOOK_TIMEOUT + GRACE + SLACK)
                dt = time.monotonic() - t0
                self.assertEqual((r.code, r.enh), (451, "4.3.0"), r)
                self.assertLess(dt, HOOK_TIMEOUT + 2.0, "interrupted after %.2f s" % dt)


# ---------------------------------------------------------- luaMemoryLimit

LIMIT = 256 * 1024 * 1024


class MemoryLimit(RunawayBase):
    def server(self):
        return Server(runaway_script(luaMemoryLimit=LIMIT, hookTimeout=10))

    def heap_kb(self, srv):
        with self.session(srv) as c:
            self.assertEqual(c.cmd("RCPT TO:<heap@example.com>").code, 250)
        ev = [e for e in srv.events("heap") if e["port"] == c.local_port]
        return ev[0]["kb"]

    def test_string_rep_past_the_limit_fails_the_hook(self):
        with self.server() as srv:
            with self.session(srv) as c:
                r = c.cmd("RCPT TO:<rep@example.com>")
                self.assertEqual((r.code, r.enh), (451, "4.3.0"), r)
                self.assertEqual(c.cmd("RCPT TO:<ok@example.com>").code, 250, "the session goes on")
                r = c.cmd("RCPT TO:<work@example.com>")
                self.assertEqual(r.code, 550, r)
                self.assertIn("worked 1000", r.text, "an ordinary hook allocating 1 MB afterwards")
            self.assertTrue(self.hook_failures(srv, "out of memory"), "no error=\"out of memory\" log line")
            self.assertServes(srv)
            self.assertLess(self.heap_kb(srv), 64 * 1024)

    def test_heap_filled_to_the_limit_fails_the_hook_and_is_given_back(self):
        with self.server() as srv:
            with self.session(srv) as c:
                r = c.cmd("RCPT TO:<grow@example.com>", timeout=20)
                self.assertEqual((r.code, r.enh), (451, "4.3.0"), r)
                self.assertTrue(self.hook_failures(srv, "out of memory"), "no error=\"out of memory\" log line")
                # the same session, next command: its hook must be able to allocate again
                r = c.cmd("RCPT TO:<work@example.com>")
                self.assertEqual(r.code, 550,
                                 "after a hook filled the Lua heap to luaMemoryLimit, the next hook of the "
                                 "same session still fails (%r): the garbage was not collected" % r)
                self.assertIn("worked 1000", r.text)
            self.assertServes(srv)
            self.assertLess(self.heap_kb(srv), 64 * 1024, "the Lua heap did not come back down")

    def test_new_clients_are_fine_after_the_heap_filled_up(self):
        with self.server() as srv:
            with self.session(srv) as c:
                self.assertEqual(c.cmd("RCPT TO:<grow@example.com>", timeout=20).code, 451)
            for i in range(3):
                with self.session(srv) as c:
                    r = c.cmd("RCPT TO:<work@example.com>")
                    self.assertIn("worked 1000", r.text, "client %d after the blow-up: %r" % (i, r))
            self.assertLess(self.heap_kb(srv), 64 * 1024, "the Lua heap did not come back down")

    def test_repeated_blowups_do_not_grow_the_process(self):
        with self.server() as srv:
            rss = []
            for _ in range(3):
                with self.session(srv) as c:
                    self.assertEqual(c.cmd("RCPT TO:<grow@example.com>", timeout=20).code, 451)
                self.assertServes(srv, "a client after a blow-up")
                rss.append(srv.rss_kb())
            self.assertLess(self.heap_kb(srv), 64 * 1024)
            if not sanitized():  # ASan's quarantine says nothing about our memory
                self.assertLess(rss[-1] - rss[0], 128 * 1024,
                                "RSS after 3 blow-ups to %d MiB: %r KiB" % (LIMIT >> 20, rss))
            self.assertTrue(srv.alive())
