-- The testing kit itself (lua/smtp/testing.lua): fakes, testing.load, and
-- conversations through the real core.
local testing = require "smtp.testing"
local smtp = require "smtp"

local function write(path, text)
  assert(testing.write_file(path, text))
  return path
end

describe("testing.session", function()
  it("looks like a session after EHLO", function()
    local s = testing.session()
    assert.matches("^[a-z2-7]+$", s.id)
    assert.are.equal(16, #s.id)
    assert.are.equal("127.0.0.1", s.remoteAddress)
    assert.are.equal("[127.0.0.1]", s.clientHostname)
    assert.are.equal("EHLO", s.openingCommand)
    assert.are.equal("ESMTP", s.transmissionType)
    assert.is_false(s.secure)
    assert.is_nil(s.tlsOptions)
    assert.is_nil(s.servername)
    assert.are.same({ rcptTo = {} }, s.envelope)
    assert.are.equal(1, s.transaction)
  end)

  it("derives transmissionType from HELO, TLS and AUTH (RFC 3848)", function()
    assert.are.equal("SMTP", testing.session { openingCommand = "HELO" }.transmissionType)
    assert.are.equal("ESMTPS", testing.session { secure = true }.transmissionType)
    assert.are.equal("ESMTPA", testing.session { user = "bob" }.transmissionType)
    assert.are.equal("ESMTPSA", testing.session { secure = true, user = "bob" }.transmissionType)
    assert.are.equal("LMTP", testing.session { transmissionType = "LMTP" }.transmissionType)
    assert.are.equal("UTF8SMTPSA", testing.session { secure = true, user = "bob",
      envelope = { smtpUtf8 = true } }.transmissionType)
  end)

  it("takes overrides and turns envelope strings into addresses", function()
    local s = testing.session {
      remoteAddress = "192.0.2.9", secure = true, servername = "mx.example.org", custom = 42,
      envelope = { mailFrom = "a@example.org", rcptTo = { "b@example.org", testing.address("c@x", { NOTIFY = "NEVER" }) } },
    }
    assert.are.equal("[192.0.2.9]", s.clientHostname)
    assert.are.equal("TLSv1.3", s.tlsOptions.version)
    assert.are.equal("mx.example.org", s.servername)
    assert.are.equal(42, s.custom)
    assert.are.same({ address = "a@example.org", args = {} }, s.envelope.mailFrom)
    assert.are.same({ address = "b@example.org", args = {} }, s.envelope.rcptTo[1])
    assert.are.equal("NEVER", s.envelope.rcptTo[2].args.NOTIFY)
  end)

  it("gives every session its own id", function()
    assert.are_not.equal(testing.session().id, testing.session().id)
  end)
end)

describe("testing.stream", function()
  it("reads in chunks and counts byteLength as it goes", function()
    local s = testing.stream("abcdefghij", { chunkSize = 4 })
    assert.are.equal(0, s.byteLength)
    assert.are.equal("abcd", s:read())
    assert.are.equal(4, s.byteLength)
    local rest = {}
    for chunk in s:chunks() do rest[#rest + 1] = chunk end
    assert.are.same({ "efgh", "ij" }, rest)
    assert.is_nil(s:read())
    assert.are.equal(10, s.byteLength)
    assert.is_false(s.sizeExceeded)
  end)

  it("refuses a body over size as the core does: an error, never the end", function()
    local s = testing.stream("0123456789", { size = 5, chunkSize = 4 })
    assert.are.equal("0123", s:read())
    assert.is_false(s.sizeExceeded)
    local chunk, err = s:read()
    assert.is_nil(chunk)
    assert.matches("^552 5%.3%.4 ", err)
    assert.is_true(s.sizeExceeded)
    local raised = select(2, pcall(function() for _ in testing.stream("0123456789", { size = 5 }):chunks() do end end))
    assert.are.equal(err, tostring(raised))
    local dir = testing.tmpdir()
    assert.is_nil(testing.stream("0123456789", { size = 5 }):save(dir .. "/m"))
    assert.is_nil(io.open(dir .. "/m"))
  end)

  it("will not save what is left after a read", function()
    local dir = testing.tmpdir()
    local s = testing.stream("abcdefghij", { chunkSize = 4 })
    s:read()
    local ok, err = s:save(dir .. "/m")
    assert.is_nil(ok)
    assert.matches("already read", err)
  end)

  it("saves prefix and body to a new file, never over an existing one", function()
    local dir = testing.tmpdir()
    local s = testing.stream("body\r\n")
    assert.is_true(s:save(dir .. "/m", "Received: x\r\n"))
    assert.are.equal("Received: x\r\nbody\r\n", testing.read_file(dir .. "/m"))
    assert.are.equal(6, s.byteLength)
    local ok, err = testing.stream("again"):save(dir .. "/m")
    assert.is_nil(ok)
    assert.matches("exists", err)
  end)
end)

describe("testing.conn", function()
  it("offers a verified certificate", function()
    local conn = testing.conn { certificate = { subject = { CN = "client.example" } } }
    assert.is_true(conn.authorized)
    assert.is_nil(conn.authorizationError)
    local cert = conn:getPeerCertificate()
    assert.are.equal("client.example", cert.subject.CN)
    assert.matches("^%x%x:", cert.fingerprint256)
    assert.are.equal("TLSv1.3", conn:getProtocol())
    assert.is_string(conn:getCipher().name)
  end)

  it("explains why a client is not authorized", function()
    assert.are.equal("PEER_DID_NOT_RETURN_A_CERTIFICATE", testing.conn().authorizationError)
    local conn = testing.conn { certificate = {}, authorized = false, authorizationError = "CERT_HAS_EXPIRED" }
    assert.is_false(conn.authorized)
    assert.are.equal("CERT_HAS_EXPIRED", conn.authorizationError)
  end)
end)

describe("testing.load", function()
  local dir = testing.tmpdir()
  local script = write(dir .. "/policy.lua", [[
    local smtp = require "smtp"
    local domain = os.getenv("POLICY_DOMAIN") or "example.org"
    return {
      authOptional = true,
      onRcptTo = function(address, session)
        smtp.sleep(0.5) -- a no-op under testing.load
        smtp.log.info("rcpt", { to = address.address })
        if not address.address:match("@" .. domain .. "$") then
          return nil, smtp.reject(550, "5.1.1 not here")
        end
      end,
      onMailFrom = function(address) if address.address == "boom@x" then error("bug") end end,
      onData = function(stream) return "queued " .. #stream:read() end,
    }
  ]])

  it("returns options and hooks, with the environment overridden", function()
    local options, hooks, fake = assert(testing.load(script, { env = { POLICY_DOMAIN = "example.net" } }))
    assert.is_true(options.authOptional)
    assert.is_function(hooks.onRcptTo)
    assert.is_nil(hooks.onAuth)
    assert.is_nil(hooks.onRcptTo(testing.address("a@example.net"), testing.session()))
    local ok, err = hooks.onRcptTo(testing.address("a@example.org"), testing.session())
    assert.is_nil(ok)
    assert.is_true(smtp.is_reject(err))
    assert.are.equal(550, err.code)
    assert.are.same({ 0.5, 0.5 }, fake.sleeps)
    assert.are.equal("rcpt", fake.logs[1].msg)
    assert.are.equal("a@example.net", fake.logs[1].fields.to)
  end)

  it("leaves the real smtp module alone", function()
    assert(testing.load(script))
    assert.has_error(function() smtp.sleep(0) end, "smtp.sleep needs the luasmtpd runtime")
  end)

  it("reports scripts that do not load", function()
    local bad = write(dir .. "/bad.lua", "return {")
    local options, err = testing.load(bad)
    assert.is_nil(options)
    assert.matches("bad.lua", err)
    options, err = testing.load(write(dir .. "/num.lua", "return 42"))
    assert.is_nil(options)
    assert.matches("must return a table", err)
    assert.is_nil((testing.load(dir .. "/missing.lua")))
  end)

  it("testing.call answers what the client would see", function()
    local _, hooks = assert(testing.load(script))
    local session = testing.session()
    assert.are.same({ 250, "2.1.5 Accepted" }, { testing.call(hooks, "onRcptTo", testing.address("x@example.org"), session) })
    assert.are.same({ 550, "5.1.1 not here" }, { testing.call(hooks, "onRcptTo", testing.address("x@else"), session) })
    local code, text, err = testing.call(hooks, "onMailFrom", testing.address("boom@x"), session)
    assert.are.equal(451, code)
    assert.are.equal("4.3.0 Error: internal server error", text)
    assert.matches("bug", err)
    assert.are.same({ 250, "2.6.0 queued 4" }, { testing.call(hooks, "onData", testing.stream("body"), session) })
    assert.are.same({ 250, "2.0.0 OK" }, { testing.call(hooks, "onClose", session) })
    assert.are.equal(235, (testing.call({}, "onAuth")))
  end)

  it("testing.call applies the default codes and enhanced codes", function()
    local hooks = {
      onRcptTo = function() return nil, "no" end,
      onData = function() error(smtp.reject(554, "5.7.1 spam")) end,
      onAuth = function() return {} end,
      onMailFrom = function() return nil, smtp.reject(452) end,
    }
    assert.are.same({ 550, "5.1.1 no" }, { testing.call(hooks, "onRcptTo") })
    assert.are.same({ 554, "5.7.1 spam" }, { testing.call(hooks, "onData") })
    assert.are.same({ 535, "5.7.8 Error: Authentication credentials invalid" }, { testing.call(hooks, "onAuth") })
    assert.are.same({ 452, "4.2.2 Error: rejected" }, { testing.call(hooks, "onMailFrom") })
  end)
end)

describe("testing.server with an options table", function()
  local server
  local seen = { "nobody" } -- an upvalue table: travels to the server by value
  lazy_setup(function()
    server = assert(testing.server {
      authOptional = true,
      size = 1000,
      onRcptTo = function(address)
        if address.address == seen[1] .. "@example.org" then
          return nil, smtp.reject(550, "5.1.1 " .. seen[1] .. " left")
        end
      end,
      onData = function(stream, session)
        if session.envelope.rcptTo[1].address == "save@example.org" then
          local path = os.tmpname()
          os.remove(path)
          assert(stream:save(path, "X-Prefix: 1\r\n"))
          os.remove(path)
          return "saved"
        end
        if session.envelope.rcptTo[1].address == "half@example.org" then
          stream:read() -- the rest is drained; the record still has it all
          return nil, smtp.reject(554, "5.6.0 half read")
        end
        local body = {}
        for chunk in stream:chunks() do body[#body + 1] = chunk end
        return "read " .. #table.concat(body)
      end,
    })
  end)
  lazy_teardown(function()
    if server then server:stop() end
  end)

  local function send(to, body)
    local c = assert(server:client())
    c:ehlo("me.example")
    c:mail("from@example.net")
    c:rcpt(to)
    local code, text = c:data(body)
    c:quit()
    return code, text, c
  end

  it("listens on a free loopback port", function()
    assert.is_number(server.port)
    assert.are_not.equal(2525, server.port)
    local c = assert(server:client())
    testing.assert_reply(c, 220)
    c:ehlo("me.example")
    assert.reply(c, 250)
    assert.are.equal("1000", c.extensions.SIZE)
    assert.is_true(c.extensions.STARTTLS)
    c:quit()
  end)

  it("runs hooks with their upvalues", function()
    local c = assert(server:client())
    c:ehlo("me.example")
    c:mail("a@example.net")
    c:rcpt("nobody@example.org")
    assert.reply(c, 550, "5.1.1")
    assert.reply(c, 550, "nobody left")
    c:rcpt("somebody@example.org")
    assert.reply(c, 250, "2.1.5")
    c:quit()
  end)

  it("records what onData read, dot-unstuffed, with the envelope", function()
    local before = #server:messages()
    local body = "Subject: dots\r\n\r\n.one\r\n..two\r\n.\r\nend\r\n"
    local code, text = send("rcpt@example.org", body)
    assert.are.equal(250, code)
    assert.are.equal("2.6.0 read " .. #body, text)
    local m = server:messages()[before + 1]
    assert.are.equal(body, m.body)
    assert.are.equal(#body, m.byteLength)
    assert.are.equal(#body, m.hookRead)
    assert.are.equal("from@example.net", m.envelope.mailFrom.address)
    assert.are.equal("rcpt@example.org", m.envelope.rcptTo[1].address)
    assert.are.equal("me.example", m.hostNameAppearsAs)
    assert.are.equal("127.0.0.1", m.remoteAddress)
    assert.are.equal("ESMTP", m.session.transmissionType)
    assert.is_true(m.accepted)
  end)

  it("turns bare LF into CRLF and ends the body with CRLF", function()
    local before = #server:messages()
    assert.are.equal(250, (send("rcpt@example.org", "a\nb")))
    assert.are.equal("a\r\nb\r\n", server:messages()[before + 1].body)
  end)

  it("records bodies the hook saved to a file", function()
    local before = #server:messages()
    assert.are.equal(250, (send("save@example.org", "saved body\r\n")))
    local m = server:messages()[before + 1]
    assert.are.equal("saved body\r\n", m.body)
    assert.are.equal(12, m.hookRead)
  end)

  it("records the whole body and the rejection when the hook stops reading", function()
    local before = #server:messages()
    local body = string.rep("x", 200) .. "\r\n"
    local code, text = send("half@example.org", body)
    assert.are.equal(554, code)
    assert.are.equal("5.6.0 half read", text)
    local m = server:messages()[before + 1]
    assert.are.equal(body, m.body)
    assert.is_false(m.accepted)
    assert.are.equal(554, m.rejection.code)
  end)

  it("leaves the size limit to the core", function()
    local before = #server:messages()
    local code, text = send("rcpt@example.org", string.rep("y", 2000))
    assert.are.equal(552, code)
    assert.matches("^5%.3%.4", text)
    assert.is_true(server:messages()[before + 1].sizeExceeded)
  end)

  it("shows the server's log", function()
    assert.matches("msg=listening", server:log())
  end)
end)

describe("testing.server refusals", function()
  it("explains hooks it cannot send", function()
    local handle = newproxy() -- a userdata no module knows by name
    local server, err = testing.server { onConnect = function() return handle end }
    assert.is_nil(server)
    assert.matches("cannot send options.onConnect upvalue 'handle' (a userdata)", err, 1, true)
  end)

  it("returns the log of a script the core refuses", function()
    local server, err = testing.server { noSuchOption = true }
    assert.is_nil(server)
    assert.matches("noSuchOption", err)
  end)

  it("testing.check runs luasmtpd -t", function()
    assert.is_true((testing.check("scripts/default.lua", { env = { LUASMTPD_MAILDIR = testing.tmpdir() } })))
    local dir = testing.tmpdir()
    local ok, out = testing.check(write(dir .. "/bad.lua", "return { nope = 1 }"))
    assert.is_nil(ok)
    assert.matches("nope", out)
  end)
end)

describe("testing.server with several listeners and TLS", function()
  local server, pki
  lazy_setup(function()
    pki = testing.pki()
    server = assert(testing.server {
      { authOptional = true, banner = "plain" },
      { authOptional = true, banner = "implicit", secure = true, key = pki.key("localhost"), cert = pki.cert("localhost") },
    })
  end)
  lazy_teardown(function()
    if server then server:stop() end
  end)

  it("gives each listener its own port", function()
    assert.are.equal(2, #server.ports)
    local c = assert(server:client { listener = 1 })
    assert.reply(c, 220, "plain")
    c:quit()
  end)

  it("speaks implicit TLS to a secure listener and checks the certificate", function()
    local c = assert(server:client { listener = 2, tls = { servername = "localhost", cafile = pki.ca } })
    assert.reply(c, 220, "implicit")
    assert.are.equal("localhost", c:peer_certificate().subject.CN)
    c:ehlo("me.example")
    assert.is_nil(c.extensions.STARTTLS)
    assert.is_string(c.extensions.AUTH)
    c:quit()
  end)

  it("fails the handshake when the certificate does not verify", function()
    local c = assert(server:client())
    c:ehlo("me.example")
    local ok, err = c:starttls { cafile = pki.ca } -- the plain listener has the dev certificate
    assert.is_nil(ok)
    assert.matches("TLS", err)
    assert.matches("TLS", c:transcript())
  end)
end)

describe("readable failures", function()
  local server
  lazy_setup(function()
    server = assert(testing.server {
      authOptional = true,
      onRcptTo = function() return nil, smtp.reject(554, "5.7.1 relay denied") end,
    })
  end)
  lazy_teardown(function()
    if server then server:stop() end
  end)

  it("puts the whole transcript in the assertion message", function()
    local c = assert(server:client())
    c:ehlo("me.example")
    c:mail("a@example.net")
    c:rcpt("b@example.com")
    local ok, err = pcall(testing.assert_reply, c, 250, "2.1.5")
    assert.is_false(ok)
    assert.matches("expected SMTP reply 250 2.1.5, got 554 5.7.1 relay denied", err, 1, true)
    for _, line in ipairs {
      "S: 220 ", "C: EHLO me.example", "S: 250-", "C: MAIL FROM:<a@example.net>", "S: 250 2.1.0 Accepted",
      "C: RCPT TO:<b@example.com>", "S: 554 5.7.1 relay denied",
    } do
      assert.is_truthy(err:find("\n" .. line, 1, true), "missing transcript line: " .. line)
    end
    c:quit()
  end)

  it("does the same through assert.reply and its negation", function()
    local c = assert(server:client())
    c:ehlo("me.example")
    local ok, err = pcall(function() assert.reply(c, 421) end)
    assert.is_false(ok)
    err = tostring(err.message or err)
    assert.matches("expected SMTP reply 421, got 250", err, 1, true)
    assert.is_truthy(err:find("\nC: EHLO me.example\n", 1, true))
    ok, err = pcall(function() assert.is_not.reply(c, 250) end)
    assert.is_false(ok)
    assert.matches("other than 250", tostring(err.message or err), 1, true)
    c:quit()
  end)

  it("says when there was no reply at all", function()
    local c = assert(server:client())
    c:quit()
    assert.is_nil((c:noop()))
    local ok, err = pcall(testing.assert_reply, c, 250)
    assert.is_false(ok)
    assert.matches("got no reply", err)
    assert.is_truthy(err:find("\nC: NOOP\n", 1, true))
  end)
end)

describe("testing.server processes", function()
  it("stop() ends the process and is safe to repeat", function()
    local server = assert(testing.server { authOptional = true })
    local pid = server.pid
    local c = assert(server:client())
    c:ehlo("me.example")
    c:mail("a@example.net") -- a transaction in flight does not hold up stop()
    assert.is_true(server:stop())
    assert.is_true(server:stop())
    assert.is_nil(server.pid)
    -- kill -0 fails: no such process (and not a zombie we forgot to reap).
    assert.are_not.equal(0, os.execute("kill -0 " .. pid .. " 2>/dev/null"))
    assert.is_nil((server:client()))
  end)
end)

-- The kit's simulated replies (testing.call) and the core's replies on the
-- wire come from one catalogue (core/proto/replies.c): the same policy,
-- run both ways, must give the same code and text.
describe("testing.call and the core give the same replies", function()
  -- MAIL and RCPT: refuse no@ with code (default text), txt@ with text.
  local function address_hook(code, text)
    return function(a)
      local who = a.address:match("^(%w+)@")
      if who == "no" then return nil, smtp.reject(code) end
      if who == "txt" then return nil, text end
      if who == "boom" then error("boom") end
    end
  end
  local policy = {
    authOptional = true,
    allowInsecureAuth = true,
    onAuth = function(auth)
      local u = auth.username
      if u == "nouser" then return {} end
      if u == "msg" then return { user = u, message = "Welcome aboard" } end
      if u == "ownmsg" then return { user = u, message = "2.7.0 Hi there" } end
      if u == "bare" then return nil, "go away" end
      if u == "obj" then return nil, smtp.reject(454, "later") end
      if u == "nomsg" then return nil, smtp.reject(535) end
      if u == "raise" then error(smtp.reject(534, "5.7.9 stronger please")) end
      if u == "boom" then error("boom") end
      return { user = u }
    end,
    onMailFrom = address_hook(550, "sender says no"),
    onRcptTo = address_hook(450, "5.1.1 unknown user"),
    onData = function(stream, session)
      for _ in stream:chunks() do end
      local who = session.envelope.mailFrom.address:match("^(%w+)@")
      if who == "text" then return "queued as X" end
      if who == "own" then return "2.6.1 queued as Y" end
      if who == "rej" then return nil, smtp.reject(554) end
      if who == "str" then return nil, "try later" end
      if who == "crash" then error("boom") end
    end,
  }
  local server
  lazy_setup(function() server = assert(testing.server(policy)) end)
  lazy_teardown(function() if server then server:stop() end end)

  -- What the core answers: a fresh session, driven up to the hook.
  local function on_wire(hook, arg)
    local c = assert(server:client())
    assert(c:ehlo("client.example") == 250)
    local code, text
    if hook == "onAuth" then
      code, text = c:auth("PLAIN", arg, "pw")
    elseif hook == "onMailFrom" then
      code, text = c:mail(arg)
    elseif hook == "onRcptTo" then
      assert(c:mail("a@example.org") == 250)
      code, text = c:rcpt(arg)
    else
      assert(c:mail(arg) == 250)
      assert(c:rcpt("b@example.org") == 250)
      code, text = c:data("Subject: x\n\nhi\n")
    end
    c:close()
    return code, text
  end

  local function in_kit(hook, arg)
    local code, text
    if hook == "onAuth" then
      code, text = testing.call(policy, hook, { method = "PLAIN", username = arg, password = "pw" },
        testing.session())
    elseif hook == "onData" then
      code, text = testing.call(policy, hook, testing.stream("Subject: x\r\n\r\nhi\r\n"),
        testing.session { envelope = { mailFrom = arg, rcptTo = { "b@example.org" } } })
    else
      code, text = testing.call(policy, hook, testing.address(arg), testing.session())
    end
    return code, text
  end

  local cases = {
    { "onAuth", "bob" }, { "onAuth", "nouser" }, { "onAuth", "msg" }, { "onAuth", "ownmsg" },
    { "onAuth", "bare" }, { "onAuth", "obj" }, { "onAuth", "nomsg" }, { "onAuth", "raise" },
    { "onAuth", "boom" },
    { "onMailFrom", "ok@example.org" }, { "onMailFrom", "no@example.org" },
    { "onMailFrom", "txt@example.org" }, { "onMailFrom", "boom@example.org" },
    { "onRcptTo", "ok@example.org" }, { "onRcptTo", "no@example.org" },
    { "onRcptTo", "txt@example.org" }, { "onRcptTo", "boom@example.org" },
    { "onData", "plain@example.org" }, { "onData", "text@example.org" }, { "onData", "own@example.org" },
    { "onData", "rej@example.org" }, { "onData", "str@example.org" }, { "onData", "crash@example.org" },
  }
  for _, case in ipairs(cases) do
    it(case[1] .. " with " .. case[2], function()
      local kit_code, kit_text = in_kit(case[1], case[2])
      local code, text = on_wire(case[1], case[2])
      assert.are.same({ code, text }, { kit_code, kit_text })
    end)
  end
end)
