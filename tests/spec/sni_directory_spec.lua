-- scripts/sni-directory.lua: SNICallback reading DIR/<name>/{cert,key}.pem.
local testing = require "smtp.testing"

local SCRIPT = "scripts/sni-directory.lua"

local function copy(from, to)
  assert(testing.write_file(to, assert(testing.read_file(from))))
end

-- DIR/mail.example.com/ from the test CA, and DIR/broken.example/ whose
-- files are not certificates.
local function sni_dir(pki)
  local dir = testing.tmpdir()
  os.execute("mkdir '" .. dir .. "/mail.example.com' '" .. dir .. "/broken.example'")
  copy(pki.cert("mail.example.com"), dir .. "/mail.example.com/cert.pem")
  copy(pki.key("mail.example.com"), dir .. "/mail.example.com/key.pem")
  assert(testing.write_file(dir .. "/broken.example/cert.pem", "not a certificate\n"))
  assert(testing.write_file(dir .. "/broken.example/key.pem", "not a key\n"))
  return dir
end

describe("sni-directory.lua hooks", function()
  local dir = sni_dir(testing.pki())
  local _, hooks, fake = assert(testing.load(SCRIPT, { env = { LUASMTPD_SNI_DIR = dir } }))

  it("returns a context made from the name's directory", function()
    local ctx = hooks.SNICallback("mail.example.com")
    assert.is_table(ctx)
    assert.are.equal(dir .. "/mail.example.com/cert.pem", ctx.cert)
    assert.are.equal(dir .. "/mail.example.com/key.pem", ctx.key)
  end)

  it("ignores the case of the name", function()
    assert.are.equal(dir .. "/mail.example.com/cert.pem", hooks.SNICallback("MAIL.Example.COM").cert)
  end)

  it("returns nil (the default certificate) for unknown names", function()
    assert.is_nil(hooks.SNICallback("unknown.example"))
  end)

  it("never leaves its directory", function()
    for _, name in ipairs { "../mail.example.com", "mail.example.com/../mail.example.com", "..", "a/b", "" } do
      assert.is_nil(hooks.SNICallback(name), name)
    end
  end)

  it("logs a pair it cannot load and serves the default", function()
    assert.is_nil(hooks.SNICallback("broken.example"))
    local last = fake.logs[#fake.logs]
    assert.are.equal("error", last.level)
    assert.are.equal("broken.example", last.fields.servername)
  end)
end)

describe("sni-directory.lua through the server", function()
  local server, pki
  lazy_setup(function()
    pki = testing.pki()
    server = assert(testing.server(SCRIPT, { env = { LUASMTPD_SNI_DIR = sni_dir(pki) } }))
  end)
  lazy_teardown(function()
    if server then server:stop() end
  end)

  local function certificate_for(servername, verify)
    local c = assert(server:client())
    c:ehlo("me.example")
    local code, err = c:starttls { servername = servername, cafile = verify and pki.ca or nil }
    assert(code == 220, tostring(err) .. "\n" .. c:transcript())
    c:ehlo("me.example")
    assert.reply(c, 250)
    c:quit()
    return c:peer_certificate()
  end

  it("serves the certificate of the name the client asks for", function()
    local cert = certificate_for("mail.example.com", true)
    assert.are.equal("mail.example.com", cert.subject.CN)
    assert.are.equal("luasmtpd test CA", cert.issuer.CN)
  end)

  it("serves the default certificate to other names and to clients without SNI", function()
    assert.are.equal("localhost", certificate_for("unknown.example").subject.CN)
    assert.are.equal("localhost", certificate_for(nil).subject.CN)
  end)

  it("serves the default when a pair is broken, and says so in the log", function()
    assert.are.equal("localhost", certificate_for("broken.example").subject.CN)
    assert.matches("cannot load certificate[^\n]*servername=broken.example", server:log())
  end)
end)
