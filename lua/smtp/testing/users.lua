-- smtp.testing.users: a users file as scripts/auth-file.lua (and the
-- scripts built on it) reads one: "name:$6$salt$hash" lines, SHA-512
-- crypt(3) hashes made by `openssl passwd -6` as an admin would make them,
-- not by the code under test.
local files = require "smtp.testing.files"
local system = require "smtp.testing.system"

local M = {}

local shell_quote = files.shell_quote

--- A users file in a scratch directory: its path, or nil, err.
--- users = {name = password, ...; "line", ...}: one hashed line per name
--- (sorted by name), after the array's lines written as they are
--- (comments, blank lines, entries a policy must ignore).
function M.users_file(users)
  local lines, names, passwords = {}, {}, {}
  for _, line in ipairs(users) do lines[#lines + 1] = line end
  for name, password in pairs(users) do
    if type(name) == "string" then names[#names + 1] = name end
  end
  table.sort(names)
  for i, name in ipairs(names) do passwords[i] = users[name] end
  local dir = system.tmpdir()
  if #names > 0 then
    -- The passwords go to openssl in a file, not on its command line.
    local input = dir .. "/passwords"
    local ok, err = files.write_file(input, table.concat(passwords, "\n") .. "\n")
    if not ok then return nil, err end
    local p = io.popen("openssl passwd -6 -in " .. shell_quote(input) .. " 2>&1")
    local out = p:read("*a")
    p:close()
    os.remove(input)
    local hashes = {}
    for hash in out:gmatch("%$6%$[^\n]+") do hashes[#hashes + 1] = hash end
    if #hashes ~= #names then return nil, "testing.users_file: openssl passwd -6 failed: " .. out end
    for i, name in ipairs(names) do lines[#lines + 1] = name .. ":" .. hashes[i] end
  end
  local path = dir .. "/users"
  local ok, err = files.write_file(path, table.concat(lines, "\n") .. "\n")
  if not ok then return nil, err end
  return path
end

return M
