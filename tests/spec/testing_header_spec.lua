-- testing.stream's header edits behave as the core's (tests/unit/test_message.c
-- and tests/e2e/test_header_edits.py show the same cases on the server).
local testing = require "smtp.testing"

local function readall(s)
  local parts = {}
  for chunk in s:chunks() do parts[#parts + 1] = chunk end
  return table.concat(parts)
end

describe("testing.stream header edits", function()
  it("prepends, adds and removes every field of a name, folded or not", function()
    local s = testing.stream("X-Remove-Me: one\r\nFrom: a\r\nx-REMOVE-me: two\r\n\tcont\r\n\r\nX-Remove-Me: body\r\n",
      { chunkSize = 7 })
    assert.is_true(s:prependHeader("Received", "from x"))
    assert.is_true(s:addHeader("X-Spam-Status", "No"))
    assert.is_true(s:removeHeader("x-remove-me"))
    assert.are.equal("Received: from x\r\nFrom: a\r\nX-Spam-Status: No\r\n\r\nX-Remove-Me: body\r\n", readall(s))
    assert.are.equal(73, s.byteLength) -- the bytes received
    assert.are.same({ nil, "header already read" }, { s:addHeader("X-Late", "1") })
  end)

  it("folds a long value at 78 columns as the core does", function()
    local s = testing.stream("\r\n")
    s:addHeader("Authentication-Results", "pass (sender SPF authorized) smtp.mailfrom=someone@example.org "
      .. "dkim=pass header.d=example.org header.s=selector1 dmarc=pass")
    assert.are.equal("Authentication-Results: pass (sender SPF authorized)\r\n"
      .. " smtp.mailfrom=someone@example.org dkim=pass header.d=example.org\r\n"
      .. " header.s=selector1 dmarc=pass\r\n\r\n", s:read())
  end)

  it("keeps a value's own folds and takes 8-bit bytes", function()
    local s = testing.stream("A: 1\nB: 2\n\nbody\n")
    s:addHeader("X", "a\n\tb \195\169")
    assert.are.equal("A: 1\nB: 2\nX: a\r\n\tb \195\169\r\n\nbody\n", s:read())
  end)

  it("ends a message of only a header before the added field", function()
    local s = testing.stream("A: 1\r\nB: 2")
    s:addHeader("X-A", "1")
    assert.are.equal("A: 1\r\nB: 2\r\nX-A: 1\r\n", s:read())
  end)

  it("refuses bad names and values with nil, err", function()
    local s = testing.stream("A: 1\r\n\r\n")
    for _, nv in ipairs { { "Bad Name", "v" }, { "Bad:", "v" }, { "", "v" }, { "\195\169", "v" } } do
      assert.are.same({ nil, "bad header name" }, { s:addHeader(nv[1], nv[2]) })
    end
    for _, v in ipairs { "a\r\nb", "a\nb", "a\rb", "a\0b", "a\r\n" } do
      assert.are.same({ nil, "bad header value" }, { s:addHeader("X", v) })
    end
    assert.has_error(function() s:addHeader("X") end)
    local dir = testing.tmpdir()
    assert.is_true(s:save(dir .. "/m", "Received: x\r\n"))
    assert.are.equal("Received: x\r\nA: 1\r\n\r\n", testing.read_file(dir .. "/m"))
  end)
end)
