"""luasmtpd relaying through smtp.client to real next hops nobody here
wrote (mta.py): a policy whose onData calls require("smtp.client").send{...}
with the message stream.

To Postfix over STARTTLS, verifying its certificate against our test CA
(tls = "required", verify = true): the message in Postfix's Maildir equals
what the original client (smtplib) sent, modulo Postfix's trace headers and
LF line ends, for 7-bit with dot lines, 8-bit, SMTPUTF8 addresses and a
20 MiB attachment, and the client gets Postfix's own verdict. Postfix
presenting a certificate of another CA gets the client 451 4.7.5 and
nothing is queued; a stopped Postfix gets it 451 4.4.1. The shipped
scripts/relay.lua does the same, its Received field on top.

To Dovecot over LMTP from an LMTP listener (lmtp = true): three recipients,
one over quota and one unknown, each get Dovecot's own reply back through
luasmtpd, and the good one's Maildir file equals the sent bytes."""

import atexit
import base64
import os
import re
import shutil
import smtplib
import subprocess
import tempfile

import mta
from harness import ROOT, Lua, SharedServerTest, lua_value, script, wait_for
from tlsutil import MKCA, certs

# onData relays to the hop named by the sender's local part (HOPS below:
# "good" when it names none) and answers with the next hop's verdict: its
# final reply, or per recipient on an LMTP listener.
RELAY_ONDATA = Lua(r'''function(stream, session)
    local env = session.envelope
    local hop = HOPS[env.mailFrom.address:match("^(.-)@") or ""] or HOPS.good
    local res, err, partial = require("smtp.client").send{
      host = "127.0.0.1", port = hop.port, tls = hop.tls, verify = true, ca = hop.ca,
      servername = "localhost", helo = "relay.luasmtpd.test", lmtp = hop.lmtp,
      from = env.mailFrom, to = env.rcptTo, message = stream, timeout = 20,
    }
    local got = res or partial
    if hop.lmtp then
      if not got then return nil, err end
      local out = {}
      for i, v in ipairs(got.recipients) do
        out[i] = v.code < 300 and v.message or smtp.reject(v.code, v.message)
      end
      return out
    end
    if not res then return nil, err end
    return res.message
  end''')

MESSAGE_7BIT = (b"From: Sender <sender@example.com>\r\n"
                b"To: Alice <alice@postfix.test>\r\n"
                b"Subject: relayed, 7-bit\r\n"
                b"Message-ID: <relay-7bit@example.com>\r\n"
                b"\r\n"
                b"first line\r\n"
                b".a line that starts with a dot\r\n"
                b"..two dots\r\n"
                b".\r\n"
                b"a lone dot above, last line here\r\n")

MESSAGE_8BIT = ("From: Sender <sender@example.com>\r\n"
                "To: Bob <bob@postfix.test>\r\n"
                "Subject: =?utf-8?q?relayed=2C_8-bit?=\r\n"
                "MIME-Version: 1.0\r\n"
                "Content-Type: text/plain; charset=utf-8\r\n"
                "Content-Transfer-Encoding: 8bit\r\n"
                "\r\n"
                "Grüße aus Köln, ½ € — 8-bit body\r\n"
                ".Ünïcödé line starting with a dot\r\n").encode("utf-8")

MESSAGE_UTF8 = ("From: Séverine <sévérine@example.com>\r\n"
                "To: José <jösé@postfix.test>\r\n"
                "Subject: ünïcödé addresses\r\n"
                "MIME-Version: 1.0\r\n"
                "Content-Type: text/plain; charset=utf-8\r\n"
                "Content-Transfer-Encoding: 8bit\r\n"
                "\r\n"
                "SMTPUTF8 end to end\r\n").encode("utf-8")

ATTACHMENT_BYTES = 15 * 1024 * 1024  # 20 MiB once in base64


