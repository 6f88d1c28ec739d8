-- smtp.testing.reply: the reply a client gets for a hook's verdict,
-- worked out as the core works it out (testing.call), from the core's own
-- reply catalogue, so the kit and the core cannot disagree.
local M = {}

-- The core's reply catalogue: the kit's replies are the core's.
local REPLIES = require "smtp.replies"

local unpack = unpack or table.unpack

local function pack(...)
  return { n = select("#", ...), ... }
end

-- Does text start with an enhanced status code ("5.7.1", "5.7.1 ...")?
local function has_enhanced(text)
  return text:match("^[245]%.%d%d?%d?%.%d%d?%d?$") or text:match("^[245]%.%d%d?%d?%.%d%d?%d? ")
end

local function with_enhanced(code, text)
  if has_enhanced(text) then return text end
  local e = REPLIES.enhanced[code] or (code >= 500 and "5.0.0" or code >= 400 and "4.0.0" or "2.0.0")
  return e .. " " .. text
end

-- code, "enhanced text" of a catalogue reply; text replaces its text (and
-- keeps its own enhanced code if it starts with one).
local function catalogue_reply(reply, text)
  if text ~= nil and has_enhanced(text) then return reply[1], text end
  return reply[1], reply[2] .. " " .. (text or reply[3])
end

-- The reply the core gives when a hook accepts (the hooks without a reply
-- of their own let the session go on: onConnect greets, onSecure and
-- SNICallback carry on with TLS).
local ACCEPT = {
  onConnect = { 220, "ESMTP" },
  onSecure = { 220, "2.0.0 Ready" },
  SNICallback = { 220, "2.0.0 Ready" },
  onAuth = { catalogue_reply(REPLIES.authAccepted) },
  onMailFrom = { catalogue_reply(REPLIES.mailAccepted) },
  onRcptTo = { catalogue_reply(REPLIES.rcptAccepted) },
  onData = { catalogue_reply(REPLIES.messageQueued) },
  onClose = { 250, "2.0.0 OK" },
  onError = { 250, "2.0.0 OK" },
}

local function rejection(name, value)
  local code, text = REPLIES.rejectCode[name], REPLIES.rejected
  if type(value) == "table" then
    if type(value.code) == "number" and value.code >= 400 and value.code <= 599 then code = value.code end
    if value.message ~= nil then text = tostring(value.message) end
  elseif value ~= nil then
    text = tostring(value)
  end
  return code, with_enhanced(code, text)
end

--- Calls hooks[name](...) as the core would and returns the reply the
--- client would get: code, text (text with its enhanced code). A hook that
--- raised a plain error gives 451 and the error as a third value.
function M.call(hooks, name, ...)
  local fn = hooks[name]
  if not fn then return unpack(ACCEPT[name] or { 250, "2.0.0 OK" }) end
  local r = pack(pcall(fn, ...))
  local smtp = require "smtp"
  if not r[1] then
    if smtp.is_reject(r[2]) then return rejection(name, r[2]) end
    local code, text = catalogue_reply(REPLIES.internalError)
    return code, text, r[2]
  end
  if r.n >= 3 and not r[2] and r[3] ~= nil then return rejection(name, r[3]) end
  if smtp.is_reject(r[2]) then return rejection(name, r[2]) end
  if name == "onAuth" then
    if type(r[2]) ~= "table" or r[2].user == nil then return catalogue_reply(REPLIES.authNoUser) end
    if r[2].message ~= nil then return catalogue_reply(REPLIES.authAccepted, tostring(r[2].message)) end
  end
  if name == "onData" and type(r[2]) == "string" then
    return catalogue_reply(REPLIES.messageQueued, r[2])
  end
  return unpack(ACCEPT[name] or { 250, "2.0.0 OK" })
end

M.has_enhanced = has_enhanced

return M
