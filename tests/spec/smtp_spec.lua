-- The pure-Lua side of the smtp module, as a policy author's busted run sees it.
local smtp = require "smtp"

describe("smtp.reject", function()
  it("builds a rejection with code and message", function()
    local r = smtp.reject(550, "5.1.1 no such user")
    assert.are.equal(550, r.code)
    assert.are.equal("5.1.1 no such user", r.message)
    assert.is_true(smtp.is_reject(r))
    assert.are.equal("550 5.1.1 no such user", tostring(r))
  end)

  it("has a default message", function()
    assert.are.equal("Error: rejected", smtp.reject(451).message)
  end)

  it("refuses codes that are not 4xx/5xx", function()
    assert.has_error(function() smtp.reject(250, "ok") end)
    assert.has_error(function() smtp.reject("550", "x") end)
    assert.has_error(function() smtp.reject(550.5, "x") end)
    assert.has_error(function() smtp.reject(550, 42) end)
  end)

  it("is not confused with plain tables", function()
    assert.is_false(smtp.is_reject({ code = 550, message = "x" }))
    assert.is_false(smtp.is_reject("550 x"))
  end)
end)

describe("smtp.log", function()
  it("has the four levels", function()
    for _, level in ipairs { "debug", "info", "warn", "error" } do
      assert.is_function(smtp.log[level])
    end
  end)
end)

describe("smtp.sleep outside the server", function()
  it("explains that it needs the runtime", function()
    assert.has_error(function() smtp.sleep(0) end, "smtp.sleep needs the luasmtpd runtime")
  end)
end)
