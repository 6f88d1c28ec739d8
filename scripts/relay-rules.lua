-- relay-rules.lua: an MX that relays for its own people only.
--
-- Anyone may send to the local domains ($LUASMTPD_LOCAL_DOMAINS, comma
-- separated, default "example.org"). Mail for any other domain is relayed
-- only for authenticated users (AUTH against auth-file.lua's users file)
-- and for clients in the trusted networks ($LUASMTPD_RELAY_NETWORKS, CIDR
-- list, default "127.0.0.0/8,::1/128"); everyone else gets 554 5.7.1.
local smtp = require "smtp"

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local auth = dofile(here .. "auth-file.lua") -- reuse its onAuth

local function split(list)
  local items = {}
  for item in list:gmatch("[^,%s]+") do items[#items + 1] = item end
  return items
end

-- An address as a byte string: 4 bytes for IPv4 (and IPv4-mapped IPv6),
-- 16 for IPv6; nil if it is not an address.
local function ipv4_bytes(s)
  local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then return nil end
  local t = { tonumber(a), tonumber(b), tonumber(c), tonumber(d) }
  for _, n in ipairs(t) do if n > 255 then return nil end end
  return string.char(unpack(t))
end

-- Hex groups "a:b:c" appended to out as 2-byte strings; false if malformed.
local function add_groups(list, out)
  if list == "" then return true end
  for g in (list .. ":"):gmatch("([^:]*):") do
    if not g:match("^%x%x?%x?%x?$") then return false end
    local n = tonumber(g, 16)
    out[#out + 1] = string.char(math.floor(n / 256), n % 256)
  end
  return true
end

local function ipv6_bytes(s)
  local head, tail = s:match("^(.-)::(.*)$")
  local h, t = {}, {}
  if not add_groups(head or s, h) or not add_groups(tail or "", t) then return nil end
  if head then
    if #h + #t > 7 then return nil end
    for _ = 1, 8 - #h - #t do h[#h + 1] = "\0\0" end -- what "::" stands for
  end
  for _, g in ipairs(t) do h[#h + 1] = g end
  if #h ~= 8 then return nil end
  return table.concat(h)
end

local function ip_bytes(s)
  s = s:lower()
  local v4 = ipv4_bytes(s) or ipv4_bytes(s:match("^::ffff:([%d.]+)$") or "")
  if v4 then return v4 end
  return ipv6_bytes(s)
end

local function parse_network(cidr)
  local addr, bits = cidr:match("^([^/]+)/(%d+)$")
  local bytes = ip_bytes(addr or cidr)
  if not bytes then error("relay-rules: not a network: " .. cidr) end
  return { bytes = bytes, bits = tonumber(bits) or #bytes * 8 }
end

local function in_network(bytes, net)
  if #bytes ~= #net.bytes then return false end
  local full, rest = math.floor(net.bits / 8), net.bits % 8
  if bytes:sub(1, full) ~= net.bytes:sub(1, full) then return false end
  if rest == 0 then return true end
  local step = 2 ^ (8 - rest) -- compare the top `rest` bits of the next byte
  return math.floor(bytes:byte(full + 1) / step) == math.floor(net.bytes:byte(full + 1) / step)
end

local local_domains = {}
for _, d in ipairs(split(os.getenv("LUASMTPD_LOCAL_DOMAINS") or "example.org")) do
  local_domains[d:lower()] = true
end
local networks = {}
for _, cidr in ipairs(split(os.getenv("LUASMTPD_RELAY_NETWORKS") or "127.0.0.0/8,::1/128")) do
  networks[#networks + 1] = parse_network(cidr)
end

local function trusted(address)
  local bytes = address and ip_bytes(address)
  if not bytes then return false end
  for _, net in ipairs(networks) do
    if in_network(bytes, net) then return true end
  end
  return false
end

return {
  listen = os.getenv("LUASMTPD_LISTEN") or "127.0.0.1:2525",
  name = os.getenv("LUASMTPD_NAME") or "localhost",
  authOptional = true, -- strangers may send to the local domains
  onAuth = auth.onAuth,

  onRcptTo = function(address, session)
    local domain = (address.address:match("@([^@]+)$") or ""):lower()
    if local_domains[domain] or session.user ~= nil or trusted(session.remoteAddress) then
      return
    end
    smtp.log.info("relay denied", { rcpt = address.address, remote = session.remoteAddress })
    return nil, smtp.reject(554, "5.7.1 Error: relay access denied")
  end,
}
