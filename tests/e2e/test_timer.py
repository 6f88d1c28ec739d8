"""ngx.timer (issue 17): callbacks outside any session, against a real
redis-server. A timer made while the script loads runs once the server
serves and writes to redis; one made in a hook runs after the reply and
writes to redis and a shared dict; ngx.timer.every ticks; running_count and
pending_count; an error in a callback is logged and the server goes on;
TERM and HUP run the pending timers at once with premature = true (HUP
then starts the new script's); each worker of --workers 2 starts the
script's timers, and an old one draining after HUP runs them premature;
the pending and running limits
(lua_max_pending_timers 1024, lua_max_running_timers 256); misuse gets
lua-nginx-module's error strings."""

import signal
import time

import svcutil
from harness import E2ETest, Lua, Server, script
from svcutil import CASES_PRELUDE, case_hook
from test_uthread import REDIS_LUA, RedisCaseServer

PRELUDE = r'''
local ngx_module = require "smtp.ngx"
local dict = ngx_module.shared_dict("timers", "64k")

-- made while the script loads: they start as the server serves
assert(ngx.timer.at(0, function(premature, key)
  record("boot", {premature = premature, set = redis(nil, "INCR " .. key)})
end, "boots"))
assert(ngx.timer.every(0.05, function(premature)
  if premature then
    record("every-premature", {exiting = ngx.worker.exiting()})
    return
  end
  dict:incr("ticks", 1, 0)
end))
assert(ngx.timer.at(3600, function(premature, a, b)
  record("late", {premature = premature, exiting = ngx.worker.exiting(), args = a .. b})
end, "x", "y"))

CASES["later"] = function(session)
  local key = "later:" .. session.remotePort
  return R(ngx.timer.at(0.1, function(premature, k)
    dict:set(k, redis(nil, "SET " .. k .. " done"))
  end, key))
end

CASES["dict"] = function(session)
  return R(dict:get("later:" .. session.remotePort), nil, dict:get("ticks"))
end

-- the boot timer may still wait on redis: counts start from none running
local function idle()
  while ngx.timer.running_count() > 0 do ngx.sleep(0.02) end
end

CASES["running"] = function()
  idle()
  for _ = 1, 3 do ngx.timer.at(0, function(_, s) ngx.sleep(s) end, 0.3) end
  ngx.sleep(0.1)
  return R(ngx.timer.running_count(), nil, ngx.timer.pending_count())
end

CASES["failing"] = function()
  ngx.timer.at(0, function() error("tick boom") end)
  ngx.sleep(0.05)
  return R(ngx.timer.running_count())
end

local function perr(f, ...)
  local ok, err = pcall(f, ...)
  return ok and "no error" or tostring(err):gsub("^.-:%d+: ", "")
end

CASES["misuse"] = function()
  return R(table.concat({
    perr(ngx.timer.at, 1),
    perr(ngx.timer.every, 0, function() end),
    perr(ngx.timer.at, 0, print),
    perr(ngx.timer.at, -1, function() end),
  }, "|"))
end

CASES["limits"] = function()
  idle()
  for _ = 1, TIMER_MAX_RUNNING + 1 do ngx.timer.at(0, function() ngx.sleep(0.3) end) end
  ngx.sleep(0.1)
  local running = ngx.timer.running_count()
  idle()
  local made, err = 0
  repeat
    local ok
    ok, err = ngx.timer.at(3600, function() end)
    made = made + (ok and 1 or 0)
  until not ok or made > 2000
  return R(running, err, ngx.timer.pending_count())
end
'''


def timer_server(redis_port, args=(), **options):
    prelude = ("local REDIS_PORT = %d\nlocal TIMER_MAX_RUNNING = 256\n" % redis_port
               + CASES_PRELUDE + REDIS_LUA + PRELUDE + "local CASE = %s\n" % case_hook())
    return Server(script(hooks={"onRcptTo": Lua("CASE")}, prelude=prelude, disableReverseLookup=True,
                         hookTimeout=5, **options), args=list(args))


