-- scripts/inbound-checks.lua: an MX asking OpenDKIM (verify), OpenDMARC
-- and rspamd about each message. Its options, then the real server with
-- those daemons, started by the spec.
local testing = require "smtp.testing"
local daemons = dofile("tests/spec/milter_daemons.lua")

local SCRIPT = "scripts/inbound-checks.lua"

-- The unfolded values of the header fields called name in message.
local function header_values(message, name)
  local head = message:match("^(.-\r\n)\r\n") or message
  local out = {}
  for field in (head:gsub("\r\n[ \t]+", " ")):gmatch("[^\r\n]+") do
    local n, v = field:match("^([^:]+):%s*(.*)$")
    if n and n:lower() == name:lower() then out[#out + 1] = v end
  end
  return out
end

describe("inbound-checks.lua options", function()
  it("declares the milters of LUASMTPD_MILTERS in order, tempfail when one fails", function()
    local options = assert(testing.load(SCRIPT, { env = { LUASMTPD_MAILDIR = testing.tmpdir(),
      LUASMTPD_MILTERS = "inet:127.0.0.1:1 unix:/run/x.sock", LUASMTPD_MILTER_TIMEOUT = "7" } }))
    assert.are.same({ "inet:127.0.0.1:1", "unix:/run/x.sock" }, options.milters)
    assert.are.equal("tempfail", options.milterDefaultAction)
    assert.are.equal(7, options.milterCommandTimeout)
    assert.are.equal(7, options.milterContentTimeout)
    assert.is_true(options.authOptional)
  end)
end)

describe("inbound-checks.lua with real OpenDKIM, OpenDMARC and rspamd", function()
  local milters, server, maildir

  lazy_setup(function()
    milters = daemons.start()
    maildir = testing.tmpdir()
    server = assert(testing.server(SCRIPT, { env = { LUASMTPD_MILTERS = milters.info.inbound,
      LUASMTPD_MAILDIR = maildir } }))
  end)
  lazy_teardown(function()
    if server then server:stop() end
    if milters then milters:stop() end
  end)

  local function send(message, code)
    local c = assert(server:client())
    c:ehlo("client.example")
    c:mail("alice@" .. milters.info.domain)
    c:rcpt("bob@example.org")
    c:data(message)
    assert.reply(c, code)
    c:quit()
  end

  local function results(stored, who)
    local out = {}
    for _, v in ipairs(header_values(stored, "Authentication-Results")) do
      if v:sub(1, #who + 1) == who .. ";" then out[#out + 1] = v end
    end
    return out
  end

  it("stamps dkim=pass and DMARC's result on a signed message, rspamd's headers, body unchanged", function()
    send(milters.signed, 250)
    local files = daemons.maildir_files(maildir)
    assert.are.equal(1, #files)
    local stored = assert(testing.read_file(files[1]))
    local dkim = results(stored, milters.info.authserv.dkim)
    assert.are.equal(1, #dkim)
    assert.truthy(dkim[1]:find("dkim=pass", 1, true), dkim[1])
    local dmarc = results(stored, milters.info.authserv.dmarc)
    assert.are.equal(1, #dmarc)
    assert.truthy(dmarc[1]:find("p=reject", 1, true), dmarc[1])
    assert.truthy((header_values(stored, "X-Spam-Status")[1] or ""):find("^No, score="), stored)
    assert.are.equal(milters.signed:match("\r\n\r\n(.*)$"), stored:match("\r\n\r\n(.*)$"))
  end)

  it("refuses an executable attachment as attachments.lua does, and stores nothing", function()
    local before = #daemons.maildir_files(maildir)
    local exe = table.concat({ "From: alice@" .. milters.info.domain, "To: bob@example.org", "Subject: invoice",
      "MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="b1"', "", "--b1",
      "Content-Type: text/plain", "", "see the file", "--b1",
      "Content-Type: application/octet-stream", 'Content-Disposition: attachment; filename="invoice.pdf.exe"',
      "Content-Transfer-Encoding: base64", "", "TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAA", "--b1--", "" },
      "\r\n")
    local c = assert(server:client())
    c:ehlo("client.example")
    c:mail("alice@" .. milters.info.domain)
    c:rcpt("bob@example.org")
    local code, text = c:data(exe)
    c:quit()
    assert.are.equal(550, code, text)
    assert.matches("^5%.7%.1 .*name invoice%.pdf%.exe", text)
    assert.are.equal(before, #daemons.maildir_files(maildir))
    -- nothing left in tmp/ either
    local p = io.popen("ls -A '" .. maildir .. "/tmp'")
    local left = p:read("*a")
    p:close()
    assert.are.equal("", left)
  end)

  it("stores a message whose attachment is a document", function()
    local before = #daemons.maildir_files(maildir)
    send(table.concat({ "From: alice@" .. milters.info.domain, "To: bob@example.org", "Subject: report",
      "MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="b1"', "", "--b1",
      "Content-Type: text/plain", "", "see the file", "--b1",
      'Content-Type: application/pdf; name="report.pdf"', "Content-Transfer-Encoding: base64", "",
      "JVBERi0xLjQK", "--b1--", "" }, "\r\n"), 250)
    assert.are.equal(before + 1, #daemons.maildir_files(maildir))
  end)

  it("refuses the GTUBE message with rspamd's 554 5.7.1 and stores nothing", function()
    local before = #daemons.maildir_files(maildir)
    send("Subject: test\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n", 554)
    assert.are.equal(before, #daemons.maildir_files(maildir))
  end)
end)
