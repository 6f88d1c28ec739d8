-- scripts/size-per-user.lua: per-user size limits in onMailFrom (SIZE=)
-- and onData (stream.byteLength).
local testing = require "smtp.testing"

local SCRIPT = "scripts/size-per-user.lua"

local ENV = {
  LUASMTPD_USERS = assert(testing.users_file { alice = "pw-alice", bob = "pw-bob", carol = "pw-carol" }),
  LUASMTPD_SIZE_LIMITS = "alice=1000,bob=100000",
  LUASMTPD_SIZE_DEFAULT = "500",
}

describe("size-per-user.lua hooks", function()
  local options, hooks = assert(testing.load(SCRIPT, { env = ENV }))
  local alice = testing.session { user = "alice", secure = true }
  local carol = testing.session { user = "carol", secure = true }

  local function mail(session, size)
    return testing.call(hooks, "onMailFrom", testing.address("x@example.org", { SIZE = tostring(size) }), session)
  end

  it("lets the core enforce and advertise the largest limit", function()
    assert.are.equal(100000, options.size)
    assert.is_false(options.authOptional)
  end)

  it("checks the declared SIZE against the user's limit", function()
    assert.are.equal(250, (mail(alice, 1000)))
    assert.are.same({ 552, "5.3.4 Error: message exceeds your limit of 1000 bytes" }, { mail(alice, 1001) })
    assert.are.equal(250, (mail(testing.session { user = "bob" }, 50000)))
  end)

  it("gives unlisted users the default limit", function()
    assert.are.equal(552, (mail(carol, 501)))
    assert.are.equal(250, (mail(carol, 500)))
  end)

  it("accepts MAIL without SIZE", function()
    assert.are.equal(250, (testing.call(hooks, "onMailFrom", testing.address("x@example.org"), alice)))
  end)

  it("measures the body itself in onData", function()
    assert.are.same({ 250, "2.6.0 OK: 1000 bytes accepted" },
      { testing.call(hooks, "onData", testing.stream(string.rep("a", 1000)), alice) })
    assert.are.same({ 552, "5.3.4 Error: message exceeds your limit of 1000 bytes" },
      { testing.call(hooks, "onData", testing.stream(string.rep("a", 1001)), alice) })
  end)

  it("stops reading as soon as the body is over the limit", function()
    local stream = testing.stream(string.rep("a", 5000), { chunkSize = 100 })
    assert.are.equal(552, (testing.call(hooks, "onData", stream, alice)))
    assert.are.equal(1100, stream.byteLength)
  end)
end)

describe("size-per-user.lua through the server", function()
  local server
  lazy_setup(function()
    server = assert(testing.server(SCRIPT, { env = ENV }))
  end)
  lazy_teardown(function()
    if server then server:stop() end
  end)

  local function login(user)
    local c = assert(server:client())
    c:ehlo("me.example")
    c:starttls()
    c:ehlo("me.example")
    c:auth("PLAIN", user, "pw-" .. user)
    testing.assert_reply(c, 235)
    return c
  end

  it("advertises the largest limit", function()
    local c = login("alice")
    assert.are.equal("100000", c.extensions.SIZE)
    c:quit()
  end)

  it("refuses a declared SIZE over the user's limit before the body is sent", function()
    local c = login("alice")
    c:mail("alice@example.org", { SIZE = 5000 })
    assert.reply(c, 552, "5.3.4")
    c:mail("alice@example.org", { SIZE = 900 })
    assert.reply(c, 250)
    c:quit()
  end)

  it("refuses a body over the user's limit, and onData saw its length", function()
    local before = #server:messages()
    local c = login("alice")
    c:mail("alice@example.org")
    c:rcpt("friend@example.net")
    c:data(string.rep("x", 2998) .. "\r\n")
    assert.reply(c, 552, "5.3.4")
    c:quit()
    local m = server:messages()[before + 1]
    assert.are.equal(3000, m.byteLength)
    assert.are.equal(3000, #m.body)
    assert.are.equal(552, m.rejection.code)
    assert.are.equal("alice", m.user)
  end)

  it("takes the same body from a user with a larger limit", function()
    local c = login("bob")
    c:mail("bob@example.org", { SIZE = 3000 })
    c:rcpt("friend@example.net")
    c:data(string.rep("x", 2998) .. "\r\n")
    assert.reply(c, 250, "OK: 3000 bytes accepted")
    c:quit()
  end)
end)
