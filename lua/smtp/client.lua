-- smtp.client: hands a message to the next hop over SMTP or LMTP, on the
-- core's cosockets (smtp.tcp), the way a lua-resty library talks to its
-- server. The parsing is C (smtp.client.proto, core/proto/smtp_client.c);
-- this file holds the conversation:
--
--   local res, err = require("smtp.client").send{host = "10.0.0.5", port = 25,
--     from = session.envelope.mailFrom, to = session.envelope.rcptTo, message = stream}
--
-- res = {code, message, recipients = {{code, message, address}, ...}}, or
-- nil, err where err is an smtp.reject a hook can return as it is: the next
-- hop's own 4xx/5xx as it came, or a 451 of ours when the next hop could
-- not be reached or spoke nonsense (4.4.1 refused, 4.4.2 timeout or lost
-- connection, 4.7.5 TLS, 4.7.0 our login refused, 4.4.3 MX lookup, 4.5.0
-- a reply that does not parse). README.md, "Handing mail on", has it all.
local smtp = require "smtp"
local proto = require "smtp.client.proto"
local digest = require "smtp.core.digest"

local M = {}

local CHUNK = 65536        -- bytes read from a string or file, and gathered per write
local POOL_IDLE = 60       -- seconds an idle pooled connection is kept
local POOL_SIZE = 10       -- idle connections per destination

-- What each pool's connections said to EHLO when they were opened, so a
-- pooled one needs only RSET (per worker, like the pool itself).
local ehlo_seen = {}

-- envelope()'s answer when a pooled connection fails its RSET
local STALE = {}

local function reject(code, text)
  return smtp.reject(code, text)
end

-- A reply's text as a hook returns it: "X.Y.Z text" when the next hop
-- gave an enhanced code, the texts of a multiline reply joined by spaces.
local function reply_text(r)
  local text = r.enhanced ~= "" and (r.enhanced .. " " .. r.text) or r.text
  return text ~= "" and text or ("next hop said " .. r.code)
end

-- The next hop's refusal as it came; a reply that is no refusal where one
-- was due (a 250 to DATA) is nonsense, a temporary failure of ours.
local function reply_reject(r)
  if r.code >= 400 then return reject(r.code, reply_text(r)) end
  return reject(451, "4.5.0 next hop answered " .. r.code .. " " .. reply_text(r))
end

-- The temporary failure for a cosocket error while talking to `who`.
local function io_failure(err, who)
  if err == "connection refused" then
    return reject(451, "4.4.1 next hop " .. who .. " refused the connection")
  elseif err == "timeout" then
    return reject(451, "4.4.2 next hop " .. who .. " timed out")
  end
  return reject(451, "4.4.2 lost the connection to the next hop " .. who .. ": " .. tostring(err))
end

-- A session with the next hop: the socket and what its EHLO offered.
local Conn = {}
Conn.__index = Conn

