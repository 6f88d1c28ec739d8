-- An example policy: refuse clients listed in DNS blocklists (DNSBLs), take
-- mail from everyone else and store it in a Maildir like default.lua.
--
--   LUASMTPD_DNSBL_ZONES="zen.spamhaus.org,bl.spamcop.net" build/luasmtpd scripts/dnsbl.lua
--
-- Environment:
--   LUASMTPD_DNSBL_ZONES  comma-separated zones (default: zen.spamhaus.org)
--   LUASMTPD_DNS_SERVERS  comma-separated "ip[:port]" resolvers (default:
--                         /etc/resolv.conf); public resolvers are refused by
--                         most DNSBLs, use your own
--   LUASMTPD_DNS_TIMEOUT  seconds per try (default 2)
--   LUASMTPD_MAILDIR, LUASMTPD_NAME, LUASMTPD_LISTEN as in default.lua
--
-- How a DNSBL works: for the client 192.0.2.1 the policy asks for the A
-- record of 1.2.0.192.<zone>. An answer 127.0.0.x means "listed" (x says
-- why); NXDOMAIN means "not listed". Anything else -- a timeout, a
-- SERVFAIL, 127.255.255.x (Spamhaus' "your resolver is not allowed") --
-- says nothing about the client: the policy fails open (takes the
-- connection) and logs it, so a broken blocklist never stops your mail.
-- Only IPv4 clients are checked here (IPv6 lists use nibble names and
-- other zones).
local smtp = require "smtp"
local maildir = require "smtp.maildir"

local function split(s)
  local out = {}
  for item in (s or ""):gmatch("[^,%s]+") do out[#out + 1] = item end
  return out
end

local zones = split(os.getenv("LUASMTPD_DNSBL_ZONES") or "zen.spamhaus.org")
local servers = split(os.getenv("LUASMTPD_DNS_SERVERS"))
local dns_timeout = tonumber(os.getenv("LUASMTPD_DNS_TIMEOUT") or "") or 2

local dns_options = { timeout = dns_timeout, tries = 2 }
if #servers > 0 then dns_options.servers = servers end
smtp.dns.configure(dns_options)

local name = os.getenv("LUASMTPD_NAME") or "localhost"
local box = assert(maildir.open(os.getenv("LUASMTPD_MAILDIR") or "var/mail"))

-- "192.0.2.1" -> "1.2.0.192", or nil for anything but an IPv4 address.
local function reversed_ipv4(ip)
  local a, b, c, d = (ip or ""):match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then return nil end
  return table.concat({ d, c, b, a }, ".")
end

-- Looks the client up in one zone: returns "listed", answer | "clean" |
-- "error", reason.
local function lookup(rev, zone)
  local records, err = smtp.dns.query(rev .. "." .. zone, "A")
  if not records then
    if err == "not found" then return "clean" end
    return "error", err
  end
  for _, addr in ipairs(records) do
    if addr:match("^127%.0%.0%.%d+$") then return "listed", addr end
  end
  return "error", "unexpected answer " .. table.concat(records, ",")
end

return {
  listen = os.getenv("LUASMTPD_LISTEN") or "127.0.0.1:2525",
  name = name,
  size = 50 * 1024 * 1024,
  authOptional = true,

  onConnect = function(session)
    local rev = reversed_ipv4(session.remoteAddress)
    if not rev then return end
    for _, zone in ipairs(zones) do
      local verdict, detail = lookup(rev, zone)
      if verdict == "listed" then
        smtp.log.info("client listed in a DNSBL", { client = session.remoteAddress, zone = zone, answer = detail })
        return nil, smtp.reject(554, string.format("5.7.1 Service unavailable; client [%s] listed in %s",
          session.remoteAddress, zone))
      elseif verdict == "error" then
        smtp.log.warn("DNSBL lookup failed, accepting the client", {
          client = session.remoteAddress, zone = zone, error = detail })
      end
    end
  end,

  onData = function(stream, session)
    local path, err = box:deliver(stream, session, name)
    if not path then
      smtp.log.error("delivery failed", { error = err })
      return nil, smtp.reject(451, "4.3.0 Error: local delivery failed, try again later")
    end
    return "OK: message queued as " .. path:match("[^/]+$")
  end,
}
