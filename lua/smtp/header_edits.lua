-- The header edits of onData's stream (stream:addHeader, prependHeader,
-- removeHeader) for the streams the core does not make (the testing
-- kit's fake stream, the milters' spool in smtp.milters), with the core's rules
-- (core/smtp/message.c): the block ends at its first empty line (a message
-- without one is all header); names are RFC 5322 ftext; values have no NUL
-- and CR/LF only in folds; a value without folds is folded before spaces
-- to keep lines within 78 columns; removal is by name, case-insensitive;
-- a block over the limit passes unchanged with the new fields on top.
local M = {}
M.__index = M

local LIMIT = 1024 * 1024
local FOLD = 78

--- Edits for one message; limit: the header block's (1 MiB).
function M.new(limit)
  return setmetatable({ edits = {}, limit = limit or LIMIT }, M)
end

local function name_ok(name)
  return #name > 0 and #name <= 900 and not name:find("[^\33-\57\59-\126]")
end

local function value_ok(v)
  return not (v:find("%z") or v:find("\r[^\n]") or v:find("\r$") or v:find("\n[^ \t]") or v:find("\n$"))
end

function M:edit(op, name, value, index)
  if self.emitted then return nil, "header already read" end
  if not name_ok(name) then return nil, "bad header name" end
  if value and not value_ok(value) then return nil, "bad header value" end
  self.edits[#self.edits + 1] = { op = op, name = name, value = value, index = index }
  return true
end

local function new_field(e)
  local v, parts = e.value, { e.name, ":" }
  if #v > 0 then parts[#parts + 1] = " " end
  if v:find("\n", 1, true) then
    parts[#parts + 1] = (v:gsub("\r?\n", "\r\n"))
  else
    local col, i = #e.name + 2, 1
    while i <= #v do
      local j = v:find(" ", i + 1, true) or #v + 1
      if i > 1 and j - i > 1 and col + (j - i) > FOLD then
        parts[#parts + 1] = "\r\n"
        col = 0
      end
      parts[#parts + 1] = v:sub(i, j - 1)
      col = col + (j - i)
      i = j
    end
  end
  parts[#parts + 1] = "\r\n"
  return { text = table.concat(parts), name = e.name:lower(), new = true }
end

-- The received fields: a line starting with a space or tab continues the
-- field before it.
local function parse(text)
  local fields, pos = {}, 1
  while pos <= #text do
    local stop = pos
    repeat
      local lf = text:find("\n", stop, true)
      stop = lf and lf + 1 or #text + 1
    until stop > #text or not text:sub(stop, stop):find("[ \t]")
    local field = text:sub(pos, stop - 1)
    local name = not field:find("^[ \t]") and field:match("^([^\n]-)[ \t]*:")
    fields[#fields + 1] = { text = field, name = name and name:lower() }
    pos = stop
  end
  return fields
end

local function apply(fields, e)
  local lname = e.name:lower()
  if e.op == "add" then
    table.insert(fields, new_field(e))
  elseif e.op == "insert" then
    table.insert(fields, math.min(e.index, #fields) + 1, new_field(e))
  elseif e.op == "remove" then
    for i = #fields, 1, -1 do
      if fields[i].name == lname then table.remove(fields, i) end
    end
  end
end

--- The message with its edited header block; edits are over from then on.
function M:emit(message)
  self.emitted = true
  local blank_at, blank_end = message:find("^\r?\n")
  if not blank_at then
    blank_at, blank_end = message:find("\n\r?\n")
    blank_at = blank_at and blank_at + 1
  end
  local oversized = (blank_end or #message) > self.limit
  if #self.edits == 0 then return message end
  local fields_end = oversized and 0 or (blank_at and blank_at - 1 or #message)
  local fields = parse(message:sub(1, fields_end))
  for _, e in ipairs(self.edits) do apply(fields, e) end
  local out = {}
  for _, f in ipairs(fields) do
    -- A block cut short by the end of the message gets the line end a field after it needs.
    if f.new and #out > 0 and not out[#out]:find("\n$") then out[#out + 1] = "\r\n" end
    out[#out + 1] = f.text
  end
  out[#out + 1] = message:sub(fields_end + 1)
  return table.concat(out)
end

return M
