local maildir = require "smtp.maildir"

local function tmpdir()
  local p = os.tmpname()
  os.remove(p)
  return p
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function list(dir)
  local names = {}
  local p = io.popen("ls -1 '" .. dir .. "'")
  for line in p:lines() do names[#names + 1] = line end
  p:close()
  return names
end

-- A stand-in for the core's stream: save() writes prefix + body like the C one.
local function fake_stream(body, fail)
  return {
    byteLength = #body,
    save = function(_, path, prefix)
      if fail then return nil, fail end
      local f = assert(io.open(path, "wb"))
      f:write(prefix or "", body)
      f:close()
      return true
    end,
  }
end

local session = {
  id = "abcdefghijklmnop", remoteAddress = "192.0.2.7", clientHostname = "[192.0.2.7]",
  hostNameAppearsAs = "client.example", transmissionType = "ESMTP",
  envelope = { rcptTo = { { address = "rcpt@example.org" } } },
}

describe("smtp.maildir", function()
  it("creates tmp, new and cur", function()
    local dir = tmpdir()
    assert(maildir.open(dir))
    for _, sub in ipairs { "tmp", "new", "cur" } do
      assert.are.same({}, list(dir .. "/" .. sub))
    end
  end)

  it("delivers into new/ with a Received header and the exact body", function()
    local dir = tmpdir()
    local box = assert(maildir.open(dir))
    local body = "Subject: x\r\n\r\n.leading dot\r\n\200\255 8-bit\r\n"
    local path = assert(box:deliver(fake_stream(body), session, "mx.example"))
    assert.are.same({}, list(dir .. "/tmp"))
    assert.are.equal(1, #list(dir .. "/new"))
    local stored = read(path)
    local header, rest = stored:match("^(Received: .-\r\n)([^\t].*)$")
    assert.is_truthy(header)
    assert.are.equal(body, rest)
    assert.is_truthy(header:find("from client.example (unknown [192.0.2.7])", 1, true))
    assert.is_truthy(header:find("by mx.example (luasmtpd) with ESMTP id abcdefghijklmnop", 1, true))
    assert.is_truthy(header:find("for <rcpt@example.org>;", 1, true))
  end)

  it("gives every message its own name", function()
    local seen = {}
    for _ = 1, 1000 do
      local n = maildir.unique_name()
      assert.is_nil(seen[n])
      seen[n] = true
      assert.is_nil(n:find("[/:]"))
    end
  end)

  it("leaves nothing behind when the body cannot be saved", function()
    local dir = tmpdir()
    local box = assert(maildir.open(dir))
    local path, err = box:deliver(fake_stream("x", "disk full"), session, "mx")
    assert.is_nil(path)
    assert.matches("disk full", err)
    assert.are.same({}, list(dir .. "/new"))
    assert.are.same({}, list(dir .. "/tmp"))
  end)

  it("runs check on the file in tmp/ before new/: its refusal keeps the message out", function()
    local dir = tmpdir()
    local box = assert(maildir.open(dir))
    local seen
    local path, err, reply = box:deliver(fake_stream("x\r\n"), session, "mx", function(p)
      seen = { path = p, body = read(p), new = list(dir .. "/new") }
      return nil, "the check's reply"
    end)
    assert.is_nil(path)
    assert.is_string(err)
    assert.are.equal("the check's reply", reply)
    assert.matches("/tmp/", seen.path)
    assert.matches("\r\n\r?\n?x\r\n$", seen.body)
    assert.are.same({}, seen.new)
    assert.are.same({}, list(dir .. "/new"))
    assert.are.same({}, list(dir .. "/tmp"))
    path = assert(box:deliver(fake_stream("y\r\n"), session, "mx", function() return true end))
    assert.are.equal("y\r\n", read(path):sub(-3))
  end)

  it("writes Postfix's TCP-info: unknown without a confirmed name, IPv6: literals", function()
    local function first_line(over)
      local s = {}
      for k, v in pairs(session) do s[k] = v end
      for k, v in pairs(over) do s[k] = v end
      return maildir.received_header(s, "mx"):match("^[^\r]*")
    end
    assert.are.equal("Received: from client.example (unknown [192.0.2.7])", first_line {})
    assert.are.equal("Received: from client.example (mx.client.example [192.0.2.7])",
      first_line { clientHostname = "mx.client.example" })
    assert.are.equal("Received: from client.example (unknown [IPv6:2001:db8::7])",
      first_line { remoteAddress = "2001:db8::7", clientHostname = "[2001:db8::7]" })
  end)

  it("syncs new/ after the rename, and takes nothing when it cannot", function()
    local smtp = require "smtp"
    local real = smtp.fsync_dir
    local dir = tmpdir()
    local box = assert(maildir.open(dir))
    local synced = {}
    smtp.fsync_dir = function(path)
      synced[#synced + 1] = { path = path, new = list(dir .. "/new") }
      return nil, "Input/output error"
    end
    local path, err = box:deliver(fake_stream("x\r\n"), session, "mx")
    smtp.fsync_dir = real
    assert.is_nil(path)
    assert.matches("Input/output error", err)
    assert.are.equal(1, #synced)
    assert.are.equal(dir .. "/new", synced[1].path)
    assert.are.equal(1, #synced[1].new) -- after the rename
    assert.are.same({}, list(dir .. "/new"))
    assert.are.same({}, list(dir .. "/tmp"))
  end)

  it("folds the header with CRLF and a tab, never a bare LF", function()
    local h = maildir.received_header(session, "mx")
    assert.is_nil(h:gsub("\r\n", ""):find("[\r\n]"))
    assert.are.equal("\r\n", h:sub(-2))
  end)
end)
