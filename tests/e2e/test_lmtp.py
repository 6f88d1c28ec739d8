"""LMTP (RFC 2033, lmtp = true): the LMTP greeting, LHLO (EHLO and HELO get
500), one reply per accepted recipient after the final dot (and after BDAT
LAST), onData's per-recipient table {true | "text" | smtp.reject(...)}, a
whole rejection repeated per recipient, the size limit per recipient, and
swaks --protocol LMTP (with --pipeline)."""

import re
import smtplib

from harness import Lua, SharedServerTest, script, wait_for
from tlsutil import ehlo_keywords

# The sender chooses onData's answer; a recipient's local part chooses its
# entry in the per-recipient table.
ON_DATA = Lua(r'''function(stream, session)
    local body = readall(stream)
    local env = session.envelope
    local rcpts = {}
    for i, r in ipairs(env.rcptTo) do rcpts[i] = r.address end
    record("data", {port = session.remotePort, body = body, rcpts = rcpts, byteLength = stream.byteLength,
                    transmissionType = session.transmissionType, sizeExceeded = stream.sizeExceeded})
    local mode = env.mailFrom.address:match("^([%w-]+)@")
    if mode == "whole" then return nil, smtp.reject(452, "4.2.2 Mailbox full") end
    if mode == "plainerr" then return nil, "storage busy" end
    if mode == "text" then return "Delivered, all of them" end
    if mode == "boom" then error("lmtp boom") end
    if mode == "accept" then return end
    local out = {}
    for i, r in ipairs(env.rcptTo) do
      local who = r.address:match("^([%w-]+)@")
      if who == "full" then out[i] = smtp.reject(452, "Mailbox full")
      elseif who == "nouser" then out[i] = smtp.reject(550, "5.1.1 No such user")
      elseif who == "text" then out[i] = "Delivered to " .. r.address
      elseif who == "own" then out[i] = "2.1.5 Delivered to " .. r.address
      else out[i] = true end
    end
    return out
  end''')

ON_RCPT = Lua(r'''function(address, session)
    if address.address:match("^refused@") then return nil, smtp.reject(550, "5.1.1 unknown here") end
  end''')

HOOKS = {"onData": ON_DATA, "onRcptTo": ON_RCPT}


