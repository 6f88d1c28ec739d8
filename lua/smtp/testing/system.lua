-- smtp.testing.system: what the kit asks of the operating system, through
-- LuaJIT's FFI (no Lua library for processes ships with Debian's LuaJIT):
-- absolute paths, scratch directories, child processes (posix_spawn, kill,
-- waitpid) and the ports they listen on; and the clean-up when the busted
-- process exits, whatever happens: servers still running are stopped and
-- scratch directories removed. Never loaded inside luasmtpd.
local files = require "smtp.testing.files"

local M = {}

local shell_quote = files.shell_quote

local ffi -- loaded on first use
local C

local function cdef(decl)
  pcall(ffi.cdef, decl) -- another module may have declared it already
end

local function init_ffi()
  if ffi then return end
  ffi = require "ffi"
  C = ffi.C
  cdef "typedef int pid_t;"
  cdef "typedef intptr_t ssize_t;"
  cdef "int posix_spawn(pid_t *pid, const char *path, const void *fa, const void *attr, char *const argv[], char *const envp[]);"
  cdef "int posix_spawn_file_actions_init(void *fa);"
  cdef "int posix_spawn_file_actions_destroy(void *fa);"
  cdef "int posix_spawn_file_actions_addopen(void *fa, int fd, const char *path, int oflag, unsigned int mode);"
  cdef "int posix_spawn_file_actions_adddup2(void *fa, int fd, int newfd);"
  cdef "int posix_spawn_file_actions_addclosefrom_np(void *fa, int from);"
  cdef "int kill(pid_t pid, int sig);"
  cdef "pid_t waitpid(pid_t pid, int *status, int options);"
  cdef "char *realpath(const char *path, char *resolved);"
  cdef "void free(void *p);"
  cdef "char *mkdtemp(char *template);"
  cdef "ssize_t readlink(const char *path, char *buf, size_t size);"
  cdef "char *strerror(int errnum);"
  cdef "extern char **environ;"
end

local function errno_text()
  return ffi.string(C.strerror(ffi.errno()))
end

--- path made absolute, links resolved; or nil, err.
function M.realpath(path)
  init_ffi()
  local p = C.realpath(path, nil)
  if p == nil then return nil, path .. ": " .. errno_text() end
  local s = ffi.string(p)
  C.free(p)
  return s
end

-- Where the kit's modules are, made absolute now: a spec may change
-- directory before starting a server.
local SOURCE = debug.getinfo(1, "S").source:match("^@(.*)$") or "smtp/testing/system.lua"
local ABS_SOURCE = M.realpath(SOURCE) or SOURCE

--- The folder of the kit's modules (lua/smtp/testing), absolute.
M.kit_dir = ABS_SOURCE:match("^(.*)/[^/]*$") or "."

--- The luasmtpd checkout this kit belongs to (where build/ and certs/ are).
M.home = M.kit_dir:match("^(.*)/lua/smtp/testing$")

--- Seconds since the epoch, with a fraction.
function M.now()
  return require("socket").gettime()
end

function M.sleep(s)
  require("socket").sleep(s)
end

-- Directories made by testing.tmpdir; removed when the busted process exits.
local temp_dirs = {}

