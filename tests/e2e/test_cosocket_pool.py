"""Connection pools and ngx.socket.tcp (issue 17): lua-resty-redis, exactly
as published (../shared/compat/lib), against a real redis-server deciding
RCPT verdicts (GET/SET/INCR, pipelines), pool reuse seen through
get_reused_times, a 100 ms timeout against a server that never answers
giving 451 while other sessions go on, a closed or pooled socket giving
nil, "closed", a peer closing an idle pooled connection (the next connect
is a fresh one), cosockets in a coroutine a hook creates, smtp.tcp pooling
and the ngx receive patterns. Skipped with a message when the compat
folder is absent."""

import os
import socket
import ssl
import time
import unittest

import svcutil
from harness import COMPAT, ROOT, E2ETest, Lua, Server, compat_reason, lua_value, script, wait_for
from svcutil import CASES_PRELUDE, case_hook, run_case

HOLD = 0.8  # seconds the backlog tests' holder keeps the pool's one connection

# The main checkout's sibling, or (from a worktree in /work/wt/NAME) two up.

PRELUDE = r'''
package.path = COMPAT .. "/?.lua;" .. package.path
-- the global the smtp.ngx module installs, reduced to what resty.redis uses
ngx = {socket = require "smtp.ngx.socket", null = require("cjson").null}
local redis = require "resty.redis"

local function red(timeout)
  local r = redis:new()
  r:set_timeouts(timeout or 1000, timeout or 1000, timeout or 1000)
  local ok, err = r:connect("127.0.0.1", REDIS_PORT)
  if not ok then return nil, err end
  return r
end

-- an ngx cosocket connected to a local port (the connect asserted), 1 s
-- timeouts
local function tcp_to(port, opts)
  local s = ngx.socket.tcp()
  s:settimeout(1000)
  assert(s:connect("127.0.0.1", port, opts))
  return s
end

CASES["set-get"] = function()
  local r, err = red()
  if not r then return R(nil, err) end
  assert(r:set("pool:k", "v1"))
  local v, gerr = r:get("pool:k")
  local times = r:get_reused_times()
  assert(r:set_keepalive(10000, 10))
  return R(v, gerr, times)
end

CASES["pipeline"] = function()
  local r = assert(red())
  r:init_pipeline()
  r:set("pipe:a", "1")
  r:incr("pipe:a")
  r:get("pipe:a")
  r:get("pipe:none")
  local res, err = r:commit_pipeline()
  assert(r:set_keepalive(10000, 10))
  return R(res and table.concat({tostring(res[1]), res[2], res[3], tostring(res[4] == ngx.null)}, ","), err)
end

CASES["closed"] = function()
  local s = tcp_to(REDIS_PORT)
  assert(s:close())
  local a, aerr = s:send("PING\r\n")
  local p = tcp_to(REDIS_PORT, {pool = "closed-case"})
  assert(p:setkeepalive())
  local b, berr = p:receive()
  return R(tostring(a) .. "," .. tostring(b), aerr .. "," .. berr)
end

CASES["unread"] = function()
  local s = tcp_to(REDIS_PORT, {pool = "unread-case"})
  assert(s:send({"PING\r\n", {"PING", "\r\n"}}))
  assert(s:receive(7) == "+PONG\r\n")
  local ok, err = s:setkeepalive()
  s:close()
  return R(ok, err)
end

CASES["killme"] = function()
  local s = tcp_to(REDIS_PORT, {pool = "killme"})
  local times = s:getreusedtimes()
  assert(s:send("CLIENT SETNAME killme\r\n"))
  assert(s:receive() == "+OK")
  assert(s:setkeepalive(10000))
  return R(times)
end

CASES["in-coroutine"] = function()
  local get = coroutine.wrap(function(key)
    local r = assert(red())
    local v = r:get(key)
    r:set_keepalive(10000, 10)
    return v
  end)
  local co = coroutine.create(function()
    local r = assert(red())
    local v = r:incr("co:n")
    coroutine.yield("plain yield")
    r:set_keepalive(10000, 10)
    return v
  end)
  local ok1, y = coroutine.resume(co)
  local ok2, n = coroutine.resume(co)
  return R(get("pool:k"), y, ok1 and ok2 and n)
end

-- PING on a connection to redis, then into its pool: the reply line
local function ping_and_keep(s, idle)
  assert(s:send("PING\r\n"))
  local line = s:receive()
  assert(s:setkeepalive(idle))
  return line
end

CASES["smtp-tcp"] = function()
  local s = smtp.tcp()
  s:settimeout(1)
  assert(s:connect("127.0.0.1", REDIS_PORT, {pool = "smtp-tcp"}))
  local times = s:getreusedtimes()
  return R(ping_and_keep(s, 10), nil, times)
end

CASES["udp"] = function()
  local u = ngx.socket.udp()
  u:settimeout(1000)
  assert(u:setpeername("127.0.0.1", UDP_ECHO_PORT))
  assert(u:send({"ping", {1, "!"}}))
  local echo, err = u:receive()
  local s = ngx.socket.udp()
  s:settimeout(100)
  assert(s:setpeername("127.0.0.1", UDP_SILENT_PORT))
  assert(s:send("anyone?"))
  local none, terr = s:receive()
  u:close()
  return R(echo, err or terr, tostring(none))
end

CASES["tls-pool"] = function()
  local s = tcp_to(TLS_PORT, {pool = "tls-echo"})
  local ok, herr = s:sslhandshake(nil, "localhost", false)
  if not ok then return R(nil, herr) end
  assert(s:send("hello\n"))
  local line, err = s:receive()
  local times = s:getreusedtimes()
  assert(s:setkeepalive(10000))
  return R(line, err, times)
end

CASES["cr-lines"] = function()
  local s = tcp_to(CR_PORT)
  local a, b = s:receive(), s:receive("*l")
  local c, err, partial = s:receive()
  return R(a .. "|" .. b, err, tostring(c) .. "," .. partial)
end

CASES["tls-session"] = function()
  local function handshake(reuse)
    local s = tcp_to(RESUME_PORT)
    local sess, err = s:sslhandshake(reuse, "localhost", false)
    if not sess then return nil, err end
    assert(s:send("hi\n"))
    assert(s:receive() == "TLS:hi")
    s:close()
    return sess
  end
  local first, err = handshake(nil)
  if not first then return R(nil, err) end
  local second = assert(handshake(first))
  local plain = assert(handshake(false))
  local ok, berr = pcall(handshake, io.stdout)
  return R(type(first) .. "," .. type(second) .. "," .. tostring(plain), berr and berr:match("ssl session"))
end

-- a pool of one connection with a backlog of one
local function backlog_connect(timeout, backlog)
  local s = ngx.socket.tcp()
  s:settimeout(timeout or 3000)
  local t0 = smtp.now()
  local ok, err = s:connect("127.0.0.1", REDIS_PORT, {pool = "backlog", pool_size = 1, backlog = backlog or 1})
  return s, ok, err, smtp.now() - t0
end

local function backlog_hold(release)
  return function()
    local s, ok, err = backlog_connect()
    if not ok then return R(nil, err) end
    local times = s:getreusedtimes()
    smtp.sleep(HOLD)
    assert(s:send("PING\r\n"))
    assert(s:receive() == "+PONG")
    if release == "close" then assert(s:close()) else assert(s:setkeepalive(10000)) end
    return R(true, nil, times)
  end
end
CASES["bl-hold"] = backlog_hold("keepalive")
CASES["bl-hold-close"] = backlog_hold("close")

local function backlog_wait(backlog)
  return function()
    local s, ok, err, waited = backlog_connect(nil, backlog)
    if not ok then return R(nil, err, waited) end
    local times = s:getreusedtimes()
    return R(ping_and_keep(s, 10000), times, waited)
  end
end
CASES["bl-wait"] = backlog_wait(1)
CASES["bl-wait2"] = backlog_wait(2)

CASES["bl-timeout"] = function()
  local _, ok, err, waited = backlog_connect(150)
  return R(ok, err, waited)
end

CASES["until-size"] = function()
  local s = tcp_to(PATTERNS_PORT)
  assert(s:receive() == "line1")
  local reader = s:receiveuntil("--END--")
  local got = {}
  for _ = 1, 3 do got[#got + 1] = tostring(reader(4)) end
  local tail, err, partial = reader(4)
  return R(table.concat(got, "|"), err, tostring(tail) .. "," .. partial)
end

CASES["patterns"] = function()
  local s = tcp_to(PATTERNS_PORT)
  local line = s:receive()
  local three = s:receive("3")
  local until_ = s:receiveuntil("--END--")
  local upto = until_()
  local any = s:receiveany(2)
  local rest, err, partial = s:receive(100)
  return R(table.concat({line, three, upto, any}, "|"), err, partial)
end
'''