class LMTP(SharedServerTest):
    SCRIPT = script(hooks=HOOKS, lmtp=True, size=2000)

    def mine(self, c):
        port = c if isinstance(c, int) else c.local_port
        return [e for e in self.srv.events("data") if e["port"] == port]

    def lhlo(self, c):
        r = c.cmd("LHLO client.example")
        self.assertReply(r, 250)
        return r

    def deliver(self, c, sender, rcpts, body=b"Subject: lmtp\r\n\r\nhello\r\n", bdat=False):
        """MAIL, the RCPTs (all must be accepted), the body; returns the
        replies after the end of the body (one per recipient)."""
        self.assertReply(c.cmd("MAIL FROM:<%s>" % sender), 250, "2.1.0")
        for r in rcpts:
            self.assertReply(c.cmd("RCPT TO:<%s>" % r), 250, "2.1.5")
        if bdat:
            c.send(b"BDAT %d LAST\r\n" % len(body) + body)
        else:
            self.assertReply(c.cmd("DATA"), 354)
            c.send(body + b".\r\n")
        rs = c.read_replies(len(rcpts))
        c.no_reply(0.2)
        return rs

    def test_greeting(self):
        with self.client() as c:
            self.assertEqual(c.greeting.raw, b"220 mx.test LMTP\r\n")

    def test_ehlo_and_helo_refused(self):
        with self.client() as c:
            self.assertEqual(c.cmd("EHLO client.example").code, 500)
            self.assertEqual(c.cmd("HELO client.example").code, 500)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 503)
            self.lhlo(c)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)

    def test_lhlo(self):
        with self.client() as c:
            r = self.lhlo(c)
            self.assertGreater(len(r.lines), 1, "LHLO answers with the extension list")
            self.assertTrue(r.lines[0].startswith("mx.test"), r.raw)
            kw = ehlo_keywords(r)
            for k in ["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "CHUNKING", "SIZE"]:
                self.assertIn(k, kw)
            self.assertReply(c.cmd("LHLO"), 501)

    def test_mail_before_lhlo(self):
        with self.client() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 503, "5.5.1")

    def test_two_recipients_success(self):
        with self.client() as c:
            self.lhlo(c)
            rs = self.deliver(c, "table@example.com", ["a@example.com", "b@example.com"])
            self.assertCodes(rs, [250, 250])
            for r in rs:
                self.assertEqual(r.enh, "2.6.0")
        [d] = self.mine(c)
        self.assertEqual(d["rcpts"], ["a@example.com", "b@example.com"])
        self.assertEqual(d["transmissionType"], "LMTP")
        self.assertEqual(d["body"], "Subject: lmtp\r\n\r\nhello\r\n")

    def test_per_recipient_table(self):
        with self.client() as c:
            self.lhlo(c)
            rs = self.deliver(c, "table@example.com", ["ok@example.com", "text@example.com", "nouser@example.com",
                                                       "full@example.com", "ok2@example.com"])
            self.assertCodes(rs, [250, 250, 550, 452, 250])
            self.assertIn("Delivered to text@example.com", rs[1].text)
            self.assertEqual(rs[2].enh, "5.1.1")
            self.assertIn("No such user", rs[2].text)
            self.assertIn("Mailbox full", rs[3].text)
            self.assertTrue(rs[3].enh.startswith("4."), rs[3].raw)
            # the session goes on
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")

    def test_refused_recipient_gets_no_data_reply(self):
        with self.client() as c:
            self.lhlo(c)
            self.assertReply(c.cmd("MAIL FROM:<table@example.com>"), 250)
            self.assertReply(c.cmd("RCPT TO:<refused@example.com>"), 550, "5.1.1")
            self.assertReply(c.cmd("RCPT TO:<nouser@example.com>"), 250)
            self.assertReply(c.cmd("RCPT TO:<a@example.com>"), 250)
            self.assertReply(c.cmd("RCPT TO:<refused@example.com>"), 550)
            self.assertReply(c.cmd("DATA"), 354)
            c.send(b"x\r\n.\r\n")
            rs = c.read_replies(2)
            self.assertCodes(rs, [550, 250])
            c.no_reply(0.3)
            self.assertReply(c.cmd("NOOP"), 250)

    def test_whole_rejection_per_recipient(self):
        with self.client() as c:
            self.lhlo(c)
            rs = self.deliver(c, "whole@example.com", ["a@example.com", "b@example.com", "c@example.com"])
            self.assertCodes(rs, [452, 452, 452])
            for r in rs:
                self.assertEqual(r.enh, "4.2.2")
            rs = self.deliver(c, "plainerr@example.com", ["a@example.com", "b@example.com"])
            self.assertCodes(rs, [450, 450])
            self.assertReply(c.cmd("NOOP"), 250)

    def test_hook_error_per_recipient(self):
        with self.client() as c:
            self.lhlo(c)
            rs = self.deliver(c, "boom@example.com", ["a@example.com", "b@example.com"])
            self.assertCodes(rs, [451, 451])
            self.assertEqual(rs[0].enh, "4.3.0")
            self.assertReply(c.cmd("NOOP"), 250)
        self.assertIn("lmtp boom", self.srv.log())

    def test_string_and_nothing(self):
        with self.client() as c:
            self.lhlo(c)
            rs = self.deliver(c, "text@example.com", ["a@example.com", "b@example.com"])
            self.assertCodes(rs, [250, 250])
            self.assertTrue(all("Delivered, all of them" in r.text for r in rs), rs)
            rs = self.deliver(c, "accept@example.com", ["a@example.com", "b@example.com"])
            self.assertCodes(rs, [250, 250])

    def test_recipient_text_with_its_own_enhanced_code(self):
        with self.client() as c:
            self.lhlo(c)
            rs = self.deliver(c, "table@example.com", ["own@example.com", "text@example.com"])
        self.assertEqual([r.raw for r in rs], [b"250 2.1.5 Delivered to own@example.com\r\n",
                                               b"250 2.6.0 Delivered to text@example.com\r\n"])

    def test_summary_line_per_recipient_verdict(self):
        with self.client() as c:
            self.lhlo(c)
            rs = self.deliver(c, "table@example.com", ["text@example.com", "nouser@example.com", "full@example.com"])
            self.assertCodes(rs, [250, 550, 452])
            c.cmd("QUIT")
        session = re.search(r"msg=connection session=(\S+) remote=127\.0\.0\.1 port=%d\b" % c.local_port,
                            self.srv.log()).group(1)
        lines = wait_for(lambda: [l for l in self.srv.log().splitlines()
                                  if "msg=message session=%s " % session in l] or None, 5)
        self.assertEqual(len(lines), 3, lines)
        for line, rcpt, reply in zip(lines, ["text", "nouser", "full"], rs):
            self.assertIn(" from=table@example.com to=%s@example.com " % rcpt, line)
            self.assertIn(' reply="%s" ' % str(reply), line)

    def test_size_exceeded_per_recipient(self):
        with self.client() as c:
            self.lhlo(c)
            rs = self.deliver(c, "table@example.com", ["a@example.com", "text@example.com"], body=b"x" * 2500 + b"\r\n")
            self.assertCodes(rs, [552, 552])
            for r in rs:
                self.assertEqual(r.enh, "5.3.4")
            self.assertReply(c.cmd("NOOP"), 250)
            rs = self.deliver(c, "table@example.com", ["a@example.com"])
            self.assertCodes(rs, [250])

    def test_bdat_last(self):
        with self.client() as c:
            self.lhlo(c)
            rs = self.deliver(c, "table@example.com", ["ok@example.com", "nouser@example.com", "text@example.com"],
                              body=b"binary\x00\r\n.\r\nbody", bdat=True)
            self.assertCodes(rs, [250, 550, 250])
            self.assertReply(c.cmd("NOOP"), 250)
            # chunks before LAST get one reply each; LAST one per recipient
            self.assertReply(c.cmd("MAIL FROM:<whole@example.com>"), 250)
            self.assertReply(c.cmd("RCPT TO:<a@example.com>"), 250)
            self.assertReply(c.cmd("RCPT TO:<b@example.com>"), 250)
            c.send(b"BDAT 3\r\nabc")
            self.assertReply(c.read_reply(), 250, "2.0.0")
            c.send(b"BDAT 3 LAST\r\ndef")
            self.assertCodes(c.read_replies(2), [452, 452])
            c.no_reply(0.2)
        d = self.mine(c)
        self.assertEqual(d[0]["body"], "binary\x00\r\n.\r\nbody")
        self.assertEqual(d[1]["body"], "abcdef")

    def test_pipelined(self):
        with self.client() as c:
            self.lhlo(c)
            c.send(b"MAIL FROM:<table@example.com>\r\nRCPT TO:<a@example.com>\r\nRCPT TO:<nouser@example.com>\r\n"
                   b"DATA\r\n")
            self.assertCodes(c.read_replies(4), [250, 250, 250, 354])
            c.send(b"pipelined\r\n.\r\nNOOP\r\nRSET\r\n")
            self.assertCodes(c.read_replies(4), [250, 550, 250, 250])

    def test_smtplib_lmtp(self):
        lm = smtplib.LMTP("127.0.0.1", self.srv.port, local_hostname="client.example", timeout=10)
        try:
            port = lm.sock.getsockname()[1]
            refused = lm.sendmail("table@example.com", ["a@example.com", "text@example.com"],
                                  b"Subject: smtplib lmtp\r\n\r\nhi\r\n")
            self.assertEqual(refused, {})
            # smtplib reads only one reply after DATA; LMTP sends one per
            # recipient: read the rest before going on
            self.assertEqual(lm.getreply()[0], 250)
            self.assertEqual(lm.noop()[0], 250)
        finally:
            lm.close()
        [d] = self.mine(port)
        self.assertEqual(d["rcpts"], ["a@example.com", "text@example.com"])

    def test_swaks_lmtp(self):
        for extra in [[], ["--pipeline"]]:
            with self.subTest(extra=extra):
                before = len(self.srv.events("data"))
                r = self.run_cmd(["swaks", "--server", "127.0.0.1", "--port", str(self.srv.port), "--protocol", "LMTP",
                                  "--from", "table@example.com", "--to", "a@example.com,text@example.com",
                                  "--helo", "client.example", "--body", "swaks lmtp body"] + extra)
                out = r.stdout.decode(errors="replace")
                self.assertEqual(r.returncode, 0, out[-3000:])
                self.assertIn("LHLO client.example", out)
                self.assertIn("Delivered to text@example.com", out)
                evs = wait_for(lambda: self.srv.events("data")[before:])
                self.assertEqual(len(evs), 1)
                self.assertIn("swaks lmtp body", evs[0]["body"])
                self.assertEqual(evs[0]["rcpts"], ["a@example.com", "text@example.com"])
        # a recipient refused after the dot makes swaks report the failure
        r = self.run_cmd(["swaks", "--server", "127.0.0.1", "--port", str(self.srv.port), "--protocol", "LMTP",
                          "--from", "table@example.com", "--to", "nouser@example.com", "--helo", "client.example"])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"550", r.stdout)


