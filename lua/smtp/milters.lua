-- smtp.milters: the milters a script declares (`milters = {...}` in its
-- options), run at the usual points like Postfix's smtpd_milters. The
-- runtime hands the script's options table to declare() before it reads
-- them (core/lua/lua_runtime.c): declare() takes the milter options out
-- and wraps the script's hooks, so the core never learns milters exist.
--
-- At each step the script's hook decides first; a step it rejects goes to
-- no milter. onConnect sends the connection, onMailFrom HELO (once per
-- name: there is no HELO hook) and MAIL, onRcptTo RCPT, onData the whole
-- message (spooled first, smtp.core.spool: so every milter has answered
-- the end of the message before the script's onData reads a byte). Each
-- milter's changes are applied before the next milter reads the message,
-- as Postfix's cleanup edits its queue file between milters: OpenDMARC
-- after OpenDKIM reads OpenDKIM's Authentication-Results, and a replaced
-- body (in a new spool) is the body the next one gets. The
-- script's onData then gets the message as the milters left it: header
-- changes applied, a replaced body, recipients added or removed in
-- session.envelope.rcptTo; a reject or tempfail makes its stream:read()
-- return nil, err and its stream:save() write nothing, and is the reply
-- whatever it returns; a discard answers 250 without calling it.
local smtp = require "smtp"
local milter = require "smtp.milter"
local fsync = require "smtp.core.fsync"
local spool = require "smtp.core.spool"
-- the core's header-edit rules, in Lua (the testing kit's fake stream uses them too)
local header = require "smtp.header_edits"

local M = {}

local OPTIONS = { "milters", "milterDefaultAction", "milterConnectTimeout", "milterCommandTimeout",
  "milterContentTimeout" }
local DEFAULT_ACTIONS = { tempfail = true, accept = true, reject = true }
local CHUNK = 65535 -- the largest body packet of the milter protocol
local HEADERS_MAX = 1024 * 1024

local TEMPFAIL = smtp.reject(451, "4.7.1 Service unavailable - try again later")
local REJECT = smtp.reject(550, "5.7.1 Command rejected")

-- Checks the options and gives the list of milters, each with its own
-- socket, default action and timeouts.
local function configure(opts)
  local list = opts.milters
  if type(list) ~= "table" then error("option 'milters': a list of sockets or tables", 0) end
  local default = opts.milterDefaultAction or "tempfail"
  if not DEFAULT_ACTIONS[default] then
    error("option 'milterDefaultAction': tempfail, accept or reject, not " .. tostring(default), 0)
  end
  local out = {}
  for i, m in ipairs(list) do
    if type(m) == "string" then m = { socket = m } end
    if type(m) ~= "table" or not milter.parse_socket(m.socket) then
      error("option 'milters': entry " .. i .. " is not \"inet:host:port\" or \"unix:/path\"", 0)
    end
    local action = m.defaultAction or default
    if not DEFAULT_ACTIONS[action] then
      error("option 'milters': entry " .. i .. ": defaultAction is tempfail, accept or reject", 0)
    end
    out[i] = { socket = m.socket, defaultAction = action,
      connectTimeout = m.connectTimeout or opts.milterConnectTimeout or 30,
      commandTimeout = m.commandTimeout or opts.milterCommandTimeout or 30,
      contentTimeout = m.contentTimeout or opts.milterContentTimeout or 300 }
  end
  return out
end

local function pack(...)
  return { n = select("#", ...), ... }
end

-- Per session: each milter's connection and where it stands.
local sessions = setmetatable({}, { __mode = "k" })

local function macros(session, extra)
  local env = session.envelope or {}
  local st = sessions[session]
  local t = {
    j = st and st.name, ["{daemon_name}"] = "luasmtpd", ["{daemon_addr}"] = session.localAddress,
    v = "luasmtpd", _ = (session.clientHostname or "unknown") .. " [" .. tostring(session.remoteAddress) .. "]",
    ["{client_addr}"] = session.remoteAddress, ["{client_name}"] = session.clientHostname,
    ["{client_port}"] = session.remotePort, i = session.id,
    ["{auth_type}"] = session.authMethod, ["{auth_authen}"] = session.user,
    ["{mail_addr}"] = env.mailFrom and env.mailFrom.address,
  }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

