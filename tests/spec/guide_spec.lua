-- docs/guide.md cannot rot: every ```lua block in it is a file the reader
-- is told to save, named on its first line ("-- file: PATH"; "-- spec"
-- names one spec/guide_LINE_spec.lua). They are written into a scratch
-- project as the guide lays it out; policies at its top must pass
-- `luasmtpd -t`, and every *_spec.lua runs under a nested busted from the
-- project directory, with the guide's own .busted, as the reader would.
-- The guide's OpenResty examples find the published lua-resty-* libraries
-- in the project's lib/resty, as the guide installs them: a link to
-- ../shared/compat/lib/resty (their blocks are skipped where it is absent);
-- the policies it shows from scripts/ must be those files exactly.
local testing = require "smtp.testing"
local compat = dofile("tests/spec/compat.lua")

local GUIDE = "docs/guide.md"

-- The ```lua blocks: {line = first code line, path = ..., text = ...}.
local function lua_blocks(markdown)
  local blocks, current, n = {}, nil, 0
  for line in (markdown .. "\n"):gmatch("(.-)\n") do
    n = n + 1
    if current then
      if line:match("^```%s*$") then
        blocks[#blocks + 1] = current
        current = nil
      else
        current.lines[#current.lines + 1] = line
      end
    elseif line:match("^```lua%s*$") then
      current = { line = n + 1, lines = {} }
    end
  end
  for _, b in ipairs(blocks) do
    local first = b.lines[1] or ""
    b.text = table.concat(b.lines, "\n") .. "\n"
    b.path = first:match("^%-%- file: (%S+)%s*$")
    if not b.path and first:match("^%-%- spec%s*$") then
      b.path = string.format("spec/guide_%d_spec.lua", b.line)
    end
  end
  return blocks
end

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Runs a spec file with busted inside dir, on the binary this run uses
-- (made absolute: LUASMTPD_BIN may be relative to the checkout); returns
-- ok, output.
local function nested_busted(dir, spec)
  local bin = assert(testing.binary())
  local cmd = string.format("cd %s && LUASMTPD_HOME=%s LUASMTPD_BIN=%s timeout 120 busted -o TAP %s 2>&1; echo \"exit=$?\"",
    shell_quote(dir), shell_quote(testing.home), shell_quote(bin), shell_quote(spec))
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  local status = out:match("exit=(%d+)%s*$")
  local passed = out:find("\nok ") or out:find("^ok ")
  return status == "0" and passed ~= nil and not out:find("\nnot ok "), out
end

describe("docs/guide.md", function()
  local blocks = lua_blocks(assert(testing.read_file(GUIDE)))
  local project = testing.tmpdir()

  it("has lua blocks, each naming the file it is", function()
    assert.is_true(#blocks >= 3)
    for _, b in ipairs(blocks) do
      assert(b.path, string.format("%s:%d: a ```lua block must start with \"-- file: PATH\" or \"-- spec\"",
        GUIDE, b.line - 1))
      assert(not b.path:find("%.%."), string.format("%s:%d: stay inside the project", GUIDE, b.line))
    end
  end)

  for _, b in ipairs(blocks) do
    if b.path then
      local dir = (project .. "/" .. b.path):match("^(.*)/")
      os.execute("mkdir -p " .. shell_quote(dir))
      assert(testing.write_file(project .. "/" .. b.path, b.text))
    end
  end
  if compat.lib then
    os.execute("mkdir -p " .. shell_quote(project .. "/lib") .. " && ln -s "
      .. shell_quote(compat.lib .. "/resty") .. " " .. shell_quote(project .. "/lib/resty"))
  end

  -- Does the block need the lua-resty-* libraries (or fake one)?
  local function needs_resty(b)
    return b.text:find("require \"resty%.") or b.text:find("%[\"resty%.")
  end

  for _, b in ipairs(blocks) do
    local where = string.format("%s:%d", GUIDE, b.line)
    local shipped = b.path and testing.read_file("scripts/" .. b.path)
    if shipped and b.path:match("^[^/.][^/]*%.lua$") then
      it(b.path .. " (" .. where .. ") is scripts/" .. b.path .. " as it ships", function()
        assert.are.equal(shipped, (b.text:gsub("^[^\n]*\n", "", 1)))
      end)
    end
    if b.path and b.path:match("^[^/.][^/]*%.lua$") then
      it(b.path .. " (" .. where .. ") passes luasmtpd -t", function()
        if needs_resty(b) then compat.need() end
        local ok, out = testing.check(project .. "/" .. b.path)
        assert(ok, where .. ": " .. tostring(out))
      end)
    elseif b.path and b.path:match("_spec%.lua$") then
      it(b.path .. " (" .. where .. ") passes under busted", function()
        if needs_resty(b) then compat.need() end
        local ok, out = nested_busted(project, b.path)
        assert(ok, string.format("%s: the guide's spec fails (its line N is %s:%d+N):\n%s",
          where, GUIDE, b.line - 1, out))
      end)
    end
  end
end)
