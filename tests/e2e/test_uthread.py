"""ngx.thread (issue 17): light threads of one hook against a real
redis-server. Two blocking Redis calls (BLPOP with a timeout, on two
connections) in two light threads take the time of one; wait returns the
first to end's values or its error; kill cleans up the thread's pending
socket (redis sees the connection go); the hook waits for a light thread
still running when it returns, and kills it when it raises; a session whose
client leaves while a light thread waits ends cleanly; misuse gets
lua-nginx-module's error strings."""

import contextlib
import time

import svcutil
from harness import E2ETest, Lua, Server, script
from svcutil import CASES_PRELUDE, case_hook

BLOCK = 0.3  # seconds each BLPOP waits on an empty list

# redis(name, command...): Redis commands on a connection of their own
# (also test_timer's).
REDIS_LUA = r'''
-- One Redis command on a connection of its own (RESP by hand: this module
-- needs no compat library); the reply's first line, or nil, err.
local function redis(name, ...)
  local s = ngx.socket.tcp()
  s:settimeout(5000)
  local ok, err = s:connect("127.0.0.1", REDIS_PORT)
  if not ok then return nil, err end
  local args = {...}
  if name then table.insert(args, 1, "CLIENT SETNAME " .. name) end
  for _, cmd in ipairs(args) do
    local words = {}
    for w in cmd:gmatch("%S+") do words[#words + 1] = w end
    local req = {"*" .. #words .. "\r\n"}
    for _, w in ipairs(words) do req[#req + 1] = "$" .. #w .. "\r\n" .. w .. "\r\n" end
    assert(s:send(req))
  end
  local line, rerr
  for _ = 1, #args do
    line, rerr = s:receive()
    if not line then return nil, rerr end
    if line:sub(1, 1) == "*" and line ~= "*-1" then -- BLPOP's [key, value]
      for _ = 1, 4 do line = s:receive() end
    elseif line:sub(1, 1) == "$" and line ~= "$-1" then
      line = s:receive()
    end
  end
  s:close()
  return line
end
'''