class Timers(RedisCaseServer, E2ETest):
    server = staticmethod(timer_server)

    def test_a_timer_made_at_load_runs_once_the_server_serves(self):
        [boot] = self.srv.wait_events("boot", 1)
        self.assertEqual(boot, {"premature": False, "set": ":1"})
        self.assertEqual(svcutil.redis_command(self.redis.port, "GET", "boots"), b"1")

    def test_a_timer_made_in_a_hook_writes_to_redis_and_a_shared_dict(self):
        with self.session() as c:
            self.assertEqual(svcutil.run_case(self, c, "later").get("v"), 1)
            key = "later:%d" % c.local_port
            self.assertTrue(svcutil.wait_for(
                lambda: svcutil.redis_command(self.redis.port, "GET", key) == b"done", 3))
            self.assertTrue(svcutil.wait_for(lambda: svcutil.run_case(self, c, "dict").get("v") == "+OK", 3))

    def test_every_ticks(self):
        first = self.case("dict").get("extra")
        time.sleep(0.5)
        second = self.case("dict").get("extra")
        self.assertIsInstance(first, int)
        self.assertGreaterEqual(second - first, 3, "every 0.05 s for 0.5 s")

    def test_running_and_pending_counts(self):
        r = self.case("running")
        self.assertEqual((r.get("v"), r.get("extra")), (3, 2), "3 sleeping callbacks; every and the late one")

    def test_an_error_in_a_callback_is_logged_and_the_server_goes_on(self):
        self.assertEqual(self.case("failing").get("v"), 0)
        log = self.srv.log()
        self.assertIn("timer callback failed", log)
        self.assertIn("tick boom", log)
        self.assertIsInstance(self.case("dict").get("extra"), int)

    def test_misuse_gets_lua_nginx_modules_errors(self):
        self.assertEqual(self.case("misuse").get("v").split("|"), [
            "expecting at least 2 arguments but got 1",
            "delay cannot be zero",
            "bad argument #2 to '?' (Lua function expected)",
            "bad argument #1 to '?' (delay cannot be negative)",
        ])


class TimersEnd(E2ETest):
    """TERM and HUP: each pending timer runs at once with premature = true
    (every's once), ngx.worker.exiting() is true on TERM, and a reload
    starts the new script's timers; the pending and running limits."""

    def setUp(self):
        self.redis = svcutil.Redis()
        self.addCleanup(self.redis.stop)

    def test_term_runs_pending_timers_premature(self):
        srv = timer_server(self.redis.port)
        with srv:
            srv.wait_events("boot", 1)
            srv.stop()
        self.assertEqual(srv.events("late"), [{"premature": True, "exiting": True, "args": "xy"}])
        self.assertEqual(srv.events("every-premature"), [{"exiting": True}])

    def test_hup_ends_the_old_scripts_timers_and_starts_the_new_ones(self):
        with timer_server(self.redis.port) as srv:
            srv.wait_events("boot", 1)
            srv.proc.send_signal(signal.SIGHUP)
            self.assertEqual(len(srv.wait_events("boot", 2)), 2, "the reloaded script's timer ran")
            self.assertEqual(srv.events("late"), [{"premature": True, "exiting": False, "args": "xy"}])
            self.assertEqual(svcutil.redis_command(self.redis.port, "GET", "boots"), b"2")

    def test_each_worker_starts_the_scripts_timers_and_ends_them_as_it_drains(self):
        with timer_server(self.redis.port, args=["--workers", "2"]) as srv:
            self.assertEqual(len(srv.wait_events("boot", 2)), 2)
            self.assertTrue(svcutil.wait_for(
                lambda: svcutil.redis_command(self.redis.port, "GET", "boots") == b"2", 3))
            time.sleep(0.2)
            self.assertEqual(len(srv.events("boot")), 2, "none in the master")
            # HUP: new workers start the new script's timers; the old ones
            # drain, running theirs at once, premature
            srv.proc.send_signal(signal.SIGHUP)
            self.assertEqual(len(srv.wait_events("boot", 4)), 4)
            self.assertEqual(srv.wait_events("late", 2, timeout=5),
                             [{"premature": True, "exiting": True, "args": "xy"}] * 2)

    def test_pending_and_running_limits(self):
        with timer_server(self.redis.port) as srv:
            with srv.client() as c:
                c.cmd("EHLO x")
                c.cmd("MAIL FROM:<s@example.com>")
                r = svcutil.run_case(self, c, "limits", timeout=10)
            self.assertEqual(r.get("v"), 256, r)
            self.assertIn("lua_max_running_timers are not enough", srv.log())
            self.assertEqual((r.get("err"), r.get("extra")), ("too many pending timers", 1024), r)
