-- smtp.testing.server: the real core under test (testing.server) on free
-- loopback ports, with the spec's policy wrapped so that onData is
-- recorded; its clients, its log and records, stopping it; and
-- `luasmtpd -t` (testing.check).
local client = require "smtp.testing.client"
local files = require "smtp.testing.files"
local recorder = require "smtp.testing.recorder"
local serialize = require "smtp.testing.serialize"
local system = require "smtp.testing.system"

local M = {}

local unpack = unpack or table.unpack
local shell_quote = files.shell_quote

local Server = {}
Server.__index = Server

-- build/luasmtpd of the checkout the kit is in; for a kit installed by
-- `make install` (PREFIX/share/luasmtpd/lua/smtp/testing), the binary
-- installed with it (PREFIX/sbin/luasmtpd).
local function default_binary()
  local built = system.kit_dir .. "/../../../build/luasmtpd"
  local prefix = system.kit_dir:match("^(.*)/share/luasmtpd/lua/smtp/testing$")
  if prefix and not system.realpath(built) then return prefix .. "/sbin/luasmtpd" end
  return built
end

local function find_binary(opts)
  local bin = opts.bin or os.getenv("LUASMTPD_BIN") or default_binary()
  local path = system.realpath(bin)
  if not path then
    return nil, bin .. " not found: run `make build/luasmtpd` or set LUASMTPD_BIN"
  end
  return path
end

--- The server binary the kit runs, as an absolute path (or nil, err).
function M.binary(opts)
  return find_binary(opts or {})
end

