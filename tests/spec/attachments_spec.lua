-- scripts/attachments.lua: executable attachments refused (550 5.7.1) by
-- type or file name, read by smtp.mime inside the real server.
local testing = require "smtp.testing"

local SCRIPT = "scripts/attachments.lua"

local function message(parts)
  local out = { "From: a@example.org", "To: b@example.org", "Subject: files", "MIME-Version: 1.0",
    'Content-Type: multipart/mixed; boundary="b1"', "", "--b1", "Content-Type: text/plain", "", "see the file" }
  for _, head in ipairs(parts) do
    out[#out + 1] = "--b1"
    out[#out + 1] = head
    out[#out + 1] = "Content-Transfer-Encoding: base64"
    out[#out + 1] = ""
    out[#out + 1] = "TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
  end
  out[#out + 1] = "--b1--"
  return table.concat(out, "\r\n") .. "\r\n"
end

describe("attachments.lua through the server", function()
  local server
  lazy_setup(function()
    server = assert(testing.server(SCRIPT))
  end)
  lazy_teardown(function()
    if server then server:stop() end
  end)

  local function send(body)
    local c = assert(server:client())
    c:ehlo("me.example")
    c:mail("a@example.org")
    c:rcpt("b@example.org")
    local code, text = c:data(body)
    c:quit()
    return code, text
  end

  it("takes a message whose attachments are documents", function()
    local code, text = send(message {
      'Content-Type: application/pdf; name="report.pdf"\r\nContent-Disposition: attachment; filename="report.pdf"' })
    assert.are.equal(250, code, text)
  end)

  it("refuses an attachment by its file name's extension, any case", function()
    local code, text = send(message {
      'Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="invoice.pdf.EXE"' })
    assert.are.equal(550, code)
    assert.matches("^5%.7%.1 .*name invoice%.pdf%.EXE", text)
  end)

  it("refuses an attachment by its content type, whatever its name", function()
    local code, text = send(message { 'Content-Type: application/x-msdownload; name="photo.jpg"' })
    assert.are.equal(550, code)
    assert.matches("type application/x%-msdownload", text)
  end)

  it("reads RFC 2231 names, and shows their non-ASCII bytes as ?", function()
    local code, text = send(message {
      "Content-Type: application/octet-stream\r\nContent-Disposition: attachment;\r\n" ..
      " filename*0*=UTF-8''%C3%A9t%C3%A9;\r\n filename*1*=.scr" })
    assert.are.equal(550, code)
    assert.matches("name %?%?t%?%?%.scr", text)
  end)

  it("finds an executable inside a forwarded message", function()
    local inner = message { 'Content-Type: application/octet-stream; name="setup.msi"' }
    local code, text = send(message { "Content-Type: message/rfc822\r\nContent-Disposition: attachment" }
      :gsub("Content%-Transfer%-Encoding: base64\r\n\r\nTVqQ[^\r]*", "\r\n" .. inner:gsub("%%", "%%%%")))
    assert.are.equal(550, code, text)
    assert.matches("name setup%.msi", text)
  end)
end)

describe("attachments.lua with its own list of extensions", function()
  local server
  lazy_setup(function()
    server = assert(testing.server(SCRIPT, { env = { LUASMTPD_BLOCKED_EXTENSIONS = "zip, .iso" } }))
  end)
  lazy_teardown(function()
    if server then server:stop() end
  end)

  it("refuses what the list names and takes what it no longer does", function()
    local c = assert(server:client())
    c:ehlo("me.example")
    c:mail("a@example.org")
    c:rcpt("b@example.org")
    assert.are.equal(550, (c:data(message { 'Content-Type: application/zip; name="a.ZIP"' })))
    c:mail("a@example.org")
    c:rcpt("b@example.org")
    assert.are.equal(550, (c:data(message { 'Content-Type: application/octet-stream; name="disk.iso"' })))
    c:mail("a@example.org")
    c:rcpt("b@example.org")
    assert.are.equal(250, (c:data(message { 'Content-Type: application/octet-stream; name="setup.exe"' })))
    c:quit()
  end)
end)
