-- smtp.testing.pki: certificates for tests, from a throw-away certificate
-- authority made by certs/mkca.sh of the luasmtpd checkout.
local files = require "smtp.testing.files"
local system = require "smtp.testing.system"

local M = {}

local shell_quote = files.shell_quote

--- A test certificate authority made by certs/mkca.sh (once per process):
--- {dir, ca = path, key(name), cert(name)}; names default to localhost,
--- mail.example.com, smtp.another.com, plus client and selfsigned.
function M.pki()
  -- Kept in the registry: busted reloads the kit for every spec file
  -- (insulation), and making a CA takes a second.
  local registry = debug.getregistry()
  local shared = registry["smtp.testing.pki"]
  if shared then return shared end
  local root = system.home or "."
  local dir = system.own_tmpdir("testing.pki") -- removed by the guard below
  local ok = os.execute("sh " .. shell_quote(root .. "/certs/mkca.sh") .. " " .. shell_quote(dir) .. " >/dev/null 2>&1")
  if not (ok == 0 or ok == true) then error("testing.pki: certs/mkca.sh failed", 2) end
  local remove_tree = system.remove_tree
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

return M