PRELUDE = r'''
require "smtp.ngx"

CASES["parallel"] = function()
  local t0 = ngx.now()
  local a = ngx.thread.spawn(redis, nil, "BLPOP empty:a " .. BLOCK)
  local b = ngx.thread.spawn(redis, nil, "BLPOP empty:b " .. BLOCK)
  local ok1, v1 = ngx.thread.wait(a)
  local ok2, v2 = ngx.thread.wait(b)
  return R(tostring(ok1) .. "," .. v1 .. "," .. tostring(ok2) .. "," .. v2, nil, ngx.now() - t0)
end

CASES["sequential"] = function()
  local t0 = ngx.now()
  redis(nil, "BLPOP empty:a " .. BLOCK)
  redis(nil, "BLPOP empty:b " .. BLOCK)
  return R(nil, nil, ngx.now() - t0)
end

CASES["handoff"] = function()
  local popper = ngx.thread.spawn(redis, nil, "BLPOP q:handoff 2")
  local pusher = ngx.thread.spawn(function()
    ngx.sleep(0.05)
    return redis(nil, "RPUSH q:handoff hello")
  end)
  local ok, v = ngx.thread.wait(popper)
  local ok2, n = ngx.thread.wait(pusher)
  return R(v, nil, tostring(ok) .. "," .. tostring(ok2) .. "," .. n)
end

CASES["values"] = function()
  local t = ngx.thread.spawn(function(a, b) return a + b, "x", nil, true end, 1, 2)
  local res = (function(...) return {n = select("#", ...), ...} end)(ngx.thread.wait(t))
  local e = ngx.thread.spawn(function() ngx.sleep(0.01); error("boom", 0) end)
  local ok, err = ngx.thread.wait(e)
  local first = ngx.thread.spawn(function() ngx.sleep(0.2); return "slow" end)
  local second = ngx.thread.spawn(function() ngx.sleep(0.02); return "fast" end)
  local _, which = ngx.thread.wait(first, second)
  local _, other = ngx.thread.wait(first)
  local again, aerr = ngx.thread.wait(second)
  return R(res.n .. ":" .. tostring(res[1]) .. "," .. res[2] .. "," .. res[3] .. "," .. tostring(res[4])
             .. "," .. tostring(res[5]),
           tostring(ok) .. "," .. err,
           which .. "," .. other .. "," .. tostring(again) .. "," .. aerr)
end

CASES["kill"] = function()
  local t = ngx.thread.spawn(redis, "uthread-killed", "BLPOP empty:kill 5")
  local zombie = ngx.thread.spawn(function() return 1 end)
  local child_of_t
  local parent = ngx.thread.spawn(function()
    child_of_t = ngx.thread.spawn(ngx.sleep, 0.05)
    ngx.sleep(0.01)
  end)
  local r = {}
  r[#r + 1] = tostring(ngx.thread.kill(t))
  r[#r + 1] = table.concat({tostring(ngx.thread.kill(t))}, " ") .. select(2, ngx.thread.kill(t))
  r[#r + 1] = select(2, ngx.thread.wait(t))
  r[#r + 1] = select(2, ngx.thread.kill(zombie))
  r[#r + 1] = select(2, ngx.thread.kill(zombie))
  r[#r + 1] = select(2, ngx.thread.kill(coroutine.running()))
  r[#r + 1] = select(2, ngx.thread.kill(child_of_t))
  ngx.thread.wait(parent)
  return R(table.concat(r, "|"))
end

CASES["entry-returns"] = function(session)
  ngx.thread.spawn(function()
    ngx.sleep(0.2)
    redis(nil, "SET late:" .. session.remotePort .. " written")
  end)
  return R("returned")
end

CASES["entry-raises"] = function(session)
  ngx.thread.spawn(function()
    redis("uthread-orphan", "BLPOP empty:orphan 0.3", "SET orphan:" .. session.remotePort .. " written")
  end)
  ngx.sleep(0.05)
  error("entry fails")
end

CASES["leaves"] = function()
  local t = ngx.thread.spawn(redis, "uthread-left", "BLPOP empty:left 5")
  ngx.thread.wait(t)
  return R("not reached")
end

local function perr(f, ...)
  local ok, err = pcall(f, ...)
  return ok and "no error" or tostring(err):gsub("^.-:%d+: ", "")
end

-- A thread handle kept from an earlier hook of the session names no thread
-- of this one, even while this hook runs threads of its own.
CASES["stale"] = function()
  local fresh = ngx.thread.spawn(ngx.sleep, 0.01)
  local old = ngx.ctx.old
  ngx.ctx.old = ngx.thread.spawn(function() end)
  ngx.thread.wait(ngx.ctx.old)
  ngx.thread.wait(fresh)
  if not old then return R("first") end
  return R(select(2, ngx.thread.kill(old)), perr(ngx.thread.wait, old))
end

CASES["ctx"] = function()
  ngx.ctx.seen = "entry"
  local t = ngx.thread.spawn(function()
    local before = ngx.ctx.seen
    ngx.sleep(0.01)
    ngx.ctx.seen = "thread"
    smtp.log.info("hello from a light thread")
    return before
  end)
  local _, before = ngx.thread.wait(t)
  return R(before, nil, ngx.ctx.seen)
end

local LOAD_ERR = perr(ngx.thread.spawn, function() end)

CASES["misuse"] = function()
  local r = {LOAD_ERR}
  r[#r + 1] = perr(ngx.thread.wait, "x")
  r[#r + 1] = perr(ngx.thread.wait, coroutine.create(function() end))
  r[#r + 1] = perr(ngx.thread.spawn, 42)
  local t = ngx.thread.spawn(ngx.sleep, 0.01)
  local inner = ngx.thread.spawn(function() return perr(ngx.thread.wait, t) end)
  local _, from_child = ngx.thread.wait(inner)
  r[#r + 1] = from_child
  r[#r + 1] = perr(ngx.thread.kill, "x")
  ngx.thread.wait(t)
  local y = ngx.thread.spawn(function() coroutine.yield() end)
  r[#r + 1] = select(2, ngx.thread.wait(y))
  return R(table.concat(r, "|"))
end
'''


def client_names(port):
    """The names of redis's clients now connected."""
    listing = svcutil.redis_command(port, "CLIENT", "LIST").decode()
    return [w[5:] for w in listing.split() if w.startswith("name=") and len(w) > 5]


def thread_server(redis_port, **options):
    prelude = ("local REDIS_PORT = %d\nlocal BLOCK = %s\n" % (redis_port, BLOCK)
               + CASES_PRELUDE + REDIS_LUA + PRELUDE + "local CASE = %s\n" % case_hook())
    return Server(script(hooks={"onRcptTo": Lua("CASE")}, prelude=prelude, disableReverseLookup=True,
                         **options))


class RedisCaseServer(svcutil.CaseSessions):
    """A class's redis-server (cls.redis) and the server cls.server(port)
    makes (cls.srv), running cases against it; also test_timer's."""

    @classmethod
    def setUpClass(cls):
        cls.redis = svcutil.Redis()
        with contextlib.ExitStack() as on_failure:
            on_failure.enter_context(cls.redis)  # stopped if the server does not start
            cls.srv = cls.server(cls.redis.port)
            on_failure.pop_all()

    @classmethod
    def tearDownClass(cls):
        with cls.redis:  # stopped after the server, whatever its stop reports
            cls.srv.stop()


