"""CHUNKING / BDAT (RFC 3030) and BINARYMIME: chunks streamed into onData
exactly like DATA (stream:read, stream:chunks and stream:save see the same
bytes), per-chunk replies, BDAT 0 LAST, refused chunks read then answered
(no desync), DATA/RCPT after BDAT, RSET between chunks, BODY=BINARYMIME,
the size limit, bad BDAT syntax (501 and close), pipelining, and a 5 MiB
binary message stored byte for byte by scripts/default.lua."""

import os
import random
import time

from harness import (E2ETest, Lua, Server, SharedServerTest, default_with, script, split_received,
                     wait_for)
from tlsutil import ehlo_keywords

# The sender's local part chooses how onData reads the body.
ON_DATA = Lua(r'''function(stream, session)
    local env = session.envelope
    local mode = env.mailFrom.address:match("^([%w-]+)@") or "chunks"
    local body
    if mode == "read" then
      body = read_to_end(stream)
    elseif mode == "save" then
      local path = OUT .. "/saved-" .. session.id .. "-" .. tostring(session.transaction)
      local ok, err = stream:save(path)
      if not ok then
        record("data", {port = session.remotePort, saveError = tostring(err)})
        return nil, smtp.reject(451, "save failed")
      end
      local f = assert(io.open(path, "rb"))
      body = f:read("*a")
      f:close()
    elseif mode == "early" then
      -- answers without reading: the core drains the rest
      body = ""
    else
      local ok, res = pcall(readall, stream)
      if not ok then -- the core refuses the message: no end was seen
        record("data", {port = session.remotePort, readError = tostring(res), byteLength = stream.byteLength,
                        sizeExceeded = stream.sizeExceeded})
        return nil, smtp.reject(451, "read failed")
      end
      body = res
    end
    local name = "body-" .. tostring(session.remotePort) .. "-" .. tostring(session.transaction)
    writefile(OUT .. "/" .. name, body)
    record("data", {port = session.remotePort, file = name, len = #body, mode = mode,
                    byteLength = stream.byteLength, sizeExceeded = stream.sizeExceeded,
                    bodyType = env.bodyType, rcpts = #env.rcptTo,
                    transmissionType = session.transmissionType})
    if mode == "reject" then return nil, smtp.reject(554, "5.6.0 not this one") end
    return "stored " .. tostring(stream.byteLength)
  end''')

ON_CLOSE = Lua(r'''function(session)
    record("close", {port = session.remotePort})
  end''')

HOOKS = {"onData": ON_DATA, "onClose": ON_CLOSE}

# Every byte value, bare CR and LF, a lone dot line, what would end DATA.
NASTY = (bytes(range(256)) + b"\r\n.\r\n" + b"..leading dots\r\n" + b"bare\nLF and bare\rCR\r\n"
         + b"\r\n.\r\nQUIT\r\n" + b"\x00" * 10 + b"end")


def bdat(data, last=False):
    return b"BDAT %d%s\r\n" % (len(data), b" LAST" if last else b"") + data


class ChunkTest(SharedServerTest):
    def start(self, c, sender="chunks@example.com", rcpts=("<r@example.com>",), params=""):
        self.assertReply(c.ehlo(), 250)
        self.assertReply(c.cmd("MAIL FROM:<%s>%s" % (sender, params)), 250, "2.1.0")
        for r in rcpts:
            self.assertReply(c.cmd("RCPT TO:" + r), 250, "2.1.5")

    def datas(self, c):
        return [e for e in self.srv.events("data") if e.get("port") == c.local_port]

    def body_of(self, ev):
        return self.srv.out_file(ev["file"])


