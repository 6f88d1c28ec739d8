-- smtp.milter: a client of the milter protocol (version 6, as Postfix's
-- smtpd and Sendmail speak it to OpenDKIM, OpenDMARC, rspamd, clamav-milter)
-- on the core's cosockets. The packets are C (smtp.milter.proto,
-- core/proto/milter.c); this file holds the conversation:
--
--   local milter = require "smtp.milter"
--   local m, err = milter.connect("inet:127.0.0.1:8891", { commandTimeout = 10 })
--   m:negotiate()                                  -- what we offer; returns what it wants
--   local v = m:connect("mx.example", "4", 52000, "192.0.2.1")
--   v = m:helo("client.example"); v = m:mail("<a@b>"); v = m:rcpt("<c@d>")
--   local v, mods = m:message(stream)              -- headers, body, end of message
--   m:close()
--
-- Every step returns a verdict {action = "continue" | "accept" | "reject" |
-- "tempfail" | "discard" | "skip", reply = smtp.reject(...) for reject and
-- tempfail}, and the end of message also the modifications the milter
-- asked for, in order: {action = "addheader" | "insheader" | "chgheader" |
-- "addrcpt" | "delrcpt" | "chgfrom" | "replbody" | "quarantine", ...}.
-- nil, err (a string: "timeout", "closed", "connection refused", "bad
-- answer", ...) when the milter is down, slow or speaks nonsense.
local smtp = require "smtp"
local proto = require "smtp.milter.proto"

local M = {}

-- SMFIF_*: the actions we can apply, all offered.
M.actions = {
  addheader = 0x1, replbody = 0x2, addrcpt = 0x4, delrcpt = 0x8, chgheader = 0x10,
  quarantine = 0x20, chgfrom = 0x40, addrcpt_par = 0x80, setsymlist = 0x100,
}
local ALL_ACTIONS = 0x1ff

-- SMFIP_*: the steps a milter may leave out (NO*) or not answer (NR_*).
local P = {
  NOCONNECT = 0x1, NOHELO = 0x2, NOMAIL = 0x4, NORCPT = 0x8, NOBODY = 0x10, NOHDRS = 0x20,
  NOEOH = 0x40, NR_HDR = 0x80, NOUNKNOWN = 0x100, NODATA = 0x200, SKIP = 0x400,
  RCPT_REJ = 0x800, NR_CONN = 0x1000, NR_HELO = 0x2000, NR_MAIL = 0x4000, NR_RCPT = 0x8000,
  NR_DATA = 0x10000, NR_UNKN = 0x20000, NR_EOH = 0x40000, NR_BODY = 0x80000, HDR_LEADSPC = 0x100000,
}
-- Everything Postfix offers but the larger body chunks (SMFIP_MDS_*).
local ALL_STEPS = 0x1fffff

-- The step each command is, for the flags that leave it out or unanswered,
-- and the stage (SMFIM_*) of its macros.
local STEPS = {
  C = { no = P.NOCONNECT, nr = P.NR_CONN, stage = 0 },
  H = { no = P.NOHELO, nr = P.NR_HELO, stage = 1 },
  M = { no = P.NOMAIL, nr = P.NR_MAIL, stage = 2 },
  R = { no = P.NORCPT, nr = P.NR_RCPT, stage = 3 },
  T = { no = P.NODATA, nr = P.NR_DATA, stage = 4 },
  L = { no = P.NOHDRS, nr = P.NR_HDR, stage = 6 },
  N = { no = P.NOEOH, nr = P.NR_EOH, stage = 6 },
  B = { no = P.NOBODY, nr = P.NR_BODY, stage = 5 },
  E = { no = 0, nr = 0, stage = 5 },
}

-- Postfix's defaults (milter_*_macros), per stage; a milter's SETSYMLIST
-- in its OPTNEG reply replaces a stage's list.
M.default_macros = {
  [0] = { "j", "{daemon_name}", "{daemon_addr}", "v", "_", "{client_addr}", "{client_name}", "{client_port}" },
  [1] = { "{tls_version}", "{cipher}", "{cipher_bits}", "{cert_subject}", "{cert_issuer}" },
  [2] = { "i", "{auth_type}", "{auth_authen}", "{auth_author}", "{mail_addr}", "{mail_host}", "{mail_mailer}" },
  [3] = { "i", "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}" },
  [4] = { "i" },
  [5] = { "i" },
  [6] = { "i" },
}

local CHUNK = 65535
local HEADERS_MAX = 1024 * 1024 -- read as headers before the blank line must have come

-- The default replies of Postfix for a bare reject and tempfail.
local function verdict_of(r)
  local c = r.code
  if c == "c" then return { action = "continue" } end
  if c == "a" then return { action = "accept" } end
  if c == "s" then return { action = "skip" } end
  if c == "d" then return { action = "discard" } end
  if c == "r" then return { action = "reject", reply = smtp.reject(550, "5.7.1 Command rejected") } end
  if c == "t" or c == "4" or c == "f" then
    return { action = "tempfail", reply = smtp.reject(451, "4.7.1 Service unavailable - try again later") }
  end
  if c == "y" then
    -- "550 5.7.1 text", a multiline one's lines joined by CRLF
    local text = r.a:sub(5):gsub("\r\n%d%d%d[ -]", " ")
    return { action = r.smtp_code >= 500 and "reject" or "tempfail", reply = smtp.reject(r.smtp_code, text) }
  end
end

local MODS = {
  h = function(r) return { action = "addheader", name = r.a, value = r.b } end,
  i = function(r) return { action = "insheader", index = r.index, name = r.a, value = r.b } end,
  m = function(r) return { action = "chgheader", index = r.index, name = r.a, value = r.b } end,
  ["+"] = function(r) return { action = "addrcpt", address = r.a } end,
  ["2"] = function(r) return { action = "addrcpt", address = r.a, args = r.b } end,
  ["-"] = function(r) return { action = "delrcpt", address = r.a } end,
  e = function(r) return { action = "chgfrom", address = r.a, args = r.b } end,
  b = function(r) return { action = "replbody", data = r.a } end,
  q = function(r) return { action = "quarantine", reason = r.a } end,
}

local Milter = {}
Milter.__index = Milter

-- "inet:host:port", "inet:port@host" (Sendmail's), "inet6:..." or
-- "unix:/path" ("local:/path") -> host, port (nil for a unix socket).
function M.parse_socket(spec)
  local kind, rest = tostring(spec):match("^(%a+%d?):(.+)$")
  if kind == "unix" or kind == "local" then return "unix:" .. rest end
  if kind ~= "inet" and kind ~= "inet6" then return nil, "bad name" end
  local port, host = rest:match("^(%d+)@(.+)$")
  if not port then host, port = rest:match("^%[?(.-)%]?:(%d+)$") end
  port = tonumber(port)
  if not host or host == "" or not port or port < 1 or port > 65535 then return nil, "bad name" end
  return host, port
end

--- Connects to a milter: opts.connectTimeout (30), commandTimeout (30),
--- contentTimeout (300) in seconds. Returns a client or nil, err.
function M.connect(spec, opts)
  opts = opts or {}
  local host, port = M.parse_socket(spec)
  if not host then return nil, port end
  local sock = smtp.tcp()
  local m = setmetatable({
    sock = sock, name = tostring(spec), protocol = 0, symlist = {},
    connect_timeout = opts.connectTimeout or 30, command_timeout = opts.commandTimeout or 30,
    content_timeout = opts.contentTimeout or 300,
  }, Milter)
  sock:settimeout(m.connect_timeout)
  local ok, err
  if port then ok, err = sock:connect(host, port) else ok, err = sock:connect(host) end
  if not ok then return nil, err end
  -- libmilter writes a reply in pieces without TCP_NODELAY: our delayed
  -- ACK would hold each later piece in its Nagle for 40 ms.
  if port then sock:setoption("quickack", true) end
  return m
end

function Milter:fail(err)
  self.broken = true
  self.sock:close()
  return nil, err
end

function Milter:send(data)
  if self.broken then return nil, "closed" end
  local ok, err = self.sock:send(data)
  if not ok then return self:fail(err) end
  return true
end

-- Reads one reply packet, decoded; PROGRESS only restarts the wait.
function Milter:read()
  if self.broken then return nil, "closed" end
  while true do
    local hdr, err = self.sock:receive(4)
    if not hdr then return self:fail(err) end
    local n
    n, err = proto.length(hdr)
    if not n then return self:fail(err) end
    local pkt
    pkt, err = self.sock:receive(n)
    if not pkt then return self:fail(err) end
    local r
    r, err = proto.decode(pkt)
    if not r then return self:fail(err) end
    if r.code ~= "p" then return r end
  end
end

-- Reads the verdict of a step (nothing else may come).
function Milter:verdict()
  local r, err = self:read()
  if not r then return nil, err end
  local v = verdict_of(r)
  if not v then return self:fail("unexpected reply " .. r.code) end
  return v
end

--- Sends OPTNEG: opts.actions and opts.steps (SMFIP_* bits) default to
--- all we do. Returns {version, actions, protocol} as the milter wants them.
function Milter:negotiate(opts)
  opts = opts or {}
  self.sock:settimeout(self.connect_timeout)
  local ok, err = self:send(proto.optneg(opts.actions or ALL_ACTIONS, opts.steps or ALL_STEPS))
  if not ok then return nil, err end
  local r
  r, err = self:read()
  if not r then return nil, err end
  if r.code ~= "O" or r.version < 2 then return self:fail("unexpected reply " .. r.code) end
  self.protocol, self.actions, self.symlist = r.protocol, r.actions, r.symlist
  return { version = r.version, actions = r.actions, protocol = r.protocol }
end

local function has(bits, flag)
  return bits % (flag * 2) >= flag
end

-- The MACRO packet for a command from macros {name = value}: the stage's
-- list (the milter's own, else Postfix's), values we have only.
function Milter:macros(cmd, macros)
  if not macros then return "" end
  local stage = STEPS[cmd].stage
  local names = self.symlist[stage]
  local list = {}
  if names then
    for n in names:gmatch("[^%s,]+") do list[#list + 1] = n end
  else
    list = M.default_macros[stage]
  end
  local nv = {}
  for _, n in ipairs(list) do
    local v = macros[n] or macros[n:match("^{(.*)}$") or ""]
    if v ~= nil then
      nv[#nv + 1] = n
      nv[#nv + 1] = (tostring(v):gsub("%z", ""))
    end
  end
  if #nv == 0 then return "" end
  return proto.macro(cmd, nv)
end

-- Sends one step (its macros first) and reads its verdict, unless the
-- milter left the step out or will not answer it.
function Milter:step(cmd, packet, macros, timeout)
  local s = STEPS[cmd]
  if has(self.protocol, s.no) and s.no ~= 0 then return { action = "continue" } end
  self.sock:settimeout(timeout or self.command_timeout)
  local ok, err = self:send(self:macros(cmd, macros) .. packet)
  if not ok then return nil, err end
  if s.nr ~= 0 and has(self.protocol, s.nr) then return { action = "continue" } end
  return self:verdict()
end

-- Strings go without NULs: the protocol ends each with one.
local function str(s)
  return (tostring(s or ""):gsub("%z", ""))
end

--- family: "4", "6", "L" (unix) or "U" (unknown).
function Milter:connect(host, family, port, addr, macros)
  return self:step("C", proto.connect(str(host), family or "U", port or 0, str(addr)), macros)
end

function Milter:helo(name, macros)
  return self:step("H", proto.command("H", str(name)), macros)
end

--- address with its angle brackets ("<a@b>"); args a list of "K=V".
function Milter:mail(address, args, macros)
  return self:step("M", proto.command("M", str(address), unpack(args or {})), macros)
end

function Milter:rcpt(address, args, macros)
  return self:step("R", proto.command("R", str(address), unpack(args or {})), macros)
end

function Milter:data(macros)
  return self:step("T", proto.command("T"), macros)
end

--- value as it follows the colon: its leading space goes only to a milter
--- that asked for it (SMFIP_HDR_LEADSPC).
function Milter:header(name, value, macros)
  value = str(value)
  if not has(self.protocol, P.HDR_LEADSPC) then value = value:gsub("^[ \t]+", "") end
  return self:step("L", proto.command("L", str(name), value), macros, self.content_timeout)
end

function Milter:eoh(macros)
  return self:step("N", proto.command("N"), macros, self.content_timeout)
end

--- Sends a body chunk of any size (in packets of 65535 bytes at most).
function Milter:body(chunk, macros)
  local v, err = { action = "continue" }, nil
  for pos = 1, #chunk, CHUNK do
    v, err = self:step("B", proto.body(chunk:sub(pos, pos + CHUNK - 1)), macros, self.content_timeout)
    if not v or v.action ~= "continue" then break end
  end
  return v, err
end

--- The end of the message: returns the verdict and the modifications.
function Milter:eom(macros)
  self.sock:settimeout(self.content_timeout)
  local ok, err = self:send(self:macros("E", macros) .. proto.command("E"))
  if not ok then return nil, err end
  local mods = {}
  while true do
    local r
    r, err = self:read()
    if not r then return nil, err end
    local mod = MODS[r.code]
    if mod then
      mods[#mods + 1] = mod(r)
    else
      local v = verdict_of(r)
      if not v or v.action == "skip" then return self:fail("unexpected reply " .. r.code) end
      return v, mods
    end
  end
end

-- Splits a header block into {name, value} fields, value as it follows
-- the colon, folded lines joined by LF as Sendmail and Postfix pass them.
local function parse_headers(block)
  local fields = {}
  for line in block:gmatch("([^\n]*)\n") do
    line = line:gsub("\r$", "")
    if line:find("^[ \t]") and #fields > 0 then
      fields[#fields].value = fields[#fields].value .. "\n" .. line
    else
      local name, value = line:match("^([^:]+):(.*)$")
      if name then fields[#fields + 1] = { name = name, value = value } end
    end
  end
  return fields
end

-- The message's next piece: a string is one piece, a stream its reads.
local function reader(message)
  if type(message) == "string" then
    local done = false
    return function()
      if done then return nil end
      done = true
      return message
    end
  end
  return function() return message:read() end
end

--- Sends a whole message (a string or an onData stream): its header
--- fields, EOH, its body and the end of message. Returns what eom()
--- returns, or the first verdict that is not "continue" (with no
--- modifications), or nil, err.
function Milter:message(message, macros)
  local next_piece = reader(message)
  local buf, head = "", nil
  while not head do
    local s, err = next_piece()
    if s == nil and err then return nil, err end
    buf = buf .. (s or "")
    local b, e = buf:find("\n\r?\n")
    if buf:find("^\r?\n") then
      head, buf = "", buf:gsub("^\r?\n", "")
    elseif b then
      head, buf = buf:sub(1, b), buf:sub(e + 1)
    elseif s == nil or #buf > HEADERS_MAX then
      -- no body, or a header block past any real one: all of it as headers
      head, buf = buf .. "\n", ""
    end
  end
  local v, err
  for _, f in ipairs(parse_headers(head)) do
    v, err = self:header(f.name, f.value, macros)
    if not v then return nil, err end
    if v.action ~= "continue" then return v, {} end
  end
  v, err = self:eoh(macros)
  if not v then return nil, err end
  if v.action ~= "continue" then return v, {} end
  local skip = false
  while true do
    if buf ~= "" and not skip then
      v, err = self:body(buf, macros)
      if not v then return nil, err end
      if v.action == "skip" then
        skip = true
      elseif v.action ~= "continue" then
        return v, {}
      end
    end
    local s
    s, err = next_piece()
    if s == nil and err then return nil, err end
    if s == nil then break end
    buf = s
  end
  return self:eom(macros)
end

--- Aborts the current message (the milter keeps the connection).
function Milter:abort()
  return self:send(proto.command("A"))
end

--- Ends the conversation and closes the connection.
function Milter:close()
  if not self.broken then self.sock:send(proto.command("Q")) end
  self.broken = true
  self.sock:close()
  return true
end

--- The whole conversation for one message a hook holds: connects to the
--- milter at spec, sends the session's connect, HELO, MAIL and RCPTs and
--- the message (a string or a stream), closes. Returns the first verdict
--- that is not "continue" (or the end of message's) and the changes asked
--- for, or nil, err.
function M.check(spec, session, message, opts)
  local m, err = M.connect(spec, opts)
  if not m then return nil, err end
  local env = session.envelope or {}
  local addr = session.remoteAddress
  local steps = {
    function()
      local ok, nerr = m:negotiate()
      if not ok then return nil, nerr end
      return { action = "continue" }
    end,
    function()
      return m:connect(session.clientHostname or "[" .. tostring(addr) .. "]",
        addr and (addr:find(":", 1, true) and "6" or "4") or "U", session.remotePort, addr,
        { ["{client_addr}"] = addr, i = session.id })
    end,
    function() return m:helo(session.hostNameAppearsAs or "unknown") end,
    function()
      return m:mail("<" .. (env.mailFrom and env.mailFrom.address or "") .. ">", nil,
        { i = session.id, ["{auth_type}"] = session.authMethod, ["{auth_authen}"] = session.user,
          ["{mail_addr}"] = env.mailFrom and env.mailFrom.address })
    end,
  }
  for _, r in ipairs(env.rcptTo or {}) do
    steps[#steps + 1] = function() return m:rcpt("<" .. r.address .. ">", nil, { ["{rcpt_addr}"] = r.address }) end
  end
  for _, step in ipairs(steps) do
    local v, serr = step()
    if not v then m:close(); return nil, serr or "closed" end
    if v.action ~= "continue" then m:close(); return v, {} end
  end
  local v, mods = m:message(message, { i = session.id })
  m:close()
  return v, mods
end

return M
