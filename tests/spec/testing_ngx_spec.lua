-- The testing kit for policies that use smtp.ngx and lua-resty-* libraries:
-- testing.load gives the script its own ngx (logs, sleeps, ngx.ctx per
-- session, fresh shared dictionaries, sockets only when faked) and the
-- modules the spec injects; testing.redis and testing.service start real
-- peers. The policies of scripts/ that use them: redis_ratelimit_spec.lua
-- and webhook_spec.lua.
local testing = require "smtp.testing"

local dir = testing.tmpdir()

local function write(name, text)
  local path = dir .. "/" .. name
  os.execute("mkdir -p '" .. path:match("^(.*)/") .. "'")
  assert(testing.write_file(path, text))
  return path
end

-- A library in the style of lua-resty-*: it takes ngx.socket.tcp when it
-- loads, and requires a module of its own.
write("lib/resty/tiny.lua", [[
local tcp = ngx.socket.tcp
local helper = require "resty.tiny_helper"
return {
  ping = function(port)
    local sock = tcp()
    sock:settimeout(100)
    local ok, err = sock:connect("127.0.0.1", port)
    if not ok then return nil, err end
    sock:send("PING\r\n")
    local line, rerr = sock:receive()
    sock:setkeepalive(1000, 2)
    return helper.strip(line), rerr
  end,
}
]])
write("lib/resty/tiny_helper.lua", [[
return { strip = function(s) return s and s:gsub("^%+", "") end }
]])

local POLICY = write("tiny-policy.lua", [[
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
package.path = here .. "lib/?.lua;" .. package.path
require "smtp.ngx"
local tiny = require "resty.tiny"
local smtp = require "smtp"
local seen = require("smtp.ngx").shared_dict("seen", "1m")
local phase = ngx.get_phase()

return {
  phase = phase,
  onMailFrom = function(address)
    ngx.ctx.from = address.address
    seen:incr("mails", 1, 0)
    ngx.log(ngx.NOTICE, "mail from ", address.address, " ", ngx.get_phase())
  end,
  onRcptTo = function(address, session)
    ngx.sleep(0.5)
    local pong, err = tiny.ping(tonumber(os.getenv("PONG_PORT")) or 1)
    if not pong then return nil, smtp.reject(451, "4.4.1 " .. err) end
    if address.address == ngx.ctx.from then return nil, smtp.reject(550, "5.7.1 to yourself?") end
    return nil
  end,
}
]])

local function mail_and_rcpt(hooks, session, from, to)
  assert.is_nil((hooks.onMailFrom(testing.address(from), session)))
  return testing.call(hooks, "onRcptTo", testing.address(to), session)
end

