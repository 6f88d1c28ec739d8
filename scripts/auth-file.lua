-- auth-file.lua: a submission server whose users live in a file.
--
-- One "user:$6$salt$hash" line per user (crypt(3) SHA-512; make one with
-- `openssl passwd -6`), "#" starts a comment. The file is
-- $LUASMTPD_USERS, else /etc/luasmtpd/users; it is read when the script
-- loads, so edit it and `kill -HUP` the server. Hashes are checked by
-- libcrypt's crypt() through the LuaJIT FFI. AUTH is offered after
-- STARTTLS only (allowInsecureAuth = false), and mail needs AUTH.
local ffi = require "ffi"
local smtp = require "smtp"

-- pcall: a second load (HUP, or a spec) must not redeclare it.
pcall(ffi.cdef, "char *crypt(const char *phrase, const char *setting);")
-- Debian's libcrypt1 ships only the versioned name; "crypt" needs libcrypt-dev.
local ok, libcrypt = pcall(ffi.load, "crypt")
if not ok then libcrypt = ffi.load("libcrypt.so.1") end

local function crypt(password, setting)
  local out = libcrypt.crypt(password, setting)
  return out ~= nil and ffi.string(out) or nil
end

local function read_users(path)
  local f, err = io.open(path, "r")
  if not f then return nil, err end
  local users = {}
  for line in f:lines() do
    local name, hash = line:match("^([^:#%s][^:]*):(%$6%$[^:%s]+)%s*$")
    if name then users[name] = hash end
  end
  f:close()
  return users
end

local path = os.getenv("LUASMTPD_USERS") or "/etc/luasmtpd/users"
local users = assert(read_users(path))

-- Unknown users still cost one crypt(), so timing does not tell who exists.
local DUMMY = crypt("no such user", "$6$luasmtpd.dummy$")

local function verify(username, password)
  local hash = users[username]
  -- crypt() stops at a NUL byte: "secret\0junk" must not pass as "secret".
  if password:find("\0", 1, true) then return false end
  local computed = crypt(password, hash or DUMMY)
  return hash ~= nil and computed == hash
end

return {
  listen = os.getenv("LUASMTPD_LISTEN") or "127.0.0.1:587",
  name = os.getenv("LUASMTPD_NAME") or "localhost",
  authMethods = { "PLAIN", "LOGIN" },
  authOptional = false, -- submission: MAIL needs AUTH

  onAuth = function(auth, session)
    if verify(auth.username, auth.password or "") then
      smtp.log.info("authenticated", { user = auth.username })
      return { user = auth.username }
    end
    smtp.log.warn("authentication failed", { user = auth.username, remote = session.remoteAddress })
    return nil, smtp.reject(535, "5.7.8 Error: authentication failed")
  end,
}
