-- client-cert-audit.lua: submission for machines that prove who they are
-- with a client certificate.
--
-- Nothing but EHLO, STARTTLS and QUIT before TLS (needsUpgrade). The
-- handshake asks for a certificate and lets any through
-- (rejectUnauthorized = false) so that onSecure can log every attempt --
-- subject and SHA-256 fingerprint -- and then refuse with 554 the clients
-- whose certificate is missing or not signed by $LUASMTPD_CLIENT_CA
-- (default certs/test/ca.crt, from certs/mkca.sh).
local smtp = require "smtp"

return {
  listen = os.getenv("LUASMTPD_LISTEN") or "127.0.0.1:587",
  name = os.getenv("LUASMTPD_NAME") or "localhost",
  needsUpgrade = true,
  authOptional = true, -- the certificate is the credential
  requestCert = true,
  rejectUnauthorized = false,
  ca = os.getenv("LUASMTPD_CLIENT_CA") or "certs/test/ca.crt",

  onSecure = function(conn, session)
    local cert = conn:getPeerCertificate()
    smtp.log.info("client certificate", {
      subject = cert and cert.subject.CN or "none",
      fingerprint = cert and cert.fingerprint256 or "none",
      authorized = conn.authorized,
      reason = conn.authorizationError,
    })
    if not conn.authorized then
      return nil, smtp.reject(554, "5.7.1 Error: a valid client certificate is required")
    end
    -- Later hooks (and the Received header) may want to know who it was.
    session.clientCertificate = { subject = cert.subject.CN, fingerprint = cert.fingerprint256 }
  end,
}
