-- An example policy: an MX that has every message checked by milters
-- before it is stored in a Maildir: OpenDKIM verifies DKIM signatures and
-- OpenDMARC the sender's DMARC policy, each stamping its
-- Authentication-Results; rspamd rejects spam (the GTUBE test message
-- too) with its own reply and adds its X-Spam-*/X-Rspamd-* headers to the
-- rest. Executable attachments are refused (550 5.7.1) as attachments.lua
-- refuses them, checked on the stored file before it enters the Maildir's
-- new/, so a refused message is never seen there.
--
--   build/luasmtpd scripts/inbound-checks.lua
--
-- Environment:
--   LUASMTPD_MILTERS  the milters' sockets, in order, space-separated
--                     (default: OpenDKIM, OpenDMARC and rspamd on their
--                     usual ports, "inet:127.0.0.1:8891
--                     inet:127.0.0.1:8893 inet:127.0.0.1:11332")
--   LUASMTPD_MILTER_TIMEOUT  seconds for each answer (default 30)
--   LUASMTPD_MAILDIR, LUASMTPD_NAME, LUASMTPD_LISTEN as in default.lua
--   LUASMTPD_BLOCKED_EXTENSIONS as in attachments.lua
--
-- OpenDMARC takes DKIM results from the Authentication-Results fields of
-- the authserv-ids in its TrustedAuthservIDs (OpenDKIM's AuthservID).
-- A milter that is down or too slow answers for nothing: the message is
-- refused with 451 4.7.1 and its sender tries again later; the log says
-- which milter and why.
local smtp = require "smtp"
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
-- default.lua's MX: any recipient, every message into the Maildir. Its
-- onData is called once every milter has answered: the stream it stores
-- has their headers.
local policy = dofile(here .. "default.lua")

local milters = {}
for s in (os.getenv("LUASMTPD_MILTERS")
    or "inet:127.0.0.1:8891 inet:127.0.0.1:8893 inet:127.0.0.1:11332"):gmatch("%S+") do
  milters[#milters + 1] = s
end
local timeout = tonumber(os.getenv("LUASMTPD_MILTER_TIMEOUT") or "") or 30

policy.milters = milters
policy.milterDefaultAction = "tempfail"
policy.milterCommandTimeout = timeout
policy.milterContentTimeout = timeout

-- attachments.lua's onData reads a file as well as a stream; loaded at
-- the first message, as smtp.mime is the server's (testing.load reads
-- these options without it)
local attachments
local function no_executable(path)
  attachments = attachments or dofile(here .. "attachments.lua").onData
  local f, err = io.open(path, "rb")
  if not f then return nil, smtp.reject(451, "4.3.0 Error: cannot read the message: " .. tostring(err)) end
  local ok, reply = attachments(f)
  f:close()
  return ok, reply
end

local deliver = policy.onData
policy.onData = function(stream, session)
  return deliver(stream, session, no_executable)
end

return policy
