-- URI escaping and query strings as lua-nginx-module does them
-- (ngx.escape_uri, unescape_uri, encode_args, decode_args): uppercase hex,
-- "+" read as a space, an invalid escape kept as it is. Pure Lua, so it
-- works under busted as well as in the server.
local M = {}

-- type 2 (the default): a URI component, everything but RFC 3986's
-- unreserved characters; type 0: a whole URI (nginx's NGX_ESCAPE_URI:
-- space, "#", "%", "?", controls and bytes above 0x7e).
local patterns = { [0] = "[%z\1-\32#%%?\127-\255]", [2] = "[^%w%-%._~]" }

local function hex(c)
  return ("%%%02X"):format(c:byte())
end

function M.escape(s, kind)
  if s == nil then return "" end
  if type(s) ~= "string" then s = tostring(s) end
  local pattern = patterns[kind or 2]
  if not pattern then error("\"type\" " .. tostring(kind) .. " out of range", 2) end
  return (s:gsub(pattern, hex))
end

local function unhex(h)
  return string.char(tonumber(h, 16))
end

function M.unescape(s)
  if s == nil then return "" end
  if type(s) ~= "string" then s = tostring(s) end
  return (s:gsub("%+", " "):gsub("%%(%x%x)", unhex))
end

local function arg_string(v, what)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return tostring(v) end
  error("attempt to use " .. t .. " as query arg " .. what, 3)
end

local function add_pair(out, k, v)
  if v == true then
    out[#out + 1] = M.escape(k)
  elseif v ~= false then
    out[#out + 1] = M.escape(k) .. "=" .. M.escape(arg_string(v, "value"))
  end
end

--- encode_args({k = v}): "k=v&..."; true gives a bare key, false is left
--- out, a list repeats the key. Keys come sorted (nginx leaves the order
--- to the table; a fixed one keeps signatures and caches stable).
function M.encode_args(args)
  if type(args) ~= "table" then error("bad argument #1 to 'encode_args' (table expected, got " .. type(args) .. ")", 2) end
  local keys = {}
  for k in pairs(args) do keys[#keys + 1] = arg_string(k, "key") end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do
    local v = args[k]
    if v == nil then v = args[tonumber(k)] end
    if type(v) == "table" then
      for _, item in ipairs(v) do add_pair(out, k, item) end
    else
      add_pair(out, k, v)
    end
  end
  return table.concat(out, "&")
end

--- decode_args(str [, max_args = 100]): {k = v}; a bare key is true, a
--- repeated key a list; at most max_args pairs (0: no limit).
function M.decode_args(s, max_args)
  max_args = max_args or 100
  local args, n = {}, 0
  for pair in tostring(s):gmatch("[^&]+") do
    if max_args > 0 and n >= max_args then break end
    n = n + 1
    local k, v = pair:match("^([^=]*)=(.*)$")
    if k then
      k, v = M.unescape(k), M.unescape(v)
    else
      k, v = M.unescape(pair), true
    end
    if k ~= "" then
      local old = args[k]
      if old == nil then
        args[k] = v
      elseif type(old) == "table" then
        old[#old + 1] = v
      else
        args[k] = { old, v }
      end
    end
  end
  return args
end

return M
