-- relay.lua: a before-queue proxy, like Postfix's smtpd_proxy_filter.
--
-- Takes mail for the domains in $LUASMTPD_RELAY_DOMAINS (comma separated,
-- default "example.org"; any other recipient gets 554 5.7.1) and hands
-- each message, while it arrives, to the next hop $LUASMTPD_NEXTHOP
-- ("host:port", default "127.0.0.1:10025") with smtp.client, with a
-- Received: field in front. The client's reply is the next hop's verdict:
-- its 250 (the text it gave, "queued as ..."), its own refusal as it came,
-- or 451 when it cannot be reached (4.4.1), times out or drops the
-- connection (4.4.2), or fails TLS (4.7.5). Nothing is acknowledged that
-- the next hop did not take, and nothing is queued here.
--
-- $LUASMTPD_NEXTHOP_TLS: none (default), opportunistic, required or
-- implicit; $LUASMTPD_NEXTHOP_CA: the CA file that verifies the next hop
-- (default: the system's store); $LUASMTPD_NEXTHOP_TIMEOUT: seconds (30).
local smtp = require "smtp"
local client = require "smtp.client"
local maildir = require "smtp.maildir"

local name = os.getenv("LUASMTPD_NAME") or "localhost"

local domains = {}
for d in (os.getenv("LUASMTPD_RELAY_DOMAINS") or "example.org"):gmatch("[^,%s]+") do
  domains[d:lower()] = true
end

local nexthop = os.getenv("LUASMTPD_NEXTHOP") or "127.0.0.1:10025"
local host, port = nexthop:match("^%[?(.-)%]?:(%d+)$")
assert(host, "LUASMTPD_NEXTHOP must be host:port, got " .. nexthop)
local timeout = tonumber(os.getenv("LUASMTPD_NEXTHOP_TIMEOUT") or "30")

return {
  listen = os.getenv("LUASMTPD_LISTEN") or "127.0.0.1:2525",
  name = name,
  size = 50 * 1024 * 1024,
  authOptional = true,
  hideDSN = false, -- passed on to the next hop, which keeps the promise
  hookTimeout = timeout + 5,

  onRcptTo = function(address)
    local domain = address.address:match("@([^@]+)$")
    if not (domain and domains[domain:lower()]) then
      return nil, smtp.reject(554, "5.7.1 Error: relay access denied")
    end
  end,

  onData = function(stream, session)
    local env = session.envelope
    local res, err = client.send {
      host = host, port = tonumber(port),
      tls = os.getenv("LUASMTPD_NEXTHOP_TLS") or "none", ca = os.getenv("LUASMTPD_NEXTHOP_CA"),
      helo = name, from = env.mailFrom, to = env.rcptTo, message = stream,
      prepend = maildir.received_header(session, name), timeout = timeout,
    }
    if not res then
      smtp.log.info("next hop refused", { code = err.code, reply = err.message })
      return nil, err
    end
    return res.message
  end,
}