class Chunking(ChunkTest):
    SCRIPT = script(hooks=HOOKS, size=1024 * 1024)

    def test_advertised(self):
        with self.client() as c:
            r = c.ehlo()
            kw = [l.split(" ")[0].upper() for l in r.lines[1:]]
            self.assertIn("CHUNKING", kw)
            self.assertIn("BINARYMIME", kw)
            self.assertEqual(kw.index("BINARYMIME"), kw.index("CHUNKING") + 1)
            self.assertEqual(kw.index("CHUNKING"), kw.index("ENHANCEDSTATUSCODES") + 1)

    def test_single_chunk_binary(self):
        for mode in ["chunks", "read", "save"]:
            with self.subTest(mode=mode), self.client() as c:
                self.start(c, sender=mode + "@example.com")
                c.send(bdat(NASTY, last=True))
                r = c.read_reply()
                self.assertReply(r, 250, "2.6.0")
                self.assertEqual(r.text, "2.6.0 stored %d" % len(NASTY))
                self.assertReply(c.cmd("NOOP"), 250)
                [ev] = self.datas(c)
                self.assertEqual(ev["mode"], mode)
                self.assertEqual(ev["byteLength"], len(NASTY))
                self.assertIs(ev["sizeExceeded"], False)
                self.assertEqual(self.body_of(ev), NASTY)

    def test_several_chunks(self):
        parts = [b"Subject: chunked\r\n", b"\r\n", b"first line\r", b"\nsecond line\r\n", b".\r\n", b"\x00\xff"]
        for mode in ["chunks", "read", "save"]:
            with self.subTest(mode=mode), self.client() as c:
                self.start(c, sender=mode + "@example.com")
                total = 0
                for p in parts:
                    total += len(p)
                    c.send(bdat(p))
                    r = c.read_reply()
                    self.assertReply(r, 250, "2.0.0")
                    self.assertIn("%d octets received" % total, r.text)
                c.send(bdat(b"tail", last=True))
                r = c.read_reply()
                self.assertReply(r, 250, "2.6.0")
                [ev] = self.datas(c)
                want = b"".join(parts) + b"tail"
                self.assertEqual(self.body_of(ev), want)
                self.assertEqual(ev["byteLength"], len(want))

    def test_bdat_0_last(self):
        with self.client() as c:
            # an empty message
            self.start(c)
            c.send(b"BDAT 0 LAST\r\n")
            self.assertReply(c.read_reply(), 250, "2.6.0")
            # chunks, then an empty LAST one
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
            self.assertReply(c.cmd("RCPT TO:<b@example.com>"), 250)
            c.send(bdat(b"hello"))
            self.assertReply(c.read_reply(), 250, "2.0.0")
            c.send(b"BDAT 0\r\n")
            r = c.read_reply()
            self.assertReply(r, 250, "2.0.0")
            self.assertIn("5 octets", r.text)
            c.send(b"bdat 0 last\r\n")
            self.assertReply(c.read_reply(), 250, "2.6.0")
        e1, e2 = self.datas(c)
        self.assertEqual((e1["byteLength"], self.body_of(e1)), (0, b""))
        self.assertEqual((e2["byteLength"], self.body_of(e2)), (5, b"hello"))

    def test_chunk_split_over_writes(self):
        """A chunk's bytes and even its command line arrive in pieces."""
        body = NASTY * 3
        with self.client() as c:
            self.start(c)
            wire = bdat(body[:100]) + bdat(body[100:], last=True)
            for i in range(0, len(wire), 37):
                c.send(wire[i:i + 37])
                time.sleep(0.002)
            self.assertReply(c.read_reply(), 250, "2.0.0")
            self.assertReply(c.read_reply(), 250, "2.6.0")
        [ev] = self.datas(c)
        self.assertEqual(self.body_of(ev), body)

    def test_early_answer_drains_the_rest(self):
        with self.client() as c:
            self.start(c, sender="early@example.com")
            c.send(bdat(b"x" * 5000))
            self.assertReply(c.read_reply(), 250, "2.0.0")
            c.send(bdat(b"RSET\r\n" * 100, last=True))
            self.assertReply(c.read_reply(), 250, "2.6.0")
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
            c.no_reply(0.2)

    def test_pipelined_in_one_write(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            c.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\n"
                   + bdat(b"part one\r\n") + bdat(b"NOOP\r\n") + bdat(b"part three", last=True)
                   + b"NOOP\r\nMAIL FROM:<d@example.com>\r\nRCPT TO:<e@example.com>\r\n"
                   + bdat(b"second message", last=True) + b"QUIT\r\n")
            rs = c.read_replies(10)
            self.assertCodes(rs, [250, 250, 250, 250, 250, 250, 250, 250, 250, 250])
            self.assertIn("10 octets", rs[3].text)
            self.assertIn("16 octets", rs[4].text)
            self.assertEqual(rs[5].text, "2.6.0 stored 26")
            self.assertEqual(rs[9].text, "2.6.0 stored 14")
            self.assertReply(c.read_reply(), 221)
            c.expect_close()
        e1, e2 = self.datas(c)
        self.assertEqual(self.body_of(e1), b"part one\r\nNOOP\r\npart three")
        self.assertEqual(e1["rcpts"], 2)
        self.assertEqual(self.body_of(e2), b"second message")

    def test_before_mail_and_rcpt(self):
        """A refused chunk is still read: its bytes are never taken as commands."""
        with self.client() as c:
            # before EHLO
            c.send(bdat(b"NOOP\r\n"))
            self.assertReply(c.read_reply(), 503)
            self.assertReply(c.cmd("EHLO client.example"), 250)
            # before MAIL
            c.send(bdat(b"RSET\r\nNOOP\r\n", last=True))
            self.assertReply(c.read_reply(), 503, "5.5.1")
            c.no_reply(0.2)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
            # before RCPT
            c.send(bdat(b"QUIT\r\n"))
            self.assertReply(c.read_reply(), 503, "5.5.1")
            c.send(b"BDAT 0 LAST\r\n")
            self.assertReply(c.read_reply(), 503, "5.5.1")
            # the transaction still stands and works
            self.assertReply(c.cmd("RCPT TO:<b@example.com>"), 250)
            c.send(bdat(b"fine", last=True))
            self.assertReply(c.read_reply(), 250, "2.6.0")
        [ev] = self.datas(c)
        self.assertEqual(self.body_of(ev), b"fine")

    def test_data_and_rcpt_after_bdat(self):
        with self.client() as c:
            self.start(c)
            c.send(bdat(b"abc"))
            self.assertReply(c.read_reply(), 250, "2.0.0")
            self.assertReply(c.cmd("DATA"), 503, "5.5.1")
            self.assertReply(c.cmd("RCPT TO:<late@example.com>"), 503, "5.5.1")
            self.assertReply(c.cmd("MAIL FROM:<x@example.com>"), 503, "5.5.1")
            c.send(bdat(b"def", last=True))
            self.assertReply(c.read_reply(), 250, "2.6.0")
        [ev] = self.datas(c)
        self.assertEqual(self.body_of(ev), b"abcdef")
        self.assertEqual(ev["rcpts"], 1)

    def test_rset_between_chunks(self):
        with self.client() as c:
            self.start(c)
            c.send(bdat(b"abandoned part"))
            self.assertReply(c.read_reply(), 250, "2.0.0")
            self.assertReply(c.cmd("RSET"), 250, "2.0.0")
            self.assertReply(c.cmd("RCPT TO:<b@example.com>"), 503, "5.5.1")
            c.send(bdat(b"x", last=True))
            self.assertReply(c.read_reply(), 503, "5.5.1")
            # a fresh transaction on the same connection
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
            self.assertReply(c.cmd("RCPT TO:<b@example.com>"), 250)
            c.send(bdat(b"kept", last=True))
            self.assertReply(c.read_reply(), 250, "2.6.0")
        wait_for(lambda: any(e["port"] == c.local_port for e in self.srv.events("close")))
        evs = self.datas(c)
        self.assertEqual([self.body_of(e) for e in evs], [b"kept"], "the abandoned message is not stored")

    def test_ehlo_between_chunks_abandons(self):
        with self.client() as c:
            self.start(c)
            c.send(bdat(b"abandoned"))
            self.assertReply(c.read_reply(), 250)
            self.assertReply(c.ehlo(), 250)
            c.send(bdat(b"x", last=True))
            self.assertReply(c.read_reply(), 503, "5.5.1")
        wait_for(lambda: any(e["port"] == c.local_port for e in self.srv.events("close")))
        self.assertEqual(self.datas(c), [])

    def test_disconnect_between_chunks(self):
        with self.client() as c:
            self.start(c)
            c.send(bdat(b"half a message"))
            self.assertReply(c.read_reply(), 250)
        wait_for(lambda: any(e["port"] == c.local_port for e in self.srv.events("close")))
        self.assertEqual(self.datas(c), [])
        with self.client() as c2:
            self.start(c2)
            c2.send(bdat(b"next", last=True))
            self.assertReply(c2.read_reply(), 250, "2.6.0")

    def test_binarymime(self):
        with self.client() as c:
            self.start(c, params=" BODY=BINARYMIME")
            self.assertReply(c.cmd("DATA"), 503, "5.5.1")
            c.send(bdat(NASTY, last=True))
            self.assertReply(c.read_reply(), 250, "2.6.0")
            # lower case works as well
            self.assertReply(c.cmd("MAIL FROM:<a@example.com> BODY=binarymime"), 250)
            self.assertReply(c.cmd("RCPT TO:<b@example.com>"), 250)
            c.send(bdat(b"\x00\x01", last=True))
            self.assertReply(c.read_reply(), 250, "2.6.0")
        e1, e2 = self.datas(c)
        self.assertEqual(e1["bodyType"], "binarymime")
        self.assertEqual(self.body_of(e1), NASTY)
        self.assertEqual(e2["bodyType"], "binarymime")

    def test_data_still_works(self):
        with self.client() as c:
            self.start(c)
            self.assertReply(c.cmd("DATA"), 354)
            c.send(b"Subject: plain\r\n\r\n..dot\r\n.\r\n")
            self.assertReply(c.read_reply(), 250, "2.6.0")
        [ev] = self.datas(c)
        self.assertEqual(self.body_of(ev), b"Subject: plain\r\n\r\n.dot\r\n")
        self.assertEqual(ev["bodyType"], "7bit")

    def test_onData_rejection(self):
        with self.client() as c:
            self.start(c, sender="reject@example.com")
            c.send(bdat(b"one"))
            self.assertReply(c.read_reply(), 250, "2.0.0")
            c.send(bdat(b"two", last=True))
            self.assertReply(c.read_reply(), 554, "5.6.0")
            self.assertReply(c.cmd("NOOP"), 250)

    def test_transmission_type(self):
        with self.client() as c:
            self.start(c)
            c.send(bdat(b"x", last=True))
            self.assertReply(c.read_reply(), 250)
        [ev] = self.datas(c)
        self.assertEqual(ev["transmissionType"], "ESMTP")


