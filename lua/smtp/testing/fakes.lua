-- smtp.testing.fakes: the objects the core hands to hooks, built without
-- the core: addresses, sessions, onData streams and the conn of onSecure.
local files = require "smtp.testing.files"
local header = require "smtp.header_edits"

local M = {}

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

-- A string argument, as the core's luaL_checkstring demands (numbers too).
local function check_string(v, n)
  if type(v) ~= "string" and type(v) ~= "number" then
    error(string.format("bad argument #%d (string expected, got %s)", n, type(v)), 3)
  end
  return tostring(v)
end

--- A message stream for onData, like the core's: read() gives the next
--- chunk (opts.chunkSize bytes, default all at once) and nil at the end,
--- chunks() iterates, save(path[, prefix]) writes prefix and the rest of
--- the body to a new file. byteLength counts what was delivered so far.
--- A body over opts.size is refused as the core refuses it: sizeExceeded
--- turns true and, in place of the chunk that goes over, read() and save()
--- return nil, err (the core's 552 reply) and chunks() raises it as an
--- smtp.reject. addHeader, prependHeader and removeHeader edit the header
--- as the core's do (smtp.header_edits) until the first read or save,
--- then return nil, "header already read"; byteLength counts the bytes
--- received, not the edited ones.
function M.stream(body, opts)
  body, opts = body or "", opts or {}
  local size = opts.chunkSize or math.max(#body, 1)
  local pos = 1
  local s = { byteLength = 0, sizeExceeded = false, body = body }
  local edits, delta = header.new(), 0

  -- The first read or save takes the edited header block.
  local function emit()
    if edits.emitted then return end
    local out = edits:emit(body)
    delta, body = #out - #body, out
    size = opts.chunkSize or math.max(#body, 1)
  end

  function s.addHeader(_, name, value)
    return edits:edit("add", check_string(name, 2), check_string(value, 3))
  end

  function s.prependHeader(_, name, value)
    return edits:edit("insert", check_string(name, 2), check_string(value, 3), 0)
  end

  function s.removeHeader(_, name)
    return edits:edit("remove", check_string(name, 2))
  end
  local refusal = "552 5.3.4 Error: message exceeds fixed maximum message size " .. tostring(opts.size)

  -- Would n more bytes go over the size? Then the stream is refused.
  local function refused(n)
    if s.sizeExceeded or (opts.size ~= nil and pos - 1 - delta + n > opts.size) then
      s.sizeExceeded, s.byteLength = true, math.max(s.byteLength, pos - 1 - delta + n)
      return true
    end
  end

  local function advance(n)
    local chunk = body:sub(pos, pos + n - 1)
    pos = pos + #chunk
    s.byteLength = pos - 1 - delta
    return chunk
  end

  function s.read(_)
    emit()
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
    emit()
    if refused(#body - pos + 1) then return nil, refusal end
    if pos > 1 then return nil, "stream:save: part of the message was already read" end
    local ok, err = files.write_file(path, (prefix or "") .. advance(#body))
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

return M
