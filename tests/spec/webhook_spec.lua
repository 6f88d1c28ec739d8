-- scripts/webhook.lua: each message POSTed as JSON, the HTTP status
-- deciding 250 or 451. With a fake resty.http injected by testing.load,
-- then in the real server with lua-resty-http as published against
-- Python's HTTP server (webhook_sink.py) started by the spec.
local testing = require "smtp.testing"
local cjson = require "cjson"
local mime = require "mime"
local compat = dofile("tests/spec/compat.lua")

local SCRIPT = "scripts/webhook.lua"

-- resty.http's request_uri on a list of canned answers ({status = N} or
-- {err = "..."}); what was asked is kept in `requests`.
local function fake_http(answers, requests)
  return {
    new = function()
      local c = {}
      function c.set_timeouts(_, ...) c.timeouts = { ... } end
      function c.request_uri(_, uri, params)
        requests[#requests + 1] = { uri = uri, params = params, timeouts = c.timeouts }
        local a = table.remove(answers, 1)
        if a.err then return nil, a.err end
        return { status = a.status, body = "", headers = {} }
      end
      return c
    end,
  }
end

local function load(env, answers, requests)
  return assert(testing.load(SCRIPT, { env = env, modules = { ["resty.http"] = fake_http(answers, requests) } }))
end

local function session()
  return testing.session { user = "bob", envelope = { mailFrom = "bob@example.net",
    rcptTo = { "alice@example.org", "carol@example.org" } } }
end

describe("webhook.lua with a fake resty.http", function()
  it("POSTs the envelope and the message as JSON, kept alive", function()
    local requests = {}
    local _, hooks = load({ LUASMTPD_WEBHOOK_URL = "https://hooks.example/in", LUASMTPD_WEBHOOK_TIMEOUT_MS = 300 },
      { { status = 204 } }, requests)
    local s = session()
    local message = "Subject: hi\r\n\r\n\255 not UTF-8\r\n"
    assert.are.same({ 250, "2.6.0 OK: taken by the message service" },
      { testing.call(hooks, "onData", testing.stream(message, { chunkSize = 5 }), s) })
    local r = requests[1]
    assert.are.equal("https://hooks.example/in", r.uri)
    assert.are.same({ 300, 300, 300 }, r.timeouts)
    assert.are.equal("POST", r.params.method)
    assert.are.equal("application/json", r.params.headers["Content-Type"])
    assert.are.same({ 60000, 16 }, { r.params.keepalive_timeout, r.params.keepalive_pool })
    local doc = cjson.decode(r.params.body)
    assert.are.same({ id = s.id, remoteAddress = "127.0.0.1", user = "bob", from = "bob@example.net",
      to = { "alice@example.org", "carol@example.org" }, size = #message, message = (mime.b64(message)) }, doc)
  end)

  it("answers 451 4.3.0 for any other status, or no answer", function()
    local requests = {}
    local _, hooks, fake = load({}, { { status = 503 }, { status = 302 }, { err = "timeout" } }, requests)
    assert.are.same({ 451, "4.3.0 the message service answered 503, try again later" },
      { testing.call(hooks, "onData", testing.stream("x\r\n"), session()) })
    assert.are.equal(451, (testing.call(hooks, "onData", testing.stream("x\r\n"), session())))
    assert.are.same({ 451, "4.3.0 the message service did not answer, try again later" },
      { testing.call(hooks, "onData", testing.stream("x\r\n"), session()) })
    assert.are.equal("http://127.0.0.1:8080/mail", requests[1].uri)
    assert.are.same({ "webhook: refused", "webhook: refused", "webhook: no answer" },
      { fake.logs[1].msg, fake.logs[2].msg, fake.logs[3].msg })
    assert.are.equal("timeout", fake.logs[3].fields.err)
  end)
end)

describe("webhook.lua in the real server, with lua-resty-http", function()
  local sink, server

  local function requests()
    local list = {}
    for line in (testing.read_file(sink.dir .. "/requests.jsonl") or ""):gmatch("[^\n]+") do
      list[#list + 1] = cjson.decode(line)
    end
    return list
  end

  local function send(c, to, body)
    c:mail("bob@example.net")
    c:rcpt(to)
    c:data(body)
  end

  lazy_setup(function()
    if not compat.lib then return end
    local py = testing.home .. "/tests/spec/webhook_sink.py"
    sink = assert(testing.service({ "python3", py, "{port}", "{dir}" }))
    server = assert(testing.server(SCRIPT, { env = { LUA_PATH = compat.lua_path(), LUASMTPD_WEBHOOK_TIMEOUT_MS = 300,
      LUASMTPD_WEBHOOK_URL = "http://127.0.0.1:" .. sink.port .. "/mail" } }))
  end)
  lazy_teardown(function()
    if server then server:stop() end
    if sink then sink:stop() end
  end)

  -- One session: for each {recipient, body, code, reply pattern}, a message.
  local function converse(messages)
    local c = assert(server:client())
    c:ehlo("client.example")
    for _, m in ipairs(messages) do
      send(c, m[1], m[2])
      assert.reply(c, m[3], m[4])
    end
    c:quit()
  end

  it("takes messages the service takes, on one kept-alive connection", function()
    compat.need()
    converse {
      { "alice@example.org", "Subject: one\r\n\r\n..dot\r\n", 250, "2.6.0 OK: taken by the message service" },
      { "carol@example.org", "Subject: two\r\n\r\nhi\r\n", 250, "2.6.0" },
    }
    local got = requests()
    assert.are.equal(2, #got)
    assert.are.same({ "/mail", "application/json" }, { got[1].path, got[1].type })
    assert.are.same({ "alice@example.org" }, got[1].json.to)
    assert.are.equal("bob@example.net", got[1].json.from)
    assert.are.equal("Subject: one\r\n\r\n..dot\r\n", mime.unb64(got[1].json.message)) -- as sent
    assert.are.equal(got[1].port, got[2].port) -- the pooled connection again
  end)

  it("answers 451 4.3.0 when the service refuses or is too slow", function()
    compat.need()
    converse {
      { "status-503@example.org", "Subject: refused\r\n\r\nhi\r\n", 451, "4.3.0 the message service answered 503" },
      { "slow@example.org", "Subject: slow\r\n\r\nhi\r\n", 451, "4.3.0 the message service did not answer" },
      { "alice@example.org", "Subject: fine\r\n\r\nhi\r\n", 250, "2.6.0" },
    }
  end)

  it("answers 451 4.3.0 when the service is down", function()
    compat.need()
    sink:stop()
    converse {
      { "alice@example.org", "Subject: nobody home\r\n\r\nhi\r\n", 451, "4.3.0 the message service did not answer" },
    }
  end)
end)
