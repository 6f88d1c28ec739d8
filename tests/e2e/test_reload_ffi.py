"""A script that uses LuaJIT's FFI survives HUP: ffi.cdef, ffi.new,
ffi.metatype, ffi.C calls, a callback C calls into Lua (qsort), and a
malloc'd point that ffi.gc frees; sessions open across reloads keep the
old script's cdata and new ones get the new script's, and nothing leaks
(run under the ASan build, LeakSanitizer found the C type table of every
reload lost: require "ffi" ran luaopen_ffi again, see
core/lua/lua_runtime.c)."""

from harness import Lua
from test_reload import ReloadBase

import reloadkit as rk

# C declarations belong to the process (LuaJIT has one C type table per
# state): a reloaded script declares its struct and metatype only once.
PRELUDE = r'''
local ffi = require "ffi"
if not pcall(ffi.typeof, "struct e2e_point") then
  ffi.cdef [[
    struct e2e_point { int x, y; };
    void *malloc(size_t size);
    void free(void *ptr);
    size_t strlen(const char *s);
    void qsort(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *));
  ]]
  ffi.metatype("struct e2e_point", {__index = {sum = function(p) return p.x + p.y end}})
end
local N = tonumber(VER:match("%d+"))
-- the script's own C memory, freed by its finalizer once the script is gone
local born = ffi.gc(ffi.cast("struct e2e_point *", ffi.C.malloc(ffi.sizeof("struct e2e_point"))), ffi.C.free)
born.x, born.y = N, N * 10
local function ascending(a, b)
  local x, y = ffi.cast("const int *", a)[0], ffi.cast("const int *", b)[0]
  return x < y and -1 or (x > y and 1 or 0)
end
'''

# onData: "ffi <ver> sum=<N+1000> born=<N>,<10N> sorted=<the body's numbers
# sorted by qsort> strlen=<the body's length by strlen(3)>"
HOOKS = {"onData": Lua(r'''function(stream, session)
    local body = readall(stream)
    local p = ffi.new("struct e2e_point", N, 1000)
    local nums = {}
    for d in body:gmatch("%d+") do nums[#nums + 1] = tonumber(d) end
    local arr = ffi.new("int[?]", #nums, nums)
    local cmp = ffi.cast("int (*)(const void *, const void *)", ascending)
    ffi.C.qsort(arr, #nums, ffi.sizeof("int"), cmp)
    cmp:free()
    local sorted = {}
    for i = 0, #nums - 1 do sorted[#sorted + 1] = tostring(arr[i]) end
    return string.format("ffi %s sum=%d born=%d,%d sorted=%s strlen=%d", VER, p:sum(), born.x,
                         born.y, table.concat(sorted, ","), tonumber(ffi.C.strlen(body)))
  end''')}

BODY = b"Subject: ffi\r\n\r\n5 3 9 1 2\r\n"


def ffi_script(n):
    return rk.versioned_script("v%d" % n, hooks=HOOKS, prelude=PRELUDE, record=False)


class HupFfi(ReloadBase):
    def send_message(self, c, n):
        """One message on c; asserts the reply the FFI code of v<n> makes."""
        self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
        self.assertReply(c.cmd("RCPT TO:<b@example.com>"), 250)
        self.assertReply(c.cmd("DATA"), 354)
        c.send(BODY + b".\r\n")
        r = c.read_reply()
        self.assertReply(r, 250)
        self.assertIn("ffi v%d sum=%d born=%d,%d sorted=1,2,3,5,9 strlen=%d"
                      % (n, n + 1000, n, 10 * n, len(BODY)), r.text)

    def new_session(self, n):
        c = self.srv.client()
        self.assertIn("banner-v%d" % n, c.greeting.text)
        self.assertReply(c.ehlo(), 250)
        self.send_message(c, n)
        return c

    def reload_to(self, n):
        self.rewrite(self.srv, ffi_script(n))
        self.hup(self.srv)
        self.wait_banner(self.srv, "v%d" % n)

    def test_ffi_script_reloaded_twice_with_a_session_open_then_again(self):
        self.srv = self.start(ffi_script(1))
        with self.srv:
            old = self.new_session(1)
            for n in (2, 3):  # reloads while `old` is open: it keeps v1's cdata
                self.reload_to(n)
                self.new_session(n).close()
                self.send_message(old, 1)
            self.assertReply(old.cmd("QUIT"), 221)
            old.expect_close()
            self.reload_to(4)  # no session open: v1's script can be collected
            self.new_session(4).close()
        # Server.stop (leaving `with`) fails the test on a sanitizer report

    def test_struct_declared_again_fails_the_reload_old_script_serves(self):
        """README: what ffi.cdef declared outlives a reload, so a script
        that declares its struct unguarded cannot be loaded a second time;
        the reload fails with LuaJIT's reason and changes nothing."""
        prelude = 'local ffi = require "ffi"\nffi.cdef "struct e2e_once { int x; };"\n'
        self.srv = self.start(rk.versioned_script("v1", prelude=prelude, record=False))
        with self.srv:
            self.rewrite(self.srv, rk.versioned_script("v2", prelude=prelude, record=False))
            _, lines = self.hup(self.srv, expect="failed")
            self.assertIn("attempt to redefine 'e2e_once'", "\n".join(lines))
            with self.srv.client() as c:
                self.assertIn("banner-v1", c.greeting.text)
