-- smtp.testing.load: a policy script run outside the server (testing.load),
-- with a fake smtp module (no sleeps, logs kept, TLS contexts checked but
-- not built) and an environment the spec chooses.
local files = require "smtp.testing.files"

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
-- (false = unset), require "smtp" gives the fake module, and dofile /
-- loadfile run nested scripts in the same environment.
local function script_env(opts, smtp)
  local env = setmetatable({}, { __index = _G })
  local vars = opts.env or {}
  env.os = setmetatable({
    getenv = function(name)
      local v = vars[name]
      if v == false then return nil end
      if v ~= nil then return tostring(v) end
      return os.getenv(name)
    end,
  }, { __index = os })
  env.require = function(name)
    if name == "smtp" then return smtp end
    return require(name)
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
--- logs = {{level, msg, fields}...}, sleeps = {seconds...}}; or nil, err.
--- opts.env = {NAME = "value" or false} overrides os.getenv for the script.
function M.load(path, opts)
  opts = opts or {}
  local chunk, err = loadfile(path)
  if not chunk then return nil, err end
  local fake = { logs = {}, sleeps = {} }
  fake.smtp = fake_smtp(fake)
  setfenv(chunk, script_env(opts, fake.smtp))
  local ok, options = pcall(chunk)
  if not ok then return nil, tostring(options) end
  if type(options) ~= "table" then
    return nil, path .. ": the script must return a table of options, got " .. type(options)
  end
  local first = type(options[1]) == "table" and options[1] or options
  local hooks = {}
  for _, name in ipairs(HOOKS) do hooks[name] = first[name] end
  return options, hooks, fake
end

return M
