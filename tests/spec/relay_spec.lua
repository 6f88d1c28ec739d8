-- scripts/relay.lua: a before-queue proxy to a real next hop (aiosmtpd,
-- started by testing.nexthop), answering the client with its verdict.
local testing = require "smtp.testing"

local SCRIPT = "scripts/relay.lua"

local function send(server, rcpts, body)
  local c = assert(server:client())
  c:ehlo("client.example")
  c:mail("sender@example.net")
  for _, r in ipairs(rcpts) do
    local code = c:rcpt(r)
    if code ~= 250 then c:quit(); return code end
  end
  local code, text = c:data(body)
  c:quit()
  return code, text
end

describe("relay.lua", function()
  local hop, server

  lazy_setup(function()
    hop = assert(testing.nexthop { rcpt = {
      ["full@example.org"] = "452 4.2.2 mailbox full",
      ["nobody@example.org"] = "550 5.1.1 no such user",
    } })
    server = assert(testing.server(SCRIPT, { env = {
      LUASMTPD_NEXTHOP = hop.host .. ":" .. hop.port,
      LUASMTPD_RELAY_DOMAINS = "example.org, Example.NET",
      LUASMTPD_NAME = "front.test",
      LUASMTPD_NEXTHOP_TIMEOUT = "5",
    } }))
  end)

  lazy_teardown(function()
    if server then server:stop() end
    if hop then hop:stop() end
  end)

  it("relays mail for its domains and answers with the next hop's 250", function()
    local before = #hop:messages()
    local code, text = send(server, { "alice@example.org", "bob@EXAMPLE.net" },
      "Subject: hi\r\n\r\n.a dot\r\nbody\r\n")
    assert.are.equal(250, code)
    assert.matches("queued as", text)
    local m = hop:messages()[before + 1]
    assert.are.same({ "alice@example.org", "bob@EXAMPLE.net" }, m.to)
    assert.are.equal("sender@example.net", m.from)
    assert.matches("^Received: from client%.example .-by front%.test", m.body)
    assert.matches("\r\nSubject: hi\r\n\r\n%.a dot\r\nbody\r\n$", m.body)
  end)

  it("refuses other domains with 554 5.7.1", function()
    assert.are.equal(554, send(server, { "x@elsewhere.com" }, "x"))
  end)

  it("passes the next hop's refusals on, and relays nothing then", function()
    local before = #hop:messages()
    local code, text = send(server, { "nobody@example.org" }, "Subject: x\r\n\r\nx\r\n")
    assert.are.equal(550, code)
    assert.matches("5.1.1 no such user", text, 1, true)
    code, text = send(server, { "alice@example.org", "full@example.org" }, "Subject: x\r\n\r\nx\r\n")
    assert.are.equal(452, code)
    assert.matches("4.2.2 mailbox full", text, 1, true)
    assert.are.equal(before, #hop:messages())
  end)
end)

describe("relay.lua with its next hop down", function()
  it("answers 451 4.4.1", function()
    local s = require("socket").bind("127.0.0.1", 0)
    local _, port = s:getsockname()
    s:close()
    local server = assert(testing.server(SCRIPT, { env = { LUASMTPD_NEXTHOP = "127.0.0.1:" .. port } }))
    finally(function() server:stop() end)
    local code, text = send(server, { "alice@example.org" }, "Subject: x\r\n\r\nx\r\n")
    assert.are.equal(451, code)
    assert.matches("^4%.4%.1", text)
  end)
end)
