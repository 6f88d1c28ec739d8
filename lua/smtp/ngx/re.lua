-- ngx.re.match/find/gmatch/sub/gsub with lua-nginx-module's rules, on the
-- PCRE2 of core/lua/api_re.c: captures[0] is the whole match, unmatched
-- groups are false, named groups appear under their names too (a list of
-- the matched ones with "D"), ctx.pos is where the next search starts and
-- is moved past the match, an empty match moves the next search one
-- character on. "o" keeps the compiled regex in a cache of at most 1024
-- (as lua_regex_cache_max_entries: past it, regexes are compiled per call).
local has_core, core_re = pcall(require, "smtp.core.re")

local M = {}

local CACHE_MAX = 1024
local cache, cached = {}, 0
local info = setmetatable({}, { __mode = "k" }) -- regex -> {n, names}
local ov = {} -- the offsets of the last exec; read before any other call

local function compile(regex, opts)
  if not has_core then error("ngx.re needs the luasmtpd runtime", 3) end
  opts = opts or ""
  if type(regex) ~= "string" then regex = tostring(regex) end
  if not opts:find("o", 1, true) then return core_re.compile(regex, opts) end
  local key = opts .. "\0" .. regex
  local r = cache[key]
  if r then return r end
  local err
  r, err = core_re.compile(regex, opts)
  if r and cached < CACHE_MAX then
    cache[key] = r
    cached = cached + 1
  end
  return r, err
end

local function regex_info(r)
  local i = info[r]
  if not i then
    i = { n = r:ncaptures(), names = r:names() }
    info[r] = i
  end
  return i
end

local function start_of(ctx)
  local pos = ctx and ctx.pos
  if not pos or pos <= 0 then return 0 end
  return pos - 1
end

-- One exec at pos (0-based): the number of groups set, 0 for none, or nil, err.
local function exec(r, subj, pos)
  if pos > #subj then return 0 end
  return r:exec(subj, pos, ov)
end

local function captures(r, subj, opts, res)
  local i = regex_info(r)
  if res then
    for k in pairs(res) do res[k] = nil end
  else
    res = {}
  end
  for g = 0, i.n do
    local from = ov[2 * g + 1]
    res[g] = from >= 0 and subj:sub(from + 1, ov[2 * g + 2])
  end
  if #i.names > 0 then
    local dup = opts and opts:find("D", 1, true)
    for _, entry in ipairs(i.names) do
      local name, cap = entry[1], res[entry[2]]
      if not dup then
        res[name] = cap
      elseif cap then
        local list = res[name] or {}
        list[#list + 1] = cap
        res[name] = list
      end
    end
  end
  return res
end

-- Where to search after a match ending at to (0-based, exclusive): an
-- empty match steps one character (whole UTF-8 sequences with u/U).
local function next_pos(subj, from, to, opts)
  if from ~= to then return to end
  local pos = to + 1
  if opts and opts:find("[uU]") then
    while pos < #subj do
      local b = subj:byte(pos + 1)
      if b < 0x80 or b > 0xbf then break end
      pos = pos + 1
    end
  end
  return pos
end

function M.match(subj, regex, opts, ctx, res)
  local r, err = compile(regex, opts)
  if not r then return nil, err end
  local rc
  rc, err = exec(r, subj, start_of(ctx))
  if not rc then return nil, err end
  if rc == 0 then return nil end
  if ctx then ctx.pos = ov[2] + 1 end
  return captures(r, subj, opts, res)
end

function M.find(subj, regex, opts, ctx, nth)
  local r, err = compile(regex, opts)
  if not r then return nil, nil, err end
  local rc
  rc, err = exec(r, subj, start_of(ctx))
  if not rc then return nil, nil, err end
  if rc == 0 then return nil end
  if ctx then ctx.pos = ov[2] + 1 end
  nth = (nth and nth > 0) and nth or 0
  if nth > regex_info(r).n then return nil, nil, "nth out of bound" end
  local from = ov[2 * nth + 1]
  if from < 0 then return nil, nil end
  return from + 1, ov[2 * nth + 2]
end

function M.gmatch(subj, regex, opts)
  local r, err = compile(regex, opts)
  if not r then return nil, err end
  local pos = 0
  return function()
    if not pos then return nil end
    local rc, e = exec(r, subj, pos)
    if not rc or rc == 0 then
      pos = nil
      return nil, e
    end
    pos = next_pos(subj, ov[1], ov[2], opts)
    return captures(r, subj, opts)
  end
end

-- A replacement template: "$0".."$99", "${N}", "$$" for a dollar sign.
-- Returns its parts (strings and group numbers) or nil.
local function parse_template(s)
  local parts, i = {}, 1
  while i <= #s do
    local d = s:find("$", i, true)
    if not d then
      parts[#parts + 1] = s:sub(i)
      break
    end
    if d > i then parts[#parts + 1] = s:sub(i, d - 1) end
    local digits, after = s:match("^(%d+)()", d + 1)
    if not digits then digits, after = s:match("^{(%d+)}()", d + 1) end
    if digits then
      parts[#parts + 1] = tonumber(digits)
      i = after
    elseif s:sub(d + 1, d + 1) == "$" then
      parts[#parts + 1] = "$"
      i = d + 2
    else
      return nil
    end
  end
  return parts
end

local function expand(parts, subj, ngroups)
  local out = {}
  for k, p in ipairs(parts) do
    if type(p) == "number" then
      local from = p <= ngroups and ov[2 * p + 1]
      out[k] = (from and from >= 0) and subj:sub(from + 1, ov[2 * p + 2]) or ""
    else
      out[k] = p
    end
  end
  return table.concat(out)
end

local function substitute(subj, regex, replace, opts, global)
  local r, err = compile(regex, opts)
  if not r then return nil, nil, err end
  local parts
  if type(replace) ~= "function" then
    parts = parse_template(tostring(replace))
    if not parts then return nil, nil, "failed to compile the replacement template" end
  end
  local out, n, pos, copied = {}, 0, 0, 0
  while true do
    local rc
    rc, err = exec(r, subj, pos)
    if not rc then return nil, nil, err end
    if rc == 0 then break end
    n = n + 1
    local from, to = ov[1], ov[2]
    out[#out + 1] = subj:sub(copied + 1, from)
    if parts then
      out[#out + 1] = expand(parts, subj, regex_info(r).n)
    else
      local piece = replace(captures(r, subj, opts))
      if type(piece) == "number" then piece = tostring(piece) end
      if type(piece) ~= "string" then error("the replace function returned a " .. type(piece) .. ", not a string", 3) end
      out[#out + 1] = piece
    end
    copied = to
    pos = next_pos(subj, from, to, opts)
    if not global then break end
  end
  if n == 0 then return subj, 0 end
  out[#out + 1] = subj:sub(copied + 1)
  return table.concat(out), n
end

function M.sub(subj, regex, replace, opts)
  return substitute(subj, regex, replace, opts, false)
end

function M.gsub(subj, regex, replace, opts)
  return substitute(subj, regex, replace, opts, true)
end

return M