-- A milter failed (down, slow, nonsense): its default action from now on.
local function failed(st, i, err)
  local m = st.milters[i]
  smtp.log.warn("milter failed", { milter = m.cfg.socket, reason = tostring(err), action = m.cfg.defaultAction })
  if m.conn then m.conn:close() end
  m.conn, m.off = nil, true
  if m.cfg.defaultAction ~= "accept" then st.fail = m.cfg.defaultAction == "reject" and REJECT or TEMPFAIL end
end

local function family(addr)
  if not addr then return "U" end
  return addr:find(":", 1, true) and "6" or "4"
end

-- Opens and negotiates each milter and sends the connect step.
local function open(session, cfgs, name)
  local st = { milters = {}, name = name }
  sessions[session] = st
  for i, cfg in ipairs(cfgs) do
    st.milters[i] = { cfg = cfg }
    local conn, err = milter.connect(cfg.socket, cfg)
    if conn then
      st.milters[i].conn = conn
      local ok
      ok, err = conn:negotiate()
      if not ok then conn = nil end
    end
    if not conn then
      failed(st, i, err)
    end
  end
  return st
end

-- Runs fn(conn, m) on each milter still in the session (and message); a
-- verdict other than continue ends the walk. Returns nil or the verdict.
local function each(st, fn)
  if st.fail then return { action = "fail", reply = st.fail } end
  for i, m in ipairs(st.milters) do
    if m.conn and not m.off and not m.msg_off then
      local v, err = fn(m.conn, m)
      if not v then
        failed(st, i, err)
        if st.fail then return { action = "fail", reply = st.fail } end
      elseif v.action ~= "continue" then
        return v
      end
    end
  end
end

local function close(session)
  local st = sessions[session]
  if not st then return end
  sessions[session] = nil
  for _, m in ipairs(st.milters) do
    if m.conn then pcall(m.conn.close, m.conn) end
  end
end

-- A hook's results: did it refuse the step?
local function refused(...)
  local first, second = ...
  return select("#", ...) >= 2 and first == nil and second ~= nil
end

local function wrap_connect(orig, cfgs, name)
  return function(session, ...)
    local r = orig and pack(orig(session, ...)) or pack()
    if refused(unpack(r, 1, r.n)) then return unpack(r, 1, r.n) end
    local st = open(session, cfgs, name)
    local v = each(st, function(c, m)
      local x, err = c:connect(session.clientHostname or ("[" .. tostring(session.remoteAddress) .. "]"),
        family(session.remoteAddress), session.remotePort, session.remoteAddress, macros(session))
      -- accept: this milter is done for the session; discard: every message is
      if x and x.action == "accept" then m.off = true; x = { action = "continue" } end
      if x and x.action == "discard" then st.discard_all = true; x = { action = "continue" } end
      return x, err
    end)
    if v and v.reply then return nil, v.reply end
    return unpack(r, 1, r.n)
  end
end

-- A verdict that ends the message for this milter (accept) or all (discard).
local function message_verdict(st, m, v)
  if v.action == "accept" then m.msg_off = true; return { action = "continue" } end
  if v.action == "discard" then st.discard = true; return { action = "continue" } end
  return v
end

-- A wrapper of onMailFrom or onRcptTo: the script's hook first; when it
-- accepted, step(address, session, st) asks the milters, and a verdict
-- with a reply refuses the command.
local function after_hook(orig, step)
  return function(address, session, ...)
    local r = orig and pack(orig(address, session, ...)) or pack()
    if refused(unpack(r, 1, r.n)) then return unpack(r, 1, r.n) end
    local st = sessions[session]
    if st then
      local v = step(address, session, st)
      if v and v.reply then return nil, v.reply end
    end
    return unpack(r, 1, r.n)
  end
