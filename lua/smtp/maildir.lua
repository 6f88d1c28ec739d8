-- Maildir delivery (https://cr.yp.to/proto/maildir.html): the message is
-- written under tmp/ by the C core (stream:save, no copy through Lua),
-- fsync'd with tmp/, then renamed into new/, so a reader never sees half a
-- message and a dropped connection leaves nothing in new/; new/ is fsync'd
-- before deliver returns, so a message acknowledged survives a power loss.
local smtp = require "smtp"

local M = {}
M.__index = M

local hostname = (function()
  local f = io.open("/proc/sys/kernel/hostname", "r")
  local h = f and f:read("*l") or "localhost"
  if f then f:close() end
  -- '/' and ':' are not allowed in maildir names.
  return (h:gsub("/", "\\057"):gsub(":", "\\072"))
end)()

local seq = 0

local function mkdir_p(path)
  -- os.execute would fork a shell per call; this runs once per box.
  local ok = os.execute("mkdir -p '" .. path:gsub("'", "'\\''") .. "'")
  return ok == 0 or ok == true
end

--- Opens (and creates) the Maildir at path.
function M.open(path)
  for _, sub in ipairs { "tmp", "new", "cur" } do
    if not mkdir_p(path .. "/" .. sub) then
      return nil, "cannot create " .. path .. "/" .. sub
    end
  end
  return setmetatable({ path = path }, M)
end

--- A unique file name: time, sequence and pid, host.
function M.unique_name()
  seq = seq + 1
  local now = smtp.now()
  local sec = math.floor(now)
  return string.format("%d.M%06dP%dQ%d.%s", sec, math.floor((now - sec) * 1e6), smtp.pid(), seq, hostname)
end

local function rfc2822_date(t)
  return os.date("!%a, %d %b %Y %H:%M:%S +0000", t)
end

-- RFC 5321 4.4 TCP-info as Postfix writes it: the client's confirmed name,
-- or "unknown" while clientHostname is only "[ip]", then the address
-- literal ("IPv6:" for IPv6, RFC 5321 4.1.3).
local function tcp_info(session)
  local addr = session.remoteAddress or "unknown"
  local name = session.clientHostname
  if not name or name:sub(1, 1) == "[" then name = "unknown" end
  return string.format("%s [%s%s]", name, addr:find(":", 1, true) and "IPv6:" or "", addr)
end

--- The Received: header (RFC 5321 4.4) for a session, folded, CRLF-ended.
function M.received_header(session, server_name)
  local from = session.hostNameAppearsAs or "unknown"
  local rcpt = session.envelope and session.envelope.rcptTo or {}
  local lines = {
    string.format("Received: from %s (%s)", from, tcp_info(session)),
    string.format("\tby %s (luasmtpd) with %s id %s", server_name or "localhost",
      session.transmissionType or "SMTP", session.id or "unknown"),
  }
  if #rcpt == 1 then
    lines[#lines + 1] = string.format("\tfor <%s>", rcpt[1].address)
  end
  lines[#lines] = lines[#lines] .. ";"
  lines[#lines + 1] = "\t" .. rfc2822_date(os.time())
  return table.concat(lines, "\r\n") .. "\r\n"
end

--- Delivers the message being received: returns the file's path in new/,
--- or nil, err (the message is then not in the box). check, when given,
--- is called with the path of the stored file while it is still in tmp/
--- (no reader of the box sees it yet); its nil, reply keeps the message
--- out, and deliver returns nil, err, reply.
function M:deliver(stream, session, server_name, check)
  local name = M.unique_name()
  local tmp = self.path .. "/tmp/" .. name
  local ok, err = stream:save(tmp, M.received_header(session, server_name))
  if not ok then
    os.remove(tmp)
    return nil, "cannot store the message: " .. tostring(err)
  end
  if check then
    local verdict, reply = check(tmp)
    if verdict == nil and reply ~= nil then
      os.remove(tmp)
      return nil, "refused by the check", reply
    end
  end
  local final = self.path .. "/new/" .. name
  local renamed, rerr = os.rename(tmp, final)
  if not renamed then
    os.remove(tmp)
    return nil, "cannot store the message: " .. tostring(rerr)
  end
  -- The rename is only on disk once new/ is: until then a crash can undo it.
  local synced, serr = smtp.fsync_dir(self.path .. "/new")
  if not synced then
    -- refused (4xx) then, so not left to be delivered twice after a retry
    os.remove(final)
    return nil, "cannot store the message: " .. tostring(serr)
  end
  return final
end

return M
