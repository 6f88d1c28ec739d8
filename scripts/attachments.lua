-- attachments.lua: refuses messages that carry an executable attachment,
-- 550 5.7.1, judged by smtp.mime (GMime) on the message itself: by the
-- part's content type, or by the extension of its file name (RFC 2231
-- and RFC 2047 names decoded, any depth, forwarded messages included).
--
-- $LUASMTPD_BLOCKED_EXTENSIONS = "exe,scr,js" replaces the list of
-- extensions below. An archive (.zip) is not opened: block "zip" too if
-- that matters. A check only: the message taken is not stored (a policy
-- that stores it too checks the stored file: its onData takes an open
-- file as well as the stream, as inbound-checks.lua uses it).
local smtp = require "smtp"
local mime = require "smtp.mime"

local EXTENSIONS = "exe,com,scr,pif,bat,cmd,vbs,vbe,js,jse,wsf,wsh,hta,msi,msp,cpl,jar,ps1,lnk,reg,dll"
local TYPES = {
  "application/x-msdownload", "application/x-msdos-program", "application/x-dosexec",
  "application/x-executable", "application/vnd.microsoft.portable-executable",
  "application/x-ms-installer", "application/x-msi", "application/java-archive",
  "application/hta", "application/x-sh",
}

local blocked_ext, blocked_type = {}, {}
for ext in (os.getenv("LUASMTPD_BLOCKED_EXTENSIONS") or EXTENSIONS):gmatch("[^,%s]+") do
  blocked_ext[ext:lower():gsub("^%.", "")] = true
end
for _, t in ipairs(TYPES) do blocked_type[t] = true end

-- What makes a part refused ("type application/x-msdownload",
-- "name invoice.pdf.exe"), or nil.
local function refused(part)
  if blocked_type[part.type] then return "type " .. part.type end
  local name = part.filename or part.params.name
  local ext = name and name:lower():match("%.([^.]+)$")
  if ext and blocked_ext[ext] then return "name " .. name end
end

-- A reply text is one line of ASCII: a name's other bytes are shown as "?".
local function printable(s)
  return (s:gsub("[^%w%.%-_ /]", "?"):sub(1, 100))
end

return {
  listen = os.getenv("LUASMTPD_LISTEN") or "127.0.0.1:2525",
  name = os.getenv("LUASMTPD_NAME") or "localhost",
  authOptional = true,

  -- source: onData's stream, or an open file holding the message
  onData = function(source)
    -- only the parts' types and names matter here: keep no text
    local msg, err = mime.parse(source, { maxText = 0 })
    if not msg then
      return nil, smtp.reject(451, "4.3.0 Error: cannot read the message: " .. printable(tostring(err)))
    end
    for part in msg:walk() do
      local why = refused(part)
      if why then
        smtp.log.info("executable attachment refused", { reason = why })
        return nil, smtp.reject(550, "5.7.1 Executable attachments are not accepted (" .. printable(why) .. ")")
      end
    end
    return "OK: no executable attachment"
  end,
}
