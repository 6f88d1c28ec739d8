-- scripts/auth-file.lua: AUTH against a file of SHA-512 crypt(3) hashes.
local testing = require "smtp.testing"

local SCRIPT = "scripts/auth-file.lua"

local function users_file()
  return assert(testing.users_file {
    "# name:hash", "", "carol:plaintext-is-ignored",
    alice = "correct horse", bob = "battery staple",
  })
end

local function plain(username, password)
  return { method = "PLAIN", username = username, password = password }
end

describe("auth-file.lua hooks", function()
  local users = users_file()
  local options, hooks, fake = assert(testing.load(SCRIPT, { env = { LUASMTPD_USERS = users } }))

  it("is a submission server: AUTH required, PLAIN and LOGIN", function()
    assert.is_false(options.authOptional)
    assert.are.same({ "PLAIN", "LOGIN" }, options.authMethods)
  end)

  it("accepts the right password and names the user", function()
    assert.are.same({ user = "alice" }, hooks.onAuth(plain("alice", "correct horse"), testing.session()))
    assert.are.same({ user = "bob" }, hooks.onAuth(
      { method = "LOGIN", username = "bob", password = "battery staple" }, testing.session()))
    assert.are.equal("authenticated", fake.logs[1].msg)
    assert.are.equal("alice", fake.logs[1].fields.user)
  end)

  it("refuses a wrong password with 535 5.7.8", function()
    local ok, err = hooks.onAuth(plain("alice", "wrong"), testing.session())
    assert.is_nil(ok)
    assert.are.equal(535, err.code)
    assert.are.same({ 535, "5.7.8 Error: authentication failed" },
      { testing.call(hooks, "onAuth", plain("alice", "correct horsE"), testing.session()) })
  end)

  it("refuses unknown users, lines without a SHA-512 hash, and NUL tricks", function()
    assert.are.equal(535, (testing.call(hooks, "onAuth", plain("mallory", "correct horse"), testing.session())))
    assert.are.equal(535, (testing.call(hooks, "onAuth", plain("carol", "plaintext-is-ignored"), testing.session())))
    assert.are.equal(535, (testing.call(hooks, "onAuth", plain("alice", "correct horse\0junk"), testing.session())))
    assert.are.equal(535, (testing.call(hooks, "onAuth", plain("", ""), testing.session())))
  end)

  it("does not load without its users file", function()
    local none, err = testing.load(SCRIPT, { env = { LUASMTPD_USERS = users .. ".missing" } })
    assert.is_nil(none)
    assert.matches("users.missing", err)
  end)
end)

describe("auth-file.lua through the server", function()
  local server
  lazy_setup(function()
    server = assert(testing.server(SCRIPT, { env = { LUASMTPD_USERS = users_file() } }))
  end)
  lazy_teardown(function()
    if server then server:stop() end
  end)

  it("offers AUTH only after STARTTLS", function()
    local c = assert(server:client())
    c:ehlo("me.example")
    assert.is_nil(c.extensions.AUTH)
    c:auth("PLAIN", "alice", "correct horse")
    assert.reply(c, 538, "5.7.11")
    c:mail("alice@example.org")
    assert.reply(c, 530, "5.7.0")
    c:quit()
  end)

  it("takes mail from a user who logged in", function()
    local c = assert(server:client())
    c:ehlo("me.example")
    c:starttls { servername = "localhost" }
    assert.reply(c, 220)
    c:ehlo("me.example")
    assert.are.equal("PLAIN LOGIN", c.extensions.AUTH)
    c:auth("PLAIN", "alice", "correct horse")
    assert.reply(c, 235, "2.7.0")
    c:mail("alice@example.org")
    assert.reply(c, 250)
    c:rcpt("friend@example.net")
    assert.reply(c, 250)
    c:data("Subject: hello\r\n\r\nhi\r\n")
    assert.reply(c, 250, "2.6.0")
    c:quit()
    local m = server:messages()[#server:messages()]
    assert.are.equal("alice", m.user)
    assert.are.equal("ESMTPSA", m.transmissionType)
    assert.are.equal("Subject: hello\r\n\r\nhi\r\n", m.body)
    assert.matches("msg=authenticated [^\n]*user=alice", server:log())
  end)

  it("refuses a wrong password over AUTH LOGIN", function()
    local c = assert(server:client())
    c:ehlo("me.example")
    c:starttls()
    c:ehlo("me.example")
    c:auth("LOGIN", "bob", "not his")
    assert.reply(c, 535, "5.7.8")
    c:auth("LOGIN", "bob", "battery staple")
    assert.reply(c, 235)
    c:quit()
  end)
end)
