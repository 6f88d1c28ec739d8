-- scripts/client-cert-audit.lua: client certificates checked and logged
-- in onSecure.
local testing = require "smtp.testing"

local SCRIPT = "scripts/client-cert-audit.lua"

local function fingerprint(cert_path)
  local p = io.popen("openssl x509 -noout -fingerprint -sha256 -in '" .. cert_path .. "'")
  local line = p:read("*l") or ""
  p:close()
  return (assert(line:match("=([%x:]+)$"), "openssl x509 -fingerprint failed"))
end

describe("client-cert-audit.lua hooks", function()
  local options, hooks, fake = assert(testing.load(SCRIPT, { env = { LUASMTPD_CLIENT_CA = "/ca.pem" } }))

  it("asks for certificates and judges them itself", function()
    assert.is_true(options.requestCert)
    assert.is_false(options.rejectUnauthorized)
    assert.is_true(options.needsUpgrade)
    assert.are.equal("/ca.pem", options.ca)
  end)

  it("lets a verified client in and remembers who it is", function()
    local session = testing.session { secure = true }
    local conn = testing.conn { certificate = { subject = { CN = "relay1.example" }, fingerprint256 = "AA:BB" } }
    assert.are.equal(220, (testing.call(hooks, "onSecure", conn, session)))
    assert.are.same({ subject = "relay1.example", fingerprint = "AA:BB" }, session.clientCertificate)
    local log = fake.logs[#fake.logs]
    assert.are.equal("client certificate", log.msg)
    assert.are.equal("relay1.example", log.fields.subject)
    assert.are.equal("AA:BB", log.fields.fingerprint)
    assert.is_true(log.fields.authorized)
  end)

  it("refuses a client without a certificate with 554 5.7.1", function()
    local code, text = testing.call(hooks, "onSecure", testing.conn(), testing.session { secure = true })
    assert.are.equal(554, code)
    assert.matches("^5%.7%.1 ", text)
    assert.are.equal("none", fake.logs[#fake.logs].fields.subject)
    assert.are.equal("PEER_DID_NOT_RETURN_A_CERTIFICATE", fake.logs[#fake.logs].fields.reason)
  end)

  it("refuses and logs a certificate that did not verify", function()
    local conn = testing.conn { certificate = { subject = { CN = "intruder" } }, authorized = false,
      authorizationError = "DEPTH_ZERO_SELF_SIGNED_CERT" }
    local session = testing.session { secure = true }
    assert.are.equal(554, (testing.call(hooks, "onSecure", conn, session)))
    assert.is_nil(session.clientCertificate)
    local log = fake.logs[#fake.logs]
    assert.are.equal("intruder", log.fields.subject)
    assert.are.equal("DEPTH_ZERO_SELF_SIGNED_CERT", log.fields.reason)
  end)
end)

describe("client-cert-audit.lua through the server", function()
  local server, pki
  lazy_setup(function()
    pki = testing.pki()
    server = assert(testing.server(SCRIPT, { env = { LUASMTPD_CLIENT_CA = pki.ca } }))
  end)
  lazy_teardown(function()
    if server then server:stop() end
  end)

  local function connect(tls)
    local c = assert(server:client())
    c:ehlo("me.example")
    local code, err = c:starttls(tls)
    assert(code == 220, tostring(err) .. "\n" .. c:transcript())
    return c
  end

  it("refuses everything but STARTTLS before TLS", function()
    local c = assert(server:client())
    c:ehlo("me.example")
    c:mail("a@example.org")
    assert.reply(c, 530, "5.7.0")
    c:quit()
  end)

  it("takes mail from a client with a certificate from the CA", function()
    -- (the server has the development certificate: nothing to verify it with)
    local c = connect { certificate = pki.cert("client"), key = pki.key("client") }
    c:ehlo("me.example")
    assert.reply(c, 250)
    c:mail("machine@example.org")
    c:rcpt("ops@example.org")
    c:data("Subject: report\r\n\r\nall good\r\n")
    assert.reply(c, 250)
    c:quit()
    local m = server:messages()[#server:messages()]
    assert.are.equal("client.example", m.clientCertificate.subject)
    assert.are.equal(fingerprint(pki.cert("client")), m.clientCertificate.fingerprint)
    assert.matches("msg=\"?client certificate\"?[^\n]*subject=client.example", server:log())
  end)

  it("closes with 554 on a client without a certificate", function()
    local c = connect {}
    c:ehlo("me.example")
    assert.reply(c, 554, "5.7.1")
    assert.is_nil((c:noop())) -- the server hung up
  end)

  it("closes with 554 on a self-signed certificate, and logs its fingerprint", function()
    local c = connect { certificate = pki.cert("selfsigned"), key = pki.key("selfsigned") }
    c:ehlo("me.example")
    assert.reply(c, 554, "5.7.1")
    local fp = fingerprint(pki.cert("selfsigned"))
    assert.is_truthy(server:log():find("fingerprint=" .. fp, 1, true), server:log())
  end)
end)
