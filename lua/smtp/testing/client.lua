-- smtp.testing.client: an SMTP client for specs, on LuaSocket and LuaSec
-- (loaded on first use): one method per command returning code, text;
-- STARTTLS or implicit TLS with SNI, verification and client
-- certificates; and a transcript of the whole conversation for failure
-- messages.
local M = {}

local Client = {}
Client.__index = Client

--- Seconds a client waits for each reply.
M.DEFAULT_TIMEOUT = tonumber(os.getenv("LUASMTPD_TEST_TIMEOUT")) or 10
local MAX_BODY_LINES = 20 -- body lines shown in a transcript

--- A client for host:port waiting `timeout` seconds per reply; open()
--- connects it.
function M.new(host, port, timeout)
  local sock = require("socket").tcp()
  sock:settimeout(timeout)
  return setmetatable({ sock = sock, host = host, port = port, timeout = timeout, lines = {},
    replies = {}, extensions = {} }, Client)
end

--- Connects c, speaks TLS first when tls is given ({servername, cafile,
--- ...} as for starttls) and reads the greeting (c.code, c.text and
--- c.greeting hold it). true, or nil, err.
function M.open(c, tls)
  local ok, err = c.sock:connect(c.host, c.port)
  if not ok then return nil, string.format("connect %s:%d: %s", c.host, c.port, tostring(err)) end
  c:note("-- ", string.format("connected to %s:%d", c.host, c.port))
  if tls then
    local hok, herr = c:handshake(tls)
    if not hok then return nil, herr .. "\n" .. c:transcript() end
  end
  c:reply()
  c.greeting = c.text
  return true
end

