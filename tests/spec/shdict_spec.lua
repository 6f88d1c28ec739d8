-- lua/smtp/ngx/shdict.lua: under plain busted a policy that declares shared
-- dictionaries still loads, and its dictionaries answer as ngx.shared.DICT
-- does in the server (tests/e2e/test_shdict.py checks the same answers there).
local shdict = require "smtp.ngx.shdict"

local function pack(...) return { n = select("#", ...), ... } end

describe("smtp.ngx.shdict outside the server", function()
  it("declares dictionaries reachable through shared", function()
    local d = shdict.declare("spec", "64k")
    assert.are.equal(d, shdict.shared.spec)
    assert.are.equal(65536, d:capacity())
  end)

  it("answers as lua-nginx-module", function()
    local d = shdict.declare("answers", 8192)
    assert.are.same({ n = 3, true, nil, false }, pack(d:add("a", 1)))
    assert.are.same({ n = 3, false, "exists", false }, pack(d:add("a", 2)))
    assert.are.same({ n = 3, false, "not found", false }, pack(d:replace("zz", 1)))
    assert.are.same({ n = 2, nil, "not found" }, pack(d:incr("zz", 1)))
    assert.are.same({ n = 3, 5, nil, false }, pack(d:incr("zz", 1, 4)))
    assert.are.same({ n = 1, 6 }, pack(d:incr("zz", 1)))
    d:set("s", "x", 0, 7)
    assert.are.same({ n = 2, "x", 7 }, pack(d:get("s")))
    assert.are.same({ n = 2, nil, "not a number" }, pack(d:incr("s", 1)))
    assert.are.same({ n = 2, nil, "empty key" }, pack(d:get("")))
    assert.are.same({ n = 2, nil, "not found" }, pack(d:ttl("nope")))
    assert.are.equal(0, d:ttl("a"))
    d:delete("a")
    assert.is_nil(d:get("a"))
  end)

  it("expires entries and keeps them stale", function()
    local d = shdict.declare("expiry", 8192)
    d:set("k", "v", 0.05)
    assert.are.equal("v", d:get("k"))
    local socket = require "socket"
    socket.sleep(0.1)
    assert.is_nil(d:get("k"))
    assert.are.same({ n = 3, "v", nil, true }, pack(d:get_stale("k")))
    assert.are.equal(1, d:flush_expired())
    assert.are.same({}, d:get_keys())
  end)
end)
