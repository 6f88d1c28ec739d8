-- smtp.testing.recorder: the onData recorder. Inside luasmtpd (loaded by
-- the wrapper script testing.server writes) it applies the spec's
-- overrides, moves the listeners to free ports and records what each
-- onData received, one file per message; in the spec, read() gives the
-- records back for server:messages().
local files = require "smtp.testing.files"
local serialize = require "smtp.testing.serialize"

local M = {}

local unpack = unpack or table.unpack

local function pack(...)
  return { n = select("#", ...), ... }
end

-- A plain copy of a session (or envelope) for the record.
local function plain_copy(v, depth, seen)
  if type(v) ~= "table" then
    local t = type(v)
    if t == "string" or t == "number" or t == "boolean" then return v end
    return nil
  end
  if depth > 6 or seen[v] then return nil end
  seen[v] = true
  local out = {}
  for k, x in pairs(v) do
    if type(k) == "string" or type(k) == "number" then out[k] = plain_copy(x, depth + 1, seen) end
  end
  seen[v] = nil
  return out
end

-- Wraps the core's stream: the hook gets the same methods, and every byte
-- it takes is also kept for the record.
local function recording_stream(real, parts)
  local proxy = {}
  function proxy.read(_)
    local chunk, err = real:read()
    if chunk then
      parts[#parts + 1] = chunk
      parts.hookRead = parts.hookRead + #chunk
    end
    return chunk, err
  end
  function proxy.chunks(_)
    return function()
      local chunk, err = proxy:read()
      if err then error(require("smtp").reject(tonumber(err:sub(1, 3)), err:sub(5)), 0) end
      return chunk
    end
  end
  function proxy.save(_, path, prefix)
    local ok, err = real:save(path, prefix)
    if ok then
      -- Read back before the hook can move the file (maildir renames it).
      local data = files.read_file(path)
      if data then
        local body = data:sub(#(prefix or "") + 1)
        parts[#parts + 1] = body
        parts.hookRead = parts.hookRead + #body
      end
    else
      parts.saveError = tostring(err)
    end
    return ok, err
  end
  -- The header edits are the core's methods: they take the real stream.
  for _, name in ipairs { "addHeader", "prependHeader", "removeHeader" } do
    proxy[name] = function(_, ...) return real[name](real, ...) end
  end
  return setmetatable(proxy, { __index = function(_, k) return real[k] end })
end

local record_seq = 0

local function write_record(dir, record)
  record_seq = record_seq + 1
  record.seq = record_seq
  local name = string.format("%s/%08d", dir, record_seq)
  local ok, err = files.write_file(name .. ".tmp", serialize.serialize(record, false))
  if ok then ok, err = os.rename(name .. ".tmp", name .. ".msg") end
  if not ok then
    require("smtp").log.warn("smtp.testing: cannot record the message", { error = tostring(err) })
  end
end

-- onData as the user wrote it, plus a record of what it received.
local function recording_on_data(user_fn, dir)
  local smtp = require "smtp"
  return function(stream, session)
    local parts = { hookRead = 0 }
    local r = { n = 1, true }
    if user_fn then
      local proxy = recording_stream(stream, parts)
      r = pack(xpcall(function() return user_fn(proxy, session) end, function(e)
        if smtp.is_reject(e) then return e end
        return debug.traceback(tostring(e), 2)
      end))
    end
    -- What the hook left unread is drained here rather than by the core,
    -- so that the record holds the whole body; the reply is the same. A
    -- message the core refuses ends in nil, err instead: its record is cut.
    for chunk in stream.read, stream do parts[#parts + 1] = chunk end
    local record = plain_copy(session, 0, {})
    record.session = plain_copy(session, 0, {})
    if not parts.saveError then record.body = table.concat(parts) end
    record.hookRead, record.saveError = parts.hookRead, parts.saveError
    record.byteLength, record.sizeExceeded = stream.byteLength, stream.sizeExceeded
    if not r[1] then
      if smtp.is_reject(r[2]) then
        record.rejection = { code = r[2].code, message = r[2].message }
      else
        record.error = tostring(r[2])
      end
    elseif r.n >= 3 and not r[2] and r[3] ~= nil then
      record.rejection = type(r[3]) == "table" and { code = r[3].code, message = r[3].message }
        or { message = tostring(r[3]) }
    end
    record.accepted = record.rejection == nil and record.error == nil
    write_record(dir, record)
    if not r[1] then error(r[2], 0) end
    return unpack(r, 2, r.n)
  end
end

--- Used by the wrapper script inside the server: applies the spec's
--- overrides, forces every listener onto cfg.host port 0 (the kit finds
--- the real port), shortens closeTimeout unless set (stop() stays fast)
--- and records onData.
function M.instrument(options, cfg)
  local listeners = type(options[1]) == "table" and options or { options }
  for _, o in ipairs(listeners) do
    for k, v in pairs(cfg.overrides or {}) do o[k] = v end
    o.listen = cfg.host .. ":0"
    if o.closeTimeout == nil then o.closeTimeout = 1 end
    o.onData = recording_on_data(o.onData, cfg.dir)
  end
  return options
end

--- The records in dir, in the order the messages came.
function M.read(dir)
  local names = {}
  local p = io.popen("ls -1 " .. files.shell_quote(dir) .. " 2>/dev/null")
  for name in p:lines() do
    if name:match("^%d+%.msg$") then names[#names + 1] = name end
  end
  p:close()
  table.sort(names)
  local out = {}
  for _, name in ipairs(names) do
    local rec = serialize.deserialize(files.read_file(dir .. "/" .. name) or "", "=" .. name)
    if rec then out[#out + 1] = rec end
  end
  return out
end

return M
