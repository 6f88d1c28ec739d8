"""Header edits from onData (stream:addHeader, prependHeader, removeHeader;
smtp/message.c): every way the message leaves — box:deliver (Maildir),
stream:save, stream:read, stream:chunks and smtp.client.send to aiosmtpd
(a next hop nobody here wrote) — carries the edited header and the body
exactly as sent. Shown with stored bytes compared exactly: a field that
appears twice, one of them folded, removed by a name in another case; a
long value folded at 78 columns (Python's email package reads it back); a
message of only a header; a header arriving in slow pieces while onData
waits, split across BDAT chunks, or all there before onData edits or
reads unedited; 8-bit values with SMTPUTF8; a header
just under the 1 MiB limit (edited) and one over it (passed on unchanged,
the added fields on top); bad names and values refused with nil, err; an
edit after the header was read refused."""

import email
import email.policy
import os
import re
import shutil
import socket
import time

from harness import E2ETest, Server, script, wait_for
from test_relay_client import messages, start_nexthop, strip_trace

LONG = ("No, score=-0.1 required=5.0 tests=ALL_TRUSTED,BAYES_00,DKIM_SIGNED,DKIM_VALID,"
        "DKIM_VALID_AU autolearn=ham autolearn_force=no version=3.4.6 a b c d e f g h")

# The scenario is the first recipient's local part, the way out its domain.
PRELUDE = r'''
local maildir = require "smtp.maildir"
local client = require "smtp.client"
local box = maildir.open(os.getenv("LUASMTPD_MAILDIR"))
local NEXTHOP = tonumber(os.getenv("NEXTHOP_PORT"))
local LONG = "%s"
local function res(ok, err) return ok and "ok" or err end
local EDITS = {
  std = function(stream)
    return {res(stream:prependHeader("X-Trace", "first")), res(stream:addHeader("X-Spam-Status", LONG)),
            res(stream:removeHeader("x-remove-me"))}
  end,
  one = function(stream) return {res(stream:addHeader("X-Added", "1"))} end,
  utf8 = function(stream) return {res(stream:addHeader("X-Greeting", "Gr\195\188\195\159e, \228\184\150\231\149\140"))} end,
  bad = function(stream)
    local r = {}
    for _, nv in ipairs{{"Bad Name", "v"}, {"Bad:Name", "v"}, {"", "v"}, {"X-Ok", "a\r\nb"}, {"X-Ok", "a\nb"},
                        {"X-Ok", "a\0b"}, {"X-Ok", "a\rb"}, {"X-\195\169", "v"}} do
      r[#r + 1] = res(stream:addHeader(nv[1], nv[2]))
    end
    r[#r + 1] = res(stream:removeHeader("Bad Name"))
    r[#r + 1] = pcall(stream.addHeader, stream, "X-Ok") and "no error" or "error"
    return r
  end,
  none = function() return {} end,
  -- the whole message has arrived (and waits) before the first read, unedited
  late_none = function()
    smtp.sleep(0.3)
    return {}
  end,
  -- the whole message has arrived (and waits) before the edits
  late_edits = function(stream)
    smtp.sleep(0.5)
    return {res(stream:prependHeader("X-Trace", "first")), res(stream:addHeader("X-Spam-Status", LONG)),
            res(stream:removeHeader("X-Remove-Me"))}
  end,
}
'''

ONDATA = r'''function(stream, session)
    local env = session.envelope
    local scenario, domain = env.rcptTo[1].address:match("^(.-)@(.*)$")
    local results = EDITS[scenario](stream)
    local key = OUT .. "/" .. session.id .. "-" .. session.transaction
    if domain == "maildir.test" then
      writefile(key .. ".path", assert(box:deliver(stream, session, "mx.test")))
    elseif domain == "save.test" then
      assert(stream:save(key .. ".eml"))
    elseif domain == "read.test" then
      local body, err = read_to_end(stream)
      assert(not err, err)
      writefile(key .. ".eml", body)
    elseif domain == "chunks.test" then
      writefile(key .. ".eml", readall(stream))
    elseif domain == "relay.test" then
      assert(client.send{host = "127.0.0.1", port = NEXTHOP, helo = "mx.test", from = env.mailFrom,
                         to = env.rcptTo, message = stream, timeout = 5})
    end
    results[#results + 1] = res(stream:addHeader("X-Late", "1"))
    record("edits", {id = session.id .. "-" .. session.transaction, results = results})
    return "ok"
  end'''

