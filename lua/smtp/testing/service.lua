-- smtp.testing.service: real peers a spec starts for its policy, as the
-- e2e suite does (tests/e2e/svcutil.py): a program of the spec's on a free
-- loopback port (testing.service), and redis-server with its own scratch
-- directory and no persistence (testing.redis). Each is stopped by
-- service:stop() or, at the latest, when busted exits.
local files = require "smtp.testing.files"
local system = require "smtp.testing.system"

local M = {}

local START_TIMEOUT = 10 -- seconds a service has to answer

local Service = {}
Service.__index = Service

--- A TCP port free on host (default 127.0.0.1) right now.
function M.free_port(host)
  local socket = require "socket"
  local s = assert(socket.tcp())
  assert(s:bind(host or "127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

--- The absolute path of program (a name looked up on PATH, then in the
--- sbin folders), or nil.
function M.which(program)
  if program:find("/", 1, true) then return system.realpath(program) end
  local path = (os.getenv("PATH") or "") .. ":/usr/sbin:/sbin:/usr/local/sbin"
  for dir in path:gmatch("[^:]+") do
    local f = io.open(dir .. "/" .. program, "rb")
    if f then
      f:close()
      return dir .. "/" .. program
    end
  end
end

-- Does host:port accept a TCP connection?
local function accepts(host, port)
  local c = require("socket").tcp()
  c:settimeout(0.2)
  local ok = c:connect(host, port)
  c:close()
  return ok ~= nil
end

-- One try at starting the service: self, or nil, err, and whether the
-- program exited early (then its port may have been taken meanwhile).
local function start(exe, argv, opts)
  local self = setmetatable({ host = opts.host or "127.0.0.1", dir = system.tmpdir(), name = argv[1] }, Service)
  self.port = M.free_port(self.host)
  local args = { exe }
  for i = 2, #argv do
    args[i] = tostring(argv[i]):gsub("{port}", tostring(self.port)):gsub("{dir}", self.dir)
  end
  self.logfile = self.dir .. "/service.log"
  local pid, err = system.spawn(args, opts.env, self.logfile)
  if not pid then return nil, err end
  self.pid = pid
  system.stop_at_exit(self)
  local ready = opts.ready or function(s) return accepts(s.host, s.port) end
  local timeout = opts.timeout or START_TIMEOUT
  local deadline = system.now() + timeout
  while not ready(self) do
    local how = system.reap(self.pid)
    if how then
      self.pid = nil
      system.stopped(self)
      return nil, string.format("%s exited (%s) before it was ready:\n%s", argv[1], how, self:log()), true
    end
    if system.now() > deadline then
      self:stop(1)
      return nil, string.format("%s was not ready within %g s:\n%s", argv[1], timeout, self:log())
    end
    system.sleep(0.02)
  end
  return self
end

--- Starts argv (argv[1] a program name or path) with its output in
--- service.dir/service.log; "{port}" and "{dir}" in argv become a free
--- port and a scratch directory. Returns the service once opts.ready
--- (function(service) -> true; default: the port accepts a connection)
--- holds, or nil, err with the log. opts: host, env, timeout (seconds).
--- service = {host, port, dir, pid, stop = ..., log = ...}. A program
--- that exits before it is ready is tried again (three times at most) on
--- another port, in case another process took the free one meanwhile.
function M.service(argv, opts)
  opts = opts or {}
  local exe = M.which(argv[1])
  if not exe then return nil, argv[1] .. " not found" end
  local self, err, exited
  for _ = 1, 3 do
    self, err, exited = start(exe, argv, opts)
    if self or not exited then break end
  end
  return self, err
end

--- What the service printed so far.
function Service:log()
  return files.read_file(self.logfile) or ""
end

--- TERM, then KILL after `timeout` seconds (default 5). Safe to call twice.
function Service:stop(timeout)
  if not self.pid then return true end
  system.kill(self.pid, 15)
  if not system.wait_exit(self.pid, timeout or 5) then
    system.kill(self.pid, 9)
    system.wait_exit(self.pid, 5)
  end
  self.pid = nil
  system.stopped(self)
  return true
end

-- One RESP reply off connection c: a string, number, false for nil, or
-- nil, err for an error reply; arrays as tables.
local function resp_reply(c)
  local line, err = c:receive("*l")
  if not line then return nil, err end
  local kind, rest = line:sub(1, 1), line:sub(2)
  if kind == "+" then return rest end
  if kind == "-" then return nil, rest end
  if kind == ":" then return tonumber(rest) end
  if kind == "$" then
    if tonumber(rest) < 0 then return false end
    local data = c:receive(tonumber(rest) + 2)
    return data and data:sub(1, -3)
  end
  if kind == "*" then
    local t = {}
    for i = 1, tonumber(rest) do t[i] = resp_reply(c) end
    return t
  end
  return nil, "bad reply: " .. line
end

--- redis:command("SET", "k", "v") from the spec (seeding, checking):
--- the reply as a Lua value (false for a nil reply), or nil, err.
function Service:command(...)
  local c = require("socket").tcp()
  c:settimeout(5)
  local ok, err = c:connect(self.host, self.port)
  if not ok then return nil, err end
  local parts = { "*" .. select("#", ...) }
  for i = 1, select("#", ...) do
    local a = tostring((select(i, ...)))
    parts[#parts + 1] = "$" .. #a .. "\r\n" .. a
  end
  c:send(table.concat(parts, "\r\n") .. "\r\n")
  local v, rerr = resp_reply(c)
  c:close()
  return v, rerr
end

--- redis-server (Debian's redis-server package) on a free loopback port,
--- saving nothing, in its own scratch directory: {host, port, stop,
--- command}, or nil, err (also when redis-server is not installed).
function M.redis(opts)
  opts = opts or {}
  if not M.which("redis-server") then
    return nil, "redis-server not found: install the Debian package redis-server"
  end
  return M.service({ "redis-server", "--port", "{port}", "--bind", "127.0.0.1", "--dir", "{dir}",
    "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes",
    "--loglevel", "warning" }, {
    timeout = opts.timeout,
    ready = function(s) return accepts(s.host, s.port) and s:command("PING") == "PONG" end,
  })
end

return M
