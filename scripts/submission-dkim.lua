-- An example policy: a submission server whose users' mail is DKIM-signed
-- by OpenDKIM, a milter, before it is stored in a Maildir. Users and AUTH
-- (after STARTTLS only) are those of auth-file.lua.
--
--   LUASMTPD_USERS=/etc/luasmtpd/users build/luasmtpd scripts/submission-dkim.lua
--
-- Environment:
--   LUASMTPD_DKIM_MILTER  OpenDKIM's socket (default inet:127.0.0.1:8891)
--   LUASMTPD_USERS        as in auth-file.lua
--   LUASMTPD_MAILDIR, LUASMTPD_NAME, LUASMTPD_LISTEN as in default.lua
--
-- OpenDKIM signs a message when the client authenticated: luasmtpd gives
-- it the SASL mechanism ({auth_type}, what OpenDKIM looks at by default)
-- and the login name ({auth_authen}) as Postfix does, so its default
-- configuration will do; it says with which key (opendkim.conf(5)):
--   Mode s
--   Socket inet:8891@127.0.0.1
--   KeyTable file:/etc/opendkim/KeyTable     (sel1 example.org:sel1:/etc/opendkim/sel1.private)
--   SigningTable refile:/etc/opendkim/SigningTable   (*@example.org sel1)
--   InternalHosts 192.0.2.254   (not this server: only AUTH makes it sign)
-- A message OpenDKIM cannot sign (down, too slow) is not sent unsigned:
-- the client gets 451 and tries again later.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local policy = dofile(here .. "auth-file.lua")

policy.milters = { os.getenv("LUASMTPD_DKIM_MILTER") or "inet:127.0.0.1:8891" }
policy.milterDefaultAction = "tempfail"

-- default.lua's delivery into the Maildir; the stream it stores is the
-- message as OpenDKIM left it, its DKIM-Signature on top.
policy.onData = dofile(here .. "default.lua").onData

return policy
