-- scripts/relay-rules.lua: local domains for all, relaying for users and
-- trusted networks only.
local testing = require "smtp.testing"

local SCRIPT = "scripts/relay-rules.lua"

local USERS = assert(testing.users_file { relay = "secret" })

local function rcpt(hooks, to, session)
  return testing.call(hooks, "onRcptTo", testing.address(to), session)
end

describe("relay-rules.lua hooks", function()
  local _, hooks = assert(testing.load(SCRIPT, { env = {
    LUASMTPD_USERS = USERS,
    LUASMTPD_LOCAL_DOMAINS = "example.org, Example.NET",
    LUASMTPD_RELAY_NETWORKS = "10.0.0.0/8,192.168.1.128/25,2001:db8::/32",
  } }))
  local stranger = testing.session { remoteAddress = "203.0.113.5" }

  it("takes mail for the local domains from anyone", function()
    assert.are.equal(250, (rcpt(hooks, "alice@example.org", stranger)))
    assert.are.equal(250, (rcpt(hooks, "bob@EXAMPLE.net", stranger)))
  end)

  it("refuses to relay for strangers with 554 5.7.1", function()
    assert.are.same({ 554, "5.7.1 Error: relay access denied" }, { rcpt(hooks, "x@elsewhere.com", stranger) })
    assert.are.equal(554, (rcpt(hooks, "x@example.org.evil.com", stranger)))
  end)

  it("relays for authenticated users", function()
    local session = testing.session { remoteAddress = "203.0.113.5", user = "relay" }
    assert.are.equal(250, (rcpt(hooks, "x@elsewhere.com", session)))
  end)

  it("relays for clients in the trusted networks, IPv4 and IPv6", function()
    for _, ip in ipairs { "10.1.2.3", "192.168.1.200", "2001:db8::25", "::ffff:10.0.0.1" } do
      assert.are.equal(250, (rcpt(hooks, "x@elsewhere.com", testing.session { remoteAddress = ip })), ip)
    end
    for _, ip in ipairs { "11.0.0.1", "192.168.1.100", "2001:db9::1", "127.0.0.1", "::1" } do
      assert.are.equal(554, (rcpt(hooks, "x@elsewhere.com", testing.session { remoteAddress = ip })), ip)
    end
  end)

  it("gets its onAuth from auth-file.lua", function()
    assert.are.same({ user = "relay" }, hooks.onAuth({ method = "PLAIN", username = "relay", password = "secret" },
      testing.session()))
  end)

  it("refuses a network list it cannot read", function()
    local options, err = testing.load(SCRIPT, { env = { LUASMTPD_USERS = USERS, LUASMTPD_RELAY_NETWORKS = "10.0.0/8" } })
    assert.is_nil(options)
    assert.matches("not a network: 10.0.0/8", err)
  end)
end)

describe("relay-rules.lua through the server, from an untrusted address", function()
  local server
  lazy_setup(function()
    server = assert(testing.server(SCRIPT, { env = {
      LUASMTPD_USERS = USERS, LUASMTPD_RELAY_NETWORKS = "192.0.2.0/24", LUASMTPD_LOCAL_DOMAINS = "example.org",
    } }))
  end)
  lazy_teardown(function()
    if server then server:stop() end
  end)

  it("takes local mail and refuses to relay", function()
    local c = assert(server:client())
    c:ehlo("me.example")
    c:mail("someone@example.com")
    assert.reply(c, 250)
    c:rcpt("alice@example.org")
    assert.reply(c, 250, "2.1.5")
    c:rcpt("victim@elsewhere.com")
    assert.reply(c, 554, "5.7.1")
    c:data("Subject: hi\r\n\r\nlocal only\r\n")
    assert.reply(c, 250)
    c:quit()
    local m = server:messages()[1]
    assert.are.equal(1, #m.envelope.rcptTo)
    assert.are.equal("alice@example.org", m.envelope.rcptTo[1].address)
  end)

  it("relays once the client has logged in", function()
    local c = assert(server:client())
    c:ehlo("me.example")
    c:starttls()
    c:ehlo("me.example")
    c:auth("PLAIN", "relay", "secret")
    assert.reply(c, 235)
    c:mail("relay@example.org")
    c:rcpt("friend@elsewhere.com")
    assert.reply(c, 250, "2.1.5")
    c:quit()
  end)
end)

describe("relay-rules.lua through the server, from a trusted network", function()
  local server
  lazy_setup(function()
    server = assert(testing.server(SCRIPT, { env = { LUASMTPD_USERS = USERS, LUASMTPD_RELAY_NETWORKS = "127.0.0.0/8" } }))
  end)
  lazy_teardown(function()
    if server then server:stop() end
  end)

  it("relays for 127.0.0.1 without AUTH", function()
    local c = assert(server:client())
    c:ehlo("me.example")
    c:mail("app@localhost")
    c:rcpt("customer@elsewhere.com")
    assert.reply(c, 250, "2.1.5")
    c:quit()
  end)
end)
