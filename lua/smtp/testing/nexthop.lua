-- smtp.testing.nexthop: a real next hop for specs of policies that relay
-- with smtp.client: Python's aiosmtpd (Debian python3-aiosmtpd, run by
-- /usr/bin/python3 as nexthop.py beside this file) on a free loopback port.
--
--   local hop = assert(testing.nexthop{rcpt = {["full@example.org"] = "452 4.2.2 full"}})
--   ... client.send{host = hop.host, port = hop.port, ...} from the policy ...
--   hop:messages()[1].body, .from, .to; hop:connections(); hop:stop()
--
-- Options: rcpt = {address = reply} (RCPT verdicts), mail = reply (every
-- MAIL), data = reply (the reply to every message), tls = {cert, key}
-- (STARTTLS offered), implicit = {cert, key} (TLS from the first byte),
-- auth = {user, password} (AUTH PLAIN/LOGIN required),
-- lmtp = true (LHLO, one reply per recipient; lmtp_rcpt = {address =
-- reply}). A recipient "slow@..." delays the reply to the data by
-- data_delay seconds (3), "drop@..." drops the connection there.
local cjson = require "cjson"
local files = require "smtp.testing.files"
local service = require "smtp.testing.service"
local system = require "smtp.testing.system"

local M = {}

local PYTHON = "/usr/bin/python3"

-- A TCP connection of our own would count as the next hop's, so the hop
-- is ready once its process listens on the port.
local function listening(hop)
  for _, p in ipairs(system.listening_ports(hop.pid)) do
    if p == hop.port then return true end
  end
  return false
end

--- The messages taken so far, in order: {body, from, to, mail_options,
--- rcpt_options, authenticated}.
local function messages(hop)
  local list = {}
  for n = 1, math.huge do
    local base = hop.out .. "/msg-" .. n
    local body = files.read_file(base .. ".eml")
    if not body then break end
    local m = cjson.decode(assert(files.read_file(base .. ".json")))
    m.body = body
    list[n] = m
  end
  return list
end

--- How many TCP connections the next hop has accepted.
local function connections(hop)
  local n = 0
  for _ in (files.read_file(hop.out .. "/connections") or ""):gmatch("%d+") do n = n + 1 end
  return n
end

--- Starts a next hop (a testing.service: host, port, log, stop) with
--- messages() and connections(); or nil, err with its log.
function M.nexthop(opts)
  local dir = system.tmpdir()
  local cfg = {}
  for k, v in pairs(opts or {}) do cfg[k] = v end
  cfg.out = dir .. "/out"
  assert(files.write_file(dir .. "/config.json", cjson.encode(cfg)))
  local hop, err = service.service({ PYTHON, system.kit_dir .. "/nexthop.py", dir .. "/config.json", "{port}" },
    { ready = listening })
  if not hop then return nil, "the aiosmtpd next hop did not start (is python3-aiosmtpd installed?): " .. err end
  hop.out, hop.messages, hop.connections = cfg.out, messages, connections
  return hop
end

return M
