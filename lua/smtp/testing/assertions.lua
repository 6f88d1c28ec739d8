-- smtp.testing.assertions: checks on a client's last reply whose failure
-- message is the whole SMTP transcript: testing.check_reply,
-- testing.assert_reply and, under busted, assert.reply.
local reply = require "smtp.testing.reply"

local M = {}

local has_enhanced = reply.has_enhanced

local function describe_expectation(code, expected)
  return tostring(code) .. (expected and " " .. expected or "")
end

--- Does client's last reply have this code (and enhanced code, e.g.
--- "5.7.1", or a Lua pattern found in the text)? true, or false and a
--- message that holds the whole transcript.
function M.check_reply(client, code, expected)
  local ok = client.code == code
  if ok and expected then
    if has_enhanced(expected) and not expected:find(" ") then
      ok = client.text:sub(1, #expected + 1) == expected .. " " or client.text == expected
    else
      ok = client.text:find(expected) ~= nil
    end
  end
  if ok then return true end
  local got = client.code and (client.code .. " " .. tostring(client.text):gsub("\n", " | "))
    or ("no reply (" .. tostring(client.text) .. ")")
  return false, string.format("expected SMTP reply %s, got %s\nSMTP transcript:\n%s",
    describe_expectation(code, expected), got, client:transcript())
end

--- Raises an error holding the whole transcript unless the last reply
--- matches (see check_reply). Returns the client.
function M.assert_reply(client, code, expected)
  local ok, message = M.check_reply(client, code, expected)
  if not ok then error(message, 2) end
  return client
end

-- assert.reply(client, 250[, "2.1.5"]) and assert.is_not.reply(...) for
-- busted users; the failure message is the transcript, unformatted.
local function register_assertion()
  local has_luassert, luassert = pcall(require, "luassert")
  local has_say, say = pcall(require, "say")
  if not (has_luassert and has_say) then return end
  say:set("assertion.reply.positive", "%s")
  say:set("assertion.reply.negative", "%s")
  luassert:register("assertion", "reply", function(state, arguments)
    local client, code, expected = arguments[1], arguments[2], arguments[3]
    local ok, message = M.check_reply(client, code, expected)
    if state.mod == false and ok then
      message = string.format("expected SMTP reply other than %s, got it\nSMTP transcript:\n%s",
        describe_expectation(code, expected), client:transcript())
    end
    arguments[1], arguments.n, arguments.nofmt = message or "", 1, { true }
    return ok
  end, "assertion.reply.positive", "assertion.reply.negative")
end
-- Only under busted (luassert already loaded).
if package.loaded.luassert then register_assertion() end

return M