-- A fake cosocket answering PING, recording what it was asked.
local function pong_socket(log)
  return {
    tcp = function()
      return {
        settimeout = function(_, ms) log[#log + 1] = "timeout " .. ms end,
        connect = function(_, host, port) log[#log + 1] = "connect " .. host .. ":" .. port; return 1 end,
        send = function(_, data) log[#log + 1] = "send " .. data; return #data end,
        receive = function() return "+PONG" end,
        setkeepalive = function(_, idle, size) log[#log + 1] = "keepalive " .. idle .. " " .. size; return 1 end,
      }
    end,
  }
end

describe("testing.load with smtp.ngx", function()
  it("gives the script its own ngx, never the spec's", function()
    local options, _, fake = assert(testing.load(POLICY, { modules = { ["smtp.ngx.socket"] = pong_socket({}) } }))
    assert.is_nil(rawget(_G, "ngx"))
    assert.are.equal("table", type(fake.ngx))
    assert.are.equal("init", options.phase)
    assert.has_error(function() return fake.ngx.nope end, "ngx.nope is not offered by luasmtpd")
    assert.is_nil(package.path:find(dir, 1, true)) -- the script's package.path stayed its own
  end)

  it("runs a library on the cosocket the spec injects", function()
    local log = {}
    local _, hooks, fake = assert(testing.load(POLICY, { env = { PONG_PORT = 6380 },
      modules = { ["smtp.ngx.socket"] = pong_socket(log) } }))
    assert.are.equal(250, (mail_and_rcpt(hooks, testing.session(), "a@example.org", "b@example.org")))
    assert.are.same({ "timeout 100", "connect 127.0.0.1:6380", "send PING\r\n", "keepalive 1000 2" }, log)
    assert.are.same({ 0.5 }, fake.sleeps)
    assert.are.equal(1, #fake.logs)
    assert.are.same({ level = "info", msg = "mail from a@example.org content", fields = {} }, fake.logs[1])
  end)

  it("keeps ngx.ctx per session, across the hooks of one", function()
    local _, hooks = assert(testing.load(POLICY, { modules = { ["smtp.ngx.socket"] = pong_socket({}) } }))
    local alice, bob = testing.session(), testing.session()
    assert.is_nil((hooks.onMailFrom(testing.address("alice@example.org"), alice)))
    assert.is_nil((hooks.onMailFrom(testing.address("bob@example.org"), bob)))
    assert.are.same({ 550, "5.7.1 to yourself?" },
      { testing.call(hooks, "onRcptTo", testing.address("alice@example.org"), alice) })
    assert.are.equal(250, (testing.call(hooks, "onRcptTo", testing.address("alice@example.org"), bob)))
  end)

  it("refuses ngx.ctx outside a hook", function()
    local _, _, fake = assert(testing.load(POLICY, { modules = { ["smtp.ngx.socket"] = pong_socket({}) } }))
    assert.has_error(function() return fake.ngx.ctx end,
      "ngx.ctx is offered only in a hook (under testing.load: one called through the hooks it returned)")
  end)

  it("gives each load fresh shared dictionaries, seen in fake.shared", function()
    local sockets = { ["smtp.ngx.socket"] = pong_socket({}) }
    local _, hooks, fake = assert(testing.load(POLICY, { modules = sockets }))
    local s = testing.session()
    hooks.onMailFrom(testing.address("a@example.org"), s)
    hooks.onMailFrom(testing.address("a@example.org"), s)
    assert.are.equal(2, fake.shared.seen:get("mails"))
    local _, _, again = assert(testing.load(POLICY, { modules = sockets }))
    assert.is_nil(again.shared.seen:get("mails"))
  end)

  it("says how to go on when a library reaches for a socket", function()
    local _, hooks = assert(testing.load(POLICY))
    local ok, err = pcall(hooks.onRcptTo, testing.address("b@example.org"), testing.session())
    assert.is_false(ok)
    assert.matches("tiny.lua:%d+: ngx.socket.tcp: no sockets in testing.load: inject a fake", err)
    assert.matches("or run the policy in testing.server", err, 1, true)
  end)

  it("gives require the modules the spec injects, in the libraries too", function()
    local tiny = { ping = function() return nil, "down" end }
    local _, hooks = assert(testing.load(POLICY, { modules = { ["resty.tiny"] = tiny } }))
    assert.are.same({ 451, "4.4.1 down" }, { mail_and_rcpt(hooks, testing.session(), "a@x", "b@x") })
    local helper = { strip = function() return "STRIPPED" end }
    local log = {}
    local _, hooks2, fake = assert(testing.load(POLICY, { modules = { ["resty.tiny_helper"] = helper,
      ["smtp.ngx.socket"] = pong_socket(log) } }))
    assert.are.equal(250, (mail_and_rcpt(hooks2, testing.session(), "a@x", "b@x")))
    assert.are.equal(4, #log)
    assert.are.equal(1, #fake.sleeps)
  end)

  it("offers ngx.encode_base64 and decode_base64 as nginx's", function()
    local _, _, fake = assert(testing.load(POLICY, { modules = { ["smtp.ngx.socket"] = pong_socket({}) } }))
    local ngx = fake.ngx
    assert.are.same({ "", "YQ==", "YQ", "YWJj" },
      { ngx.encode_base64(""), ngx.encode_base64("a"), ngx.encode_base64("a", true), ngx.encode_base64("abc") })
    assert.are.same({ "a", "a", "", "ab" }, { ngx.decode_base64("YQ"), ngx.decode_base64("YQ=="),
      ngx.decode_base64(""), ngx.decode_base64("YWI=junk") })
    assert.is_nil(ngx.decode_base64("Y"))
    assert.is_nil(ngx.decode_base64("!!!!"))
  end)
end)

describe("testing.redis", function()
  it("starts a redis-server of its own on a free port and stops it", function()
    local redis = assert(testing.redis())
    assert.are.equal("127.0.0.1", redis.host)
    assert.are.equal(1, redis:command("INCR", "n"))
    assert.are.equal("1", redis:command("GET", "n"))
    assert.is_false(redis:command("GET", "none"))
    local v, err = redis:command("NOSUCHCOMMAND")
    assert.is_nil(v)
    assert.matches("^ERR unknown command", err)
    local pid = redis.pid
    assert.is_true(redis:stop())
    assert.are_not.equal(0, (select(3, os.execute("kill -0 " .. pid .. " 2>/dev/null")) or 1))
    assert.is_true(redis:stop()) -- twice is fine
  end)

  it("gives each one its own data", function()
    local a, b = assert(testing.redis()), assert(testing.redis())
    assert.are_not.equal(a.port, b.port)
    a:command("SET", "k", "a")
    assert.is_false(b:command("GET", "k"))
    a:stop()
    b:stop()
  end)
end)

describe("testing.service", function()
  it("returns the log of a program that exits before it is ready", function()
    local s, err = testing.service({ "sh", "-c", "echo bad config on port {port}; exit 3" })
    assert.is_nil(s)
    assert.matches("sh exited %(exit 3%) before it was ready:\nbad config on port %d+", err)
  end)

  it("names a program it cannot find", function()
    assert.are.same({ nil, "no-such-program-here not found" }, { testing.service({ "no-such-program-here" }) })
  end)
end)
