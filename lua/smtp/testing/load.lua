-- smtp.testing.load: a policy script run outside the server (testing.load),
-- with a fake smtp module (no sleeps, logs kept, TLS contexts checked but
-- not built) and an environment the spec chooses.
local files = require "smtp.testing.files"
local ngx_fake = require "smtp.testing.ngx"

local M = {}

local HOOKS = { "onConnect", "onSecure", "SNICallback", "onAuth", "onMailFrom", "onRcptTo",
  "onData", "onClose", "onError" }

local function is_pem(v)
  return type(v) == "string" and v:find("-----BEGIN", 1, true) ~= nil
end

-- smtp.tls.context outside the server: checks that key and cert can be
-- read, then returns a plain table standing for the context.
local function fake_tls_context(smtp, opts)
  for _, field in ipairs { "key", "cert" } do
    local v = opts and opts[field]
    if v ~= nil and not is_pem(v) then
      local data = files.read_file(v)
      if not data then return nil, string.format("%s: cannot read %s", field, tostring(v)) end
      if not is_pem(data) then return nil, string.format("%s: %s is not PEM", field, v) end
    end
  end
  return setmetatable({ options = smtp.tls.options(opts), key = opts.key, cert = opts.cert, fake = true },
    { __name = "smtp.tls.context (fake)" })
end

-- A copy of the smtp module for one loaded script: sleep does nothing,
-- logs are kept in fake.logs, tls.context is fake. The real module is
-- left alone, so other specs still see it as it is.
local function fake_smtp(fake)
  local real = require "smtp"
  local s = setmetatable({}, { __index = real })
  s.log = {}
  for _, level in ipairs { "debug", "info", "warn", "error" } do
    s.log[level] = function(msg, fields)
      fake.logs[#fake.logs + 1] = { level = level, msg = tostring(msg), fields = fields or {} }
    end
  end
  s.sleep = function(seconds) fake.sleeps[#fake.sleeps + 1] = seconds end
  s.tls = setmetatable({ context = function(opts) return fake_tls_context(real, opts) end },
    { __index = real.tls })
  return s
end

-- The globals a loaded script sees: os.getenv answers from opts.env first
-- (false = unset), dofile / loadfile run nested scripts in the same
-- environment, and package is the script's own (setting package.path in
-- the script changes nothing for the spec). require looks in `loaded`
-- first (the fake smtp, smtp.ngx and what the spec injected), then loads
-- a Lua module found on the script's package.path afresh in the script's
-- environment, once per load (a lua-resty library sees the script's
-- `ngx`, and its own requires meet the spec's fakes too); luasmtpd's own
-- modules, C modules and those already loaded come from the real require.
local function script_env(opts, loaded)
  local env = setmetatable({}, { __index = _G })
  env._G = env -- what the script and its libraries set stays theirs
  local vars = opts.env or {}
  env.os = setmetatable({
    getenv = function(name)
      local v = vars[name]
      if v == false then return nil end
      if v ~= nil then return tostring(v) end
      return os.getenv(name)
    end,
  }, { __index = os })
  env.package = setmetatable({ path = package.path, cpath = package.cpath, loaded = loaded },
    { __index = package })
  env.require = function(name)
    if loaded[name] ~= nil then return loaded[name] end
    if name == "smtp.ngx" then
      local mod, wrap = ngx_fake.install(env, loaded, opts.fake)
      loaded[name], opts.fake.wrap = mod, wrap
      return mod
    end
    local own = name == "smtp" or name:find("^smtp%.")
    local file = not own and package.loaded[name] == nil
      and package.searchpath(name, env.package.path)
    if not file then return require(name) end
    local chunk = assert(loadfile(file))
    setfenv(chunk, env)
    local mod = chunk(name)
    if mod == nil then mod = true end
    loaded[name] = mod
    return mod
  end
  env.loadfile = function(path)
    local f, err = loadfile(path)
    if f then setfenv(f, env) end
    return f, err
  end
  env.dofile = function(path)
    return assert(env.loadfile(path))()
  end
  return env
end

--- Loads a policy script without the server. Returns its options table,
--- its hooks ({onRcptTo = fn, ...}, from the first listener when the script
--- returns several) and `fake` = {smtp = the module the script got,
--- logs = {{level, msg, fields}...}, sleeps = {seconds...}, and once the
--- script requires smtp.ngx: ngx = its ngx, shared = its dictionaries};
--- or nil, err. opts.env = {NAME = "value" or false} overrides os.getenv
--- for the script; opts.modules = {[name] = module} is what require(name)
--- gives the script and the libraries it loads.
function M.load(path, opts)
  opts = opts or {}
  local chunk, err = loadfile(path)
  if not chunk then return nil, err end
  local fake = { logs = {}, sleeps = {} }
  fake.smtp = fake_smtp(fake)
  local loaded = { smtp = fake.smtp }
  for name, mod in pairs(opts.modules or {}) do loaded[name] = mod end
  setfenv(chunk, script_env({ env = opts.env, fake = fake }, loaded))
  local ok, options = pcall(chunk)
  if not ok then return nil, tostring(options) end
  if type(options) ~= "table" then
    return nil, path .. ": the script must return a table of options, got " .. type(options)
  end
  local first = type(options[1]) == "table" and options[1] or options
  local hooks = {}
  local wrap = fake.wrap or function(fn) return fn end
  fake.wrap = nil
  for _, name in ipairs(HOOKS) do hooks[name] = wrap(first[name]) end
  return options, hooks, fake
end

return M
