-- smtp.testing: the policy author's testing kit, for plain `busted`.
--
-- Unit level (no server):
--   local options, hooks, fake = testing.load("my-policy.lua", {env = {...}})
--   hooks.onRcptTo(testing.address("x@example.org"), testing.session{user = "bob"})
--   testing.call(hooks, "onRcptTo", address, session)  --> 550, "5.1.1 ..."
--   testing.stream("body"), testing.conn{certificate = {...}}
-- Conversation level (the real C core, a free loopback port, no root):
--   local server = assert(testing.server("my-policy.lua", {env = {...}}))
--   local c = assert(server:client())
--   c:ehlo("me.example"); c:mail("a@b"); testing.assert_reply(c, 250, "2.1.0")
--   server:messages()[1].body; server:stop()
-- See docs/guide.md. The server side of the kit (the onData recorder) is
-- loaded into luasmtpd by the generated wrapper script, so this file must
-- not require LuaSocket, LuaSec or busted at the top level.
local M = {}

local HOOKS = { "onConnect", "onSecure", "SNICallback", "onAuth", "onMailFrom", "onRcptTo",
  "onData", "onClose", "onError" }

-- Where this file is: the wrapper dofile()s it into the server, and the
-- default binary is ../../build/luasmtpd from here.
local SOURCE = debug.getinfo(1, "S").source:match("^@(.*)$") or "smtp/testing.lua"

local unpack = unpack or table.unpack

local function pack(...)
  return { n = select("#", ...), ... }
end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

local function write_file(path, data)
  local f, err = io.open(path, "wb")
  if not f then return nil, err end
  local ok, werr = f:write(data)
  f:close()
  if not ok then return nil, werr end
  return true
end

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- The core's reply catalogue: the kit's replies are the core's.
local REPLIES = require "smtp.replies"

local function has_enhanced(text)
  return text:match("^[245]%.%d%d?%d?%.%d%d?%d?$") or text:match("^[245]%.%d%d?%d?%.%d%d?%d? ")
end

local function with_enhanced(code, text)
  if has_enhanced(text) then return text end
  local e = REPLIES.enhanced[code] or (code >= 500 and "5.0.0" or code >= 400 and "4.0.0" or "2.0.0")
  return e .. " " .. text
end

-- code, "enhanced text" of a catalogue reply; text replaces its text (and
-- keeps its own enhanced code if it starts with one).
local function catalogue_reply(reply, text)
  if text ~= nil and has_enhanced(text) then return reply[1], text end
  return reply[1], reply[2] .. " " .. (text or reply[3])
end

---------------------------------------------------------------- serializer
-- Turns a value into Lua source that rebuilds it. Tables keep their
-- sharing and cycles. With functions = true (options sent to a server),
-- functions travel as bytecode with their upvalues (shared upvalues are
-- joined again), and modules or library functions travel by name; else
-- functions and userdata are left out (recordings of sessions).

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

M._serialize, M._deserialize = serialize, deserialize

---------------------------------------------------------------- fakes

local id_alphabet = "abcdefghijklmnopqrstuvwxyz234567"
local port_counter = 0

