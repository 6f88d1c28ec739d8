-- The real milter daemons for the example scripts' specs
-- (tests/spec/milter_daemons.py on tests/e2e/milterd.py's fixtures):
-- daemons.start(what) returns the running helper with .info (its
-- milters.json: signer, inbound sockets, authserv ids, domain) and
-- .signed (a message OpenDKIM signed), or fails the spec; :stop() ends
-- them all. what = "signer" starts OpenDKIM signing only.
-- daemons.maildir_files(dir): the paths of the messages in a Maildir.
local cjson = require "cjson"
local testing = require "smtp.testing"

local M = {}

-- rspamd compiles its rules on its first start on a machine (tens of
-- seconds, kept for the next ones); stopping takes OpenDKIM a few seconds.
local START_TIMEOUT, STOP_TIMEOUT = 180, 60

function M.start(what)
  local py = testing.home .. "/tests/spec/milter_daemons.py"
  local svc = assert(testing.service({ "python3", py, "{port}", "{dir}", what or "all" },
    { timeout = START_TIMEOUT }))
  svc.info = cjson.decode(assert(testing.read_file(svc.dir .. "/milters.json")))
  svc.signed = assert(testing.read_file(svc.dir .. "/signed.eml"))
  local stop = svc.stop
  function svc.stop(self) return stop(self, STOP_TIMEOUT) end
  return svc
end

function M.maildir_files(dir)
  local p = io.popen("ls " .. require("smtp.testing.files").shell_quote(dir .. "/new") .. " 2>/dev/null")
  local out = {}
  for name in p:lines() do out[#out + 1] = dir .. "/new/" .. name end
  p:close()
  table.sort(out)
  return out
end

return M
