-- The default policy: take mail for any recipient and store every message
-- in a Maildir (var/mail/, or $LUASMTPD_MAILDIR). Copy it and edit.
local smtp = require "smtp"
local maildir = require "smtp.maildir"

local name = os.getenv("LUASMTPD_NAME") or "localhost"
local box = assert(maildir.open(os.getenv("LUASMTPD_MAILDIR") or "var/mail"))

return {
  listen = os.getenv("LUASMTPD_LISTEN") or "127.0.0.1:2525",
  name = name,
  size = 50 * 1024 * 1024,
  authOptional = true, -- an MX takes mail from strangers

  -- check: for a script built on this one (inbound-checks.lua), a test of
  -- the stored file before it enters new/ (smtp.maildir's deliver)
  onData = function(stream, session, check)
    local path, err, refusal = box:deliver(stream, session, name, check)
    if refusal then return nil, refusal end
    if not path then
      smtp.log.error("delivery failed", { error = err })
      return nil, smtp.reject(452, "4.3.1 Error: local delivery failed (mail store full?), try again later")
    end
    smtp.log.info("delivered", { path = path, size = stream.byteLength })
    return "OK: message queued as " .. path:match("[^/]+$")
  end,
}
