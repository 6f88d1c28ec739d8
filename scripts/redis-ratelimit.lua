-- redis-ratelimit.lua: at most $LUASMTPD_RATE_LIMIT recipients (default
-- 100) per $LUASMTPD_RATE_WINDOW seconds (default 3600) for each
-- authenticated user, or for each client IP when there is none, counted in
-- Redis with lua-resty-redis, so the limit holds across workers and
-- servers. Over the limit: 451 4.7.1 (try again later).
--
-- The window is fixed: it starts at the first recipient counted, INCR and
-- EXPIRE .. NX travel together in one pipeline, and the key goes away with
-- its window. Connections are pooled (set_keepalive), so a recipient costs
-- one round trip, not a TCP connect.
--
-- Redis is $LUASMTPD_REDIS_HOST:$LUASMTPD_REDIS_PORT (127.0.0.1:6379),
-- each step bounded by $LUASMTPD_REDIS_TIMEOUT_MS milliseconds (100).
-- When Redis cannot answer, the policy fails open (the recipient is taken
-- and a warning logged) unless $LUASMTPD_RATE_FAIL is "closed" (then 451
-- 4.3.0, so senders retry instead of mail going unchecked).
--
-- lua-resty-redis: copy its lib/resty tree into lib/ next to this script,
-- or put its folder on LUA_PATH ("/path/lib/?.lua;;").
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
package.path = here .. "lib/?.lua;" .. package.path
require "smtp.ngx" -- the global ngx, before lua-resty-redis
local redis = require "resty.redis"
local smtp = require "smtp"

local HOST = os.getenv("LUASMTPD_REDIS_HOST") or "127.0.0.1"
local PORT = tonumber(os.getenv("LUASMTPD_REDIS_PORT")) or 6379
local TIMEOUT_MS = tonumber(os.getenv("LUASMTPD_REDIS_TIMEOUT_MS")) or 100
local LIMIT = tonumber(os.getenv("LUASMTPD_RATE_LIMIT")) or 100
local WINDOW = tonumber(os.getenv("LUASMTPD_RATE_WINDOW")) or 3600
local FAIL_CLOSED = os.getenv("LUASMTPD_RATE_FAIL") == "closed"
local POOL_IDLE_MS, POOL_SIZE = 60000, 32

-- This recipient counted against who sends it: the count so far, or
-- nil, err when Redis did not answer.
local function count(who)
  local red = redis:new()
  red:set_timeouts(TIMEOUT_MS, TIMEOUT_MS, TIMEOUT_MS)
  local ok, err = red:connect(HOST, PORT)
  if not ok then return nil, "connect: " .. err end
  local key = "rate:" .. who
  red:init_pipeline()
  red:incr(key)
  red:expire(key, WINDOW, "NX")
  local res, perr = red:commit_pipeline()
  if not res then
    red:close()
    return nil, perr
  end
  red:set_keepalive(POOL_IDLE_MS, POOL_SIZE)
  local n = res[1] -- an error reply in a pipeline is {false, err}
  if type(n) ~= "number" then return nil, "INCR: " .. tostring(type(n) == "table" and n[2] or n) end
  return n
end

return {
  name = os.getenv("LUASMTPD_NAME") or "mx.example.org",
  authOptional = true,

  onRcptTo = function(_, session)
    local who = session.user and "user:" .. session.user or "ip:" .. session.remoteAddress
    local n, err = count(who)
    if not n then
      smtp.log.warn("rate limit: redis unavailable",
        { who = who, err = err, failing = FAIL_CLOSED and "closed" or "open" })
      if FAIL_CLOSED then return nil, smtp.reject(451, "4.3.0 rate limit check unavailable, try again later") end
      return
    end
    if n > LIMIT then
      return nil, smtp.reject(451, string.format("4.7.1 too many recipients (%d per %d s), try again later",
        LIMIT, WINDOW))
    end
  end,
}