-- Reads one reply: {code, enhanced, text, lines} or nil, err (an
-- smtp.reject); lines (every line's text) only for a multiline reply, so
-- the usual one-line reply costs one table.
function Conn:reply()
  local code, enhanced, first, texts = nil, nil, nil, nil
  repeat
    local line, err = self.sock:receive("*l")
    if not line then
      self.broken = true
      return nil, io_failure(err, self.who)
    end
    local more, c, e, text = proto.reply_line(line, code, enhanced)
    if more == nil then
      self.broken = true
      return nil, reject(451, "4.5.0 next hop " .. self.who .. " sent a reply that does not parse")
    end
    code, enhanced = c, enhanced or e
    if not first then
      first = text
    else
      texts = texts or { first }
      texts[#texts + 1] = text
    end
  until not more
  if not texts then return { code = code, enhanced = enhanced, text = first } end
  return { code = code, enhanced = enhanced, text = table.concat(texts, " "), lines = texts }
end

function Conn:send(data)
  local ok, err = self.sock:send(data)
  if not ok then
    self.broken = true
    return nil, io_failure(err, self.who)
  end
  return true
end

-- Sends a command and reads its reply; a reply out of `want`'s class
-- (2 for 2xx, 3 for 3xx) is returned as the err.
function Conn:command(line, want)
  local ok, err = self:send(line .. "\r\n")
  if not ok then return nil, err end
  local r, rerr = self:reply()
  if not r then return nil, rerr end
  if math.floor(r.code / 100) ~= (want or 2) then return nil, reply_reject(r), r end
  return r
end

function Conn:hello()
  local verb = self.opts.lmtp and "LHLO " or "EHLO "
  local r, err = self:command(verb .. self.opts.helo)
  if not r then return nil, err end
  local keywords, lines = {}, r.lines or {}
  for i = 2, #lines do keywords[#keywords + 1] = lines[i] end
  self.ext = proto.ehlo(keywords)
  return true
end

function Conn:handshake()
  local o = self.opts
  local ok, err = self.sock:sslhandshake(o.servername, o.verify, o.ca and { ca = o.ca } or nil)
  if not ok then
    self.broken = true
    return nil, reject(451, "4.7.5 TLS with the next hop " .. self.who .. " failed: " .. tostring(err))
  end
  return true
end

function Conn:auth()
  local a, offered = self.opts.auth, self.ext.auth
  if offered.PLAIN then
    local _, err = self:command("AUTH PLAIN " ..
      digest.encode_base64("\0" .. a.user .. "\0" .. a.password), 2)
    return err == nil, err
  elseif offered.LOGIN then
    local _, err = self:command("AUTH LOGIN", 3)
    if not err then _, err = self:command(digest.encode_base64(a.user), 3) end
    if not err then _, err = self:command(digest.encode_base64(a.password), 2) end
    return err == nil, err
  end
  return nil, reject(451, "4.7.0 next hop " .. self.who .. " offers neither AUTH PLAIN nor LOGIN")
end

-- A fresh connection from the greeting to a session ready for MAIL.
function Conn:open()
  local o = self.opts
  if o.tls == "implicit" then
    local ok, err = self:handshake()
    if not ok then return nil, err end
  end
  local g, err = self:reply()
  if not g then return nil, err end
  if g.code ~= 220 then return nil, reply_reject(g) end
  local ok
  ok, err = self:hello()
  if not ok then return nil, err end
  if o.tls == "required" or (o.tls == "opportunistic" and self.ext.starttls) then
    if not self.ext.starttls then
      return nil, reject(451, "4.7.5 next hop " .. self.who .. " does not offer STARTTLS")
    end
    ok, err = self:command("STARTTLS")
    if not ok then return nil, err end
    ok, err = self:handshake()
    if not ok then return nil, err end
    ok, err = self:hello()
    if not ok then return nil, err end
  end
  if o.auth then
    ok, err = self:auth()
    if not ok then
      -- our login is our configuration's problem: never a bounce
      if err.code >= 500 then err = reject(451, "4.7.0 next hop refused our login: " .. err.message) end
      return nil, err
    end
  end
  return true
end

function Conn:release()
  if self.opts.pool and not self.broken then
    self.sock:setkeepalive(POOL_IDLE, self.opts.pool_size or POOL_SIZE)
  else
    if not self.broken then
      self.sock:send("QUIT\r\n")
    end
    self.sock:close()
  end
end

-- Connects to one host: a pooled session (RSET first) or a new one.
local function connect(opts, host, port)
  local who = host .. ":" .. port
  if not opts.servername and not host:find("^[%d.]+$") and not host:find(":", 1, true) then
    -- verified against the next hop's own name (an address is none)
    opts = setmetatable({ servername = host }, { __index = opts })
  end
  local sock = smtp.tcp()
  sock:settimeout(opts.timeout)
  -- One pool per destination and per way of talking to it.
  local pool = "smtp.client|" .. who .. "|" .. opts.tls .. "|" .. (opts.servername or "") .. "|" ..
    (opts.lmtp and "lmtp" or "smtp") .. "|" .. opts.helo .. "|" .. (opts.auth and opts.auth.user or "")
  local ok, err = sock:connect(host, port, opts.pool and { pool = pool } or nil)
  if not ok then return nil, io_failure(err, who) end
  local c = setmetatable({ sock = sock, who = who, opts = opts, host = host, port = port }, Conn)
  if opts.pool and sock:getreusedtimes() > 0 then
    -- RSET proves the state; the keywords are those its EHLO gave when
    -- it was opened (the pool's key names how it was greeted). Under
    -- PIPELINING the RSET goes in one write with MAIL and the RCPTs.
    c.ext = ehlo_seen[pool]
    if c.ext and c.ext.pipelining then
      c.rset = true
      return c
    end
    local r = c:command("RSET")
    if r and (c.ext or c:hello()) then return c end
    sock:close()
    return connect(opts, host, port) -- the next pooled one, or a new one
  end
  ok, err = c:open()
  if not ok then
    c.broken = true
    c:release()
    return nil, err
  end
  ehlo_seen[pool] = c.ext
  return c
end

-- The next hops in order: {host, port}, from host/port or the MX records
-- (lowest preference first; the domain itself when it has none, RFC 5321 5.1).
local function targets(opts)
  local port = opts.port or (opts.lmtp and 24 or 25)
  if opts.host then return { { opts.host, port } } end
  local mx, err = smtp.dns.query(opts.mx, "MX")
  if not mx then
    if err == "not found" then return { { opts.mx, port } } end
    return nil, reject(451, "4.4.3 MX lookup for " .. opts.mx .. " failed: " .. tostring(err))
  end
  table.sort(mx, function(a, b) return a.priority < b.priority end)
  local list = {}
  for _, r in ipairs(mx) do list[#list + 1] = { r.exchange, port } end
  return list
end

local function has_8bit(s)
  return s and s:find("[\128-\255]") ~= nil
end

-- RFC 3461 4: the core hands ENVID and ORCPT's address decoded.
local function xtext(v)
  return (v:gsub("[^!-*,-<>-~]", function(ch) return string.format("+%02X", ch:byte()) end))
end

-- The DSN parameters of the client's command (its args, as the core gives
-- them when it offers DSN), encoded again for the next hop (RFC 3461 5.2.1).
local function dsn_params(args, names)
  local out = {}
  for _, k in ipairs(names) do
    local v = args and args[k]
    if type(v) == "string" then
      if k == "ENVID" then
        v = xtext(v)
      elseif k == "ORCPT" then
        local kind, addr = v:match("^([^;]+);(.+)$")
        v = kind and (kind .. ";" .. xtext(addr)) or nil
      end
      if v then out[#out + 1] = " " .. k .. "=" .. v end
    end
  end
  return table.concat(out)
end

local function mail_command(c, from, to, size)
  local ext, args = c.ext, from.args or {}
  local p = ""
  if ext.size and size then p = p .. " SIZE=" .. size end
  local body = args.BODY or args.body
  if body and (ext["8bitmime"] or ext.binarymime) then p = p .. " BODY=" .. body end
  local utf8 = args.SMTPUTF8 or has_8bit(from.address)
  for _, r in ipairs(to) do utf8 = utf8 or has_8bit(r.address) end
  if utf8 then
    if not ext.smtputf8 then
      return nil, reject(553, "5.6.7 next hop " .. c.who .. " does not accept UTF-8 addresses")
    end
    p = p .. " SMTPUTF8"
  end
  if ext.dsn then p = p .. dsn_params(args, { "RET", "ENVID" }) end
  return "MAIL FROM:<" .. (from.address or "") .. ">" .. p
end

local function rcpt_command(c, r)
  return "RCPT TO:<" .. r.address .. ">" .. (c.ext.dsn and dsn_params(r.args, { "NOTIFY", "ORCPT" }) or "")
end

local function recipient(r, address)
  return { code = r.code, message = reply_text(r), address = address }
end

-- MAIL and RCPTs, in one write when PIPELINING is offered. Returns the
-- recipients' verdicts and how many were accepted, or nil, err.
local function envelope(c, from, to, size)
  local mail, merr = mail_command(c, from, to, size)
  if not mail then return nil, merr end
  local lines = { mail }
  for _, r in ipairs(to) do lines[#lines + 1] = rcpt_command(c, r) end
  local verdicts, accepted, mail_reply = {}, 0, nil
  if c.rset then
    -- a pooled connection: its RSET first, in the same write
    c.rset = false
    local ok = c:send("RSET\r\n" .. table.concat(lines, "\r\n") .. "\r\n")
    local r = ok and c:reply()
    if not (r and r.code == 250) then
      c.broken = true
      return nil, STALE
    end
  elseif c.ext.pipelining then
    local ok, err = c:send(table.concat(lines, "\r\n") .. "\r\n")
    if not ok then return nil, err end
  end
  local function read(i)
    local r, err = c:reply()
    if not r then return nil, err end
    if i == 1 then
      mail_reply = r
    else
      verdicts[i - 1] = recipient(r, to[i - 1].address)
      if r.code >= 200 and r.code < 300 then accepted = accepted + 1 end
    end
    return true
  end
  if c.ext.pipelining then
    for i = 1, #lines do
      local ok, err = read(i)
      if not ok then return nil, err end
    end
  else
    for i = 1, #lines do
      local ok, err = c:send(lines[i] .. "\r\n")
      if not ok then return nil, err end
      ok, err = read(i)
      if not ok then return nil, err end
      if i == 1 and mail_reply.code >= 300 then break end
    end
  end
  if mail_reply.code >= 300 then return nil, reply_reject(mail_reply) end
  return verdicts, accepted
end

-- The message as chunks: an iterator returning the next string, nil at
-- the end, or nil, err when the source fails (the core refused the
-- message being received: err is that refusal).
local function source(message)
  if type(message) == "string" and message:find("\n", 1, true) == nil then
    -- a message has at least one line break; a path has none
    local f, err = io.open(message, "rb")
    if not f then return nil, reject(451, "4.3.0 cannot read the message: " .. tostring(err)) end
    local size = f:seek("end")
    f:seek("set")
    return function()
      local s = f:read(CHUNK)
      if not s then f:close() end
      return s
    end, size
  elseif type(message) == "string" then
    local pos = 1
    return function()
      if pos > #message then return nil end
      local s = message:sub(pos, pos + CHUNK - 1)
      pos = pos + CHUNK
      return s
    end, #message
  end
  local stream = message
  return function()
    local s, err = stream:read()
    if s == nil and err ~= nil then
      return nil, smtp.is_reject(err) and err or reject(451, "4.3.0 " .. tostring(err))
    end
    return s
  end
end

-- The body after DATA or as BDAT chunks; returns true or nil, err. Small
-- pieces (the trace field, the stream's chunks) are gathered up to CHUNK
-- bytes and written as one array (the socket copies it once), so a small
-- message is one write (one BDAT LAST), and no more than about CHUNK
-- bytes are ever held. pieces[1..3] are BDAT's command ("" after DATA).

-- Writes the gathered pieces and empties them; true or nil, err.
local function flush(c, pieces, size, chunking, last)
  if chunking then
    pieces[1], pieces[2], pieces[3] = "BDAT ", size, last and " LAST\r\n" or "\r\n"
  end
  local ok, err = c:send(pieces)
  for i = #pieces, 4, -1 do pieces[i] = nil end
  if not ok then return nil, err end
  if not chunking or last then return true end -- BDAT LAST's reply is the final one
  local r, rerr = c:reply()
  if not r then return nil, rerr end
  if r.code ~= 250 then c.broken = true; return nil, reply_reject(r) end
  return true
end

local function body(c, next_chunk, prepend, chunking)
  local w = proto.body(not chunking, true)
  local pieces, size = { "", "", "" }, 0
  local s, err = prepend ~= "" and prepend or nil, nil
  if not s then s, err = next_chunk() end
  while s do
    s = w:feed(s)
    pieces[#pieces + 1] = s
    size = size + #s
    if size >= CHUNK then
      local ok, ferr = flush(c, pieces, size, chunking, false)
      if not ok then return nil, ferr end
      size = 0
    end
    s, err = next_chunk()
  end
  if err then c.broken = true; return nil, err end
  local tail = w:finish()
  pieces[#pieces + 1] = tail
  return flush(c, pieces, size + #tail, chunking, true)
end

-- The worst of the recipients' refusals: a temporary one first, so that
-- the sender retries rather than bounces.
local function refusal(verdicts)
  local worst
  for _, v in ipairs(verdicts) do
    if v.code >= 400 and (not worst or (v.code < 500 and worst.code >= 500)) then worst = v end
  end
  return worst and reject(worst.code, worst.message)
end

-- Reads the source ahead, up to CHUNK bytes (the prepended trace field
-- first): the raw pieces, their size, and whether that was all of it; or
-- nil, err when the source fails.
local function read_ahead(next_chunk, prepend)
  local ahead, size = {}, 0
  if prepend ~= "" then ahead[1], size = prepend, #prepend end
  while size < CHUNK do
    local s, err = next_chunk()
    if err then return nil, err end
    if not s then return ahead, size, true end
    ahead[#ahead + 1] = s
    size = size + #s
  end
  return ahead, size, false
end

-- The pieces read ahead, then the rest of the source.
local function replay(ahead, next_chunk)
  local i = 0
  return function()
    i = i + 1
    if ahead[i] then return ahead[i] end
    return next_chunk()
  end
end

-- A small message to one recipient under PIPELINING and CHUNKING: the
-- whole transaction in one write (RSET first on a pooled connection, MAIL,
-- RCPT, BDAT LAST and the message; RFC 3030 pipelines BDAT after RCPT,
-- and a next hop that refused the recipient reads the chunk and refuses
-- it too, so nothing is delivered). It spares a write, the next hop's
-- wake-up and a wait per message. Returns what M.send returns, or STALE
-- when a pooled connection failed its RSET (nothing else was read).
local function one_write(c, o, ahead, size)
  local to = o.to
  local mail, merr = mail_command(c, o.from, to, size)
  if not mail then c:release(); return nil, merr end
  local w = proto.body(false, true)
  local out = { c.rset and "RSET\r\n" or "", mail, "\r\n", rcpt_command(c, to[1]), "\r\nBDAT ", 0, " LAST\r\n" }
  local n = 0
  for _, s in ipairs(ahead) do
    s = w:feed(s)
    out[#out + 1] = s
    n = n + #s
  end
  local tail = w:finish()
  out[#out + 1] = tail
  out[6] = n + #tail
  local rset = c.rset
  c.rset = false
  local ok, err = c:send(out)
  if not ok then c:release(); return nil, err end
  if rset then
    local r = c:reply()
    if not (r and r.code == 250) then c.broken = true; return STALE end
  end
  local replies = {}
  for i = 1, 3 do -- MAIL, RCPT, and the final reply to BDAT LAST
    local r, rerr = c:reply()
    if not r then c:release(); return nil, rerr end
    replies[i] = r
  end
  local m, rc, r = replies[1], replies[2], replies[3]
  local verdicts = { recipient(rc, to[1].address) }
  local res = { code = r.code, message = reply_text(r), recipients = verdicts }
  -- after a refusal the transaction's state is the next hop's to define
  -- (RFC 3030: indeterminate after a refused BDAT): never pooled
  if m.code >= 300 or rc.code >= 300 or r.code >= 300 then c.broken = true end
  c:release()
  if m.code >= 300 then return nil, reply_reject(m) end
  if rc.code >= 300 then return nil, refusal(verdicts), { recipients = verdicts } end
  if r.code >= 300 then return nil, reply_reject(r), res end
  return res
end

-- The final replies: one per accepted recipient in LMTP, else one.
local function final(c, verdicts)
  if not c.opts.lmtp then
    local r, err = c:reply()
    if not r then return nil, err end
    return r
  end
  local last
  for _, v in ipairs(verdicts) do
    if v.code >= 200 and v.code < 300 then
      local r, err = c:reply()
      if not r then return nil, err end
      local d = recipient(r, v.address)
      v.code, v.message = d.code, d.message
      last = r
    end
  end
  return last
end

local TLS_MODES = { none = true, opportunistic = true, required = true, implicit = true }

-- An address as the envelope holds it ({address, args}) or as a string;
-- nothing that would end a command line early.
local function path(a, what)
  if type(a) == "string" then a = { address = a, args = {} } end
  assert(type(a) == "table" and type(a.address) == "string" and not a.address:find("[%c<>]"),
    "smtp.client.send: " .. what .. " must be an address without control characters or <>")
  return a
end

local function check(opts)
  assert(type(opts) == "table", "smtp.client.send: expects a table of options")
  assert(opts.host or opts.mx, "smtp.client.send: host or mx is required")
  assert(opts.from and opts.to and opts.message, "smtp.client.send: from, to and message are required")
  local o = setmetatable({}, { __index = opts })
  o.tls = opts.tls or "none"
  assert(TLS_MODES[o.tls],
    "smtp.client.send: tls must be none, opportunistic, required or implicit")
  if opts.verify == nil then o.verify = true end
  o.from = path(opts.from, "from")
  o.to = {}
  local list = (type(opts.to) ~= "table" or opts.to.address) and { opts.to } or opts.to
  for i, r in ipairs(list) do o.to[i] = path(r, "to") end
  o.helo = opts.helo or "localhost"
  assert(not o.helo:find("[%c%s]"), "smtp.client.send: helo must be one word")
  o.timeout = opts.timeout or 30
  if opts.pool == nil then o.pool = true end
  return o
end

--- Sends one message. See the top of this file and docs/guide.md.
function M.send(opts)
  local o = check(opts)
  local to = o.to
  if #to == 0 then return nil, reject(554, "5.5.1 no recipients") end
  local list, lerr = targets(o)
  if not list then return nil, lerr end
  local c, err
  for _, t in ipairs(list) do
    c, err = connect(o, t[1], t[2])
    if c then break end
    -- a next hop's own 5xx before MAIL is final, not a reason to try the next
    if err.code >= 500 then return nil, err end
  end
  if not c then return nil, err end
  local next_chunk, size = source(o.message)
  if not next_chunk then c:release(); return nil, size end
  local prepend = o.prepend or ""
  if c.ext.chunking and c.ext.pipelining and #to == 1 and not o.lmtp then
    local ahead, asize, all = read_ahead(next_chunk, prepend)
    if not ahead then c:release(); return nil, asize end
    if all then
      local res, rerr, extra = one_write(c, o, ahead, asize)
      while res == STALE do
        c:release()
        c, err = connect(o, c.host, c.port)
        if not c then return nil, err end
        res, rerr, extra = one_write(c, o, ahead, asize)
      end
      return res, rerr, extra
    end
    next_chunk, prepend = replay(ahead, next_chunk), ""
  end
  local verdicts, accepted = envelope(c, o.from, to, size and size + #(o.prepend or ""))
  while accepted == STALE do
    -- the pooled connection was not what the pool thought: closed, and
    -- the next one (from the pool, which holds a bounded number, or new)
    c:release()
    c, err = connect(o, c.host, c.port)
    if not c then return nil, err end
    verdicts, accepted = envelope(c, o.from, to, size and size + #(o.prepend or ""))
  end
  if not verdicts then
    if not c.broken and not c:command("RSET") then c.broken = true end
    c:release()
    return nil, accepted
  end
  -- Nothing goes further unless the next hop took every recipient (an
  -- LMTP policy, or one that asks with partial = true, answers per
  -- recipient and may take some).
  if accepted == 0 or (accepted < #to and not (o.partial or o.lmtp)) then
    local rj = refusal(verdicts)
    if not c:command("RSET") then c.broken = true end
    c:release()
    return nil, rj, { recipients = verdicts }
  end
  local chunking = c.ext.chunking
  if not chunking then
    local ok, derr = c:command("DATA", 3)
    if not ok then c:release(); return nil, derr end
  end
  local ok, berr = body(c, next_chunk, prepend, chunking)
  if not ok then
    -- the message did not end: the next hop never takes it
    c.broken = true
    c:release()
    return nil, berr
  end
  local r, ferr = final(c, verdicts)
  if not r then c:release(); return nil, ferr end
  c:release()
  local res = { code = r.code, message = reply_text(r), recipients = verdicts }
  if o.lmtp then
    for _, v in ipairs(verdicts) do
      if v.code < 300 then return res end
    end
    return nil, refusal(verdicts), res
  end
  if r.code >= 300 then return nil, reply_reject(r), res end
  return res
end

return M
