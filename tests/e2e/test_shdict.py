"""Shared dictionaries (issue 17): `require "smtp.ngx.shdict"`.declare(name,
bytes) at the top of a script gives an ngx.shared.DICT that every worker of
--workers N sees: a counter incremented by sessions of both workers ends
exact, a rate limit (incr with init_ttl) holds across them, entries expire,
a full dictionary evicts the least recently used entries on set (safe_set
answers "no memory"), and a HUP keeps the contents of a dictionary declared
again with the same size (a new size starts empty). Each probe is one MAIL
FROM whose local part names an operation; the hook answers with the result
in a 550 reply."""

import os
import re
import signal
import sys
import threading
import time

from harness import ROOT, E2ETest, Lua, Server, script

sys.path.insert(0, os.path.join(ROOT, "tests", "soak"))
import reloadkit as rk  # noqa: E402

PRELUDE = r'''
local shdict = require "smtp.ngx.shdict"
local counts = shdict.declare("counts", %(counts)s)
local small = shdict.declare("small", 8192)
local function show(...)
  local out = {}
  for i = 1, select("#", ...) do out[#out + 1] = tostring((select(i, ...))) end
  return table.concat(out, ",")
end
local ops = {
  incr = function() return show(counts:incr("hits", 1, 0)) end,
  hits = function() return show(counts:get("hits")) end,
  limit = function()
    local n = counts:incr("rate", 1, 0, 30)
    return n <= 10 and "ok" or "limited"
  end,
  setshort = function() return show(counts:set("short", "v", 0.3, 7)) end,
  getshort = function() return show(counts:get("short")) end,
  staleshort = function() return show(counts:get_stale("short")) end,
  ttlshort = function() return show(counts:ttl("short")) end,
  fill = function()
    local forced = 0
    for i = 1, 400 do
      local ok, err, forcible = small:set("key" .. i, "0123456789")
      if not ok then return "set failed " .. tostring(err) end
      if forcible then forced = forced + 1 end
    end
    return show(forced, small:get("key1"), small:get("key400"), small:safe_set("more", "0123456789"))
  end,
  misc = function()
    return table.concat({show(counts:add("a", 1)), show(counts:add("a", 2)), show(counts:replace("zz", 1)),
                         show(counts:incr("zz", 1)), show(counts:set("s", "x")), show(counts:incr("s", 1)),
                         show(counts:get("")), show(counts:expire("zz", 1)), show(counts:delete("a")),
                         show(counts:get("a")), show(shdict.shared.counts == counts), show(counts:capacity())}, "|")
  end,
  declare = function() return show(pcall(shdict.declare, "late", 8192)) end,
}
'''

HOOKS = {"onMailFrom": Lua(r'''function(address, session)
    local op = address.address:match("^(%w+)@shdict%.test$")
    if ops[op] then
      return nil, smtp.reject(550, "5.7.1 " .. ops[op]() .. " pid=" .. smtp.pid())
    end
  end''')}

REPLY_RE = re.compile(r"^550 5\.7\.1 (.*) pid=(\d+)$")


def shdict_script(counts_size="1048576"):
    return script(hooks=HOOKS, prelude=PRELUDE % {"counts": counts_size})


def ask(port, op):
    """One session: MAIL FROM:<op@shdict.test>; returns (result, pid)."""
    s = rk.connect(port)
    try:
        r = rk.Line(s)
        r.reply()
        r.cmd("EHLO shdict.example")
        line = r.cmd("MAIL FROM:<%s@shdict.test>" % op)[-1]
        s.sendall(b"QUIT\r\n")
    finally:
        s.close()
    m = REPLY_RE.match(line)
    if not m:
        raise AssertionError("unexpected reply to %s: %r" % (op, line))
    return m.group(1), int(m.group(2))


