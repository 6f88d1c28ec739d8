-- sni-directory.lua: one certificate per host name, from a directory.
--
-- A client asking for NAME (TLS SNI) gets DIR/NAME/cert.pem with
-- DIR/NAME/key.pem, where DIR is $LUASMTPD_SNI_DIR (default certs/sni).
-- Names without a directory, and clients that send no name, get the
-- default certificate. A new name works as soon as its files are there;
-- the core caches each context per name until the next reload.
local smtp = require "smtp"

local dir = os.getenv("LUASMTPD_SNI_DIR") or "certs/sni"

local function readable(path)
  local f = io.open(path, "r")
  if f then f:close() end
  return f ~= nil
end

-- The name comes from the client: no "/", no "..", nothing but a host name.
local function safe_name(name)
  return #name <= 253 and name:match("^[%w][%w.-]*$") ~= nil and not name:find("..", 1, true)
end

return {
  listen = os.getenv("LUASMTPD_LISTEN") or "127.0.0.1:2525",
  name = os.getenv("LUASMTPD_NAME") or "localhost",
  authOptional = true,

  SNICallback = function(servername)
    local name = servername:lower()
    if not safe_name(name) then return nil end
    local base = dir .. "/" .. name .. "/"
    if not readable(base .. "cert.pem") then return nil end
    local ctx, err = smtp.tls.context { key = base .. "key.pem", cert = base .. "cert.pem" }
    if not ctx then
      -- A broken pair must not take the listener down: serve the default.
      smtp.log.error("cannot load certificate", { servername = name, error = err })
      return nil
    end
    return ctx
  end,
}