-- A new directory under $TMPDIR; raises naming `who` at the caller's caller.
local function make_temp_dir(who)
  init_ffi()
  local base = os.getenv("TMPDIR") or "/tmp"
  local template = ffi.new("char[?]", #base + 32)
  ffi.copy(template, base .. "/luasmtpd-test.XXXXXX")
  if C.mkdtemp(template) == nil then error(who .. ": " .. errno_text(), 3) end
  return ffi.string(template)
end

--- A new private temporary directory, removed when the process exits.
function M.tmpdir()
  local dir = make_temp_dir("testing.tmpdir")
  temp_dirs[#temp_dirs + 1] = dir
  return dir
end

--- A new private temporary directory that the caller removes itself
--- (remove_tree): one that must outlive this module (testing.pki).
function M.own_tmpdir(who)
  return make_temp_dir(who)
end

--- rm -rf of a directory the kit made (any other path is left alone).
function M.remove_tree(dir)
  if dir and dir:match("/luasmtpd%-test%.[%w]+$") then os.execute("rm -rf " .. shell_quote(dir)) end
end

-- The environment for a child: ours, with overrides (false removes).
local function child_environ(overrides)
  local keep, list = {}, {}
  local i = 0
  while C.environ[i] ~= nil do
    local entry = ffi.string(C.environ[i])
    local name = entry:match("^([^=]*)=")
    if name and overrides[name] == nil then list[#list + 1] = entry end
    i = i + 1
  end
  for name, value in pairs(overrides) do
    if value ~= false then list[#list + 1] = name .. "=" .. tostring(value) end
  end
  local envp = ffi.new("char *[?]", #list + 1)
  for j, entry in ipairs(list) do
    keep[j] = entry
    envp[j - 1] = ffi.cast("char *", entry)
  end
  return envp, keep
end

--- Starts argv[1] with stdout and stderr appended to logfile, stdin from
--- /dev/null and env = {NAME = value or false} over our environment;
--- returns the pid or nil, err.
function M.spawn(argv, env, logfile)
  init_ffi()
  local fa = ffi.new("uint64_t[32]") -- room for glibc's posix_spawn_file_actions_t
  C.posix_spawn_file_actions_init(fa)
  C.posix_spawn_file_actions_addopen(fa, 0, "/dev/null", 0, 0)
  C.posix_spawn_file_actions_addopen(fa, 2, logfile, 1 + 64 + 1024, 420) -- O_WRONLY|O_CREAT|O_APPEND, 0644
  C.posix_spawn_file_actions_adddup2(fa, 2, 1)
  -- Our sockets must not live on in the server: a client closed by a spec
  -- would not look closed to the server that holds a copy.
  pcall(function() C.posix_spawn_file_actions_addclosefrom_np(fa, 3) end)
  local cargv = ffi.new("char *[?]", #argv + 1)
  for i, a in ipairs(argv) do cargv[i - 1] = ffi.cast("char *", a) end
  local envp, keep = child_environ(env or {})
  local pid = ffi.new("pid_t[1]")
  local rc = C.posix_spawn(pid, argv[1], fa, nil, cargv, envp)
  C.posix_spawn_file_actions_destroy(fa)
  local _ = keep -- the strings behind envp live until here
  if rc ~= 0 then return nil, argv[1] .. ": " .. ffi.string(C.strerror(rc)) end
  return pid[0]
end

--- nil while the process runs; else "exit N" or "signal N".
function M.reap(pid)
  init_ffi()
  local status = ffi.new("int[1]")
  local r = C.waitpid(pid, status, 1) -- WNOHANG
  if r == 0 then return nil end
  if r < 0 then return "gone" end
  local s = status[0]
  if s % 128 == 0 then return "exit " .. math.floor(s / 256) % 256 end
  return "signal " .. s % 128
end

--- Sends signal sig (a number) to pid.
function M.kill(pid, sig)
  init_ffi()
  C.kill(pid, sig)
end

--- Waits up to `timeout` seconds for pid to end; returns how it ended or nil.
function M.wait_exit(pid, timeout)
  local deadline = M.now() + timeout
  repeat
    local how = M.reap(pid)
    if how then return how end
    M.sleep(0.01)
  until M.now() > deadline
  return M.reap(pid)
end

--- Ports pid listens on, in the order of its listening file descriptors
--- (the core opens its listeners in the order of the script's table).
function M.listening_ports(pid)
  init_ffi()
  local inodes = {}
  local buf = ffi.new("char[64]")
  for fd = 0, 255 do
    local n = C.readlink(string.format("/proc/%d/fd/%d", pid, fd), buf, 63)
    if n > 0 then
      local inode = ffi.string(buf, n):match("^socket:%[(%d+)%]$")
      if inode then inodes[#inodes + 1] = { fd = fd, inode = inode } end
    end
  end
  local listening = {}
  for _, file in ipairs { "/proc/net/tcp", "/proc/net/tcp6" } do
    -- Fields: sl local_address rem_address st ... uid timeout inode
    for line in (files.read_file(file) or ""):gmatch("[^\n]+") do
      local f = {}
      for field in line:gmatch("%S+") do f[#f + 1] = field end
      local port = f[2] and f[2]:match(":(%x+)$")
      if port and f[4] == "0A" and f[10] then listening[f[10]] = tonumber(port, 16) end
    end
  end
  local ports = {}
  for _, s in ipairs(inodes) do
    if listening[s.inode] then ports[#ports + 1] = listening[s.inode] end
  end
  return ports
end

-- Servers not yet stopped, stopped when the process exits whatever happens.
local live = setmetatable({}, { __mode = "k" })

local function kill_all()
  for server in pairs(live) do server:stop(2) end
end

local exit_hooked = false
local function hook_exit()
  if exit_hooked then return end
  exit_hooked = true
  local exit = os.exit
  os.exit = function(...) -- luacheck: ignore
    kill_all()
    return exit(...)
  end
end

--- Has server:stop(2) called when the process exits, unless
--- stopped(server) came first.
function M.stop_at_exit(server)
  live[server] = true
  hook_exit()
end

function M.stopped(server)
  live[server] = nil
end

-- __gc of a userdata: LuaJIT runs it at lua_close (busted ends with
-- os.exit(code, true)), and when the module itself is collected.
local sentinel = newproxy(true)
getmetatable(sentinel).__gc = function()
  kill_all()
  for _, dir in ipairs(temp_dirs) do M.remove_tree(dir) end
end
M._sentinel = sentinel

return M