def ask_many(port, op, n, threads=4):
    """n sessions asking op from `threads` concurrent clients."""
    out, lock, errors = [], threading.Lock(), []

    def run(k):
        try:
            for _ in range(k):
                res = ask(port, op)
                with lock:
                    out.append(res)
        except Exception as e:  # reported by the caller
            errors.append(e)
    ts = [threading.Thread(target=run, args=(n // threads,)) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    return out


class SharedDictWorkers(E2ETest):
    def start(self, text, workers=2):
        srv = Server(text, args=["--workers", str(workers)])
        self.log = rk.LogWatch(srv.stderr_path)
        return srv

    def both_serving(self, port):
        """Reads (no counter moves) until both workers have answered: a
        worker still starting (slow under the sanitizers) would leave the
        other all the connections of a short burst."""
        pids = set()
        for _ in range(10):
            pids |= {pid for _, pid in ask_many(port, "hits", 8)}
            if len(pids) == 2:
                return
        self.fail("only worker(s) %s answered 80 sessions" % pids)

    def test_counter_seen_by_both_workers(self):
        with self.start(shdict_script()) as srv:
            self.both_serving(srv.port)
            got = ask_many(srv.port, "incr", 80)
            pids = {pid for _, pid in got}
            self.assertEqual(len(pids), 2, "both workers should have served: %s" % pids)
            values = sorted(int(float(res.split(",")[0])) for res, _ in got)
            self.assertEqual(values, list(range(1, 81)), "every incr returns a distinct value")
            self.assertEqual(ask(srv.port, "hits")[0], "80")

    def test_rate_limit_holds_across_workers(self):
        with self.start(shdict_script()) as srv:
            self.both_serving(srv.port)
            got = ask_many(srv.port, "limit", 40)
            self.assertEqual(len({pid for _, pid in got}), 2)
            verdicts = [res for res, _ in got]
            self.assertEqual(verdicts.count("ok"), 10, verdicts)
            self.assertEqual(verdicts.count("limited"), 30)

    def test_hup_keeps_contents_and_a_new_size_starts_empty(self):
        with self.start(shdict_script()) as srv:
            ask_many(srv.port, "incr", 8)
            before = self.log.count(rk.RELOADED)
            srv.send_signal(signal.SIGHUP)
            self.assertTrue(self.log.wait_count(rk.RELOADED, before + 1, 5.0))
            self.assertEqual(ask(srv.port, "hits")[0], "8", "a reload keeps a dictionary of the same size")
            with open(srv.script_path, "w") as f:
                f.write(shdict_script("2097152"))
            srv.send_signal(signal.SIGHUP)
            self.assertTrue(self.log.wait_count(rk.RELOADED, before + 2, 5.0))
            deadline = time.monotonic() + 5
            while ask(srv.port, "hits")[0] != "nil" and time.monotonic() < deadline:
                time.sleep(0.05)  # old workers may still take a connection
            self.assertEqual(ask(srv.port, "hits")[0], "nil", "a new size starts an empty dictionary")


class SharedDictSemantics(E2ETest):
    def test_expiry_stale_and_ttl(self):
        with Server(shdict_script()) as srv:
            self.assertEqual(ask(srv.port, "setshort")[0], "true,nil,false")
            self.assertEqual(ask(srv.port, "getshort")[0], "v,7")
            ttl = float(ask(srv.port, "ttlshort")[0])
            self.assertTrue(0 < ttl <= 0.3, ttl)
            time.sleep(0.45)
            self.assertEqual(ask(srv.port, "getshort")[0], "nil")
            self.assertEqual(ask(srv.port, "staleshort")[0], "v,7,true")
            self.assertEqual(ask(srv.port, "ttlshort")[0], "nil,not found")

    def test_full_dictionary_evicts_on_set_and_safe_set_refuses(self):
        with Server(shdict_script()) as srv:
            res = ask(srv.port, "fill")[0].split(",")
            self.assertGreater(int(res[0]), 0, "sets into a full dictionary evict (forcible): %s" % res)
            self.assertEqual(res[1:3], ["nil", "0123456789"], "the least recently used went first")
            self.assertEqual(res[3:], ["false", "no memory", "false"])

    def test_method_answers(self):
        with Server(shdict_script()) as srv:
            self.assertEqual(ask(srv.port, "misc")[0],
                             "true,nil,false|false,exists,false|false,not found,false|nil,not found|"
                             "true,nil,false|nil,not a number|nil,empty key|nil,not found|true,nil,false|"
                             "nil|true|1048576")

    def test_declare_only_while_the_script_loads(self):
        with Server(shdict_script()) as srv:
            res = ask(srv.port, "declare")[0]
            self.assertTrue(res.startswith("false,") and "top of the script" in res, res)


class DeclaredThroughSmtpNgx(E2ETest):
    """`require("smtp.ngx").shared_dict(name, bytes)` is the same declare, and
    the global `ngx.shared[name]` is the dictionary it made."""

    def test_shared_dict_and_ngx_shared(self):
        prelude = r'''
local ngx_module = require "smtp.ngx"
local viangx = ngx_module.shared_dict("viangx", "64k")
local ops = {
  viangx = function()
    return tostring(ngx.shared.viangx == viangx) .. "," .. tostring(viangx:incr("n", 1, 41))
      .. "," .. tostring(viangx:capacity())
  end,
}
'''
        with Server(script(hooks=HOOKS, prelude=prelude)) as srv:
            self.assertEqual(ask(srv.port, "viangx")[0], "true,42,65536")