end

-- MAIL (HELO first when its name is new): a new message for every milter.
local function mail_step(address, session, st)
  local helo = session.hostNameAppearsAs or ""
  for _, m in ipairs(st.milters) do
    if m.conn and m.in_message then m.conn:abort() end
    m.in_message, m.msg_off = true, false
  end
  st.discard = st.discard_all
  return each(st, function(c, m)
    if m.helo ~= helo then
      m.helo = helo
      local h, err = c:helo(helo, macros(session))
      if not h then return nil, err end
      if h.action == "accept" then m.off = true; return { action = "continue" } end
      if h.action ~= "continue" then return h end
    end
    local args = {}
    for k, x in pairs(address.args or {}) do args[#args + 1] = x == true and k or (k .. "=" .. tostring(x)) end
    table.sort(args)
    local x, err = c:mail("<" .. (address.address or "") .. ">", args,
      macros(session, { ["{mail_addr}"] = address.address }))
    if not x then return nil, err end
    return message_verdict(st, m, x)
  end)
end

local function rcpt_step(address, session, st)
  return each(st, function(c, m)
    local x, err = c:rcpt("<" .. address.address .. ">", nil, macros(session, { ["{rcpt_addr}"] = address.address }))
    if not x then return nil, err end
    return message_verdict(st, m, x)
  end)
end

-- A spool that could not be written (a full disk): the message is
-- refused for now, whatever the milters would say.
local function unspooled(err)
  smtp.log.warn("cannot spool the message", { reason = tostring(err) })
  return smtp.reject(451, "4.3.0 cannot spool the message: " .. tostring(err))
end

-- The message spooled: its header block (a string) and the rest in a
-- spool (smtp.core.spool: in memory up to 256 KiB, in a temporary file
-- past that), or nil, err (the stream's refusal, or the spool's reply).
local function spool_message(stream)
  local head, buf = nil, ""
  local body = spool.new()
  while true do
    local s, err = stream:read()
    if s == nil then
      if err ~= nil then body:close(); return nil, err end
      break
    end
    if not head then
      buf = buf .. s
      local b, e = buf:find("\n\r?\n")
      if buf:find("^\r?\n") then
        head, buf = "", buf:gsub("^\r?\n", "")
      elseif b then
        head, buf = buf:sub(1, b), buf:sub(e + 1)
      elseif #buf > HEADERS_MAX then
        head, buf = buf, ""
      end
      s = head and buf
    end
    if s then
      local ok, werr = body:write(s)
      if not ok then body:close(); return nil, unspooled(werr) end
    end
  end
  return { head = head or buf, body = body }
end

-- A reader of the body spool from its start, CHUNK bytes at a time:
-- each call gives the next chunk, nil at the end, or nil, err.
local function body_reader(body)
  local at = 0
  return function()
    local c, err = body:read(at, CHUNK)
    if c then at = at + #c end
    return c, err
  end
end

-- A reader over the message as it stands (msg: its header fields and
-- body spool): the header block, the blank line, the body.
local function reader(msg)
  local next_chunk
  return {
    read = function()
      if not next_chunk then
        next_chunk = body_reader(msg.body)
        return table.concat(msg.fields) .. "\r\n"
      end
      return next_chunk()
    end,
  }
end

-- The header block as a list of fields, each its raw lines ("Name:value\r\n").
local function fields(head)
  local list = {}
  for line in head:gmatch("[^\n]*\n") do
    if line:find("^[ \t]") and #list > 0 then
      list[#list] = list[#list] .. line
    else
      list[#list + 1] = line
    end
  end
  return list
end

local function field_name(f)
  return (f:match("^([^:]*):") or ""):lower()
end

-- "Name:" then the value, a space after the colon unless the milter sent
-- its own (SMFIP_HDR_LEADSPC), line breaks as CRLF.
local function field(name, value)
  value = value:gsub("\r?\n", "\r\n")
  if not value:find("^[ \t]") then value = " " .. value end
  return name .. ":" .. value .. "\r\n"
end

local function apply_headers(list, mod)
  if mod.action == "addheader" then
    list[#list + 1] = field(mod.name, mod.value)
  elseif mod.action == "insheader" then
    table.insert(list, math.min(mod.index, #list) + 1, field(mod.name, mod.value))
  elseif mod.action == "chgheader" then
    local want, seen = mod.name:lower(), 0
    for i, f in ipairs(list) do
      if field_name(f) == want then
        seen = seen + 1
        if seen == math.max(mod.index, 1) then
          if mod.value == "" then table.remove(list, i) else list[i] = field(mod.name, mod.value) end
          return
        end
      end
    end
    if mod.value ~= "" then list[#list + 1] = field(mod.name, mod.value) end
  end
end

-- A milter's ESMTP args ("NOTIFY=NEVER ORCPT=rfc822;a+2Bb@c") as the core
-- gives a command's: keys upper-cased, values xtext-decoded, true alone.
local function esmtp_args(s)
  local args = {}
  for word in (s or ""):gmatch("%S+") do
    local k, v = word:match("^([^=]+)=(.*)$")
    if k then
      args[k:upper()] = v:gsub("%+(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
    else
      args[word:upper()] = true
    end
  end
  return args
end

local function apply_envelope(session, mod)
  local env = session.envelope
  local function bare(a) return (a:gsub("^<(.*)>$", "%1")) end
  if mod.action == "addrcpt" then
    env.rcptTo[#env.rcptTo + 1] = { address = bare(mod.address), args = esmtp_args(mod.args) }
  elseif mod.action == "delrcpt" then
    local gone = bare(mod.address):lower()
    for i = #env.rcptTo, 1, -1 do
      if env.rcptTo[i].address:lower() == gone then table.remove(env.rcptTo, i) end
    end
  elseif mod.action == "chgfrom" then
    env.mailFrom = { address = bare(mod.address), args = esmtp_args(mod.args) }
  end
end

-- The stream the script's onData gets: the message as the milters left it
-- (read, chunks, save, and header edits with the core's rules until the
-- first read or save), or their refusal.
local function replay(msg, refusal)
  local edits = header.new()
  local head = table.concat(msg.fields)
  local next_chunk
  local function next_piece()
    if refusal then return nil, refusal end
    if not next_chunk then
      next_chunk = body_reader(msg.body)
      return edits:emit(head .. "\r\n")
    end
    return next_chunk()
  end
  local s = { byteLength = #head + 2 + msg.body:size(), sizeExceeded = false }
  function s.read() return next_piece() end
  function s.chunks()
    return function()
      local c, err = next_piece()
      if c == nil and err ~= nil then error(err, 0) end
      return c
    end
  end
  function s.addHeader(_, name, value) return edits:edit("add", name, value) end
  function s.prependHeader(_, name, value) return edits:edit("insert", name, value, 0) end
  function s.removeHeader(_, name) return edits:edit("remove", name) end
  function s.save(_, path, prefix)
    if refusal then return nil, refusal end
    if next_chunk then return nil, "stream:save: part of the message was already read" end
    local exists = io.open(path, "rb")
    if exists then exists:close(); return nil, "File exists" end
    local f, err = io.open(path, "wb")
    if not f then return nil, err end
    f:write(prefix or "")
    local c, rerr
    repeat
      c, rerr = next_piece()
      if c then f:write(c) end
    until not c
    local ok, werr = f:close()
    if ok and rerr then ok, werr = nil, rerr end
    if ok then ok, werr = fsync.file(path) end
    if ok then ok, werr = smtp.fsync_dir(path:match("^(.*)/[^/]*$") or ".") end
    if not ok then os.remove(path); return nil, werr end
    return true
  end
  return s
end

-- A milter's replacement body (its SMFIR_REPLBODY packets, in order) in
-- a new spool, line breaks as CRLF (a CR ending one packet and the LF
-- starting the next are one break). Returns the spool, or nil, err.
local function replaced_body(mods)
  local body, cr = spool.new(), false
  for _, mod in ipairs(mods) do
    if mod.action == "replbody" and #mod.data > 0 then
      local d = mod.data
      if cr and d:sub(1, 1) == "\n" then d = d:sub(2) end
      cr = d:sub(-1) == "\r"
      d = d:gsub("\r?\n", "\r\n"):gsub("\r$", "")
      if cr then d = d .. "\r\n" end
      local ok, err = body:write(d)
      if not ok then body:close(); return nil, err end
    end
  end
  return body
end

-- Applies one milter's modifications to the message as it stands, so the
-- next milter and the script see them, as Postfix's cleanup edits the
-- queue file before the next milter reads it: header changes, a replaced
-- body, the envelope. Returns true, or nil, err when the replaced body
-- could not be spooled.
local function apply(msg, session, mods)
  local newbody = false
  for _, mod in ipairs(mods) do
    if mod.action == "replbody" then
      newbody = true
    elseif mod.action == "quarantine" then
      session.milterQuarantine = mod.reason
      smtp.log.warn("milter quarantined the message", { session = session.id, reason = mod.reason })
    elseif mod.action == "addrcpt" or mod.action == "delrcpt" or mod.action == "chgfrom" then
      apply_envelope(session, mod)
    else
      apply_headers(msg.fields, mod)
    end
  end
  if newbody then
    local body, err = replaced_body(mods)
    if not body then return nil, err end
    msg.body:close()
    msg.body = body
  end
  return true
end

local function wrap_data(orig)
  return function(stream, session, ...)
    local st = sessions[session]
    if not st then
      if orig then return orig(stream, session, ...) end
      return
    end
    local sp, serr = spool_message(stream)
    if not sp then return nil, serr end
    local msg = { fields = fields(sp.head), body = sp.body }
    local v = each(st, function(c, m)
      m.in_message = false
      local d, err = c:data(macros(session))
      if not d then return nil, err end
      if d.action ~= "continue" then return message_verdict(st, m, d) end
      local x, xmods = c:message(reader(msg), macros(session))
      if not x then return nil, xmods end
      local ok, aerr = apply(msg, session, xmods or {})
      if not ok then return { action = "tempfail", reply = unspooled(aerr) } end
      return message_verdict(st, m, x)
    end)
    if v and v.reply then
      -- the script still sees the message end (refused), and its answer is moot
      if orig then pcall(orig, replay(msg, v.reply), session, ...) end
      msg.body:close()
      return nil, v.reply
    end
    if st.discard then
      smtp.log.info("milter discarded the message", { session = session.id })
      msg.body:close()
      return "discarded"
    end
    local r = pack()
    if orig then r = pack(orig(replay(msg), session, ...)) end
    msg.body:close()
    return unpack(r, 1, r.n)
  end
end

local function wrap_close(orig)
  return function(session, ...)
    close(session)
    if orig then return orig(session, ...) end
  end
end

-- Takes the milter options out of one listener's options and wraps its hooks.
local function declare_one(opts)
  if opts.milters == nil then return end
  local cfgs = configure(opts)
  for _, k in ipairs(OPTIONS) do opts[k] = nil end
  if #cfgs == 0 then return end
  opts.onConnect = wrap_connect(opts.onConnect, cfgs, opts.name)
  opts.onMailFrom = after_hook(opts.onMailFrom, mail_step)
  opts.onRcptTo = after_hook(opts.onRcptTo, rcpt_step)
  opts.onData = wrap_data(opts.onData)
  opts.onClose = wrap_close(opts.onClose)
end

--- The script's options (one table, or an array of listener tables).
function M.declare(opts)
  if type(opts) ~= "table" then return opts end
  if type(opts[1]) == "table" then
    for _, o in ipairs(opts) do declare_one(o) end
  else
    declare_one(opts)
  end
  return opts
end

return M
