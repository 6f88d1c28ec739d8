-- resty.string, the part of lua-resty-string (shipped with OpenResty) that
-- libraries require at load time: to_hex and atoi (lua-resty-http's
-- http_connect uses to_hex for pool names).
local M = { _VERSION = "0.16" }

function M.to_hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

function M.atoi(s)
  return tonumber(s)
end

return M