HOOK = r'''function(address, session)
  local name = address.address:match("^(.-)@")
  local quota = name:match("^quota%-(.*)$")
  if quota then
    local r, err = red()
    if not r then return nil, smtp.reject(451, "4.3.0 redis: " .. err) end
    local n, ierr = r:incr("quota:" .. quota)
    r:set_keepalive(10000, 10)
    if not n then return nil, smtp.reject(451, "4.3.0 redis: " .. ierr) end
    if n > 2 then return nil, smtp.reject(452, "4.2.2 over quota") end
    return true
  end
  if name == "silent" then
    local r = ngx.socket.tcp()
    r:settimeout(100)
    assert(r:connect("127.0.0.1", SILENT_PORT))
    r:send("GET x\r\n")
    local v, err = r:receive()
    if not v then return nil, smtp.reject(451, "4.4.3 lookup " .. err) end
    return true
  end
  return CASE(address, session)
end'''


class UDPEcho(svcutil.SilentUDP):
    """A UDP port that sends each datagram back."""

    def _run(self):
        while not self._stop:
            try:
                data, peer = self.sock.recvfrom(4096)
                self.sock.sendto(data, peer)
            except socket.timeout:
                continue
            except OSError:
                return


class TLSEcho(svcutil.TLSServer):
    """TLS from the first byte: answers each line with "TLS:<line>" until
    the peer closes (a connection that can be pooled). Counts handshakes,
    and those that resumed a session."""

    def __init__(self, cert, key):
        super().__init__(cert, key)
        self.resumed = 0

    def handle(self, s):
        try:
            t = self.ctx.wrap_socket(s, server_side=True)
        except (ssl.SSLError, OSError):
            return
        with self.lock:
            self.handshakes += 1
            self.resumed += t.session_reused
        with t:
            self.answer(t.makefile("rb"), t)

    def answer(self, lines, t):
        for line in lines:
            t.sendall(b"TLS:" + line.rstrip(b"\r\n") + b"\r\n")


