-- scripts/submission-dkim.lua: auth-file.lua's submission server whose
-- mail OpenDKIM signs. Its options, then the real server with a real
-- OpenDKIM (signing) that the spec starts.
local testing = require "smtp.testing"
local daemons = dofile("tests/spec/milter_daemons.lua")

local SCRIPT = "scripts/submission-dkim.lua"

local function users_file()
  return assert(testing.users_file { alice = "correct horse" })
end

describe("submission-dkim.lua options", function()
  it("declares OpenDKIM as its milter, tempfail when it cannot sign, AUTH required", function()
    local options = assert(testing.load(SCRIPT, { env = { LUASMTPD_USERS = users_file(),
      LUASMTPD_DKIM_MILTER = "inet:127.0.0.1:9999", LUASMTPD_MAILDIR = testing.tmpdir() } }))
    assert.are.same({ "inet:127.0.0.1:9999" }, options.milters)
    assert.are.equal("tempfail", options.milterDefaultAction)
    assert.is_false(options.authOptional)
  end)
end)

describe("submission-dkim.lua with a real OpenDKIM", function()
  local milters, server, maildir

  lazy_setup(function()
    milters = daemons.start("signer")
    maildir = testing.tmpdir()
    local pki = testing.pki()
    server = assert(testing.server(SCRIPT, { env = { LUASMTPD_USERS = users_file(),
      LUASMTPD_DKIM_MILTER = milters.info.signer, LUASMTPD_MAILDIR = maildir },
      options = { key = pki.key("localhost"), cert = pki.cert("localhost") } }))
  end)
  lazy_teardown(function()
    if server then server:stop() end
    if milters then milters:stop() end
  end)

  it("stores an authenticated user's message DKIM-signed, the rest byte for byte", function()
    local domain = milters.info.domain
    local message = "From: Alice <alice@" .. domain .. ">\r\nTo: bob@example.org\r\n"
      .. "Subject: sign me\r\n\r\nHello,\r\n.a line that starts with a dot\r\n"
    local c = assert(server:client())
    c:ehlo("me.example")
    c:starttls { servername = "localhost", cafile = testing.pki().ca }
    assert.reply(c, 220)
    c:ehlo("me.example")
    c:auth("PLAIN", "alice", "correct horse")
    assert.reply(c, 235)
    c:mail("alice@" .. domain)
    c:rcpt("bob@example.org")
    c:data(message)
    assert.reply(c, 250)
    c:quit()
    local files = daemons.maildir_files(maildir)
    assert.are.equal(1, #files)
    local stored = assert(testing.read_file(files[1]))
    local rest = stored:match("^Received:.-\r\n(%S.*)$")
    assert.truthy(rest, stored)
    assert.truthy(rest:find("^DKIM%-Signature:"), rest)
    assert.truthy(rest:find("d=" .. domain:gsub("%.", "%%.") .. ";", 1), rest)
    -- after the signature: the message as sent
    assert.are.equal(message, rest:sub(-#message))
  end)
end)
