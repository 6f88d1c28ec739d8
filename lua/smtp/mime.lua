-- smtp.mime: the message as GMime reads it (core/proto/mime_tree.c, bound
-- by core/lua/api_mime.c). From onData:
--
--   local mime = require "smtp.mime"
--   local msg = assert(mime.parse(stream))      -- or a string
--   msg:header("Subject")                       -- decoded (RFC 2047) UTF-8
--   for part in msg:walk() do print(part.type, part.filename, part.size) end
--
-- A stream is read to its end (header edits made on it before are seen),
-- its chunks spooled as they come (smtp.core.spool: in memory, in a
-- temporary file past 256 KiB) and GMime reads the spool; a file (a
-- message already stored) is read by GMime in place. Malformed MIME gives
-- a partial msg with msg.defects (strings), not an error; nil, err only
-- when the stream could not be read or spooled. README.md, "Reading the message", has it all.
local core = require "smtp.core.mime"
local spool = require "smtp.core.spool"

local M = {}

local Msg = {}
Msg.__index = Msg

-- Each msg's header fields, {name, value, raw} in order, kept out of the
-- msg table so that it holds only the names the docs give.
local fields_of = setmetatable({}, { __mode = "k" })

local OPTIONS = { maxText = "number" }

local function check_options(opts)
  if opts == nil then return nil end
  if type(opts) ~= "table" then error("mime.parse: options must be a table", 3) end
  for k, v in pairs(opts) do
    if not OPTIONS[k] then error("mime.parse: unknown option " .. tostring(k), 3) end
    if type(v) ~= OPTIONS[k] then error("mime.parse: " .. k .. " must be a " .. OPTIONS[k], 3) end
  end
  if opts.maxText and opts.maxText < 0 then error("mime.parse: maxText must be >= 0", 3) end
  return opts.maxText
end

local function wrap(t)
  local msg = setmetatable({ root = t.root, defects = t.defects }, Msg)
  fields_of[msg] = t.headers
  return msg
end

--- mime.parse(source [, {maxText = bytes}]) -> msg, or nil, err.
--- source: a string, the onData stream (read to its end), or an open
--- file (read whole, from its start; its position is left as it was).
function M.parse(source, opts)
  local max_text = check_options(opts)
  if type(source) == "string" then return wrap(core.parse(source, max_text)) end
  if io.type(source) then
    local msg, err = core.parse_file(source, max_text)
    if not msg then return nil, err end
    return wrap(msg)
  end
  if type(source) ~= "userdata" and type(source) ~= "table" then
    error("mime.parse: source must be a string or the onData stream", 2)
  end
  local sp = spool.new()
  local chunk, ok, err
  while true do
    chunk, err = source:read()
    if not chunk then break end
    ok, err = sp:write(chunk)
    if not ok then break end
    -- the chunks read are garbage at once: collect them as they go, so a
    -- large message leaves no trail of them behind
    collectgarbage("step", #chunk / 1024)
  end
  if err then sp:close(); return nil, err end
  local msg = core.parse_spool(sp, max_text)
  sp:close()
  return wrap(msg)
end

--- msg:headers() -> every field in order, {name = , value = , raw = };
--- msg:headers(name) -> the decoded values of the fields of that name.
function Msg:headers(name)
  local fields, out = fields_of[self], {}
  if name == nil then
    for i, f in ipairs(fields) do out[i] = { name = f.name, value = f.value, raw = f.raw } end
    return out
  end
  name = name:lower()
  for _, f in ipairs(fields) do
    if f.name:lower() == name then out[#out + 1] = f.value end
  end
  return out
end

--- msg:header(name) -> the first field's decoded value, or nil.
function Msg:header(name)
  name = name:lower()
  for _, f in ipairs(fields_of[self]) do
    if f.name:lower() == name then return f.value end
  end
  return nil
end

--- msg:addresses(name) -> {{name = , address = }, ...} over every field
--- of that name (groups flattened; name nil when the address has none).
function Msg:addresses(name)
  name = name:lower()
  local out = {}
  for _, f in ipairs(fields_of[self]) do
    if f.name:lower() == name then
      for _, a in ipairs(core.addresses(f.raw)) do out[#out + 1] = a end
    end
  end
  return out
end

--- msg:walk() -> an iterator over the parts, depth first, the root first.
function Msg:walk()
  local stack = { self.root }
  return function()
    local part = table.remove(stack)
    if not part then return nil end
    local children = part.parts
    if children then
      for i = #children, 1, -1 do stack[#stack + 1] = children[i] end
    end
    return part
  end
end

return M