HEADER = (b"X-Remove-Me: one\r\n"
          b"From: a@example.com\r\n"
          b"x-REMOVE-me: two\r\n\tcontinued\r\n  and more\r\n"
          b"Subject: hello\r\n"
          b"\r\n")
BODY = (b"body line\r\n"
        b"X-Remove-Me: in the body, stays\r\n"
        b"\r\n"
        b".a line that starts with a dot\r\n"
        b"\xff 8-bit\tbytes \r\n")
KEPT = b"From: a@example.com\r\nSubject: hello\r\n"


def stuffed(msg):
    return re.sub(rb"(?m)^\.", b"..", msg)


def unfold(field):
    return re.sub(rb"\r\n(?=[ \t])", b"", field)


class HeaderEditsTest(E2ETest):
    @classmethod
    def setUpClass(cls):
        cls.hop = start_nexthop()
        cls.srv = Server(script({"onData": ONDATA}, PRELUDE % LONG, hookTimeout = 30),
                         env={"NEXTHOP_PORT": str(cls.hop.port)})

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()
        cls.hop.stop()
        shutil.rmtree(cls.hop.out, ignore_errors=True)

    def send(self, msg, rcpt, mail="<sender@example.com>", pieces=None):
        """Sends msg (not yet dot-stuffed) by DATA; pieces: byte offsets to
        pause at, so the header arrives in parts while onData waits."""
        with self.srv.client() as c:
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("MAIL FROM:" + mail), 250)
            self.assertReply(c.cmd("RCPT TO:<%s>" % rcpt), 250)
            self.assertReply(c.cmd("DATA"), 354)
            data = stuffed(msg) + (b"" if msg.endswith(b"\r\n") or not msg else b"\r\n") + b".\r\n"
            at = 0
            for cut in (pieces or []) + [len(data)]:
                c.send(data[at:cut])
                at = cut
                time.sleep(0.15 if cut < len(data) else 0)
            r = c.read_reply()
        self.assertReply(r, 250)
        return self.stored(rcpt.split("@")[1])

    def stored(self, domain):
        """The bytes the way out wrote, and the edits' results."""
        ev = self.srv.wait_events("edits", self.events_before + 1)[self.events_before]
        key = os.path.join(self.srv.out, ev["id"])
        if domain == "maildir.test":
            with open(self.srv.out_file(ev["id"] + ".path").decode(), "rb") as f:
                got = f.read()
            self.assertTrue(got.startswith(b"Received: from "), got[:100])
            return strip_trace(got), ev["results"]
        if domain == "relay.test":
            wait_for(lambda: len(messages(self.hop.out)) > self.relayed_before, timeout=5)
            return messages(self.hop.out)[self.relayed_before][0], ev["results"]
        with open(key + ".eml", "rb") as f:
            return f.read(), ev["results"]

    def setUp(self):
        self.events_before = len(self.srv.events("edits"))
        self.relayed_before = len(messages(self.hop.out))

    def assertStd(self, got, results, body=BODY, kept=KEPT):
        self.assertEqual(results, ["ok", "ok", "ok", "header already read"])
        m = re.match(rb"X-Trace: first\r\n" + re.escape(kept) +
                     rb"(X-Spam-Status: [^\r\n]*(?:\r\n[ \t][^\r\n]*)*\r\n)\r\n", got)
        self.assertIsNotNone(m, got[:600])
        field = m.group(1)
        self.assertEqual(unfold(field), b"X-Spam-Status: " + LONG.encode() + b"\r\n")
        self.assertGreater(field.count(b"\r\n"), 1, "a long value is folded")
        for line in field.split(b"\r\n"):
            self.assertLessEqual(len(line), 78, field)
        self.assertEqual(got[m.end():], body, "the body is byte-identical")
        parsed = email.message_from_bytes(got, policy=email.policy.default)
        self.assertEqual(parsed["X-Spam-Status"], LONG)
        self.assertIsNone(parsed.get_all("X-Remove-Me"))

    def test_each_way_out(self):
        for domain in ("maildir.test", "save.test", "read.test", "chunks.test", "relay.test"):
            with self.subTest(domain=domain):
                self.setUp()
                got, results = self.send(HEADER + BODY, "std@" + domain)
                self.assertStd(got, results)

    def test_header_arriving_in_pieces(self):
        cuts = [5, 30, len(HEADER) - 1, len(HEADER) + 4]
        for domain in ("read.test", "save.test"):
            with self.subTest(domain=domain):
                self.setUp()
                got, results = self.send(HEADER + BODY, "std@" + domain, pieces=cuts)
                self.assertStd(got, results)

    def test_edits_after_the_message_arrived_before_reading(self):
        got, results = self.send(HEADER + BODY, "late_edits@chunks.test")
        self.assertStd(got, results)

    def test_bdat_chunks_split_the_header(self):
        msg = HEADER + BODY
        chunks = [msg[:7], msg[7:40], msg[40:len(HEADER) - 1], msg[len(HEADER) - 1:]]
        with self.srv.client() as c:
            self.assertIn(b"CHUNKING", c.ehlo().raw)
            self.assertReply(c.cmd("MAIL FROM:<sender@example.com>"), 250)
            self.assertReply(c.cmd("RCPT TO:<std@read.test>"), 250)
            for i, chunk in enumerate(chunks):
                last = " LAST" if i == len(chunks) - 1 else ""
                c.send(b"BDAT %d%s\r\n" % (len(chunk), last.encode()) + chunk)
                self.assertReply(c.read_reply(), 250)
        got, results = self.stored("read.test")
        self.assertStd(got, results)

    def test_no_edits_leave_the_message_alone(self):
        msg = b"weird first line\r\n\r\n" + BODY
        got, results = self.send(msg, "none@save.test")
        self.assertEqual(got, msg)
        self.assertEqual(results, ["header already read"])

    def test_no_edits_message_arrived_before_reading(self):
        msg = HEADER + BODY
        for domain in ("read.test", "save.test", "chunks.test"):
            with self.subTest(domain=domain):
                self.setUp()
                got, results = self.send(msg, "late_none@" + domain)
                self.assertEqual(got, msg)
                self.assertEqual(results, ["header already read"])

    def test_message_of_only_a_header(self):
        got, results = self.send(b"Subject: just this\r\nTo: x@example.com\r\n", "one@save.test")
        self.assertEqual(got, b"Subject: just this\r\nTo: x@example.com\r\nX-Added: 1\r\n")
        self.assertEqual(results, ["ok", "header already read"])

    def test_message_starting_with_its_blank_line(self):
        got, _ = self.send(b"\r\nonly a body\r\n", "one@read.test")
        self.assertEqual(got, b"X-Added: 1\r\n\r\nonly a body\r\n")

    def test_8bit_values_with_smtputf8(self):
        msg = "Subject: caf\u00e9\r\n\r\nbody \u00e9\r\n".encode()
        got, results = self.send(msg, "utf8@maildir.test", mail="<sender@example.com> SMTPUTF8 BODY=8BITMIME")
        self.assertEqual(results, ["ok", "header already read"])
        self.assertEqual(got, "Subject: caf\u00e9\r\nX-Greeting: Gr\u00fc\u00dfe, \u4e16\u754c\r\n\r\nbody \u00e9\r\n".encode())

    def test_bad_names_and_values_refused(self):
        got, results = self.send(HEADER + BODY, "bad@save.test")
        self.assertEqual(results, ["bad header name"] * 3 + ["bad header value"] * 4 + ["bad header name"] * 2
                         + ["error", "header already read"])
        self.assertEqual(got, HEADER + BODY, "nothing refused was applied")

    def test_header_near_the_limit_is_edited(self):
        filler = b"".join(b"X-Filler-%04d: %s\r\n" % (i, b"f" * 900) for i in range(1100))
        self.assertLess(len(HEADER) + len(filler), 1024 * 1024)
        got, results = self.send(filler + HEADER + BODY, "std@save.test")
        self.assertStd(got, results, kept=filler + KEPT)

    def test_header_over_the_limit_passes_unchanged(self):
        filler = b"".join(b"X-Filler-%04d: %s\r\n" % (i, b"f" * 900) for i in range(1200))
        self.assertGreater(len(filler), 1024 * 1024)
        msg = filler + HEADER + BODY
        got, results = self.send(msg, "std@save.test")
        self.assertEqual(results, ["ok", "ok", "ok", "header already read"])
        m = re.match(rb"X-Trace: first\r\n(X-Spam-Status: [^\r\n]*(?:\r\n[ \t][^\r\n]*)*\r\n)", got)
        self.assertIsNotNone(m, got[:300])
        self.assertEqual(got[m.end():], msg, "the message itself is untouched")
