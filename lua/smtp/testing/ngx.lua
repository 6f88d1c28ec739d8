-- smtp.testing.ngx: `require "smtp.ngx"` in a script run by testing.load.
-- The real lua/smtp/ngx.lua is loaded afresh for each loaded script, in
-- that script's environment, so what it does goes where testing.load keeps
-- it: ngx.log reaches the fake smtp.log (fake.logs), ngx.sleep the fake
-- smtp.sleep (fake.sleeps), the global `ngx` lands in the script's own
-- globals (never in the spec's), and shared dictionaries are a fresh
-- in-process set (fake.shared). What has no meaning without the server
-- says so when used: ngx.socket.tcp/udp raise unless the spec injects a
-- socket module, and ngx.ctx belongs to the session of the hook being
-- called through the hooks testing.load returned.
local M = {}

local NOT_HERE = "%s: no sockets in testing.load: inject a fake (testing.load(path, "
  .. "{modules = {[\"resty.redis\"] = fake}}), or {[\"smtp.ngx.socket\"] = {tcp = ...}} for a "
  .. "library run on a fake cosocket) or run the policy in testing.server"

--- The smtp.ngx.socket a loaded script gets unless the spec injects one:
--- tcp() and udp() raise, naming the way out.
function M.sockets()
  local function refuse(name)
    return function() error(NOT_HERE:format("ngx.socket." .. name), 2) end
  end
  return { tcp = refuse("tcp"), udp = refuse("udp"), stream = refuse("stream") }
end

local function source_of(name)
  local path = package.searchpath(name, package.path)
  if not path then error("smtp.testing: cannot find " .. name .. " on package.path", 3) end
  return path
end

--- A module file run afresh in env (its own copy: nothing shared with
--- another load).
function M.fresh(name, env)
  local chunk = assert(loadfile(source_of(name)))
  setfenv(chunk, env)
  return chunk(name)
end

-- ngx.encode_base64 / decode_base64 without the server (its are OpenSSL's),
-- on LuaSocket's mime: the same answers for what policies send.
local function encode_base64(s, no_padding)
  if type(s) ~= "string" then error("string argument only", 2) end
  local b = require("mime").b64(s) or ""
  if no_padding then b = b:gsub("=+$", "") end
  return b
end

local function decode_base64(s)
  if type(s) ~= "string" then error("string argument only", 2) end
  s = s:match("^[^=]*") -- nginx stops at the first "="
  if s:find("[^%w+/]") or #s % 4 == 1 then return nil end
  return require("mime").unb64(s .. ("="):rep((4 - #s % 4) % 4)) or ""
end

local function pack(...) return { n = select("#", ...), ... } end

-- The session among a hook's arguments (the last table that looks like one).
local function session_in(...)
  for i = select("#", ...), 1, -1 do
    local a = select(i, ...)
    if type(a) == "table" and a.remoteAddress ~= nil and a.envelope ~= nil then return a end
  end
end

--- Runs lua/smtp/ngx.lua for a loaded script: its global `ngx` lands in
--- env (the script's globals), and the modules it requires come from
--- `loaded` (the script's own, filled here with fresh shared dictionaries,
--- kept in fake.shared, and the refusing sockets unless the spec injected
--- smtp.ngx.socket). Returns the module and wrap(fn): fn called with
--- ngx.ctx set for the session among its arguments.
function M.install(env, loaded, fake)
  loaded["smtp.ngx.shdict"] = M.fresh("smtp.ngx.shdict", env)
  fake.shared = loaded["smtp.ngx.shdict"].shared
  if loaded["smtp.ngx.socket"] == nil then loaded["smtp.ngx.socket"] = M.sockets() end
  local mod = M.fresh("smtp.ngx", env)
  local ngx = mod.ngx
  fake.ngx = ngx

  local current
  local ctxs = setmetatable({}, { __mode = "k" })
  local function key()
    if not current then
      error("ngx.ctx is offered only in a hook (under testing.load: one called through the hooks it returned)", 3)
    end
    return current
  end
  rawset(ngx, "encode_base64", encode_base64)
  rawset(ngx, "decode_base64", decode_base64)
  -- No hook running: the script is loading (or the spec is between calls).
  rawset(ngx, "get_phase", function() return current and "content" or "init" end)
  local mt = getmetatable(ngx)
  local index, newindex = mt.__index, mt.__newindex
  mt.__index = function(t, k)
    if k ~= "ctx" then return index(t, k) end
    local s = key()
    ctxs[s] = ctxs[s] or {}
    return ctxs[s]
  end
  mt.__newindex = function(t, k, v)
    if k ~= "ctx" then return newindex(t, k, v) end
    if type(v) ~= "table" then error("ngx.ctx must be a table", 2) end
    ctxs[key()] = v
  end

  local function wrap(fn)
    if type(fn) ~= "function" then return fn end
    return function(...)
      local outer = current
      current = session_in(...) or outer
      local r = pack(pcall(fn, ...))
      current = outer
      if not r[1] then error(r[2], 0) end
      return unpack(r, 2, r.n)
    end
  end
  return mod, wrap
end

return M
