-- The public `smtp` module: what policy scripts `require "smtp"` for.
-- Inside luasmtpd the C modules of the core (smtp.core and smtp.core.*,
-- core/lua/modules.c) back it; under a plain `busted` run the pure-Lua
-- parts still work, so policies can be unit-tested without the server.
local has_core, core = pcall(require, "smtp.core")
if not has_core then core = nil end
-- All of them now, at start-up: a reload forgets only the script's modules.
local log, timer, fsync, tcp, dns, tls, server
if core then
  log, timer, fsync = require "smtp.core.log", require "smtp.core.timer", require "smtp.core.fsync"
  tcp, dns, tls, server = require "smtp.core.tcp", require "smtp.core.dns", require "smtp.core.tls", require "smtp.core.server"
end

local smtp = { _VERSION = "0.1.0" }
local replies = require "smtp.replies"

local Reject = { __name = "smtp.reject" }
Reject.__index = Reject
Reject.__tostring = function(r) return r.code .. " " .. r.message end

--- A rejection: return `nil, smtp.reject(550, "no such user")` from a hook,
--- or raise it with error(). code is a 4xx or 5xx reply code.
function smtp.reject(code, message)
  if type(code) ~= "number" or code < 400 or code > 599 or code % 1 ~= 0 then
    error("smtp.reject: code must be an integer from 400 to 599, got " .. tostring(code), 2)
  end
  if message ~= nil and type(message) ~= "string" then
    error("smtp.reject: message must be a string", 2)
  end
  return setmetatable({ code = code, message = message or replies.rejected }, Reject)
end

--- Is v an smtp.reject object?
function smtp.is_reject(v)
  return getmetatable(v) == Reject
end

local function fallback_log(level, msg, fields)
  local parts = { "level=" .. level, string.format("msg=%q", msg) }
  for k, v in pairs(fields or {}) do parts[#parts + 1] = k .. "=" .. string.format("%q", tostring(v)) end
  io.stderr:write(table.concat(parts, " "), "\n")
end

smtp.log = {}
for _, level in ipairs { "debug", "info", "warn", "error" } do
  smtp.log[level] = function(msg, fields)
    if log then log.write(level, tostring(msg), fields) else fallback_log(level, tostring(msg), fields) end
  end
end

--- Suspends the calling hook for s seconds; other sessions go on.
function smtp.sleep(s)
  if not core then error("smtp.sleep needs the luasmtpd runtime", 2) end
  return timer.sleep(s)
end

--- The current time in seconds (a float, microsecond precision).
function smtp.now()
  if timer then return timer.now() end
  return os.time()
end

--- Makes the names in directory path durable (fsync of the directory): a
--- file created in it or renamed into it then survives a crash or a power
--- loss. true, or nil, err. Without the runtime (busted) it runs sync(1).
function smtp.fsync_dir(path)
  if fsync then return fsync.dir(path) end
  local ok = os.execute("sync")
  if ok == 0 or ok == true then return true end
  return nil, "sync failed"
end

--- The process id of this worker.
function smtp.pid()
  return core and core.pid() or 0
end

-- TLS: smtp.tls.options(opts) is smtp-server's getTLSOptions, opts over
-- the defaults; smtp.tls.context(opts) compiles them into a reusable
-- OpenSSL context (what SNICallback returns).
smtp.tls = {}

function smtp.tls.options(opts)
  local o = {
    honorCipherOrder = true,
    requestOCSP = false,
    minVersion = "TLSv1.2",
  }
  if core then
    o.sessionIdContext = core.session_id_context
    o.key = core.dev_key
    o.cert = core.dev_cert
  end
  for k, v in pairs(opts or {}) do o[k] = v end
  -- A pfx replaces the default key and certificate rather than joining them.
  if opts and opts.pfx and not opts.key then o.key = nil end
  if opts and opts.pfx and not opts.cert then o.cert = nil end
  return o
end

function smtp.tls.context(opts)
  if not core then error("smtp.tls.context needs the luasmtpd runtime", 2) end
  return tls.context(smtp.tls.options(opts))
end

--- A non-blocking TCP client for hooks (OpenResty's cosocket API):
--- sock:connect(host, port), sock:send(data), sock:receive("*l" | "*a" | n),
--- sock:sslhandshake(servername, verify [, {ca = pem_or_path_or_list}]),
--- sock:settimeout(seconds),
--- sock:close(). Each returns nil, err on failure or timeout.
function smtp.tcp()
  if not core then error("smtp.tcp needs the luasmtpd runtime", 2) end
  return tcp.new()
end

--- Asynchronous DNS (c-ares): smtp.dns.query(name, type) with type "A",
--- "AAAA", "MX", "TXT" or "PTR" (name may then be an IP address) returns an
--- array of records -- addresses, {exchange=, priority=}, strings, names --
--- or nil, err ("not found", "timeout", ...). smtp.dns.configure{servers =
--- {"127.0.0.1:53"}, timeout = 2, tries = 2} overrides /etc/resolv.conf.
smtp.dns = {}

function smtp.dns.query(name, qtype)
  if not core then error("smtp.dns needs the luasmtpd runtime", 2) end
  return dns.query(name, qtype)
end

function smtp.dns.configure(opts)
  if not core then error("smtp.dns needs the luasmtpd runtime", 2) end
  return dns.configure(opts)
end

--- Counters of the policy's own, served with the server's on the `metrics`
--- address: local c = smtp.metrics.counter("spam_rejected_total", "help");
--- c:inc({reason = "dnsbl"}) (labels optional; a second argument adds more than 1).
smtp.metrics = {}

local Counter = {}
Counter.__index = Counter

local function render_labels(labels)
  if not labels then return "" end
  local keys = {}
  for k in pairs(labels) do
    if type(k) ~= "string" or not k:match("^[%a_][%w_]*$") then
      error("smtp.metrics: bad label name " .. tostring(k), 3)
    end
    keys[#keys + 1] = k
  end
  table.sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do
    local v = tostring(labels[k]):gsub("\\", "\\\\"):gsub('"', '\\"'):gsub("\n", "\\n")
    parts[i] = k .. '="' .. v .. '"'
  end
  return table.concat(parts, ",")
end

function Counter:inc(labels, n)
  if n ~= nil and (type(n) ~= "number" or n < 0) then error("smtp.metrics: a counter only goes up", 2) end
  if core then return core.metrics_add(self.name, self.help, render_labels(labels), n or 1) end
  local key = render_labels(labels)
  self.values[key] = (self.values[key] or 0) + (n or 1)
  return true
end

function smtp.metrics.counter(name, help)
  if type(name) ~= "string" or not name:match("^[%a_:][%w_:]*$") then
    error("smtp.metrics.counter: bad metric name " .. tostring(name), 2)
  end
  return setmetatable({ name = name, help = help or "", values = {} }, Counter)
end

-- The running server (smtp-server's SMTPServer instance): available to
-- hooks once the server runs.
smtp.server = setmetatable({}, {
  __index = function(_, key)
    if key == "connections" then return server and server.connections() or 0 end
  end,
})

--- Swaps the default and SNI certificates for new connections; opts are
--- TLS options (key, cert, sniOptions, ...) over the script's. Returns
--- true, or nil, err (and nothing changes).
function smtp.server:updateSecureContext(opts)
  if not core then error("smtp.server needs the luasmtpd runtime", 2) end
  return server.update_secure_context(opts)
end

--- Stops accepting; open sessions end as on TERM.
function smtp.server:close()
  if not core then error("smtp.server needs the luasmtpd runtime", 2) end
  server.close()
end

if core then core.set_reject_metatable(Reject) end

return smtp
