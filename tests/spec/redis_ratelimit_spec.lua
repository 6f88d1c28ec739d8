-- scripts/redis-ratelimit.lua: recipients per user or client IP counted in
-- Redis. With a fake resty.redis injected by testing.load (what the policy
-- asks Redis, failing open or closed), then in the real server with
-- lua-resty-redis as published against a redis-server the spec starts.
local testing = require "smtp.testing"
local compat = dofile("tests/spec/compat.lua")

local SCRIPT = "scripts/redis-ratelimit.lua"

-- resty.redis as far as the policy uses it, on an in-memory table of
-- counters; every call is recorded in `calls`. fail = "connect" or
-- "commit" makes that step answer nil, "timeout".
local function fake_redis(state)
  state.counts, state.calls = state.counts or {}, {}
  local function record(...) state.calls[#state.calls + 1] = table.concat({ ... }, " ") end
  local R = {}
  R.__index = R
  function R.new() return setmetatable({}, R) end
  function R:set_timeouts(c, s, r) record("timeouts", c, s, r) end
  function R:connect(host, port)
    record("connect", host, port)
    if state.fail == "connect" then return nil, "timeout" end
    return 1
  end
  function R:init_pipeline() self.queue = {} end
  function R:incr(key) table.insert(self.queue, { "incr", key }) end
  function R:expire(key, seconds, flag) table.insert(self.queue, { "expire", key, seconds, flag }) end
  function R:commit_pipeline()
    local res = {}
    for i, cmd in ipairs(self.queue) do
      record(unpack(cmd))
      if cmd[1] == "incr" then
        state.counts[cmd[2]] = (state.counts[cmd[2]] or 0) + 1
        res[i] = state.counts[cmd[2]]
      else
        res[i] = 1
      end
    end
    if state.fail == "commit" then return nil, "timeout" end
    return res
  end
  function R:set_keepalive(idle, size) record("keepalive", idle, size) return 1 end
  function R:close() record("close") return 1 end
  return R
end

local function load(env, state)
  return assert(testing.load(SCRIPT, { env = env, modules = { ["resty.redis"] = fake_redis(state) } }))
end

local function rcpt(hooks, session)
  return testing.call(hooks, "onRcptTo", testing.address("someone@example.org"), session)
end

describe("redis-ratelimit.lua with a fake resty.redis", function()
  it("counts each recipient in one pipeline on a pooled connection", function()
    local state = {}
    local _, hooks = load({ LUASMTPD_REDIS_PORT = 7000, LUASMTPD_REDIS_TIMEOUT_MS = 50,
      LUASMTPD_RATE_WINDOW = 60 }, state)
    assert.are.equal(250, (rcpt(hooks, testing.session { remoteAddress = "192.0.2.7" })))
    assert.are.same({ "timeouts 50 50 50", "connect 127.0.0.1 7000", "incr rate:ip:192.0.2.7",
      "expire rate:ip:192.0.2.7 60 NX", "keepalive 60000 32" }, state.calls)
  end)

  it("counts per authenticated user, else per client IP", function()
    local state = {}
    local _, hooks = load({ LUASMTPD_RATE_LIMIT = 2 }, state)
    local bob = testing.session { user = "bob", remoteAddress = "192.0.2.1" }
    local bob_elsewhere = testing.session { user = "bob", remoteAddress = "198.51.100.2" }
    local anon = testing.session { remoteAddress = "192.0.2.1" }
    assert.are.equal(250, (rcpt(hooks, bob)))
    assert.are.equal(250, (rcpt(hooks, anon)))
    assert.are.equal(250, (rcpt(hooks, bob_elsewhere)))
    assert.are.same({ 451, "4.7.1 too many recipients (2 per 3600 s), try again later" },
      { rcpt(hooks, bob) })
    assert.are.equal(250, (rcpt(hooks, anon)))
    assert.are.same({ ["rate:user:bob"] = 3, ["rate:ip:192.0.2.1"] = 2 }, state.counts)
  end)

  it("fails open by default: the recipient is taken, a warning logged", function()
    local state = { fail = "connect" }
    local _, hooks, fake = load({}, state)
    assert.are.equal(250, (rcpt(hooks, testing.session())))
    assert.are.equal("warn", fake.logs[1].level)
    assert.are.equal("rate limit: redis unavailable", fake.logs[1].msg)
    assert.are.same({ who = "ip:127.0.0.1", err = "connect: timeout", failing = "open" }, fake.logs[1].fields)
  end)

  it("fails closed with 451 4.3.0 when told to, and drops a broken connection", function()
    local state = { fail = "commit" }
    local _, hooks = load({ LUASMTPD_RATE_FAIL = "closed" }, state)
    assert.are.same({ 451, "4.3.0 rate limit check unavailable, try again later" }, { rcpt(hooks, testing.session()) })
    assert.are.equal("close", state.calls[#state.calls])
  end)
end)

describe("redis-ratelimit.lua in the real server, with lua-resty-redis", function()
  local redis, server

  local function start(env)
    env.LUA_PATH = compat.lua_path()
    server = assert(testing.server(SCRIPT, { env = env }))
    return server
  end

  local function connections_received()
    local info = assert(redis:command("INFO", "stats"))
    return tonumber(info:match("total_connections_received:(%d+)"))
  end

  lazy_setup(function() if compat.lib then redis = assert(testing.redis()) end end)
  lazy_teardown(function() if redis then redis:stop() end end)
  after_each(function() if server then server:stop() end end)

  it("refuses the recipients over the limit with 451 4.7.1, on one pooled connection", function()
    compat.need()
    start { LUASMTPD_REDIS_PORT = redis.port, LUASMTPD_RATE_LIMIT = 3 }
    local before = connections_received()
    local c = assert(server:client())
    c:ehlo("client.example")
    c:mail("someone@example.net")
    for i = 1, 3 do
      c:rcpt("user" .. i .. "@example.org")
      assert.reply(c, 250)
    end
    c:rcpt("user4@example.org")
    assert.reply(c, 451, "^4%.7%.1 too many recipients %(3 per 3600 s%), try again later$")
    c:quit()
    -- four recipients on the server's one pooled connection, and the INFO just now
    assert.are.equal(before + 2, connections_received())
    assert.are.equal("4", redis:command("GET", "rate:ip:127.0.0.1"))
    local ttl = redis:command("TTL", "rate:ip:127.0.0.1")
    assert(ttl > 3500 and ttl <= 3600, "TTL " .. tostring(ttl))
  end)

  it("fails open when Redis is gone, closed when told to", function()
    compat.need()
    local gone = testing.free_port()
    start { LUASMTPD_REDIS_PORT = gone }
    local c = assert(server:client())
    c:ehlo("client.example")
    c:mail("someone@example.net")
    c:rcpt("user@example.org")
    assert.reply(c, 250)
    c:quit()
    assert.matches("rate limit: redis unavailable", server:log(), 1, true)
    server:stop()
    start { LUASMTPD_REDIS_PORT = gone, LUASMTPD_RATE_FAIL = "closed" }
    c = assert(server:client())
    c:ehlo("client.example")
    c:mail("someone@example.net")
    c:rcpt("user@example.org")
    assert.reply(c, 451, "4.3.0 rate limit check unavailable")
  end)

  it("gives up on a Redis that never answers after the timeout in ms", function()
    compat.need()
    local silent = assert(require("socket").bind("127.0.0.1", 0)) -- listens, never answers
    local _, port = silent:getsockname()
    start { LUASMTPD_REDIS_PORT = port, LUASMTPD_REDIS_TIMEOUT_MS = 100, LUASMTPD_RATE_FAIL = "closed" }
    local c = assert(server:client())
    c:ehlo("client.example")
    c:mail("someone@example.net")
    local t0 = require("socket").gettime()
    c:rcpt("user@example.org")
    assert.reply(c, 451, "4.3.0")
    assert(require("socket").gettime() - t0 < 5, "the 100 ms timeout was not kept")
    silent:close()
  end)
end)
