"""The core's verdicts from the body (size, bare CR/LF with the default
bareLineEndings = "reject", maxLineLength) reach onData before the end:
stream:read() returns nil, err, stream:chunks() raises, stream:save()
returns nil, err and leaves no file. A policy never sees as complete a
message the core refuses, whether it reads as the bytes come, reads after
they all came, or answers without reading; the client gets the core's
refusal and the session goes on. BDAT too (its verdict is the size)."""

import socket

from harness import Lua, SharedServerTest, script, stuff

# The sender's local part chooses how onData reads; it records what it saw.
ON_DATA = Lua(r'''function(stream, session)
    local mode = session.envelope.mailFrom.address:match("^([%w]+)@")
    local info = {mode = mode, port = session.remotePort, tx = session.transaction}
    local function read_loop()
      local n = 0
      while true do
        local chunk, err = stream:read()
        if chunk == nil then
          info.err, info.ended = err, err == nil
          break
        end
        n = n + #chunk
      end
      info.got = n
    end
    local function save()
      local path = OUT .. "/saved-" .. session.remotePort .. "-" .. session.transaction
      local ok, err = stream:save(path)
      info.ok, info.err, info.exists = ok, err, exists(path)
      info.ended = ok == true
    end
    if mode == "read" then
      read_loop()
    elseif mode == "chunks" then
      local ok, res = pcall(function()
        local n = 0
        for chunk in stream:chunks() do n = n + #chunk end
        return n
      end)
      if ok then info.ended, info.got = true, res else info.err = tostring(res) end
    elseif mode == "save" then
      save()
    elseif mode == "lateread" then
      smtp.sleep(0.3) -- the whole body (and its verdict) is in by now
      read_loop()
    elseif mode == "latesave" then
      smtp.sleep(0.3)
      save()
    elseif mode == "unguarded" then
      for _ in stream:chunks() do end -- the refusal propagates
    end
    -- mode "ignore" answers at once, without reading
    record("seen", info)
    return "policy accepted"
  end''')

MODES = ("read", "chunks", "save", "lateread", "latesave", "ignore")
SIZE = 2048
MAX_LINE = 100

# name -> (body as sent before stuffing, code, enhanced code)
CASES = {
    "size": (b"Subject: big\r\n\r\n" + (b"a" * 90 + b"\r\n") * 30, 552, "5.3.4"),
    "size_last_line": ((b"b" * 90 + b"\r\n") * 22 + b"c" * 80 + b"\r\n", 552, "5.3.4"),
    "bare_lf": (b"Subject: x\r\n\r\nline1\nline2\r\n" + b"more\r\n" * 20, 554, "5.5.2"),
    "bare_lf_last_line": (b"Subject: x\r\n\r\nfine\r\nlast\nline\r\n", 554, "5.5.2"),
    "bare_cr_before_end": (b"Subject: x\r\n\r\nfine\r\nlast\r\r\n", 554, "5.5.2"),
    "long_line": (b"Subject: x\r\n\r\n" + b"x" * 500 + b"\r\nmore\r\n", 554, "5.6.0"),
    "long_line_last": (b"Subject: x\r\n\r\nshort\r\n" + b"y" * (MAX_LINE + 1) + b"\r\n", 554, "5.6.0"),
}


class VerdictTest(SharedServerTest):
    SCRIPT = script(hooks={"onData": ON_DATA}, size=SIZE, maxLineLength=MAX_LINE)

    def seen(self, c, tx):
        evs = [e for e in self.srv.events("seen") if e["port"] == c.local_port and e["tx"] == tx]
        return evs[-1] if evs else None

    def check_refused_view(self, mode, info, code, enh, what):
        """What onData saw of a message the core refuses: an error, not the end."""
        if mode == "ignore":
            return
        self.assertIsNotNone(info, "%s: onData recorded nothing" % what)
        self.assertFalse(info.get("ended"), "%s: onData saw a clean end: %r" % (what, info))
        err = info.get("err")
        self.assertIsInstance(err, str, "%s: no error reported: %r" % (what, info))
        self.assertIn("%d %s" % (code, enh), err, what)
        if mode in ("save", "latesave"):
            self.assertIsNone(info.get("ok"), what)
            self.assertIs(info.get("exists"), False, "%s: save() left a file" % what)

    def check_next_message_accepted(self, c, mode, tx):
        self.assertReply(c.transaction(b"Subject: ok\r\n\r\nfine\r\n", mail="<%s@example.com>" % mode),
                         250, "2.6.0")
        info = self.seen(c, tx)
        if mode != "ignore":
            self.assertIs(info.get("ended"), True, info)
            self.assertIsNone(info.get("err"), info)