local function wrapper_source(script, dir, host, overrides)
  local lines = {
    "-- Written by smtp.testing: the policy under test, its listeners moved to",
    "-- free ports, the spec's overrides applied and its onData recorded.",
    string.format("local recorder = dofile(%q)", system.kit_dir .. "/recorder.lua"),
  }
  if type(script) == "string" then
    lines[#lines + 1] = string.format("local options = dofile(%q)", script)
  else
    lines[#lines + 1] = "local options = (function()\n" .. serialize.serialize(script, true) .. "\nend)()"
  end
  lines[#lines + 1] = "local overrides = (function()\n" .. serialize.serialize(overrides or {}, true) .. "\nend)()"
  lines[#lines + 1] = string.format("return recorder.instrument(options, { host = %q, dir = %q, overrides = overrides })",
    host, dir .. "/messages")
  return table.concat(lines, "\n") .. "\n"
end

local function listener_count(script)
  if type(script) == "table" then
    return type(script[1]) == "table" and #script or 1
  end
  return nil -- unknown until the server runs: wait for at least one
end

-- Waits until the server listens on all its ports (seen in /proc, so no
-- probe connection reaches the policy), or exits, or the time is up.
function Server:wait_ready(expected, timeout)
  local deadline = system.now() + timeout
  local settled
  while true do
    local how = system.reap(self.pid)
    if how then
      self.pid = nil
      return nil, string.format("luasmtpd exited (%s) before listening:\n%s", how, self:log())
    end
    local ports = system.listening_ports(self.pid)
    if expected and #ports >= expected then return ports end
    if not expected and #ports > 0 then
      -- A script file may hold several listeners: wait until the count settles.
      if settled and #settled == #ports and system.now() > settled.at + 0.05 then return ports end
      if not settled or #settled ~= #ports then settled = { at = system.now(), unpack(ports) } end
    end
    if system.now() > deadline then
      return nil, string.format("luasmtpd did not listen within %g s:\n%s", timeout, self:log())
    end
    system.sleep(0.01)
  end
end

--- Runs the real core against a script (a path) or an options table (its
--- hooks travel as bytecode with their upvalues; modules by name). opts:
--- env = {NAME = value or false} for the server's environment, options =
--- {...} set over every listener's options (key, cert, size...), host
--- (default 127.0.0.1), args (extra command line), bin, timeout (seconds to
--- wait for it to listen, default 20), clientTimeout (per reply, default
--- 10). Returns the server, or nil, err with its log.
function M.server(script, opts)
  opts = opts or {}
  local bin, err = find_binary(opts)
  if not bin then return nil, err end
  if type(script) == "string" then
    local path, perr = system.realpath(script)
    if not path then return nil, perr end
    script = path
  end
  local dir = system.tmpdir()
  os.execute("mkdir " .. shell_quote(dir .. "/messages"))
  local host = opts.host or "127.0.0.1"
  local ok, source = pcall(wrapper_source, script, dir, host, opts.options)
  if not ok then return nil, source end
  files.write_file(dir .. "/wrapper.lua", source)
  -- Each log line written as it is made, before the reply it reports: a
  -- spec reads server:log() the moment a reply arrives (args may say
  -- --log-flush batch, the default of a real server; the last one counts).
  local argv = { bin, "--log-flush", "line" }
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end
  argv[#argv + 1] = dir .. "/wrapper.lua"
  local self = setmetatable({ dir = dir, host = host, logfile = dir .. "/server.log", clients = {},
    clientTimeout = opts.clientTimeout or client.DEFAULT_TIMEOUT }, Server)
  local pid, serr = system.spawn(argv, opts.env, self.logfile)
  if not pid then return nil, serr end
  self.pid = pid
  system.stop_at_exit(self)
  -- Stops the process if the server object is dropped without stop().
  self.guard = newproxy(true)
  getmetatable(self.guard).__gc = function() if self.pid then self:stop(1) end end
  local ports, werr = self:wait_ready(listener_count(script), opts.timeout or 20)
  if not ports then
    self:stop(1)
    return nil, werr
  end
  self.ports, self.port = ports, ports[1]
  return self
end

--- The server's stderr so far.
function Server:log()
  return self.stopped_log or files.read_file(self.logfile) or ""
end

--- What onData received, one table per message in order: body (as the
--- hook's stream gave it: dot-unstuffed), byteLength, sizeExceeded,
--- envelope, the other session fields, session (the same again), hookRead
--- (bytes the hook itself took), accepted, rejection or error.
function Server:messages()
  return self.stopped_messages or recorder.read(self.dir .. "/messages")
end

--- A client connected to listener n (opts.listener, default 1). opts.tls
--- ({servername, cafile, ...} as for starttls) speaks TLS first, for
--- `secure` listeners; opts.timeout is per reply. The greeting is read:
--- client.code / client.text hold it. Returns the client or nil, err.
function Server:client(opts)
  opts = opts or {}
  if not self.pid then return nil, "the server is not running" end
  local c = client.new(self.host, self.ports[opts.listener or 1], opts.timeout or self.clientTimeout)
  self.clients[#self.clients + 1] = c
  local ok, err = client.open(c, opts.tls)
  if not ok then return nil, err end
  return c
end

--- TERM, then waits (up to `timeout` seconds, default 10) and KILLs if
--- need be. Returns true when the server exited with status 0, else nil,
--- how it ended. Safe to call twice.
function Server:stop(timeout)
  if not self.pid then return self.exit_status == "exit 0" or nil, self.exit_status end
  for _, c in ipairs(self.clients) do if not c.closed then c:close() end end
  local pid = self.pid
  system.kill(pid, 15)
  local how = system.wait_exit(pid, timeout or 10)
  if not how then
    system.kill(pid, 9)
    how = (system.wait_exit(pid, 5) or "not reaped") .. " (killed: TERM was not enough)"
  end
  self.pid, self.exit_status = nil, how
  system.stopped(self)
  -- Keep what specs may still ask for, then tidy up.
  self.stopped_messages = recorder.read(self.dir .. "/messages")
  self.stopped_log = files.read_file(self.logfile) or ""
  if not os.getenv("LUASMTPD_TEST_KEEP") then system.remove_tree(self.dir) end
  if how == "exit 0" then return true end
  return nil, how
end

--- Runs `luasmtpd -t script`: true, or nil and what it printed.
function M.check(script, opts)
  opts = opts or {}
  local bin, err = find_binary(opts)
  if not bin then return nil, err end
  local env = ""
  for k, v in pairs(opts.env or {}) do env = env .. k .. "=" .. shell_quote(v) .. " " end
  local p = io.popen(env .. shell_quote(bin) .. " -t " .. shell_quote(script) .. " 2>&1; echo \"exit=$?\"")
  local out = p:read("*a")
  p:close()
  local status = out:match("exit=(%d+)%s*$")
  out = out:gsub("exit=%d+%s*$", "")
  if status == "0" then return true, out end
  return nil, out
end

return M