class BadSyntax(ChunkTest):
    SCRIPT = script(hooks=HOOKS)

    def test_bad_bdat_closes(self):
        """The chunk length is unknown: 501 and the connection closes."""
        for line in ["BDAT", "BDAT x", "BDAT -1", "BDAT 18446744073709551616", "BDAT 99999999999999999999999",
                     "BDAT 5 NOTLAST", "BDAT 5 LAST extra", "BDAT 1.5", "BDAT +5", "BDAT 0x10"]:
            for in_tx in [False, True]:
                with self.subTest(line=line, in_tx=in_tx), self.client() as c:
                    if in_tx:
                        self.start(c)
                    else:
                        self.assertReply(c.ehlo(), 250)
                    c.send(line.encode() + b"\r\nNOOP\r\n")
                    r = c.read_reply()
                    self.assertEqual(r.code, 501, r)
                    rest = c.expect_close()
                    self.assertEqual(rest, b"", "nothing after the 501: %r" % rest)
        self.assertTrue(self.srv.alive())

    def test_huge_declared_chunk_without_data(self):
        """A 20-digit size that fits in 64 bits is a size: the server waits
        for the bytes, and the client may just go away."""
        with self.client() as c:
            self.start(c)
            c.send(b"BDAT 18446744073709551615\r\nsome bytes")
            c.no_reply(0.3)
        with self.client() as c:
            self.start(c)
            c.send(bdat(b"ok", last=True))
            self.assertReply(c.read_reply(), 250)