class DataVerdicts(VerdictTest):
    def run_case(self, name, mode, piece):
        body, code, enh = CASES[name]
        wire, _ = stuff(body)
        what = "%s/%s/%s" % (name, mode, piece)
        with self.ehlo_client() as c:
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.assertReply(c.cmd("MAIL FROM:<%s@example.com>" % mode), 250)
            self.assertReply(c.cmd("RCPT TO:<r@example.com>"), 250)
            self.assertReply(c.cmd("DATA"), 354)
            data = wire + b".\r\n"
            for i in range(0, len(data), piece):
                c.send(data[i:i + piece])
            self.assertReply(c.read_reply(), code, enh, what)
            self.check_refused_view(mode, self.seen(c, 1), code, enh, what)
            self.check_next_message_accepted(c, mode, 2)

    def test_every_verdict_every_reader_one_write(self):
        for name in CASES:
            for mode in MODES:
                with self.subTest(case=name, mode=mode):
                    self.run_case(name, mode, 1 << 20)

    def test_refusal_raised_by_chunks_is_no_bug(self):
        """chunks() raises the refusal as an smtp.reject: a hook that lets it
        through gets the core's reply and is not logged as a failure."""
        with self.ehlo_client() as c:
            r = c.transaction(stuff(CASES["bare_lf"][0])[0], mail="<unguarded@example.com>")
            self.assertReply(r, 554, "5.5.2")
            self.assertReply(c.transaction(b"fine\r\n", mail="<read@example.com>"), 250, "2.6.0")
        self.assertEqual([e for e in self.srv.events("seen") if e["port"] == c.local_port and e["tx"] == 1], [])
        self.assertNotIn("level=error", self.srv.log())

    def test_every_verdict_every_reader_small_writes(self):
        """Cut in pieces, the verdict may come in the last piece, with the
        final dot: the end must still not be reported first."""
        for name in CASES:
            for mode in ("read", "chunks", "save"):
                with self.subTest(case=name, mode=mode):
                    self.run_case(name, mode, 61)


class BdatVerdicts(VerdictTest):
    def test_size_over_several_chunks(self):
        for mode in MODES:
            with self.subTest(mode=mode), self.ehlo_client() as c:
                self.assertReply(c.cmd("MAIL FROM:<%s@example.com>" % mode), 250)
                self.assertReply(c.cmd("RCPT TO:<r@example.com>"), 250)
                for part in (b"a" * 1500, b"b" * 1500):
                    c.send(b"BDAT %d\r\n" % len(part) + part)
                    self.assertReply(c.read_reply(), 250, "2.0.0")
                c.send(b"BDAT 10 LAST\r\n" + b"c" * 10)
                self.assertReply(c.read_reply(), 552, "5.3.4")
                self.check_refused_view(mode, self.seen(c, 1), 552, "5.3.4", mode)
                self.assertReply(c.cmd("MAIL FROM:<%s@example.com>" % mode), 250)
                self.assertReply(c.cmd("RCPT TO:<r@example.com>"), 250)
                c.send(b"BDAT 6 LAST\r\nfine\r\n")
                self.assertReply(c.read_reply(), 250, "2.6.0")
                info = self.seen(c, 2)
                if mode != "ignore":
                    self.assertIs(info.get("ended"), True, info)