class LightThreads(RedisCaseServer, E2ETest):

    @staticmethod
    def server(redis_port):
        return thread_server(redis_port, hookTimeout=5)

    def test_two_blocking_calls_in_two_threads_take_the_time_of_one(self):
        r = self.case("parallel")
        self.assertEqual(r.get("v"), "true,*-1,true,*-1", r)
        self.assertGreaterEqual(r["extra"], BLOCK * 0.9, r)
        self.assertLess(r["extra"], BLOCK * 1.6, "in parallel, not one after the other: %r" % r)
        # the same two calls one after the other take the sum: the bound above can fail
        self.assertGreaterEqual(self.case("sequential")["extra"], BLOCK * 1.9)

    def test_a_thread_hands_a_value_to_another_through_redis(self):
        r = self.case("handoff")
        self.assertEqual((r.get("v"), r.get("extra")), ("hello", "true,true,:1"), r)

    def test_wait_returns_values_errors_and_the_first_to_end(self):
        r = self.case("values")
        self.assertEqual(r.get("v"), "5:true,3,x,nil,true", r)
        self.assertEqual(r.get("err"), "false,boom", r)
        self.assertEqual(r.get("extra"), "fast,slow,nil,already waited or killed", r)
        self.assertIn("light thread aborted", self.srv.log())

    def test_kill_cleans_up_the_pending_socket(self):
        r = self.case("kill")
        self.assertEqual(r.get("v").split("|"),
                         ["1", "nilalready waited or killed", "already waited or killed", "already terminated",
                          "already waited or killed", "not user thread", "killer not parent"], r)
        self.assertTrue(svcutil.wait_for(lambda: "uthread-killed" not in client_names(self.redis.port), 2),
                        "the killed thread's connection was closed")

    def test_the_hook_waits_for_a_thread_still_running_when_it_returns(self):
        with self.session() as c:
            t0 = time.monotonic()
            r = svcutil.run_case(self, c, "entry-returns")
            self.assertGreaterEqual(time.monotonic() - t0, 0.2, "RCPT answered once the thread ended")
            self.assertEqual(r.get("v"), "returned")
            self.assertEqual(svcutil.redis_command(self.redis.port, "GET", "late:%d" % c.local_port), b"written")

    def test_a_raising_hook_kills_its_threads(self):
        with self.session() as c:
            svcutil.run_case(self, c, "entry-raises", expect=451)
            self.assertEqual(c.cmd("RCPT TO:<ctx@cases.test>").code, 250, "the session goes on")
            time.sleep(0.5)
            self.assertIsNone(svcutil.redis_command(self.redis.port, "GET", "orphan:%d" % c.local_port))
        self.assertNotIn("uthread-orphan", client_names(self.redis.port))

    def test_ngx_ctx_and_the_log_are_the_sessions_in_its_threads(self):
        r = self.case("ctx")
        self.assertEqual((r.get("v"), r.get("extra")), ("entry", "thread"), r)
        [line] = [l for l in self.srv.log().splitlines() if "hello from a light thread" in l][-1:]
        self.assertIn("session=", line, "its log lines carry the session's id")

    def test_a_thread_of_an_earlier_hook_is_not_this_hooks(self):
        with self.session() as c:
            self.assertEqual(svcutil.run_case(self, c, "stale").get("v"), "first")
            r = svcutil.run_case(self, c, "stale")
        self.assertEqual((r.get("v"), r.get("err")),
                         ("not user thread", "attempt to wait on a coroutine that is not a user thread"), r)

    def test_misuse_gets_lua_nginx_modules_errors(self):
        r = self.case("misuse")
        self.assertEqual(r.get("v").split("|"), [
            "no request found",
            "bad argument #1 to '?' (lua thread expected)",
            "attempt to wait on a coroutine that is not a user thread",
            "bad argument #1 to '?' (function expected, got number)",
            "only the parent coroutine can wait on the thread",
            "bad argument #1 to '?' (lua thread expected)",
            "light thread yielded outside the ngx API (coroutine.yield?)",
        ], r)


class ThreadsOutlivedBySession(E2ETest):
    """A session that ends while its hook's light threads wait (the client
    gone and hookTimeout passed, or TERM with closeTimeout) ends cleanly:
    each thread's pending socket is cleaned up (redis sees it close), and
    the process exits 0 (under ASan: nothing leaks or is used after free)."""

    def setUp(self):
        self.redis = svcutil.Redis()
        self.addCleanup(self.redis.stop)

    def waiting(self, srv, n):
        clients = []
        for _ in range(n):
            c = srv.client()
            self.addCleanup(c.close)
            c.cmd("EHLO x")
            self.assertEqual(c.cmd("MAIL FROM:<s@example.com>").code, 250)
            c.send("RCPT TO:<leaves@cases.test>\r\n")
            clients.append(c)
        self.assertTrue(svcutil.wait_for(lambda: client_names(self.redis.port).count("uthread-left") == n, 3),
                        "the light threads did not all start waiting")
        return clients

    def gone(self):
        return svcutil.wait_for(lambda: "uthread-left" not in client_names(self.redis.port), 3)

    def test_the_client_leaving_and_hooktimeout_passing(self):
        with thread_server(self.redis.port, hookTimeout=0.5) as srv:
            [c] = self.waiting(srv, 1)
            c.close()
            self.assertTrue(self.gone(), "the thread's pending socket was cleaned up with the hook")
            self.assertIn("hookTimeout", srv.log())

    def test_term_while_threads_wait(self):
        srv = thread_server(self.redis.port, hookTimeout=10, closeTimeout=0.3)
        with srv:
            self.waiting(srv, 2)
            srv.stop()  # exit code and sanitizer report checked here
        self.assertTrue(self.gone())