class RefusedChunkReplies(ChunkTest):
    """A refused chunk's reply is built like every other: its enhanced code
    goes where hideENHANCEDSTATUSCODES can drop it, and AUTH's refusal is
    authRequiredMessage, as for MAIL."""
    SCRIPT = script(hooks=HOOKS, authOptional=False, allowInsecureAuth=True,
                    authRequiredMessage="Log in first, please", hideENHANCEDSTATUSCODES=True)

    def test_without_enhanced_codes_and_with_the_auth_message(self):
        with self.client() as c:
            c.send(bdat(b"x"))
            r = c.read_reply()
            self.assertEqual(r.raw, b"503 Error: send HELO/EHLO first\r\n")
            self.assertReply(c.ehlo(), 250)
            c.send(bdat(b"hi", last=True))
            r = c.read_reply()
            self.assertEqual(r.raw, b"530 Log in first, please\r\n")
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 530)
            self.assertEqual(c.cmd("NOOP").raw, b"250 OK\r\n")


class Hidden(ChunkTest):
    SCRIPT = script(hooks=HOOKS, hideCHUNKING=True)

    def test_hidden(self):
        with self.client() as c:
            kw = ehlo_keywords(c.ehlo())
            self.assertNotIn("CHUNKING", kw)
            self.assertNotIn("BINARYMIME", kw)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com> BODY=BINARYMIME"), 501, "5.5.4")


