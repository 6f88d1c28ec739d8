-- smtp.testing.files: whole files in and out (nil, err on failure) and
-- paths quoted for the shell. Loaded inside luasmtpd too (by the onData
-- recorder), so it uses nothing but the io library.
local M = {}

--- The contents of path, or nil, err.
function M.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

--- Writes data to path (created or truncated): true, or nil, err.
function M.write_file(path, data)
  local f, err = io.open(path, "wb")
  if not f then return nil, err end
  local ok, werr = f:write(data)
  f:close()
  if not ok then return nil, werr end
  return true
end

--- s as one word for sh.
function M.shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

return M
