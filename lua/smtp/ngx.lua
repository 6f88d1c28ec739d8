-- require "smtp.ngx": installs the global `ngx`, the part of
-- lua-nginx-module's API that pure-Lua lua-resty-* libraries use, with its
-- documented semantics (milliseconds, lowercase error strings), so those
-- libraries run unchanged in a policy (docs/guide.md, "Using OpenResty
-- libraries"). Require it at the top of the script: globals are read-only
-- once the script has loaded. Reading a field we do not offer raises an
-- error naming it, never a silent nil.
local has_core = pcall(require, "smtp.core")
local smtp = require "smtp"
local re = require "smtp.ngx.re"
local uri = require "smtp.ngx.uri"

local digest = has_core and require "smtp.core.digest" or nil
local core_ngx = has_core and require "smtp.core.ngx" or nil

local M = {}
local ngx = {}

local function unoffered(name)
  error("ngx." .. name .. " is not offered by luasmtpd", 3)
end

-- A table whose unknown fields raise, named prefix.field.
local function strict(prefix, t)
  return setmetatable(t, {
    __index = function(_, k) unoffered(prefix .. tostring(k)) end,
  })
end

-- A function a library may fetch at load time but that has no meaning
-- here: calling it raises.
local function unoffered_fn(name)
  return function() unoffered(name) end
end

local function runtime_fn(name, fn)
  if fn then return fn end
  return function() error("ngx." .. name .. " needs the luasmtpd runtime", 2) end
end

-- lua-nginx-module's constants (ngx_http_lua_api.h, ngx_log.h).
ngx.OK, ngx.ERROR, ngx.AGAIN, ngx.DONE, ngx.DECLINED = 0, -1, -2, -4, -5
local levels = { "STDERR", "EMERG", "ALERT", "CRIT", "ERR", "WARN", "NOTICE", "INFO", "DEBUG" }
for i, name in ipairs(levels) do ngx[name] = i - 1 end
local log_to = { [0] = "error", "error", "error", "error", "error", "warn", "info", "info", "debug" }

ngx.null = core_ngx and core_ngx.null or require("cjson").null

--- ngx.log(level, ...): the arguments joined as nginx joins them, to
--- luasmtpd's log at the matching level (ERR and above: error, NOTICE and
--- INFO: info).
function ngx.log(level, ...)
  local to = type(level) == "number" and log_to[level]
  if not to then error("bad log level", 2) end
  local parts = {}
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    local t = type(v)
    if v == ngx.null then
      v = "null"
    elseif t == "table" and getmetatable(v) and getmetatable(v).__tostring then
      v = tostring(v)
    elseif t ~= "string" and t ~= "number" and t ~= "boolean" and t ~= "nil" then
      error(("bad argument #%d to 'log' (string, number, boolean, or nil expected, got %s)"):format(i + 1, t), 2)
    end
    parts[#parts + 1] = tostring(v)
  end
  smtp.log[to](table.concat(parts))
end

--- Seconds, fractions allowed (as in nginx); only the calling hook waits.
function ngx.sleep(seconds)
  if type(seconds) ~= "number" or seconds < 0 then error("invalid sleep duration \"" .. tostring(seconds) .. "\"", 2) end
  return smtp.sleep(seconds)
end

-- Time is never cached here, so update_time has nothing to refresh;
-- ngx.now keeps nginx's millisecond resolution.
function ngx.now() return math.floor(smtp.now() * 1000) / 1000 end
function ngx.time() return math.floor(smtp.now()) end
function ngx.update_time() end
function ngx.today() return os.date("%Y-%m-%d") end
function ngx.localtime() return os.date("%Y-%m-%d %H:%M:%S") end
function ngx.utctime() return os.date("!%Y-%m-%d %H:%M:%S") end

ngx.encode_base64 = runtime_fn("encode_base64", digest and digest.encode_base64)
ngx.decode_base64 = runtime_fn("decode_base64", digest and digest.decode_base64)
ngx.md5 = runtime_fn("md5", digest and digest.md5)
ngx.md5_bin = runtime_fn("md5_bin", digest and digest.md5_bin)
ngx.sha1_bin = runtime_fn("sha1_bin", digest and digest.sha1_bin)
ngx.hmac_sha1 = runtime_fn("hmac_sha1", digest and digest.hmac_sha1)
ngx.crc32_short = runtime_fn("crc32_short", digest and digest.crc32)
ngx.crc32_long = runtime_fn("crc32_long", digest and digest.crc32)

ngx.escape_uri = uri.escape
ngx.unescape_uri = uri.unescape
ngx.encode_args = uri.encode_args
ngx.decode_args = uri.decode_args

ngx.re = strict("re.", {
  match = re.match, find = re.find, gmatch = re.gmatch, sub = re.sub, gsub = re.gsub,
})

-- luasmtpd serves TCP, like nginx's stream subsystem; the version numbers
-- are those of the lua-nginx-module release whose semantics we follow.
ngx.config = strict("config.", {
  subsystem = "stream",
  ngx_lua_version = 10026,
  nginx_version = 1025003,
  debug = false,
  prefix = function() return "" end,
  nginx_configure = function() return "" end,
})

local core_server = has_core and require "smtp.core.server" or nil
ngx.worker = strict("worker.", {
  pid = function() return smtp.pid() end,
  -- true once the worker stops, drains or reloads its script
  exiting = core_ngx and core_ngx.exiting or function() return false end,
  -- the worker's slot of --workers N (0 and 1 in a single process)
  id = function() return core_server and core_server.worker_id() or 0 end,
  count = function() return core_server and core_server.worker_count() or 1 end,
})

--- "init" while the script loads, "content" in hooks (the globals are
--- protected, by a metatable on _G, once the script has loaded).
function ngx.get_phase()
  return getmetatable(_G) == nil and "init" or "content"
end

-- Light threads of one hook (lua-nginx-module's user threads): spawn runs
-- the function at once until it first waits; wait returns the first to
-- end's true, results... or false, err; kill returns 1 or nil, err. The
-- hook ends once its own function has returned and every thread it
-- spawned has ended; if it raises, they are killed.
ngx.thread = strict("thread.", {
  spawn = runtime_fn("thread.spawn", core_ngx and core_ngx.spawn),
  wait = runtime_fn("thread.wait", core_ngx and core_ngx.wait),
  kill = runtime_fn("thread.kill", core_ngx and core_ngx.kill),
})

-- Timers, outside any session: callback(premature, ...) runs after delay
-- seconds in a coroutine of its own (cosockets, ngx.sleep and shared dicts
-- work there); premature is true when the worker stops, drains or
-- reloads. Made while the script loads, they start as a worker serves.
ngx.timer = strict("timer.", {
  at = runtime_fn("timer.at", core_ngx and core_ngx.timer_at),
  every = runtime_fn("timer.every", core_ngx and core_ngx.timer_every),
  running_count = runtime_fn("timer.running_count", core_ngx and core_ngx.timer_running_count),
  pending_count = runtime_fn("timer.pending_count", core_ngx and core_ngx.timer_pending_count),
})

-- No request here: ngx.var is empty, and what only an HTTP request has
-- raises when called (libraries fetch them at load time).
ngx.var = {}
ngx.req = strict("req.", {
  socket = unoffered_fn("req.socket"),
  get_headers = unoffered_fn("req.get_headers"),
  get_method = unoffered_fn("req.get_method"),
})
ngx.print = unoffered_fn("print")
ngx.say = unoffered_fn("say")
ngx.exit = unoffered_fn("exit")
ngx.header = setmetatable({}, {
  __index = function(_, k) unoffered("header." .. tostring(k)) end,
  __newindex = function(_, k) unoffered("header." .. tostring(k)) end,
})

-- The other engineers' modules: until they exist, their fields raise.
local function optional(name)
  local ok, mod = pcall(require, name)
  if ok then return mod end
  if not tostring(mod):find("module '" .. name .. "' not found", 1, true) then error(mod, 0) end
  return nil
end
local socket = optional("smtp.ngx.socket")
local shdict = optional("smtp.ngx.shdict")
ngx.socket = socket
ngx.shared = shdict and shdict.shared
M.shared_dict = shdict and shdict.declare or function() unoffered("shared_dict") end

-- ngx.ctx: one table per session, fresh for each; assigning replaces it.
local ctxs = setmetatable({}, { __mode = "k" })
local function session_key()
  local s = core_ngx and core_ngx.session()
  if not s then error("ngx.ctx is offered only in a hook", 3) end
  return s
end

setmetatable(ngx, {
  __index = function(_, k)
    if k == "ctx" then
      local s = session_key()
      local ctx = ctxs[s]
      if not ctx then
        ctx = {}
        ctxs[s] = ctx
      end
      return ctx
    end
    unoffered(tostring(k))
  end,
  __newindex = function(t, k, v)
    if k == "ctx" then
      if type(v) ~= "table" then error("ngx.ctx must be a table", 2) end
      ctxs[session_key()] = v
      return
    end
    unoffered(tostring(k))
  end,
})

M.ngx = ngx
-- The script's top level may set globals; a hook may not (lua_runtime.c).
if rawget(_G, "ngx") ~= ngx then _G.ngx = ngx end
return M
