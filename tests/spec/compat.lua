-- ../shared/compat/lib next to the checkout (a worktree sits one level
-- deeper): lua-resty-redis and lua-resty-http exactly as published, test
-- data the project may not copy (tests/e2e/harness.py's COMPAT). Specs that
-- need them call compat.need() first: where the folder is absent the test
-- is skipped with a reason starting "no ../shared/compat/lib".
local testing = require "smtp.testing"

local M = {}

for _, up in ipairs { "/..", "/../.." } do
  local lib = testing.home .. up .. "/shared/compat/lib"
  local f = io.open(lib .. "/resty/redis.lua", "rb")
  if f then
    f:close()
    M.lib = lib
    break
  end
end

--- The folder, or a skip of the running test naming why (busted's pending
--- of the calling test: this file runs in the global environment).
function M.need()
  if not M.lib then
    getfenv(2).pending("no ../shared/compat/lib: the published lua-resty-* libraries are not here")
  end
  return M.lib
end

--- LUA_PATH for a server that loads them (then Lua's default path).
function M.lua_path()
  return assert(M.lib, "no ../shared/compat/lib: call compat.need() first") .. "/?.lua;;"
end

return M
