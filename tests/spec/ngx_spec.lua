-- smtp.ngx: the pure-Lua parts under plain busted, and the known vectors
-- (digests, base64, ngx.re) inside the real server, where the C modules are.
local testing = require "smtp.testing"

describe("smtp.ngx", function()
  local saved
  setup(function()
    saved = rawget(_G, "ngx")
    package.loaded["smtp.ngx"] = nil
    require "smtp.ngx"
  end)
  teardown(function() _G.ngx = saved end)

  it("installs the global ngx and returns the module", function()
    assert.equal(require("smtp.ngx").ngx, ngx)
  end)

  it("raises an error naming a field it does not offer", function()
    assert.has_error(function() return ngx.foo end, "ngx.foo is not offered by luasmtpd")
    assert.has_error(function() return ngx.re.split end, "ngx.re.split is not offered by luasmtpd")
    assert.has_error(function() ngx.status = 200 end, "ngx.status is not offered by luasmtpd")
    assert.has_error(function() ngx.req.get_headers() end, "ngx.req.get_headers is not offered by luasmtpd")
  end)

  it("has lua-nginx-module's constants", function()
    assert.same({ 0, 4, 5, 8 }, { ngx.STDERR, ngx.ERR, ngx.WARN, ngx.DEBUG })
    assert.same({ 0, -1, -2, -4, -5 }, { ngx.OK, ngx.ERROR, ngx.AGAIN, ngx.DONE, ngx.DECLINED })
    assert.equal(require("cjson").null, ngx.null)
  end)

  it("escapes and unescapes URIs as lua-nginx-module does", function()
    assert.equal("a%20%E4%BD%A0", ngx.escape_uri("a 你"))
    assert.equal("a%2Bb", ngx.escape_uri("a+b"))
    assert.equal("/a%20b%23c", ngx.escape_uri("/a b#c", 0))
    assert.equal("a b", ngx.unescape_uri("a+b"))
    assert.equal("100%zz", ngx.unescape_uri("100%zz"))
    assert.equal("", ngx.unescape_uri(nil))
  end)

  it("encodes and decodes query arguments", function()
    assert.equal("b%20r=hello%20world&foo=3", ngx.encode_args({ foo = 3, ["b r"] = "hello world" }))
    assert.equal("a&c=1&c=2", ngx.encode_args({ a = true, b = false, c = { 1, 2 } }))
    assert.same({ a = "bar", b = "foo" }, ngx.decode_args("a=bar&b=foo"))
    assert.same({ a = { "bar", "baz" } }, ngx.decode_args("a=bar&a=baz"))
    assert.same({ a = true, b = "", ["a b"] = "c d" }, ngx.decode_args("a&b=&a+b=c%20d"))
    assert.same({ a = "1" }, ngx.decode_args("a=1&b=2", 1))
  end)

  it("offers resty.string's to_hex", function()
    assert.equal("00ff41", require("resty.string").to_hex("\0\255A"))
  end)

  it("passes the known vectors inside the server", function()
    local ok, out = testing.check("tests/spec/ngx_vectors.lua")
    assert(ok, out)
  end)
end)