local function fake_id()
  local t = {}
  for i = 1, 16 do
    local k = math.random(#id_alphabet)
    t[i] = id_alphabet:sub(k, k)
  end
  return table.concat(t)
end

--- An address as hooks get it: {address = "a@b", args = {SIZE = "100"}}.
function M.address(address, args)
  if type(address) == "table" then return address end
  return { address = address, args = args or {} }
end

local function fake_envelope(e)
  e = e or {}
  local env = {}
  for k, v in pairs(e) do env[k] = v end
  if e.mailFrom then env.mailFrom = M.address(e.mailFrom) end
  env.rcptTo = {}
  for i, r in ipairs(e.rcptTo or {}) do env.rcptTo[i] = M.address(r) end
  return env
end

--- A session as the core builds it after EHLO; overrides win. The
--- transmissionType follows from openingCommand, envelope.smtpUtf8, secure
--- and user (RFC 3848, RFC 6531) unless given; tlsOptions exist only when secure.
function M.session(overrides)
  overrides = overrides or {}
  port_counter = port_counter + 1
  local s = {
    id = fake_id(),
    remoteAddress = "127.0.0.1",
    remotePort = 40000 + port_counter % 20000,
    localAddress = "127.0.0.1",
    localPort = 2525,
    hostNameAppearsAs = "client.example",
    openingCommand = "EHLO",
    secure = false,
    transaction = 1,
  }
  for k, v in pairs(overrides) do s[k] = v end
  s.clientHostname = overrides.clientHostname or ("[" .. s.remoteAddress .. "]")
  s.envelope = fake_envelope(overrides.envelope)
  if s.secure and s.tlsOptions == nil then
    s.tlsOptions = { name = "TLS_AES_256_GCM_SHA384", standardName = "TLS_AES_256_GCM_SHA384",
      version = "TLSv1.3" }
  end
  if overrides.transmissionType == nil then
    local utf8 = s.envelope.smtpUtf8 -- RFC 6531 3.7.4: UTF8SMTP, no "E"
    s.transmissionType = (utf8 and "UTF8SMTP" or s.openingCommand == "HELO" and "SMTP" or "ESMTP")
      .. (s.secure and "S" or "") .. (s.user ~= nil and "A" or "")
  end
  return s
end

--- A message stream for onData, like the core's: read() gives the next
--- chunk (opts.chunkSize bytes, default all at once) and nil at the end,
--- chunks() iterates, save(path[, prefix]) writes prefix and the rest of
--- the body to a new file. byteLength counts what was delivered so far.
--- A body over opts.size is refused as the core refuses it: sizeExceeded
--- turns true and, in place of the chunk that goes over, read() and save()
--- return nil, err (the core's 552 reply) and chunks() raises it as an
--- smtp.reject.
function M.stream(body, opts)
  body, opts = body or "", opts or {}
  local size = opts.chunkSize or math.max(#body, 1)
  local pos = 1
  local s = { byteLength = 0, sizeExceeded = false, body = body }
  local refusal = "552 5.3.4 Error: message exceeds fixed maximum message size " .. tostring(opts.size)

  -- Would n more bytes go over the size? Then the stream is refused.
  local function refused(n)
    if s.sizeExceeded or (opts.size ~= nil and pos - 1 + n > opts.size) then
      s.sizeExceeded, s.byteLength = true, math.max(s.byteLength, pos - 1 + n)
      return true
    end
  end

  local function advance(n)
    local chunk = body:sub(pos, pos + n - 1)
    pos = pos + #chunk
    s.byteLength = pos - 1
    return chunk
  end

  function s.read(_)
    if refused(math.min(size, #body - pos + 1)) then return nil, refusal end
    if pos > #body then return nil end
    return advance(size)
  end

  function s.chunks(_)
    return function()
      local chunk, err = s:read()
      if err then error(require("smtp").reject(552, err:sub(5)), 0) end
      return chunk
    end
  end

  function s.save(_, path, prefix)
    -- The core opens with O_EXCL: an existing file is an error, not overwritten.
    local existing = io.open(path, "rb")
    if existing then
      existing:close()
      return nil, "File exists"
    end
    if refused(#body - pos + 1) then return nil, refusal end
    if pos > 1 then return nil, "stream:save: part of the message was already read" end
    local ok, err = write_file(path, (prefix or "") .. advance(#body))
    if not ok then return nil, err end
    return true
  end

  return s
end

local function fake_certificate(c)
  local cert = {}
  for k, v in pairs(c) do cert[k] = v end
  cert.subject = cert.subject or { CN = "client.example" }
  cert.issuer = cert.issuer or { CN = "luasmtpd test CA" }
  cert.valid_from = cert.valid_from or "Jan  1 00:00:00 2025 GMT"
  cert.valid_to = cert.valid_to or "Jan  1 00:00:00 2035 GMT"
  cert.serialNumber = cert.serialNumber or "01"
  if not cert.fingerprint256 then
    -- Stable per subject, so specs can compare logs against it.
    local seed, hex = tostring(cert.subject.CN or "x"), {}
    for i = 1, 32 do hex[i] = string.format("%02X", (seed:byte((i - 1) % #seed + 1) or 0) * i % 256) end
    cert.fingerprint256 = table.concat(hex, ":")
  end
  cert.pem = cert.pem or ""
  return cert
end

--- The conn onSecure gets: opts.certificate (a table, filled in with
--- defaults, or nil for none), opts.authorized (default: a certificate was
--- given), opts.authorizationError, opts.cipher, opts.protocol.
function M.conn(opts)
  opts = opts or {}
  local cert = opts.certificate and fake_certificate(opts.certificate) or nil
  local authorized = opts.authorized
  if authorized == nil then authorized = cert ~= nil end
  local err = opts.authorizationError
  if err == nil and not authorized then
    err = cert and "UNABLE_TO_GET_ISSUER_CERT_LOCALLY" or "PEER_DID_NOT_RETURN_A_CERTIFICATE"
  end
  local cipher = opts.cipher or { name = "TLS_AES_256_GCM_SHA384",
    standardName = "TLS_AES_256_GCM_SHA384", version = opts.protocol or "TLSv1.3" }
  return {
    authorized = authorized,
    authorizationError = err,
    getPeerCertificate = function() return cert end,
    getCipher = function() return cipher end,
    getProtocol = function() return opts.protocol or cipher.version end,
  }
end

---------------------------------------------------------------- load

local function is_pem(v)
  return type(v) == "string" and v:find("-----BEGIN", 1, true) ~= nil
end

-- smtp.tls.context outside the server: checks that key and cert can be
-- read, then returns a plain table standing for the context.
local function fake_tls_context(smtp, opts)
  for _, field in ipairs { "key", "cert" } do
    local v = opts and opts[field]
    if v ~= nil and not is_pem(v) then
      local data = read_file(v)
      if not data then return nil, string.format("%s: cannot read %s", field, tostring(v)) end
      if not is_pem(data) then return nil, string.format("%s: %s is not PEM", field, v) end
    end
  end
  return setmetatable({ options = smtp.tls.options(opts), key = opts.key, cert = opts.cert, fake = true },
    { __name = "smtp.tls.context (fake)" })
end

-- A copy of the smtp module for one loaded script: sleep does nothing,
-- logs are kept in fake.logs, tls.context is fake. The real module is
-- left alone, so other specs still see it as it is.
local function fake_smtp(fake)
  local real = require "smtp"
  local s = setmetatable({}, { __index = real })
  s.log = {}
  for _, level in ipairs { "debug", "info", "warn", "error" } do
    s.log[level] = function(msg, fields)
      fake.logs[#fake.logs + 1] = { level = level, msg = tostring(msg), fields = fields or {} }
    end
  end
  s.sleep = function(seconds) fake.sleeps[#fake.sleeps + 1] = seconds end
  s.tls = setmetatable({ context = function(opts) return fake_tls_context(real, opts) end },
    { __index = real.tls })
  return s
end

-- The globals a loaded script sees: os.getenv answers from opts.env first
-- (false = unset), require "smtp" gives the fake module, and dofile /
-- loadfile run nested scripts in the same environment.
local function script_env(opts, smtp)
  local env = setmetatable({}, { __index = _G })
  local vars = opts.env or {}
  env.os = setmetatable({
    getenv = function(name)
      local v = vars[name]
      if v == false then return nil end
      if v ~= nil then return tostring(v) end
      return os.getenv(name)
    end,
  }, { __index = os })
  env.require = function(name)
    if name == "smtp" then return smtp end
    return require(name)
  end
  env.loadfile = function(path)
    local f, err = loadfile(path)
    if f then setfenv(f, env) end
    return f, err
  end
  env.dofile = function(path)
    return assert(env.loadfile(path))()
  end
  return env
end

--- Loads a policy script without the server. Returns its options table,
--- its hooks ({onRcptTo = fn, ...}, from the first listener when the script
--- returns several) and `fake` = {smtp = the module the script got,
--- logs = {{level, msg, fields}...}, sleeps = {seconds...}}; or nil, err.
--- opts.env = {NAME = "value" or false} overrides os.getenv for the script.
function M.load(path, opts)
  opts = opts or {}
  local chunk, err = loadfile(path)
  if not chunk then return nil, err end
  local fake = { logs = {}, sleeps = {} }
  fake.smtp = fake_smtp(fake)
  setfenv(chunk, script_env(opts, fake.smtp))
  local ok, options = pcall(chunk)
  if not ok then return nil, tostring(options) end
  if type(options) ~= "table" then
    return nil, path .. ": the script must return a table of options, got " .. type(options)
  end
  local first = type(options[1]) == "table" and options[1] or options
  local hooks = {}
  for _, name in ipairs(HOOKS) do hooks[name] = first[name] end
  return options, hooks, fake
end

-- The reply the core gives when a hook accepts (the hooks without a reply
-- of their own let the session go on: onConnect greets, onSecure and
-- SNICallback carry on with TLS).
local ACCEPT = {
  onConnect = { 220, "ESMTP" },
  onSecure = { 220, "2.0.0 Ready" },
  SNICallback = { 220, "2.0.0 Ready" },
  onAuth = { catalogue_reply(REPLIES.authAccepted) },
  onMailFrom = { catalogue_reply(REPLIES.mailAccepted) },
  onRcptTo = { catalogue_reply(REPLIES.rcptAccepted) },
  onData = { catalogue_reply(REPLIES.messageQueued) },
  onClose = { 250, "2.0.0 OK" },
  onError = { 250, "2.0.0 OK" },
}

local function rejection(name, value)
  local code, text = REPLIES.rejectCode[name], REPLIES.rejected
  if type(value) == "table" then
    if type(value.code) == "number" and value.code >= 400 and value.code <= 599 then code = value.code end
    if value.message ~= nil then text = tostring(value.message) end
  elseif value ~= nil then
    text = tostring(value)
  end
  return code, with_enhanced(code, text)
end

--- Calls hooks[name](...) as the core would and returns the reply the
--- client would get: code, text (text with its enhanced code). A hook that
--- raised a plain error gives 451 and the error as a third value.
function M.call(hooks, name, ...)
  local fn = hooks[name]
  if not fn then return unpack(ACCEPT[name] or { 250, "2.0.0 OK" }) end
  local r = pack(pcall(fn, ...))
  local smtp = require "smtp"
  if not r[1] then
    if smtp.is_reject(r[2]) then return rejection(name, r[2]) end
    local code, text = catalogue_reply(REPLIES.internalError)
    return code, text, r[2]
  end
  if r.n >= 3 and not r[2] and r[3] ~= nil then return rejection(name, r[3]) end
  if smtp.is_reject(r[2]) then return rejection(name, r[2]) end
  if name == "onAuth" then
    if type(r[2]) ~= "table" or r[2].user == nil then return catalogue_reply(REPLIES.authNoUser) end
    if r[2].message ~= nil then return catalogue_reply(REPLIES.authAccepted, tostring(r[2].message)) end
  end
  if name == "onData" and type(r[2]) == "string" then
    return catalogue_reply(REPLIES.messageQueued, r[2])
  end
  return unpack(ACCEPT[name] or { 250, "2.0.0 OK" })
end

---------------------------------------------------------------- server side
-- Everything in this section runs inside luasmtpd, loaded by the wrapper.

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
      local data = read_file(path)
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
  return setmetatable(proxy, { __index = function(_, k) return real[k] end })
end

local record_seq = 0

local function write_record(dir, record)
  record_seq = record_seq + 1
  record.seq = record_seq
  local name = string.format("%s/%08d", dir, record_seq)
  local ok, err = write_file(name .. ".tmp", serialize(record, false))
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
function M._instrument(options, cfg)
  local listeners = type(options[1]) == "table" and options or { options }
  for _, o in ipairs(listeners) do
    for k, v in pairs(cfg.overrides or {}) do o[k] = v end
    o.listen = cfg.host .. ":0"
    if o.closeTimeout == nil then o.closeTimeout = 1 end
    o.onData = recording_on_data(o.onData, cfg.dir)
  end
  return options
end

---------------------------------------------------------------- processes
-- posix_spawn/kill/waitpid through the FFI: the kit needs the server's pid
-- to stop it, and no Lua library for processes ships with Debian's LuaJIT.

local ffi -- loaded on first use (in the server, only realpath is used)
local C

local function cdef(decl)
  pcall(ffi.cdef, decl) -- another module may have declared it already
end

local function init_ffi()
  if ffi then return end
  ffi = require "ffi"
  C = ffi.C
  cdef "typedef int pid_t;"
  cdef "typedef intptr_t ssize_t;"
  cdef "int posix_spawn(pid_t *pid, const char *path, const void *fa, const void *attr, char *const argv[], char *const envp[]);"
  cdef "int posix_spawn_file_actions_init(void *fa);"
  cdef "int posix_spawn_file_actions_destroy(void *fa);"
  cdef "int posix_spawn_file_actions_addopen(void *fa, int fd, const char *path, int oflag, unsigned int mode);"
  cdef "int posix_spawn_file_actions_adddup2(void *fa, int fd, int newfd);"
  cdef "int posix_spawn_file_actions_addclosefrom_np(void *fa, int from);"
  cdef "int kill(pid_t pid, int sig);"
  cdef "pid_t waitpid(pid_t pid, int *status, int options);"
  cdef "char *realpath(const char *path, char *resolved);"
  cdef "void free(void *p);"
  cdef "char *mkdtemp(char *template);"
  cdef "ssize_t readlink(const char *path, char *buf, size_t size);"
  cdef "char *strerror(int errnum);"
  cdef "extern char **environ;"
end

local function errno_text()
  return ffi.string(C.strerror(ffi.errno()))
end

local function realpath(path)
  init_ffi()
  local p = C.realpath(path, nil)
  if p == nil then return nil, path .. ": " .. errno_text() end
  local s = ffi.string(p)
  C.free(p)
  return s
end

-- Absolute now: a spec may change directory before starting a server.
local ABS_SOURCE = realpath(SOURCE) or SOURCE

--- The luasmtpd checkout this kit belongs to (where build/ and certs/ are).
M.home = ABS_SOURCE:match("^(.*)/lua/smtp/[^/]*$")

local function now()
  return require("socket").gettime()
end

local function sleep(s)
  require("socket").sleep(s)
end

-- Directories made by the kit; removed when the busted process exits.
local temp_dirs = {}

--- A new private temporary directory, removed when the process exits.
function M.tmpdir()
  init_ffi()
  local base = os.getenv("TMPDIR") or "/tmp"
  local template = ffi.new("char[?]", #base + 32)
  ffi.copy(template, base .. "/luasmtpd-test.XXXXXX")
  if C.mkdtemp(template) == nil then error("testing.tmpdir: " .. errno_text(), 2) end
  local dir = ffi.string(template)
  temp_dirs[#temp_dirs + 1] = dir
  return dir
end

local function remove_tree(dir)
  if dir and dir:match("/luasmtpd%-test%.[%w]+$") then os.execute("rm -rf " .. shell_quote(dir)) end
end

-- The environment for a child: ours, with overrides (false removes).
local function child_environ(overrides)
  local keep, list = {}, {}
  local i = 0
  while C.environ[i] ~= nil do
    local entry = ffi.string(C.environ[i])
    local name = entry:match("^([^=]*)=")
    if name and overrides[name] == nil then list[#list + 1] = entry end
    i = i + 1
  end
  for name, value in pairs(overrides) do
    if value ~= false then list[#list + 1] = name .. "=" .. tostring(value) end
  end
  local envp = ffi.new("char *[?]", #list + 1)
  for j, entry in ipairs(list) do
    keep[j] = entry
    envp[j - 1] = ffi.cast("char *", entry)
  end
  return envp, keep
end

-- Starts argv[1] with stdout and stderr appended to logfile and stdin from
-- /dev/null; returns the pid or nil, err.
local function spawn(argv, env, logfile)
  init_ffi()
  local fa = ffi.new("uint64_t[32]") -- room for glibc's posix_spawn_file_actions_t
  C.posix_spawn_file_actions_init(fa)
  C.posix_spawn_file_actions_addopen(fa, 0, "/dev/null", 0, 0)
  C.posix_spawn_file_actions_addopen(fa, 2, logfile, 1 + 64 + 1024, 420) -- O_WRONLY|O_CREAT|O_APPEND, 0644
  C.posix_spawn_file_actions_adddup2(fa, 2, 1)
  -- Our sockets must not live on in the server: a client closed by a spec
  -- would not look closed to the server that holds a copy.
  pcall(function() C.posix_spawn_file_actions_addclosefrom_np(fa, 3) end)
  local cargv = ffi.new("char *[?]", #argv + 1)
  for i, a in ipairs(argv) do cargv[i - 1] = ffi.cast("char *", a) end
  local envp, keep = child_environ(env or {})
  local pid = ffi.new("pid_t[1]")
  local rc = C.posix_spawn(pid, argv[1], fa, nil, cargv, envp)
  C.posix_spawn_file_actions_destroy(fa)
  local _ = keep -- the strings behind envp live until here
  if rc ~= 0 then return nil, argv[1] .. ": " .. ffi.string(C.strerror(rc)) end
  return pid[0]
end

-- nil while the process runs; else "exit N" or "signal N".
local function reap(pid)
  local status = ffi.new("int[1]")
  local r = C.waitpid(pid, status, 1) -- WNOHANG
  if r == 0 then return nil end
  if r < 0 then return "gone" end
  local s = status[0]
  if s % 128 == 0 then return "exit " .. math.floor(s / 256) % 256 end
  return "signal " .. s % 128
end

-- Waits up to `timeout` seconds for pid to end; returns how it ended or nil.
local function wait_exit(pid, timeout)
  local deadline = now() + timeout
  repeat
    local how = reap(pid)
    if how then return how end
    sleep(0.01)
  until now() > deadline
  return reap(pid)
end

-- Ports pid listens on, in the order of its listening file descriptors
-- (the core opens its listeners in the order of the script's table).
local function listening_ports(pid)
  local inodes = {}
  local buf = ffi.new("char[64]")
  for fd = 0, 255 do
    local n = C.readlink(string.format("/proc/%d/fd/%d", pid, fd), buf, 63)
    if n > 0 then
      local inode = ffi.string(buf, n):match("^socket:%[(%d+)%]$")
      if inode then inodes[#inodes + 1] = { fd = fd, inode = inode } end
    end
  end
  local listening = {}
  for _, file in ipairs { "/proc/net/tcp", "/proc/net/tcp6" } do
    -- Fields: sl local_address rem_address st ... uid timeout inode
    for line in (read_file(file) or ""):gmatch("[^\n]+") do
      local f = {}
      for field in line:gmatch("%S+") do f[#f + 1] = field end
      local port = f[2] and f[2]:match(":(%x+)$")
      if port and f[4] == "0A" and f[10] then listening[f[10]] = tonumber(port, 16) end
    end
  end
  local ports = {}
  for _, s in ipairs(inodes) do
    if listening[s.inode] then ports[#ports + 1] = listening[s.inode] end
  end
  return ports
end

-- Servers not yet stopped, killed when the process exits whatever happens.
local live = setmetatable({}, { __mode = "k" })

local function kill_all()
  for server in pairs(live) do server:stop(2) end
end

-- __gc of a userdata: LuaJIT runs it at lua_close (busted ends with
-- os.exit(code, true)), and when the module itself is collected.
local sentinel = newproxy(true)
getmetatable(sentinel).__gc = function()
  kill_all()
  for _, dir in ipairs(temp_dirs) do remove_tree(dir) end
end
M._sentinel = sentinel

local exit_hooked = false
local function hook_exit()
  if exit_hooked then return end
  exit_hooked = true
  local exit = os.exit
  os.exit = function(...) -- luacheck: ignore
    kill_all()
    return exit(...)
  end
end

---------------------------------------------------------------- client

local Client = {}
Client.__index = Client

local DEFAULT_TIMEOUT = tonumber(os.getenv("LUASMTPD_TEST_TIMEOUT")) or 10
local MAX_BODY_LINES = 20 -- body lines shown in a transcript

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

---------------------------------------------------------------- server

local Server = {}
Server.__index = Server

local function find_binary(opts)
  local bin = opts.bin or os.getenv("LUASMTPD_BIN")
  if not bin then
    local dir = ABS_SOURCE:match("^(.*)/[^/]*$") or "."
    bin = dir .. "/../../build/luasmtpd"
  end
  local path = realpath(bin)
  if not path then
    return nil, bin .. " not found: run `make build/luasmtpd` or set LUASMTPD_BIN"
  end
  return path
end

--- The server binary the kit runs, as an absolute path (or nil, err).
function M.binary(opts)
  return find_binary(opts or {})
end

local function wrapper_source(script, dir, host, overrides)
  local lines = {
    "-- Written by smtp.testing: the policy under test, its listeners moved to",
    "-- free ports, the spec's overrides applied and its onData recorded.",
    string.format("local testing = dofile(%q)", ABS_SOURCE),
  }
  if type(script) == "string" then
    lines[#lines + 1] = string.format("local options = dofile(%q)", script)
  else
    lines[#lines + 1] = "local options = (function()\n" .. serialize(script, true) .. "\nend)()"
  end
  lines[#lines + 1] = "local overrides = (function()\n" .. serialize(overrides or {}, true) .. "\nend)()"
  lines[#lines + 1] = string.format("return testing._instrument(options, { host = %q, dir = %q, overrides = overrides })",
    host, dir .. "/messages")
  return table.concat(lines, "\n") .. "\n"
end

local function listener_count(script)
  if type(script) == "table" then
    return type(script[1]) == "table" and #script or 1
  end
  return nil -- unknown until the server runs: wait for at least one
end

-- Waits until the server listens on all its ports (seen in /proc, so no
-- probe connection reaches the policy), or exits, or the time is up.
function Server:wait_ready(expected, timeout)
  local deadline = now() + timeout
  local settled
  while true do
    local how = reap(self.pid)
    if how then
      self.pid = nil
      return nil, string.format("luasmtpd exited (%s) before listening:\n%s", how, self:log())
    end
    local ports = listening_ports(self.pid)
    if expected and #ports >= expected then return ports end
    if not expected and #ports > 0 then
      -- A script file may hold several listeners: wait until the count settles.
      if settled and #settled == #ports and now() > settled.at + 0.05 then return ports end
      if not settled or #settled ~= #ports then settled = { at = now(), unpack(ports) } end
    end
    if now() > deadline then
      return nil, string.format("luasmtpd did not listen within %g s:\n%s", timeout, self:log())
    end
    sleep(0.01)
  end
end

--- Runs the real core against a script (a path) or an options table (its
--- hooks travel as bytecode with their upvalues; modules by name). opts:
--- env = {NAME = value or false} for the server's environment, options =
--- {...} set over every listener's options (key, cert, size...), host
--- (default 127.0.0.1), args (extra command line), bin, timeout (seconds to
--- wait for it to listen, default 20), clientTimeout (per reply, default
--- 10). Returns the server, or nil, err with its log.
function M.server(script, opts)
  opts = opts or {}
  local bin, err = find_binary(opts)
  if not bin then return nil, err end
  if type(script) == "string" then
    local path, perr = realpath(script)
    if not path then return nil, perr end
    script = path
  end
  local dir = M.tmpdir()
  os.execute("mkdir " .. shell_quote(dir .. "/messages"))
  local host = opts.host or "127.0.0.1"
  local ok, source = pcall(wrapper_source, script, dir, host, opts.options)
  if not ok then return nil, source end
  write_file(dir .. "/wrapper.lua", source)
  local argv = { bin }
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end
  argv[#argv + 1] = dir .. "/wrapper.lua"
  local self = setmetatable({ dir = dir, host = host, logfile = dir .. "/server.log", clients = {},
    clientTimeout = opts.clientTimeout or DEFAULT_TIMEOUT }, Server)
  local pid, serr = spawn(argv, opts.env, self.logfile)
  if not pid then return nil, serr end
  self.pid = pid
  live[self] = true
  hook_exit()
  -- Stops the process if the server object is dropped without stop().
  self.guard = newproxy(true)
  getmetatable(self.guard).__gc = function() if self.pid then self:stop(1) end end
  local ports, werr = self:wait_ready(listener_count(script), opts.timeout or 20)
  if not ports then
    self:stop(1)
    return nil, werr
  end
  self.ports, self.port = ports, ports[1]
  return self
end

--- The server's stderr so far.
function Server:log()
  return self.stopped_log or read_file(self.logfile) or ""
end

local function read_messages(dir)
  local names = {}
  local p = io.popen("ls -1 " .. shell_quote(dir) .. " 2>/dev/null")
  for name in p:lines() do
    if name:match("^%d+%.msg$") then names[#names + 1] = name end
  end
  p:close()
  table.sort(names)
  local out = {}
  for _, name in ipairs(names) do
    local rec = deserialize(read_file(dir .. "/" .. name) or "", "=" .. name)
    if rec then out[#out + 1] = rec end
  end
  return out
end

--- What onData received, one table per message in order: body (as the
--- hook's stream gave it: dot-unstuffed), byteLength, sizeExceeded,
--- envelope, the other session fields, session (the same again), hookRead
--- (bytes the hook itself took), accepted, rejection or error.
function Server:messages()
  return self.stopped_messages or read_messages(self.dir .. "/messages")
end

--- A client connected to listener n (opts.listener, default 1). opts.tls
--- ({servername, cafile, ...} as for starttls) speaks TLS first, for
--- `secure` listeners; opts.timeout is per reply. The greeting is read:
--- client.code / client.text hold it. Returns the client or nil, err.
function Server:client(opts)
  opts = opts or {}
  if not self.pid then return nil, "the server is not running" end
  local socket = require "socket"
  local sock = socket.tcp()
  local timeout = opts.timeout or self.clientTimeout
  sock:settimeout(timeout)
  local port = self.ports[opts.listener or 1]
  local c = setmetatable({ sock = sock, host = self.host, port = port, timeout = timeout, lines = {},
    replies = {}, extensions = {} }, Client)
  self.clients[#self.clients + 1] = c
  local ok, err = sock:connect(self.host, port)
  if not ok then return nil, string.format("connect %s:%d: %s", self.host, port, tostring(err)) end
  c:note("-- ", string.format("connected to %s:%d", self.host, port))
  if opts.tls then
    local hok, herr = c:handshake(opts.tls)
    if not hok then return nil, herr .. "\n" .. c:transcript() end
  end
  c:reply()
  c.greeting = c.text
  return c
end

--- TERM, then waits (up to `timeout` seconds, default 10) and KILLs if
--- need be. Returns true when the server exited with status 0, else nil,
--- how it ended. Safe to call twice.
function Server:stop(timeout)
  if not self.pid then return self.exit_status == "exit 0" or nil, self.exit_status end
  for _, c in ipairs(self.clients) do if not c.closed then c:close() end end
  local pid = self.pid
  init_ffi()
  C.kill(pid, 15)
  local how = wait_exit(pid, timeout or 10)
  if not how then
    C.kill(pid, 9)
    how = (wait_exit(pid, 5) or "not reaped") .. " (killed: TERM was not enough)"
  end
  self.pid, self.exit_status = nil, how
  live[self] = nil
  -- Keep what specs may still ask for, then tidy up.
  self.stopped_messages = read_messages(self.dir .. "/messages")
  self.stopped_log = read_file(self.logfile) or ""
  if not os.getenv("LUASMTPD_TEST_KEEP") then remove_tree(self.dir) end
  if how == "exit 0" then return true end
  return nil, how
end

--- Runs `luasmtpd -t script`: true, or nil and what it printed.
function M.check(script, opts)
  opts = opts or {}
  local bin, err = find_binary(opts)
  if not bin then return nil, err end
  local env = ""
  for k, v in pairs(opts.env or {}) do env = env .. k .. "=" .. shell_quote(v) .. " " end
  local p = io.popen(env .. shell_quote(bin) .. " -t " .. shell_quote(script) .. " 2>&1; echo \"exit=$?\"")
  local out = p:read("*a")
  p:close()
  local status = out:match("exit=(%d+)%s*$")
  out = out:gsub("exit=%d+%s*$", "")
  if status == "0" then return true, out end
  return nil, out
end

--- A test certificate authority made by certs/mkca.sh (once per process):
--- {dir, ca = path, key(name), cert(name)}; names default to localhost,
--- mail.example.com, smtp.another.com, plus client and selfsigned.
function M.pki()
  -- Kept in the registry: busted reloads this module for every spec file
  -- (insulation), and making a CA takes a second.
  local registry = debug.getregistry()
  local shared = registry["smtp.testing.pki"]
  if shared then return shared end
  local root = M.home or "."
  local dir = M.tmpdir()
  table.remove(temp_dirs) -- removed at exit by the guard below instead
  local ok = os.execute("sh " .. shell_quote(root .. "/certs/mkca.sh") .. " " .. shell_quote(dir) .. " >/dev/null 2>&1")
  if not (ok == 0 or ok == true) then error("testing.pki: certs/mkca.sh failed", 2) end
  local guard = newproxy(true)
  getmetatable(guard).__gc = function() remove_tree(dir) end
  local pki = {
    guard = guard,
    dir = dir,
    ca = dir .. "/ca.crt",
    key = function(name) return dir .. "/" .. name .. ".key" end,
    cert = function(name) return dir .. "/" .. name .. ".crt" end,
  }
  registry["smtp.testing.pki"] = pki
  return pki
end

M.read_file, M.write_file = read_file, write_file

---------------------------------------------------------------- assertions

local function describe_expectation(code, expected)
  return tostring(code) .. (expected and " " .. expected or "")
end

--- Does client's last reply have this code (and enhanced code, e.g.
--- "5.7.1", or a Lua pattern found in the text)? true, or false and a
--- message that holds the whole transcript.
function M.check_reply(client, code, expected)
  local ok = client.code == code
  if ok and expected then
    if has_enhanced(expected) and not expected:find(" ") then
      ok = client.text:sub(1, #expected + 1) == expected .. " " or client.text == expected
    else
      ok = client.text:find(expected) ~= nil
    end
  end
  if ok then return true end
  local got = client.code and (client.code .. " " .. tostring(client.text):gsub("\n", " | "))
    or ("no reply (" .. tostring(client.text) .. ")")
  return false, string.format("expected SMTP reply %s, got %s\nSMTP transcript:\n%s",
    describe_expectation(code, expected), got, client:transcript())
end

--- Raises an error holding the whole transcript unless the last reply
--- matches (see check_reply). Returns the client.
function M.assert_reply(client, code, expected)
  local ok, message = M.check_reply(client, code, expected)
  if not ok then error(message, 2) end
  return client
end

-- assert.reply(client, 250[, "2.1.5"]) and assert.is_not.reply(...) for
-- busted users; the failure message is the transcript, unformatted.
local function register_assertion()
  local has_luassert, luassert = pcall(require, "luassert")
  local has_say, say = pcall(require, "say")
  if not (has_luassert and has_say) then return end
  say:set("assertion.reply.positive", "%s")
  say:set("assertion.reply.negative", "%s")
  luassert:register("assertion", "reply", function(state, arguments)
    local client, code, expected = arguments[1], arguments[2], arguments[3]
    local ok, message = M.check_reply(client, code, expected)
    if state.mod == false and ok then
      message = string.format("expected SMTP reply other than %s, got it\nSMTP transcript:\n%s",
        describe_expectation(code, expected), client:transcript())
    end
    arguments[1], arguments.n, arguments.nofmt = message or "", 1, { true }
    return ok
  end, "assertion.reply.positive", "assertion.reply.negative")
end
-- Only under busted (luassert already loaded): never inside the server.
if package.loaded.luassert then register_assertion() end

return M
