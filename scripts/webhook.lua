-- webhook.lua: every message, with its envelope, POSTed as JSON to a web
-- service with lua-resty-http; the service's answer decides the SMTP reply.
-- A 2xx status takes the message (250); any other status, a timeout or no
-- connection makes it 451 4.3.0, so the sender keeps the message and tries
-- again later: nothing is lost while the service is down.
--
-- The URL is $LUASMTPD_WEBHOOK_URL (default http://127.0.0.1:8080/mail;
-- https works too), each step
-- bounded by $LUASMTPD_WEBHOOK_TIMEOUT_MS milliseconds (5000). Connections
-- are kept in a pool (keepalive), so consecutive messages reuse one.
--
-- The body is {id, remoteAddress, user, from, to = [...], size, message}
-- with the message base64-encoded: a message may hold bytes that are not
-- UTF-8, which JSON strings cannot carry.
--
-- lua-resty-http: copy its lib/resty tree into lib/ next to this script,
-- or put its folder on LUA_PATH ("/path/lib/?.lua;;").
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
package.path = here .. "lib/?.lua;" .. package.path
require "smtp.ngx" -- the global ngx, before lua-resty-http
local http = require "resty.http"
local cjson = require "cjson"
local smtp = require "smtp"

local URL = os.getenv("LUASMTPD_WEBHOOK_URL") or "http://127.0.0.1:8080/mail"
local TIMEOUT_MS = tonumber(os.getenv("LUASMTPD_WEBHOOK_TIMEOUT_MS")) or 5000
local POOL_IDLE_MS, POOL_SIZE = 60000, 16

local function envelope_json(session, message)
  local to = {}
  for i, r in ipairs(session.envelope.rcptTo) do to[i] = r.address end
  return cjson.encode({
    id = session.id,
    remoteAddress = session.remoteAddress,
    user = session.user,
    from = session.envelope.mailFrom and session.envelope.mailFrom.address or "",
    to = to,
    size = #message,
    message = ngx.encode_base64(message),
  })
end

local function unavailable(why)
  return nil, smtp.reject(451, "4.3.0 " .. why .. ", try again later")
end

return {
  name = os.getenv("LUASMTPD_NAME") or "mx.example.org",
  authOptional = true,

  onData = function(stream, session)
    local parts = {}
    for chunk in stream:chunks() do parts[#parts + 1] = chunk end
    local httpc = http.new()
    httpc:set_timeouts(TIMEOUT_MS, TIMEOUT_MS, TIMEOUT_MS)
    local res, err = httpc:request_uri(URL, {
      method = "POST",
      body = envelope_json(session, table.concat(parts)),
      headers = { ["Content-Type"] = "application/json" },
      keepalive_timeout = POOL_IDLE_MS,
      keepalive_pool = POOL_SIZE,
    })
    if not res then
      smtp.log.warn("webhook: no answer", { url = URL, err = err, session = session.id })
      return unavailable("the message service did not answer")
    end
    if res.status < 200 or res.status > 299 then
      smtp.log.warn("webhook: refused", { url = URL, status = res.status, session = session.id })
      return unavailable("the message service answered " .. res.status)
    end
    return "2.6.0 OK: taken by the message service"
  end,
}