function Client:note(prefix, line)
  self.lines[#self.lines + 1] = prefix .. line
end

--- The conversation so far, one "C: " / "S: " / "-- " line each.
function Client:transcript()
  return table.concat(self.lines, "\n")
end

function Client:fail(err)
  self:note("-- ", tostring(err))
  self.code, self.text = nil, err
  return nil, err
end

--- Sends bytes as they are; returns true or nil, err.
function Client:write(data)
  local ok, err = self.sock:send(data)
  if not ok then return self:fail("send failed: " .. tostring(err)) end
  return true
end

--- Reads one reply: code, text (the lines after the code, joined by "\n",
--- the enhanced code kept); nil, err when the connection ends first.
function Client:reply()
  local texts = {}
  while true do
    local line, err = self.sock:receive("*l")
    if not line then
      return self:fail(err == "closed" and "connection closed by the server" or "receive failed: " .. tostring(err))
    end
    self:note("S: ", line)
    local code, sep, text = line:match("^(%d%d%d)([ -]?)(.*)$")
    if not code then return self:fail("not an SMTP reply line") end
    texts[#texts + 1] = text
    if sep ~= "-" then
      self.code, self.text = tonumber(code), table.concat(texts, "\n")
      self.replies[#self.replies + 1] = { code = self.code, text = self.text }
      return self.code, self.text
    end
  end
end

--- Sends one command line (CRLF added) and returns its reply.
function Client:send(line, shown)
  self:note("C: ", shown or line)
  local ok, err = self:write(line .. "\r\n")
  if not ok then return nil, err end
  return self:reply()
end

local function parse_extensions(text)
  local ext = {}
  local first = true
  for line in (text .. "\n"):gmatch("(.-)\n") do
    if not first then
      local key, value = line:match("^(%S+)%s*(.*)$")
      if key then ext[key:upper()] = value ~= "" and value or true end
    end
    first = false
  end
  return ext
end

function Client:ehlo(name)
  local code, text = self:send("EHLO " .. (name or "client.example"))
  self.extensions = code == 250 and parse_extensions(text) or {}
  return code, text
end

function Client:helo(name)
  return self:send("HELO " .. (name or "client.example"))
end

local function b64(s)
  return (require("mime").b64(s))
end

--- AUTH PLAIN or LOGIN with user and pass.
function Client:auth(method, user, pass)
  method = method:upper()
  if method == "PLAIN" then
    return self:send("AUTH PLAIN " .. b64("\0" .. user .. "\0" .. pass))
  elseif method == "LOGIN" then
    local code, text = self:send("AUTH LOGIN")
    if code ~= 334 then return code, text end
    code, text = self:send(b64(user))
    if code ~= 334 then return code, text end
    return self:send(b64(pass))
  end
  error("client:auth: only PLAIN and LOGIN are supported, got " .. method, 2)
end

local function format_params(params)
  if params == nil then return "" end
  if type(params) == "string" then return " " .. params end
  local keys = {}
  for k in pairs(params) do keys[#keys + 1] = k end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do
    local v = params[k]
    out[#out + 1] = v == true and k or (k .. "=" .. tostring(v))
  end
  return #out > 0 and " " .. table.concat(out, " ") or ""
end

--- MAIL FROM:<from> with params ({SIZE = 100, BODY = "8BITMIME"} or a string).
function Client:mail(from, params)
  return self:send("MAIL FROM:<" .. from .. ">" .. format_params(params))
end

function Client:rcpt(to, params)
  return self:send("RCPT TO:<" .. to .. ">" .. format_params(params))
end

--- DATA, then the body dot-stuffed and ended by CRLF.CRLF; returns the
--- final reply (or the reply to DATA when it is not 354). Bare LFs become
--- CRLF unless opts.raw; a body not ending in CRLF gets one.
function Client:data(body, opts)
  opts = opts or {}
  local code, text = self:send("DATA")
  if code ~= 354 then return code, text end
  if not opts.raw then body = body:gsub("\r?\n", "\r\n") end
  if body ~= "" and body:sub(-2) ~= "\r\n" then body = body .. "\r\n" end
  local stuffed = body:gsub("^%.", ".."):gsub("\n%.", "\n..")
  local shown = 0
  for line in stuffed:gmatch("(.-)\r\n") do
    shown = shown + 1
    if shown <= MAX_BODY_LINES then self:note("C: ", line) end
  end
  if shown > MAX_BODY_LINES then
    self:note("C: ", string.format("[... %d more lines; %d bytes in all]", shown - MAX_BODY_LINES, #body))
  end
  self:note("C: ", ".")
  local ok, err = self:write(stuffed .. ".\r\n")
  if not ok then return nil, err end
  return self:reply()
end

function Client:rset() return self:send("RSET") end
function Client:noop() return self:send("NOOP") end

--- QUIT, then close.
function Client:quit()
  local code, text = self:send("QUIT")
  self:close()
  return code, text
end

function Client:close()
  if self.sock then self.sock:close() end
  self.closed = true
end

local OID_NAMES = {
  ["2.5.4.3"] = "CN", ["2.5.4.10"] = "O", ["2.5.4.11"] = "OU", ["2.5.4.6"] = "C",
  ["2.5.4.7"] = "L", ["2.5.4.8"] = "ST", ["1.2.840.113549.1.9.1"] = "emailAddress",
}

local function name_table(entries)
  local t = {}
  for _, e in ipairs(entries or {}) do t[OID_NAMES[e.oid] or e.name or e.oid] = e.value end
  return t
end

local function fingerprint(hex)
  return (hex:upper():gsub("(%x%x)", "%1:"):sub(1, -2))
end

-- Does the certificate name host (SAN dNSName, else CN; "*." one label)?
local function names_host(cert, host)
  host = host:lower()
  local function match(pattern)
    pattern = pattern:lower()
    if pattern == host then return true end
    local suffix = pattern:match("^%*(%..+)$")
    return suffix ~= nil and host:sub(-#suffix) == suffix and not host:sub(1, -#suffix - 1):find("%.")
  end
  local san = cert:extensions()["2.5.29.17"]
  local dns = san and san.dNSName or {}
  for _, n in ipairs(dns) do if match(n) then return true end end
  for _, ip in ipairs(san and san.iPAddress or {}) do if ip == host then return true end end
  if #dns == 0 then return match(name_table(cert:subject()).CN or "") end
  return false
end

-- The server's certificate as a plain table (kept: the connection may
-- be closed by the time a spec asks).
local function certificate_table(cert)
  local san = cert:extensions()["2.5.29.17"]
  return {
    subject = name_table(cert:subject()),
    issuer = name_table(cert:issuer()),
    fingerprint256 = fingerprint(cert:digest("sha256")),
    serialNumber = cert:serial(),
    notbefore = cert:notbefore(),
    notafter = cert:notafter(),
    dnsNames = san and san.dNSName or {},
    pem = cert:pem(),
  }
end

-- TLS on the current socket: opts.servername (SNI), opts.verify (default
-- false; true or opts.cafile checks the chain and the name), opts.cafile,
-- opts.certificate and opts.key (a client certificate).
function Client:handshake(opts)
  local ssl = require "ssl"
  local verify = opts.verify
  if verify == nil then verify = opts.cafile ~= nil end
  local params = { mode = "client", protocol = "any", options = "all",
    verify = verify and "peer" or "none", cafile = opts.cafile,
    -- verify = true without a CA file: the system's trust store.
    capath = verify and not opts.cafile and "/etc/ssl/certs" or nil,
    certificate = opts.certificate, key = opts.key }
  local conn, err = ssl.wrap(self.sock, params)
  if not conn then return self:fail("TLS setup failed: " .. tostring(err)) end
  if opts.servername then conn:sni(opts.servername) end
  conn:settimeout(self.timeout)
  local ok, herr = conn:dohandshake()
  if not ok then
    self.sock = conn
    return self:fail("TLS handshake failed: " .. tostring(herr))
  end
  self.sock, self.tls = conn, conn
  local cert = conn:getpeercertificate()
  self.peer = cert and certificate_table(cert)
  local host = opts.servername or self.host
  if verify and not (cert and names_host(cert, host)) then
    return self:fail("TLS: the server certificate does not name " .. host)
  end
  local info = conn:info() or {}
  self:note("-- ", string.format("TLS established (%s, %s)", tostring(info.protocol), tostring(info.cipher)))
  return true
end

--- STARTTLS and the handshake; returns the STARTTLS reply (220), or the
--- refusal, or nil, err when the handshake fails.
function Client:starttls(opts)
  local code, text = self:send("STARTTLS")
  if code ~= 220 then return code, text end
  local ok, err = self:handshake(opts or {})
  if not ok then return nil, err end
  self.extensions = {} -- RFC 3207: forget what was learnt before TLS
  return code, text
end

--- The server's certificate after TLS: {subject = {CN...}, issuer,
--- fingerprint256, serialNumber, notbefore, notafter, dnsNames, pem} or nil.
function Client:peer_certificate()
  return self.peer
end

return M