class SizeLimit(ChunkTest):
    SCRIPT = script(hooks=HOOKS, size=1000)

    def test_total_over_size(self):
        with self.client() as c:
            self.start(c)
            c.send(bdat(b"a" * 600))
            self.assertReply(c.read_reply(), 250, "2.0.0")
            c.send(bdat(b"b" * 600))
            self.assertReply(c.read_reply(), 250, "2.0.0")
            c.send(bdat(b"c" * 10, last=True))
            self.assertReply(c.read_reply(), 552, "5.3.4")
            # the session goes on
            self.assertReply(c.cmd("NOOP"), 250)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
            self.assertReply(c.cmd("RCPT TO:<b@example.com>"), 250)
            c.send(bdat(b"d" * 1000, last=True))
            self.assertReply(c.read_reply(), 250, "2.6.0")
        e1, e2 = self.datas(c)
        # onData learnt of the refusal with the chunk that went over
        self.assertIn("552 5.3.4", e1["readError"])
        self.assertIs(e1["sizeExceeded"], True)
        self.assertEqual(e1["byteLength"], 1200)
        self.assertIs(e2["sizeExceeded"], False)
        self.assertEqual(e2["byteLength"], 1000)

    def test_single_chunk_over_size(self):
        with self.client() as c:
            self.start(c)
            c.send(bdat(b"x" * 1001, last=True))
            self.assertReply(c.read_reply(), 552, "5.3.4")
            self.assertReply(c.cmd("RSET"), 250)

    def test_declared_size(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com> SIZE=1001 BODY=BINARYMIME"), 552, "5.3.4")


class BigMessage(E2ETest):
    def test_5mib_in_64k_chunks_maildir(self):
        """scripts/default.lua stores a 5 MiB binary message sent in 64 KiB
        chunks byte for byte (stream:save from C)."""
        rnd = random.Random(3030)
        body = bytes(rnd.getrandbits(8) for _ in range(5 * 1024 * 1024))
        chunk = 64 * 1024
        with Server(default_with(name="mx.test")) as srv:
            with srv.client() as c:
                self.assertReply(c.ehlo(), 250)
                self.assertReply(c.cmd("MAIL FROM:<big@example.com> BODY=BINARYMIME SIZE=%d" % len(body)), 250)
                self.assertReply(c.cmd("RCPT TO:<r@example.com>"), 250)
                pieces = [body[i:i + chunk] for i in range(0, len(body), chunk)]
                wire = b"".join(bdat(p, last=(i == len(pieces) - 1)) for i, p in enumerate(pieces))
                c.sock.settimeout(30)
                c.send(wire)
                rs = c.read_replies(len(pieces), timeout=30)
                self.assertCodes(rs, [250] * len(pieces))
                self.assertIn("%d octets" % (len(body) - chunk), rs[-2].text)
                self.assertIn("queued as", rs[-1].text)
                self.assertReply(c.cmd("QUIT"), 221)
            files = wait_for(srv.maildir_new)
            self.assertEqual(len(files), 1)
            with open(files[0], "rb") as f:
                received, stored = split_received(f.read())
            self.assertEqual(len(stored), len(body))
            self.assertTrue(stored == body, "stored body differs from what was sent")
            self.assertIn(b"with ESMTP", received)
            self.assertEqual(srv.maildir_tmp(), [])

    def test_pipelined_small_chunks_maildir(self):
        # Random bytes, but not starting with a space or tab, which would
        # read as a continuation of the Received header split_received cuts.
        body = b"x" + os.urandom(2999)
        with Server(default_with(name="mx.test")) as srv:
            with srv.client() as c:
                self.assertReply(c.ehlo(), 250)
                pieces = [body[i:i + 7] for i in range(0, len(body), 7)]
                wire = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n" + b"".join(
                    bdat(p) for p in pieces) + b"BDAT 0 LAST\r\n"
                c.send(wire)
                rs = c.read_replies(2 + len(pieces) + 1)
                self.assertEqual({r.code for r in rs}, {250})
            files = wait_for(srv.maildir_new)
            with open(files[0], "rb") as f:
                self.assertEqual(split_received(f.read())[1], body)
