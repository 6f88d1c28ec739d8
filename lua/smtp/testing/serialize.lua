-- smtp.testing.serialize: a value as Lua source that rebuilds it. The kit
-- sends a spec's options (hooks included) to the server this way, and the
-- server sends back its records of what onData received. Loaded inside
-- luasmtpd too, by the onData recorder.
--
-- Tables keep their sharing and cycles. With functions = true (options
-- sent to a server), functions travel as bytecode with their upvalues
-- (shared upvalues are joined again), and modules or library functions
-- travel by name; else functions and userdata are left out (recordings of
-- sessions).

local function number_literal(v)
  if v ~= v then return "(0/0)" end
  if v == math.huge then return "math.huge" end
  if v == -math.huge then return "-math.huge" end
  return string.format("%.17g", v)
end

-- value -> Lua expression, for everything reachable by require().
local function library_names()
  local names = { [_G] = "_G" }
  for name, mod in pairs(package.loaded) do
    if type(name) == "string" and (type(mod) == "table" or type(mod) == "function") then
      names[mod] = names[mod] or string.format("require(%q)", name)
    end
  end
  for name, mod in pairs(package.loaded) do
    if type(name) == "string" and type(mod) == "table" and mod ~= _G then
      for k, v in pairs(mod) do
        if type(k) == "string" and (type(v) == "function" or type(v) == "userdata") and not names[v] then
          names[v] = string.format("require(%q)[%q]", name, k)
        end
      end
    end
  end
  for k, v in pairs(_G) do
    if type(k) == "string" and not names[v] and (type(v) == "function" or type(v) == "userdata") then
      names[v] = string.format("_G[%q]", k)
    end
  end
  return names
end

local function serialize(root, functions)
  local ids, creates, fixups, count = {}, {}, {}, 0
  local names = functions and library_names() or {}
  local upvalues = {} -- upvalue id -> {node, index}

  local expr
  local function node(v)
    count = count + 1
    ids[v] = count
    return count
  end

  local function table_expr(t, where)
    local n = node(t)
    creates[#creates + 1] = string.format("n[%d] = {}", n)
    for k, v in pairs(t) do
      local ke, ve = expr(k, where), expr(v, where .. "." .. tostring(k))
      if ke and ve then fixups[#fixups + 1] = string.format("n[%d][%s] = %s", n, ke, ve) end
    end
    return string.format("n[%d]", n)
  end

  local function function_expr(f, where)
    local ok, code = pcall(string.dump, f)
    if not ok then
      error(string.format("testing.server: cannot send %s (a C function) to the server; "
        .. "put the hook in a script file", where), 0)
    end
    local n = node(f)
    creates[#creates + 1] = string.format("n[%d] = assert(loadstring(%q, %q))", n, code, "=" .. where)
    for i = 1, math.huge do
      local name, value = debug.getupvalue(f, i)
      if not name then break end
      local id = debug.upvalueid(f, i)
      local first = upvalues[id]
      if first then
        fixups[#fixups + 1] = string.format("debug.upvaluejoin(n[%d], %d, n[%d], %d)", n, i, first[1], first[2])
      else
        upvalues[id] = { n, i }
        local ve = expr(value, where .. " upvalue '" .. name .. "'")
        fixups[#fixups + 1] = string.format("debug.setupvalue(n[%d], %d, %s)", n, i, ve or "nil")
      end
    end
    return string.format("n[%d]", n)
  end

  function expr(v, where)
    local t = type(v)
    if t == "string" then return string.format("%q", v) end
    if t == "number" then return number_literal(v) end
    if t == "boolean" or t == "nil" then return tostring(v) end
    if names[v] then return names[v] end
    if ids[v] then return string.format("n[%d]", ids[v]) end
    if t == "table" then return table_expr(v, where) end
    if t == "function" and functions then return function_expr(v, where) end
    if functions then
      error(string.format("testing.server: cannot send %s (a %s) to the server; "
        .. "put the hook in a script file", where, t), 0)
    end
    return nil -- recordings leave out what cannot be written down
  end

  local top = expr(root, "options") or "nil"
  local lines = { "local n = {}" }
  for _, l in ipairs(creates) do lines[#lines + 1] = l end
  for _, l in ipairs(fixups) do lines[#lines + 1] = l end
  lines[#lines + 1] = "return " .. top
  return table.concat(lines, "\n")
end

-- Reads back what serialize(v, false) wrote, with nothing else in reach.
local function deserialize(source, name)
  local f, err = loadstring(source, name)
  if not f then return nil, err end
  setfenv(f, { math = { huge = math.huge }, assert = assert, loadstring = loadstring })
  local ok, v = pcall(f)
  if not ok then return nil, v end
  return v
end

return { serialize = serialize, deserialize = deserialize }
