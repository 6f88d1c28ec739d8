-- smtp.ngx.shdict outside the server: inside luasmtpd, the C module of
-- core/lua/api_shdict.c is preloaded under this name and this file is never
-- read. Under a plain `busted` run (policy unit specs with smtp.testing) a
-- script that declares dictionaries still loads: each one is a table in
-- this process with the same methods and answers, but no byte bound (no
-- eviction: capacity and free_space report the declared size).
local M = { shared = {} }

local Dict = {}
Dict.__index = Dict
Dict.__tostring = function() return "ngx.shared.DICT (fake)" end

local has_socket, socket = pcall(require, "socket")
local now = has_socket and socket.gettime or os.time

local function check_key(key)
  if type(key) == "number" then key = tostring(key) end
  if type(key) ~= "string" then error("bad argument #1 (string expected, got " .. type(key) .. ")", 3) end
  if key == "" then return nil, "empty key" end
  if #key > 65535 then return nil, "key too long" end
  return key
end

local function ttl_arg(t, what)
  t = t or 0
  if type(t) ~= "number" or t < 0 then error('bad "' .. what .. '" argument', 3) end
  return t > 0 and now() + t or nil
end

-- The live entry of key (or a stale one when stale_ok), and whether it expired.
function Dict:_entry(key, stale_ok)
  local e = self._items[key]
  if not e then return nil end
  local expired = e.expires ~= nil and e.expires <= now()
  if expired and not stale_ok then return nil end
  return e, expired
end

function Dict:get(key)
  local k, err = check_key(key)
  if not k then return nil, err end
  local e = self:_entry(k)
  if not e then return nil end
  if e.flags ~= 0 then return e.value, e.flags end
  return e.value
end

function Dict:get_stale(key)
  local k, err = check_key(key)
  if not k then return nil, err end
  local e, expired = self:_entry(k, true)
  if not e then return nil end
  return e.value, e.flags ~= 0 and e.flags or nil, expired
end

local STORABLE = { string = true, number = true, boolean = true, ["nil"] = true }

local function store(mode)
  return function(self, key, value, exptime, flags)
    local k, err = check_key(key)
    if not k then return nil, err end
    if not STORABLE[type(value)] then return nil, "bad value type" end
    local expires = ttl_arg(exptime, "exptime")
    local live = self:_entry(k) ~= nil
    if mode == "add" and live then return false, "exists", false end
    if mode == "replace" and not live then return false, "not found", false end
    if value == nil then
      self._items[k] = nil
    else
      self._items[k] = { value = value, expires = expires, flags = flags or 0 }
    end
    return true, nil, false
  end
end

Dict.set, Dict.safe_set = store("set"), store("set")
Dict.add, Dict.safe_add = store("add"), store("add")
Dict.replace = store("replace")

function Dict:delete(key)
  return self:set(key, nil)
end

function Dict:incr(key, value, init, init_ttl)
  local k, err = check_key(key)
  if not k then return nil, err end
  value = tonumber(value)
  if not value then return nil, "value not a number" end
  if init == nil and init_ttl ~= nil then error('must provide "init" when providing "init_ttl"', 2) end
  local e = self:_entry(k)
  if not e then
    if init == nil then return nil, "not found" end
    self._items[k] = { value = init + value, expires = ttl_arg(init_ttl, "init_ttl"), flags = 0 }
    return init + value, nil, false
  end
  if type(e.value) ~= "number" then
    if init == nil then return nil, "not a number" end
    return nil, "not a number", false
  end
  e.value = e.value + value
  if init == nil then return e.value end
  return e.value, nil, false
end

function Dict:ttl(key)
  local k, err = check_key(key)
  if not k then return nil, err end
  local e = self:_entry(k)
  if not e then return nil, "not found" end
  return e.expires and e.expires - now() or 0
end

function Dict:expire(key, exptime)
  local k, err = check_key(key)
  if not k then return nil, err end
  local e = self:_entry(k)
  if not e then return nil, "not found" end
  e.expires = ttl_arg(exptime, "exptime")
  return true
end

function Dict:flush_all()
  for _, e in pairs(self._items) do e.expires = 0 end
end

function Dict:flush_expired(max_count)
  local n = 0
  for k in pairs(self._items) do
    if (max_count or 0) > 0 and n >= max_count then break end
    local e = self._items[k]
    if e.expires and e.expires <= now() then
      self._items[k] = nil
      n = n + 1
    end
  end
  return n
end

function Dict:get_keys(max_count)
  max_count = max_count or 1024
  local out = {}
  for k in pairs(self._items) do
    if max_count > 0 and #out >= max_count then break end
    if self:_entry(k) then out[#out + 1] = k end
  end
  return out
end

function Dict:capacity() return self._size end
function Dict:free_space() return self._size end

local function bytes(b)
  if type(b) == "number" then return b end
  local n, unit = tostring(b):match("^(%d+%.?%d*)([kKmM]?)$")
  if not n then error('expected bytes (a number, or a size such as "10m")', 3) end
  return tonumber(n) * (({ k = 1024, K = 1024, m = 1048576, M = 1048576 })[unit] or 1)
end

--- declare(name, bytes): the dictionary, also M.shared[name].
function M.declare(name, size)
  if type(name) ~= "string" or name == "" then error("bad argument #1 (expected a name)", 2) end
  local d = setmetatable({ _items = {}, _size = bytes(size) }, Dict)
  M.shared[name] = d
  return d
end

return M