class TLSResume(TLSEcho):
    """TLSEcho limited to TLS 1.2 (whose session is known when the
    handshake ends), answering one line."""

    def __init__(self, cert, key):
        super().__init__(cert, key)
        self.ctx.maximum_version = ssl.TLSVersion.TLSv1_2

    def answer(self, lines, t):
        super().answer([lines.readline()], t)


@unittest.skipUnless(COMPAT, compat_reason())
class RestyRedis(svcutil.CaseSessions, svcutil.Fixtures, E2ETest):

    @classmethod
    def start_fixtures(cls):
        cls.redis = cls.use(svcutil.Redis())
        cls.helpers = [cls.use(h) for h in (
            svcutil.SilentServer(), svcutil.ScriptedServer(b"line1\r\nabcdef--END--xyz"), UDPEcho(),
            svcutil.SilentUDP(), TLSEcho(*svcutil.self_signed()),
            svcutil.ScriptedServer(b"a\rb\r\r\n\r\rc\n\rtail\r"), TLSResume(*svcutil.self_signed()))]
        prelude = (("local COMPAT = %s\nlocal REDIS_PORT = %d\nlocal SILENT_PORT = %d\n"
                   "local PATTERNS_PORT = %d\nlocal UDP_ECHO_PORT = %d\nlocal UDP_SILENT_PORT = %d\n"
                   "local TLS_PORT = %d\nlocal CR_PORT = %d\nlocal RESUME_PORT = %d\n"
                   "local HOLD = %s\n"
                   % ((lua_value(os.path.abspath(COMPAT)), cls.redis.port)
                      + tuple(h.port for h in cls.helpers) + (HOLD,))) + CASES_PRELUDE + PRELUDE
                   + "local CASE = %s\n" % case_hook())
        cls.srv = cls.use(Server(script(hooks={"onRcptTo": Lua(HOOK)}, prelude=prelude,
                                        disableReverseLookup=True, hookTimeout=5, closeTimeout=3)))

    def test_set_get_and_pool_reuse(self):
        first = self.case("set-get")
        self.assertEqual(first.get("v"), "v1", first)
        second = self.case("set-get")
        self.assertEqual(second.get("v"), "v1", second)
        self.assertGreaterEqual(second.get("extra"), 1, "the second connect came from the pool")

    def test_incr_decides_rcpt(self):
        with self.session() as c:
            codes = [c.cmd("RCPT TO:<quota-ann@example.org>").code for _ in range(3)]
        self.assertEqual(codes, [250, 250, 452])

    def test_pipeline(self):
        r = self.case("pipeline")
        self.assertEqual(r.get("v"), "OK,2,2,true", r)

    def test_timeout_gives_451_while_others_go_on(self):
        with self.session() as slow, self.session() as fast:
            t0 = time.monotonic()
            slow.send("RCPT TO:<silent@example.org>\r\n")
            self.assertEqual(fast.cmd("RCPT TO:<quota-other@example.org>").code, 250)
            r = slow.read_reply()
            dt = time.monotonic() - t0
        self.assertEqual(r.code, 451, r.raw)
        self.assertIn(b"timeout", r.raw)
        self.assertLess(dt, 2)

    def test_closed_and_pooled_sockets_say_closed(self):
        r = self.case("closed")
        self.assertEqual((r.get("v"), r.get("err")), ("nil,nil", "closed,closed"), r)

    def test_setkeepalive_refuses_unread_data(self):
        r = self.case("unread")
        self.assertEqual(r.get("err"), "unread data in buffer", r)

    def test_peer_closing_an_idle_connection_empties_the_pool(self):
        self.assertEqual(self.case("killme").get("v"), 0)
        self.assertEqual(self.case("killme").get("v"), 1, "taken from the pool")
        svcutil.redis_command(self.redis.port, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        time.sleep(0.2)
        self.assertEqual(self.case("killme").get("v"), 0, "a fresh connection after the peer closed")

    def test_cosockets_in_a_coroutine_the_hook_creates(self):
        self.case("set-get")
        r = self.case("in-coroutine")
        self.assertEqual((r.get("v"), r.get("err")), ("v1", "plain yield"), r)
        self.assertIsInstance(r.get("extra"), int)

    def test_smtp_tcp_pools_too(self):
        self.assertEqual(self.case("smtp-tcp").get("v"), "+PONG")
        r = self.case("smtp-tcp")
        self.assertEqual(r.get("extra"), 1, r)

    def test_receive_patterns(self):
        r = self.case("patterns")
        self.assertEqual(r.get("v"), "line1|abc|def|xy", r)
        self.assertEqual((r.get("err"), r.get("extra")), ("closed", "z"), r)

    def test_udp_send_receive_and_timeout(self):
        r = self.case("udp")
        self.assertEqual((r.get("v"), r.get("err"), r.get("extra")), ("ping1!", "timeout", "nil"), r)

    def test_pooled_tls_connection_is_reused_without_a_handshake(self):
        first = self.case("tls-pool")
        self.assertEqual((first.get("v"), first.get("extra")), ("TLS:hello", 0), first)
        second = self.case("tls-pool")
        self.assertEqual((second.get("v"), second.get("extra")), ("TLS:hello", 1), second)
        self.assertEqual(self.helpers[4].handshakes, 1)

    def test_receive_line_drops_every_cr(self):
        # lua-nginx-module's "*l" ignores every CR, not only one before the
        # LF, in the partial line it returns at the close too
        r = self.case("cr-lines")
        self.assertEqual((r.get("v"), r.get("err"), r.get("extra")), ("ab|c", "closed", "nil,tail"), r)

    def test_sslhandshake_returns_a_session_that_resumes(self):
        resume = self.helpers[-1]
        before = (resume.handshakes, resume.resumed)
        r = self.case("tls-session")
        self.assertEqual((r.get("v"), r.get("err")), ("userdata,userdata,true", "ssl session"), r)
        self.assertEqual((resume.handshakes - before[0], resume.resumed - before[1]), (3, 1),
                         "the second handshake resumed the first one's session")

    def record(self, name, client):
        return [e for e in self.srv.events("case") if e.get("case") == name and e.get("port") == client.local_port][-1]

    def backlog_case(self, holder, name):
        """Runs the case name in a session while holder (another session's
        case) holds the only connection of the "backlog" pool; returns the
        case's record."""
        with self.session() as hold, self.session() as c:
            hold.send("RCPT TO:<%s@cases.test>\r\n" % holder)
            time.sleep(HOLD / 4)
            r = run_case(self, c, name)
            self.assertEqual(hold.read_reply().code, 250)
        return r

    def test_backlog_queues_connects_and_refuses_beyond_it(self):
        with self.session() as hold, self.session() as waiting:
            hold.send("RCPT TO:<bl-hold@cases.test>\r\n")
            time.sleep(HOLD / 4)
            waiting.send("RCPT TO:<bl-wait@cases.test>\r\n")
            time.sleep(HOLD / 4)
            over = self.case("bl-wait")
            self.assertEqual(hold.read_reply().code, 250)
            self.assertEqual(waiting.read_reply().code, 250)
        self.assertEqual((over.get("v"), over.get("err")), (None, "too many waiting connect operations"), over)
        self.assertLess(over["extra"], HOLD / 2, "refused at once")
        r, held = self.record("bl-wait", waiting), self.record("bl-hold", hold)
        self.assertEqual((r.get("v"), r.get("err")), ("+PONG", held["extra"] + 1),
                         "the held connection, handed on: %r" % r)
        self.assertGreater(r["extra"], HOLD / 3, "it waited for the holder's setkeepalive")

    def test_backlog_waiters_take_turns_in_order(self):
        with self.session() as hold, self.session() as first, self.session() as second:
            hold.send("RCPT TO:<bl-hold@cases.test>\r\n")
            time.sleep(HOLD / 4)
            first.send("RCPT TO:<bl-wait2@cases.test>\r\n")
            time.sleep(HOLD / 8)
            second.send("RCPT TO:<bl-wait2@cases.test>\r\n")
            for c in (hold, first, second):
                self.assertEqual(c.read_reply().code, 250)
        held = self.record("bl-hold", hold)["extra"]
        got = [(r.get("v"), r.get("err")) for r in (self.record("bl-wait2", first), self.record("bl-wait2", second))]
        self.assertEqual(got, [("+PONG", held + 1), ("+PONG", held + 2)], "one connection, handed on in turn")

    def test_backlog_wait_ends_with_the_connect_timeout(self):
        r = self.backlog_case("bl-hold", "bl-timeout")
        self.assertEqual((r.get("v"), r.get("err")), (None, "timeout"), r)
        self.assertLess(r["extra"], HOLD / 2)

    def test_backlog_slot_freed_by_close_gives_a_new_connection(self):
        r = self.backlog_case("bl-hold-close", "bl-wait")
        self.assertEqual((r.get("v"), r.get("err")), ("+PONG", 0), "a fresh connection: %r" % r)
        self.assertGreater(r["extra"], HOLD / 3)

    def test_receiveuntil_with_a_size(self):
        r = self.case("until-size")
        self.assertEqual((r.get("v"), r.get("err"), r.get("extra")), ("abcd|ef|nil", "closed", "nil,xyz"), r)


ABANDON_CASES = r'''
local held = {} -- a connection kept past its hook: it holds the pool's one slot

local function connect(timeout)
  local s = ngx.socket.tcp()
  s:settimeout(timeout)
  local ok, err = s:connect("127.0.0.1", REDIS_PORT, {pool = "abandon", pool_size = 1, backlog = 2})
  if not ok then return nil, err end
  return s
end

CASES["take"] = function()
  held[1] = assert(connect(1000))
  return R(held[1]:getreusedtimes())
end

CASES["wait"] = function()
  local s, err = connect(5000) -- hookTimeout (1 s) ends the hook first
  if not s then return R(nil, err) end
  local times = s:getreusedtimes()
  assert(s:send("PING\r\n"))
  local line = s:receive()
  assert(s:setkeepalive(10000))
  return R(line, times)
end

CASES["give"] = function()
  local s = table.remove(held)
  return R(s:setkeepalive(10000))
end
'''


class BacklogWaiterAbandoned(svcutil.CaseSessions, svcutil.Fixtures, E2ETest):
    """A hook that hookTimeout ends while its connect waits in a pool's
    queue leaves the queue: the connection put back later goes to the next
    waiter, and nothing of the ended one is touched (ASan)."""

    @classmethod
    def start_fixtures(cls):
        cls.redis = cls.use(svcutil.Redis())
        prelude = ("local REDIS_PORT = %d\n" % cls.redis.port + CASES_PRELUDE
                   + "ngx = {socket = require 'smtp.ngx.socket'}\n" + ABANDON_CASES)
        cls.srv = cls.use(Server(script(hooks={"onRcptTo": case_hook()}, prelude=prelude,
                                        disableReverseLookup=True, hookTimeout=1, closeTimeout=3)))

    def test_the_next_waiter_gets_the_connection(self):
        held = self.case("take").get("v")
        with self.session() as ended, self.session() as waiting:
            ended.send("RCPT TO:<wait@cases.test>\r\n")
            time.sleep(0.2)
            waiting.send("RCPT TO:<wait@cases.test>\r\n")
            r = ended.read_reply()
            self.assertEqual((r.code, r.enh), (451, "4.3.0"), r.raw)  # hookTimeout
            self.assertEqual(self.case("give").get("v"), 1)
            self.assertEqual(waiting.read_reply().code, 250)
        got = [e for e in self.srv.events("case") if e.get("case") == "wait"]
        self.assertEqual([(e.get("v"), e.get("err")) for e in got], [("+PONG", held + 1)])