class LMTPAuth(SharedServerTest):
    SCRIPT = script(hooks=dict(HOOKS, onAuth=Lua(r'''function(auth, session)
    if auth.password == "pw" then return {user = auth.username} end
    return nil, "no"
  end''')), lmtp=True, allowInsecureAuth=True)

    def test_transmission_type_lmtpa(self):
        import base64
        with self.client() as c:
            self.assertReply(c.cmd("LHLO client.example"), 250)
            self.assertReply(c.cmd("AUTH PLAIN " + base64.b64encode(b"\0u\0pw").decode()), 235)
            self.assertReply(c.cmd("MAIL FROM:<table@example.com>"), 250)
            self.assertReply(c.cmd("RCPT TO:<a@example.com>"), 250)
            self.assertReply(c.cmd("DATA"), 354)
            c.send(b"x\r\n.\r\n")
            self.assertReply(c.read_reply(), 250)
        [d] = [e for e in self.srv.events("data") if e["port"] == c.local_port]
        self.assertEqual(d["transmissionType"], "LMTPA")


class SMTPStaysSMTP(SharedServerTest):
    SCRIPT = script(hooks=HOOKS)

    def test_lhlo_unknown_in_smtp(self):
        with self.client() as c:
            self.assertTrue(c.greeting.text.endswith("ESMTP"), c.greeting.raw)
            self.assertReply(c.cmd("LHLO client.example"), 500, "5.5.2")
            self.assertReply(c.cmd("EHLO client.example"), 250)
