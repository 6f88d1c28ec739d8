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
local system = require "smtp.testing.system"

local M = {}

local PYTHON = "/usr/bin/python3"

local Hop = {}
Hop.__index = Hop

local function free_port()
  local s = assert(require("socket").bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

--- The messages taken so far, in order: {body, from, to, mail_options,
--- rcpt_options, authenticated}.
function Hop:messages()
  local list = {}
  for n = 1, math.huge do
    local base = self.out .. "/msg-" .. n
    local body = files.read_file(base .. ".eml")
    if not body then break end
    local m = cjson.decode(assert(files.read_file(base .. ".json")))
    m.body = body
    list[n] = m
  end
  return list
end

--- How many TCP connections the next hop has accepted.
function Hop:connections()
  local n = 0
  for _ in (files.read_file(self.out .. "/connections") or ""):gmatch("%d+") do n = n + 1 end
  return n
end

function Hop:log()
  return files.read_file(self.dir .. "/nexthop.log") or ""
end

function Hop:stop()
  if not self.pid then return true end
  system.kill(self.pid, 15)
  if not system.wait_exit(self.pid, 5) then
    system.kill(self.pid, 9)
    system.wait_exit(self.pid, 5)
  end
  self.pid = nil
  system.stopped(self)
  return true
end

--- Starts a next hop; returns it (host, port) or nil, err with its log.
function M.nexthop(opts)
  local dir = system.tmpdir()
  local cfg = {}
  for k, v in pairs(opts or {}) do cfg[k] = v end
  cfg.port, cfg.out = free_port(), dir .. "/out"
  assert(files.write_file(dir .. "/config.json", cjson.encode(cfg)))
  local pid, err = system.spawn({ PYTHON, system.kit_dir .. "/nexthop.py", dir .. "/config.json" }, {},
    dir .. "/nexthop.log")
  if not pid then return nil, err end
  local hop = setmetatable({ host = "127.0.0.1", port = cfg.port, pid = pid, dir = dir, out = cfg.out }, Hop)
  system.stop_at_exit(hop)
  local deadline = system.now() + 10
  while true do
    local how = system.reap(pid)
    if how then
      hop.pid = nil
      system.stopped(hop)
      return nil, "the aiosmtpd next hop exited (" .. how .. "); is python3-aiosmtpd installed?\n" .. hop:log()
    end
    for _, p in ipairs(system.listening_ports(pid)) do
      if p == cfg.port then return hop end
    end
    if system.now() > deadline then
      hop:stop()
      return nil, "the aiosmtpd next hop did not listen within 10 s:\n" .. hop:log()
    end
    system.sleep(0.02)
  end
end

return M