def big_message():
    """A MIME message with a 20 MiB (base64) attachment of random bytes."""
    payload = base64.encodebytes(os.urandom(ATTACHMENT_BYTES)).replace(b"\n", b"\r\n")
    return (b"From: Sender <sender@example.com>\r\n"
            b"To: Alice <alice@postfix.test>\r\n"
            b"Subject: relayed, 20 MiB attachment\r\n"
            b"MIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"b0undary\"\r\n"
            b"\r\n"
            b"--b0undary\r\n"
            b"Content-Type: text/plain\r\n"
            b"\r\n"
            b"see the attachment\r\n"
            b"--b0undary\r\n"
            b"Content-Type: application/octet-stream\r\n"
            b"Content-Disposition: attachment; filename=\"random.bin\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n"
            b"\r\n" + payload +
            b"--b0undary--\r\n")


def other_ca():
    """A test PKI of a CA of its own (certs/mkca.sh into a fresh directory,
    removed at exit): (cert, key) for localhost that our CA does not vouch for."""
    d = tempfile.mkdtemp(prefix="luasmtpd-otherca-")
    atexit.register(shutil.rmtree, d, True)
    r = subprocess.run(["/bin/sh", MKCA, d, "localhost"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    if r.returncode != 0:
        raise AssertionError("certs/mkca.sh failed: %s" % r.stdout.decode("utf-8", "replace"))
    return os.path.join(d, "localhost.crt"), os.path.join(d, "localhost.key")


def relay_script(hops, **opts):
    """The relay policy with HOPS = hops (name -> {port, tls, ca, lmtp})."""
    return script(hooks={"onData": RELAY_ONDATA}, prelude="local HOPS = %s\n" % lua_value(hops),
                  size=64 * 1024 * 1024, hookTimeout=60, **opts)


class RelayTest(SharedServerTest):
    """luasmtpd running the relay policy in front of the next hops the class
    started (cls.hops), which are stopped after it."""
    hops = ()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            for hop in cls.hops:
                hop.stop()


class RelayToPostfix(RelayTest):
    """One luasmtpd relaying to three Postfixes by the sender: "good" (our
    CA), "badca" (another CA's certificate), "down" (stopped)."""

    @classmethod
    def setUpClass(cls):
        c = certs()
        cls.good = mta.start_postfix(c.crt("localhost"), c.key("localhost"))
        cls.badca = mta.start_postfix(*other_ca())
        cls.hops = (cls.good, cls.badca)
        down = mta.start_postfix(c.crt("localhost"), c.key("localhost"))
        down.stop()
        hop = {"tls": "required", "ca": c.ca, "lmtp": False}
        cls.SCRIPT = relay_script({"good": dict(hop, port=cls.good.port),
                                   "badca": dict(hop, port=cls.badca.port),
                                   "down": dict(hop, port=down.port)})
        super().setUpClass()

    def smtp(self):
        s = smtplib.SMTP("127.0.0.1", self.srv.port, local_hostname="client.example", timeout=60)
        self.addCleanup(s.close)
        return s

    def relay(self, sender, rcpt, msg, mail_options=()):
        """Sends msg through luasmtpd with smtplib; returns (code, text) of
        the final reply (smtplib raises on anything else than 250)."""
        s = self.smtp()
        s.ehlo()
        s.mail(sender, list(mail_options))
        code, text = s.rcpt(rcpt)
        self.assertEqual(code, 250, text)
        code, text = s.data(msg)
        s.quit()
        return code, text

    def assert_relayed(self, box, msg, mail_options=()):
        hop = self.good
        before = len(hop.files(box))
        code, text = self.relay("sender@example.com" if box != "utf8" else "sévérine@example.com",
                                hop.mailboxes[box], msg, mail_options)
        # the client's verdict is Postfix's own ("N bytes" after BDAT)
        self.assertEqual(code, 250, "%r\n%s" % (text, hop.diagnostics()))
        m = re.match(rb"^2\.0\.0 Ok: (?:\d+ bytes )?queued as ([0-9A-F]+)$", text)
        self.assertTrue(m, text)
        queue_id = m.group(1)
        data = hop.wait_message(box, before + 1)
        # Postfix took it over TLS: its Received line says ESMTPS (UTF8SMTPS
        # for SMTPUTF8, RFC 6531) with the queue id of its reply
        self.assertRegex(data, rb"\n\tby mx\.postfix\.test \(Postfix\) with (?:E|UTF8)SMTPS id " + queue_id + rb"\n")
        stored = mta.strip_trace(data)
        expected = mta.as_postfix_stores(msg)
        if stored != expected:
            i = next((k for k in range(min(len(stored), len(expected))) if stored[k] != expected[k]),
                     min(len(stored), len(expected)))
            self.fail("Postfix stored %d bytes, expected %d; first difference at %d: %r vs %r"
                      % (len(stored), len(expected), i, stored[max(0, i - 40):i + 40],
                         expected[max(0, i - 40):i + 40]))
        return data

    def test_7bit_with_dot_lines(self):
        self.assert_relayed("alice", MESSAGE_7BIT)

    def test_8bit_body(self):
        self.assert_relayed("bob", MESSAGE_8BIT, ["BODY=8BITMIME"])

    def test_smtputf8_addresses(self):
        data = self.assert_relayed("utf8", MESSAGE_UTF8, ["SMTPUTF8", "BODY=8BITMIME"])
        self.assertIn("\nDelivered-To: jösé@postfix.test\n".encode("utf-8"), data)
        self.assertIn("\nReturn-Path: <sévérine@example.com>\n".encode("utf-8"), b"\n" + data)
        self.assertIn(b" with UTF8SMTPS id ", data)

    def test_20mib_attachment(self):
        msg = big_message()
        self.assertGreater(len(msg), 20 * 1024 * 1024)
        self.assert_relayed("alice", msg)

    def test_untrusted_certificate_is_451_475_and_nothing_queued(self):
        hop = self.badca
        log_before = len(hop.service.log())
        code, text = self.relay("badca@example.com", hop.mailboxes["alice"], MESSAGE_7BIT)
        self.assertEqual(code, 451, text)
        self.assertTrue(text.startswith(b"4.7.5 "), text)
        # Postfix saw the handshake fail and the connection go, and queued nothing
        wait_for(lambda: "disconnect from" in hop.service.log()[log_before:], 10)
        log = hop.service.log()[log_before:]
        self.assertIn("disconnect from", log)
        self.assertNotRegex(log, r"[0-9A-F]+: client=", log)
        self.assertEqual(hop.files("alice"), [])

    def test_refused_recipient_in_one_write_and_the_next_message(self):
        # a small message to one recipient goes to Postfix (PIPELINING,
        # CHUNKING) as MAIL, RCPT and BDAT LAST with the data in one write:
        # Postfix refuses the recipient, reads the chunk and refuses it too,
        # the client hears the recipient's refusal, and the next message on
        # a new connection is delivered, alone
        hop = self.good
        before, log_before = len(hop.files("alice")), len(hop.service.log())
        code, text = self.relay("sender@example.com", "nobody@postfix.test", MESSAGE_7BIT)
        self.assertEqual(code, 550, text)
        self.assertTrue(text.startswith(b"5.1.1 "), text)
        self.assert_relayed("alice", MESSAGE_7BIT)
        self.assertEqual(len(hop.files("alice")), before + 1)
        log = hop.service.log()[log_before:]
        self.assertRegex(log, r"NOQUEUE: reject: RCPT from \S+: 550 5\.1\.1 <nobody@postfix\.test>")
        # that connection was closed after the refusal: on it, one RCPT and
        # one BDAT (sent with it: the one write) refused, and no other
        # command (the refused chunk's lines were never read as commands)
        m = re.search(r"disconnect from .* rcpt=(\d+)/(\d+) bdat=(\d+)/(\d+) .*commands=(\d+)/(\d+)", log)
        self.assertTrue(m, log)
        ok_rcpt, rcpts, ok_bdat, bdats, ok_cmds, cmds = map(int, m.groups())
        self.assertEqual((rcpts - ok_rcpt, bdats - ok_bdat, cmds - ok_cmds), (1, 1, 2), m.group(0))
        self.assertNotIn("unknown command", log)
        self.assertNotRegex(log, r"warning: .*(?:pipelining|BDAT)")

    def test_stopped_next_hop_is_451_441(self):
        code, text = self.relay("down@example.com", "alice@postfix.test", MESSAGE_7BIT)
        self.assertEqual(code, 451, text)
        self.assertTrue(text.startswith(b"4.4.1 "), text)


class RelayScriptToPostfix(RelayTest):
    """The shipped scripts/relay.lua in front of Postfix, STARTTLS verified
    against our CA: the client hears Postfix's verdict and the message
    arrives with relay.lua's Received field on top of the original bytes."""

    @classmethod
    def setUpClass(cls):
        c = certs()
        cls.hop = mta.start_postfix(c.crt("localhost"), c.key("localhost"))
        cls.hops = (cls.hop,)
        cls.SCRIPT = os.path.join(ROOT, "scripts", "relay.lua")
        cls.SERVER_KW = {"env": {"LUASMTPD_RELAY_DOMAINS": mta.POSTFIX_DOMAIN, "LUASMTPD_NAME": "front.test",
                                 "LUASMTPD_NEXTHOP": "127.0.0.1:%d" % cls.hop.port,
                                 "LUASMTPD_NEXTHOP_TLS": "required", "LUASMTPD_NEXTHOP_CA": c.ca,
                                 "LUASMTPD_NEXTHOP_TIMEOUT": "20"}}
        super().setUpClass()

    def test_relayed_with_its_received_field(self):
        before = len(self.hop.files("bob"))
        with smtplib.SMTP("127.0.0.1", self.srv.port, local_hostname="client.example", timeout=30) as s:
            s.ehlo()
            s.mail("sender@example.com", ["BODY=8BITMIME"])
            self.assertEqual(s.rcpt("bob@postfix.test")[0], 250)
            code, text = s.data(MESSAGE_8BIT)
        self.assertEqual(code, 250, text)
        self.assertRegex(text, rb"^2\.0\.0 Ok: (?:\d+ bytes )?queued as [0-9A-F]+$")
        data = self.hop.wait_message("bob", before + 1)
        # Postfix's Received, then relay.lua's (by front.test), then the message
        received = re.findall(rb"(?m)^Received: .*\n(?:\t.*\n)*", data)
        self.assertEqual(len(received), 2, data[:800])
        self.assertIn(b"by mx.postfix.test (Postfix) with ESMTPS", received[0])
        self.assertIn(b"by front.test", received[1])
        self.assertEqual(data.split(received[1], 1)[1], mta.as_postfix_stores(MESSAGE_8BIT))


class RelayToDovecotLmtp(RelayTest):
    """An LMTP listener relaying over LMTP to Dovecot: each recipient gets
    the next hop's own verdict."""

    @classmethod
    def setUpClass(cls):
        cls.hop = mta.start_dovecot_lmtp(users=("alice", "bob"), over_quota=("full",))
        cls.hops = (cls.hop,)
        cls.SCRIPT = relay_script({"good": {"port": cls.hop.port, "tls": "none", "lmtp": True}}, lmtp=True)
        super().setUpClass()

    def test_each_recipient_gets_its_own_reply(self):
        before = len(self.hop.files("alice"))
        s = smtplib.LMTP("127.0.0.1", self.srv.port, timeout=30)
        self.addCleanup(s.close)
        self.assertEqual(s.ehlo("client.example")[0], 250)
        self.assertEqual(s.mail("sender@example.com")[0], 250)
        rcpts = ["alice@lmtp.test", "full@lmtp.test", "nobody@lmtp.test"]
        for r in rcpts:
            code, text = s.rcpt(r)
            self.assertEqual(code, 250, "luasmtpd takes %s at RCPT: %r" % (r, text))
        msg = MESSAGE_7BIT.replace(b"alice@postfix.test", b"alice@lmtp.test")
        replies = [s.data(msg), s.getreply(), s.getreply()]
        s.quit()
        self.assertEqual([c for c, _ in replies], [250, 552, 550], replies)
        self.assertRegex(replies[0][1], rb"^2\.0\.0 <alice@lmtp\.test> \S+ Saved$")
        self.assertTrue(replies[1][1].startswith(b"5.2.2 <full@lmtp.test> Quota exceeded"), replies[1])
        self.assertTrue(replies[2][1].startswith(b"5.1.1 <nobody@lmtp.test> User doesn't exist"), replies[2])
        data = self.hop.wait_message("alice", before + 1)
        self.assertEqual(mta.strip_trace(data), msg)
        self.assertEqual(self.hop.files("full"), [])
