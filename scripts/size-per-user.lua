-- size-per-user.lua: message size limits per authenticated user.
--
-- $LUASMTPD_SIZE_LIMITS = "alice=1048576,bob=52428800" (bytes); users not
-- listed get $LUASMTPD_SIZE_DEFAULT (default 1 MiB). Users and passwords
-- come from auth-file.lua. A limit is checked twice: against the SIZE a
-- client declares in MAIL FROM (refused before any byte is sent), and
-- against the body itself in onData. Both refusals are 552 5.3.4.
local smtp = require "smtp"

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local auth = dofile(here .. "auth-file.lua") -- reuse its onAuth

local default = tonumber(os.getenv("LUASMTPD_SIZE_DEFAULT")) or 1024 * 1024
local limits, largest = {}, default
for user, bytes in (os.getenv("LUASMTPD_SIZE_LIMITS") or ""):gmatch("([^,=%s]+)=(%d+)") do
  limits[user] = tonumber(bytes)
  largest = math.max(largest, limits[user])
end

local function limit_for(session)
  return limits[session.user] or default
end

local function too_big(limit)
  return smtp.reject(552, string.format("5.3.4 Error: message exceeds your limit of %d bytes", limit))
end

return {
  listen = os.getenv("LUASMTPD_LISTEN") or "127.0.0.1:587",
  name = os.getenv("LUASMTPD_NAME") or "localhost",
  -- The core advertises SIZE and enforces the largest limit by itself;
  -- the hooks enforce each user's.
  size = largest,
  authOptional = false,
  onAuth = auth.onAuth,

  onMailFrom = function(address, session)
    local declared = tonumber(address.args.SIZE)
    local limit = limit_for(session)
    if declared and declared > limit then return nil, too_big(limit) end
  end,

  onData = function(stream, session)
    local limit = limit_for(session)
    for _ in stream:chunks() do
      -- byteLength grows as the body arrives; stop reading once over: the
      -- core drains the rest before it replies.
      if stream.byteLength > limit then return nil, too_big(limit) end
    end
    return string.format("OK: %d bytes accepted", stream.byteLength)
  end,
}
