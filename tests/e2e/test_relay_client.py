"""smtp.client (issue 18) against Python's aiosmtpd, a next hop nobody here
wrote, run as its own process on free ports (lua/smtp/testing/nexthop.py,
the testing kit's): a policy relays each message from onData and answers
its client with the next hop's verdict. The bytes the next hop receives
equal the bytes our client sent after the trace field, for 7-bit, 8-bit,
SMTPUTF8 addresses, lines starting with a dot, 20 MiB (the server's RSS
stays bounded) and messages given as a string or a file; aiosmtpd offers
neither PIPELINING nor CHUNKING, so this is the DATA path (BDAT,
PIPELINING and DSN are shown against a second luasmtpd). STARTTLS and
implicit TLS verified against the test CA work and an untrusted
certificate gives 451 4.7.5; AUTH PLAIN, and a refused login as 451
4.7.0; LMTP verdicts per recipient; MX records in order with fallback
(dnsmasq); next hop down (451 4.4.1), slow (4.4.2), dropping the
connection at the data (4.4.2), 452 to one recipient and 550 (passed
through, and the next hop got nothing), a message the core refuses
mid-stream (nothing reaches the next hop); one pooled TCP connection
carrying several messages; README's example as printed."""

import json
import os
import re
import shutil
import smtplib
import tempfile
import unittest

import svcutil
import tlsutil
from harness import ROOT, E2ETest, Server, lua_value, sanitized, wait_for

NEXTHOP = os.path.join(ROOT, "lua", "smtp", "testing", "nexthop.py")
PYTHON = "/usr/bin/python3"


def start_nexthop(**cfg):
    """An aiosmtpd next hop on a free port; .out is where it writes."""
    tmp = tempfile.mkdtemp(prefix="luasmtpd-nexthop-")
    out = tempfile.mkdtemp(prefix="luasmtpd-nexthop-out-")
    port = svcutil.free_port()
    cfg.update(port=port, out=out)
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(cfg, f)
    svc = svcutil.Service("aiosmtpd", [PYTHON, NEXTHOP, os.path.join(tmp, "config.json")], port, tmp)
    svc.out = out
    return svc


def messages(out):
    """[(bytes, envelope dict)] in the order the next hop took them."""
    got = []
    n = 1
    while os.path.exists(os.path.join(out, "msg-%d.eml" % n)):
        with open(os.path.join(out, "msg-%d.eml" % n), "rb") as f:
            body = f.read()
        with open(os.path.join(out, "msg-%d.json" % n)) as f:
            env = json.load(f)
        got.append((body, env))
        n += 1
    return got


def strip_trace(msg):
    """The message after its first (folded) header field, the trace field."""
    end = msg.index(b"\r\n")
    while msg[end + 2:end + 3] in (b"\t", b" "):
        end = msg.index(b"\r\n", end + 2)
    return msg[end + 2:]


def connections(out):
    try:
        with open(os.path.join(out, "connections")) as f:
            return len(f.read().split())
    except OSError:
        return 0


# The relay policy of these tests: the first recipient's domain names the
# next hop and how to reach it.
RELAY = r'''
local smtp = require "smtp"
local client = require "smtp.client"
local maildir = require "smtp.maildir"
local hops = %s
%s
return {
  name = "mx.test", authOptional = true, hideDSN = false, hookTimeout = 60, size = 64 * 1024 * 1024,
  onData = function(stream, session)
    local env = session.envelope
    local hop = hops[env.rcptTo[1].address:match("@(.*)$")]
    local message = stream
    if hop.source then -- the message as a string, or in a file
      local parts = {}
      for chunk in stream:chunks() do parts[#parts + 1] = chunk end
      message = table.concat(parts)
      if hop.source == "file" then
        local path = os.getenv("OUT") .. "/relay-" .. session.id
        local f = assert(io.open(path, "wb"))
        f:write(message)
        f:close()
        message = path
      end
    end
    local res, err = client.send{
      host = not hop.mx and "127.0.0.1" or nil, mx = hop.mx, port = hop.port, tls = hop.tls, ca = hop.ca, servername = "localhost",
      helo = "mx.test", from = env.mailFrom, to = env.rcptTo, message = message,
      timeout = hop.timeout or 5, pool = hop.pool or false, auth = hop.auth, lmtp = hop.lmtp,
      prepend = maildir.received_header(session, "mx.test"),
    }
    if not res then return nil, err end
    return res.message
  end,
}
'''

# An LMTP front relaying to an LMTP next hop: each recipient's verdict goes
# back to the client as the next hop gave it.
LMTP_RELAY = r'''
local smtp = require "smtp"
local client = require "smtp.client"
return {
  name = "lmtp.test", lmtp = true, authOptional = true,
  onData = function(stream, session)
    local env = session.envelope
    local res, err, detail = client.send{host = "127.0.0.1", port = %d, lmtp = true, helo = "lmtp.test",
      from = env.mailFrom, to = env.rcptTo, message = stream, timeout = 5}
    res = res or detail
    if not res then return nil, err end
    local verdicts = {}
    for i, r in ipairs(res.recipients) do
      verdicts[i] = r.code < 300 and r.message or smtp.reject(r.code, r.message)
    end
    return verdicts
  end,
}
'''

# A second luasmtpd as the next hop, for what aiosmtpd does not offer
# (PIPELINING, CHUNKING, DSN): it records each MAIL/RCPT's parameters and
# the message's bytes in OUT.
DOWNSTREAM = r'''
local function record(name, s)
  local f = assert(io.open(os.getenv("OUT") .. "/" .. name, "ab"))
  f:write(s)
  f:close()
end
return {
  name = "down.test", authOptional = true, hideDSN = false,
  onMailFrom = function(a) record("params", "MAIL " .. (a.args.RET or "-") .. " " .. (a.args.ENVID or "-") .. "\n") end,
  onRcptTo = function(a) record("params", "RCPT " .. a.address .. " " .. (a.args.NOTIFY or "-") .. " " .. (a.args.ORCPT or "-") .. "\n") end,
  onData = function(stream)
    local parts = {}
    for chunk in stream:chunks() do parts[#parts + 1] = chunk end
    record("message", table.concat(parts))
  end,
}
'''


class RelayClientTest(E2ETest):
    @classmethod
    def setUpClass(cls):
        pki = tlsutil.certs()
        cls.plain = start_nexthop(rcpt={"full@plain.test": "452 4.2.2 mailbox full",
                                        "nobody@plain.test": "550 5.1.1 no such user"})
        cls.tls = start_nexthop(tls={"cert": pki.crt("localhost"), "key": pki.key("localhost")})
        cls.untrusted = start_nexthop(tls={"cert": pki.self_crt, "key": pki.self_key})
        cls.implicit = start_nexthop(implicit={"cert": pki.crt("localhost"), "key": pki.key("localhost")})
        cls.authed = start_nexthop(auth={"user": "relay", "password": "s3cret"})
        cls.lmtp = start_nexthop(lmtp=True, rcpt={"unknown@lmtp.test": "550 5.1.1 unknown user"},
                                 lmtp_rcpt={"quota@lmtp.test": "552 5.2.2 over quota"})
        cls.tls_authed = start_nexthop(tls={"cert": pki.crt("localhost"), "key": pki.key("localhost")},
                                       auth={"user": "relay", "password": "s3cret"})
        cls.pki = pki
        cls.downstream = Server(DOWNSTREAM)
        cls.down_port = svcutil.closed_port()
        hops = {
            "plain.test": {"port": cls.plain.port, "tls": "none"},
            "pool.test": {"port": cls.plain.port, "tls": "none", "pool": True},
            "opportunistic.test": {"port": cls.plain.port, "tls": "opportunistic"},
            "slow.test": {"port": cls.plain.port, "tls": "none", "timeout": 1},
            "tls.test": {"port": cls.tls.port, "tls": "required", "ca": pki.ca},
            "untrusted.test": {"port": cls.untrusted.port, "tls": "required", "ca": pki.ca},
            "implicit.test": {"port": cls.implicit.port, "tls": "implicit", "ca": pki.ca},
            "implicit-untrusted.test": {"port": cls.implicit.port, "tls": "implicit"},
            "down.test": {"port": cls.down_port, "tls": "none"},
            "auth.test": {"port": cls.authed.port, "auth": {"user": "relay", "password": "s3cret"}},
            "badauth.test": {"port": cls.authed.port, "auth": {"user": "relay", "password": "wrong"}},
            "luasmtpd.test": {"port": cls.downstream.port},
            "pool.luasmtpd.test": {"port": cls.downstream.port, "pool": True},
            "string.test": {"port": cls.plain.port, "source": "string"},
            "file.test": {"port": cls.plain.port, "source": "file"},
        }
        # MX records in preference order: the first host refuses (nothing
        # listens on 127.0.0.2), the second is the next hop
        cls.dns = svcutil.Dnsmasq([
            "mx-host=relay.test,mx1.relay.test,10", "mx-host=relay.test,mx2.relay.test,20",
            "address=/mx1.relay.test/127.0.0.2", "address=/mx2.relay.test/127.0.0.1",
            "address=/nomx.test/127.0.0.1", "local=/test/"])
        hops["relay.test"] = {"mx": "relay.test", "port": cls.plain.port}
        hops["nomx.test"] = {"mx": "nomx.test", "port": cls.plain.port}
        dns = 'smtp.dns.configure{servers = {"127.0.0.1:%d"}, timeout = 2, tries = 1}' % cls.dns.port
        cls.srv = Server(RELAY % (lua_value(hops), dns))

    @classmethod
    def tearDownClass(cls):
        for srv in (cls.srv, cls.downstream):
            srv.stop()
            srv.cleanup()
        cls.dns.stop()
        for s in (cls.plain, cls.tls, cls.untrusted, cls.authed, cls.lmtp, cls.tls_authed, cls.implicit):
            s.stop()
            shutil.rmtree(s.out, ignore_errors=True)

    def relay(self, body, rcpts, sender="sender@example.com", options=(), port=None):
        """Sends through luasmtpd (the class's, or the one on port); returns
        the reply to the data (code, text)."""
        with smtplib.SMTP("127.0.0.1", port or self.srv.port, timeout=30) as s:
            s.ehlo("client.example")
            code, msg = s.mail(sender, list(options))
            self.assertEqual(code, 250, msg)
            for r in rcpts:
                code, msg = s.rcpt(r)
                self.assertEqual(code, 250, msg)
            return s.data(body)

    def taken(self, hop, before, n=1):
        wait_for(lambda: len(messages(hop.out)) >= before + n, timeout=5)
        got = messages(hop.out)
        self.assertEqual(len(got), before + n, "messages the next hop took")
        return got[before:]

    def assertRelayed(self, hop, body, rcpts, sender="sender@example.com", options=()):
        before = len(messages(hop.out))
        code, msg = self.relay(body, rcpts, sender, options)
        self.assertEqual(code, 250, msg)
        (got, env), = self.taken(hop, before)
        self.assertTrue(got.startswith(b"Received: from client.example"), got[:200])
        self.assertEqual(strip_trace(got), body)
        self.assertEqual(env["from"], sender)
        self.assertEqual(env["to"], list(rcpts))
        return code, msg, env

    def assertRefused(self, body, rcpts, code, text, hop=None):
        """Relays body to rcpts: the reply is code with a text starting with
        text (returned), and hop (when given) took nothing."""
        before = hop and len(messages(hop.out))
        got, msg = self.relay(body, rcpts)
        self.assertEqual(got, code, msg)
        self.assertTrue(msg.startswith(text), msg)
        if hop:
            self.assertEqual(len(messages(hop.out)), before, "messages the next hop took")
        return msg

    def test_7bit_with_dots(self):
        body = b"Subject: dots\r\n\r\n.starts with a dot\r\n..two\r\n.\r\nend\r\n"
        code, msg, env = self.assertRelayed(self.plain, body, ["a@plain.test", "b@plain.test"])
        # the next hop's own text, once (its enhanced code not doubled)
        self.assertRegex(msg, rb"^2\.0\.0 queued as \d+$")

    def test_message_as_string_and_file(self):
        # whole sources: their size is known, so MAIL carries SIZE (aiosmtpd
        # offers it), the bytes sent after the trace field
        body = b"Subject: sources\r\n\r\n.dot\r\n" + (b"z" * 98 + b"\r\n") * 2000
        for rcpt in ("s@string.test", "f@file.test"):
            before = len(messages(self.plain.out))
            self.assertRelayed(self.plain, body, [rcpt])
            (got, env), = messages(self.plain.out)[before:]
            self.assertIn("SIZE=%d" % len(got), env["mail_options"])

    def test_8bit(self):
        body = "Subject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGrüße, ünïcødé\r\n".encode()
        _, _, env = self.assertRelayed(self.plain, body, ["c@plain.test"], options=["BODY=8BITMIME"])
        self.assertIn("BODY=8BITMIME", env["mail_options"])

    def test_smtputf8_addresses(self):
        body = "Subject: utf8\r\n\r\nhej\r\n".encode()
        with smtplib.SMTP("127.0.0.1", self.srv.port, timeout=30) as s:
            s.ehlo("client.example")
            before = len(messages(self.plain.out))
            s.sendmail("jörg@example.com", ["dörte@plain.test"], body, mail_options=["SMTPUTF8"])
        (got, env), = self.taken(self.plain, before)
        self.assertEqual(env["from"], "jörg@example.com")
        self.assertEqual(env["to"], ["dörte@plain.test"])
        self.assertIn("SMTPUTF8", env["mail_options"])
        self.assertTrue(got.endswith(body))

    def test_20_mib_bounded_rss(self):
        line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-_=+" * 1 + b"\r\n"
        body = b"Subject: big\r\n\r\n" + line * (20 * 1024 * 1024 // len(line))
        self.assertRelayed(self.plain, b"Subject: warm\r\n\r\nup\r\n", ["warm@plain.test"])
        base = self.srv.rss_kb()
        peak = [base]

        def sample():
            peak[0] = max(peak[0], self.srv.rss_kb())
            return False

        import threading
        done = threading.Event()

        def sampler():
            while not done.is_set():
                sample()
                done.wait(0.02)

        t = threading.Thread(target=sampler)
        t.start()
        try:
            self.assertRelayed(self.plain, body, ["big@plain.test"])
        finally:
            done.set()
            t.join()
        if not sanitized():
            # the whole message would be 20 MiB: streamed, the growth is Lua's
            # garbage of 64 KiB chunks (about 7 MiB measured) before collection
            self.assertLess(peak[0] - base, 15 * 1024, "RSS grew from %d to %d KiB" % (base, peak[0]))

    def test_starttls_verified(self):
        body = b"Subject: tls\r\n\r\nsecret\r\n"
        self.assertRelayed(self.tls, body, ["t@tls.test"])

    def test_untrusted_certificate_is_temporary_failure(self):
        self.assertRefused(b"Subject: no\r\n\r\nno\r\n", ["u@untrusted.test"], 451, b"4.7.5", self.untrusted)

    def test_implicit_tls(self):
        self.assertRelayed(self.implicit, b"Subject: implicit\r\n\r\nx\r\n", ["i@implicit.test"])
        # without our CA, the system store does not know the test CA
        self.assertRefused(b"Subject: no\r\n\r\nno\r\n", ["i@implicit-untrusted.test"], 451, b"4.7.5")

    def test_opportunistic_without_starttls_goes_plain(self):
        self.assertRelayed(self.plain, b"Subject: opp\r\n\r\nplain\r\n", ["o@opportunistic.test"])

    def test_next_hop_down(self):
        self.assertRefused(b"Subject: down\r\n\r\nx\r\n", ["d@down.test"], 451, b"4.4.1")

    def test_next_hop_slow(self):
        self.assertRefused(b"Subject: slow\r\n\r\nx\r\n", ["slow@slow.test"], 451, b"4.4.2")

    def test_next_hop_drops_at_data(self):
        self.assertRefused(b"Subject: drop\r\n\r\nx\r\n", ["drop@plain.test"], 451, b"4.4.2", self.plain)

    def test_452_to_one_recipient(self):
        # nothing goes to half the recipients
        msg = self.assertRefused(b"Subject: some\r\n\r\nx\r\n", ["ok@plain.test", "full@plain.test"], 452, b"4.2.2",
                                 self.plain)
        self.assertEqual(msg, b"4.2.2 mailbox full")

    def test_550_passed_through(self):
        msg = self.assertRefused(b"Subject: none\r\n\r\nx\r\n", ["nobody@plain.test"], 550, b"5.1.1", self.plain)
        self.assertEqual(msg, b"5.1.1 no such user")

    def test_pool_reuses_one_connection(self):
        conns = connections(self.plain.out)
        for i in range(4):
            self.assertRelayed(self.plain, b"Subject: pooled %d\r\n\r\nx\r\n" % i, ["p%d@pool.test" % i])
        self.assertEqual(connections(self.plain.out) - conns, 1, "TCP connections for 4 pooled messages")

    def test_auth_plain(self):
        _, _, env = self.assertRelayed(self.authed, b"Subject: auth\r\n\r\nx\r\n", ["a@auth.test"])
        self.assertTrue(env["authenticated"])

    def test_auth_refused_is_temporary(self):
        self.assertRefused(b"Subject: auth\r\n\r\nx\r\n", ["a@badauth.test"], 451, b"4.7.0 next hop refused our login",
                           self.authed)

    def test_lmtp_verdict_per_recipient(self):
        with Server(LMTP_RELAY % self.lmtp.port) as front:
            c = front.client()
            self.assertEqual(c.cmd("LHLO client.example").code, 250)
            self.assertEqual(c.cmd("MAIL FROM:<s@example.com>").code, 250)
            for r in ("ok@lmtp.test", "unknown@lmtp.test", "quota@lmtp.test", "ok2@lmtp.test"):
                self.assertEqual(c.cmd("RCPT TO:<%s>" % r).code, 250)
            self.assertEqual(c.cmd("DATA").code, 354)
            c.send(b"Subject: lmtp\r\n\r\nper recipient\r\n.\r\n")
            replies = c.read_replies(4)
            self.assertEqual([r.code for r in replies], [250, 550, 552, 250], [r.raw for r in replies])
            self.assertIn(b"5.1.1 unknown user", replies[1].raw)
            self.assertIn(b"5.2.2 over quota", replies[2].raw)
            c.close()
        (got, env), = messages(self.lmtp.out)
        self.assertEqual(got, b"Subject: lmtp\r\n\r\nper recipient\r\n")
        self.assertEqual(env["to"], ["ok@lmtp.test", "quota@lmtp.test", "ok2@lmtp.test"])

    def test_bdat_pipelining_dsn_to_luasmtpd(self):
        # what aiosmtpd does not offer, against our own server as next hop
        body = b"Subject: bdat\r\n\r\n.dot\r\nline\r\n"
        with smtplib.SMTP("127.0.0.1", self.srv.port, timeout=30) as s:
            s.ehlo("client.example")
            s.mail("s@example.com", ["RET=HDRS", "ENVID=QQ+2B314"])
            s.rcpt("x@luasmtpd.test", ["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;x+2Bd@luasmtpd.test"])
            s.rcpt("y@luasmtpd.test")
            code, msg = s.data(body)
        self.assertEqual(code, 250, msg)
        got = self.downstream.out_file("message")
        self.assertEqual(strip_trace(got), body)
        self.assertEqual(self.downstream.out_file("params").decode().split("\n"), [
            "MAIL HDRS QQ+314", "RCPT x@luasmtpd.test SUCCESS,DELAY rfc822;x+d@luasmtpd.test",
            "RCPT y@luasmtpd.test - -", ""])
        log = self.downstream.log()
        self.assertIn("verb=BDAT", log)
        self.assertNotIn("verb=DATA", log)

    def test_mx_in_preference_order_with_fallback(self):
        self.assertRelayed(self.plain, b"Subject: mx\r\n\r\nx\r\n", ["m@relay.test"])

    def test_no_mx_means_the_domain_itself(self):
        self.assertRelayed(self.plain, b"Subject: implicit mx\r\n\r\nx\r\n", ["m@nomx.test"])

    def test_message_refused_mid_stream_goes_nowhere(self):
        # over the front's size: the stream ends in the core's refusal after
        # its chunks went on, and the next hop never sees the end marker
        hops = {"plain.test": {"port": self.plain.port, "tls": "none"}}
        small = (RELAY % (lua_value(hops), "")).replace("size = 64 * 1024 * 1024", "size = 4096")
        self.assertIn("size = 4096", small)
        before = len(messages(self.plain.out))
        with Server(small) as front:
            code, msg = self.relay(b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n" * 1 + (b"y" * 78 + b"\r\n") * 200,
                                   ["big@plain.test"], "s@example.com", port=front.port)
        self.assertEqual(code, 552, msg)
        wait_for(lambda: connections(self.plain.out) > 0, timeout=2)
        self.assertEqual(len(messages(self.plain.out)), before)

    def test_pool_with_pipelining(self):
        # a next hop offering PIPELINING: the pooled connection's RSET goes
        # in one write with MAIL and RCPT, and one connection carries all
        conns = self.downstream.log().count("msg=connection ")
        for i in range(3):
            code, msg = self.relay(b"Subject: pooled %d\r\n\r\nx\r\n" % i, ["p%d@pool.luasmtpd.test" % i], "s@example.com")
            self.assertEqual(code, 250, msg)
        self.assertEqual(self.downstream.log().count("msg=connection ") - conns, 1)
        self.assertEqual(self.downstream.log().count("verb=RSET"), 2)

    def test_strings_for_addresses_and_misuse(self):
        hook = r'''
local client = require "smtp.client"
return {
  authOptional = true,
  onData = function(stream, session)
    for _ in stream:chunks() do end
    local ok, err = pcall(client.send, {host = "127.0.0.1", port = %d, from = "a@b\r\nRSET", to = "c@plain.test",
      message = "x\r\n"})
    if ok then return nil, "5.0.0 misuse accepted" end
    if not tostring(err):find("control characters", 1, true) then return nil, "5.0.0 " .. tostring(err) end
    local res, serr = client.send{host = "127.0.0.1", port = %d, from = "a@example.com",
      to = "strings@plain.test", message = "Subject: strings\r\n\r\nx\r\n"}
    if not res then return nil, serr end
    return res.message
  end,
}
''' % (self.plain.port, self.plain.port)
        before = len(messages(self.plain.out))
        with Server(hook) as front:
            code, msg = self.relay(b"Subject: x\r\n\r\nx\r\n", ["r@example.org"], "s@example.com", port=front.port)
        self.assertEqual(code, 250, msg)
        (got, env), = self.taken(self.plain, before)
        self.assertEqual((got, env["from"], env["to"]), (b"Subject: strings\r\n\r\nx\r\n", "a@example.com",
                                                         ["strings@plain.test"]))

    def test_readme_example(self):
        # README's policy as printed, pointed at a local next hop that wants
        # STARTTLS (our test CA) and a login
        with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
            readme = f.read()
        m = re.search(r"### Handing mail on: smtp.client\n.*?```lua\n(.*?)```", readme, re.S)
        self.assertIsNotNone(m, "README.md: no ```lua block under '### Handing mail on: smtp.client'")
        src = m.group(1)
        for old, new in (('"10.0.0.5"', '"127.0.0.1"'), ("port = 25", "port = %d" % self.tls_authed.port),
                         ('"/etc/ssl/our-ca.pem"', lua_value(self.pki.ca)), ('"mail.example.org"', '"localhost"')):
            self.assertIn(old, src)
            src = src.replace(old, new)
        before = len(messages(self.tls_authed.out))
        with Server(src, env={"RELAY_PASSWORD": "s3cret"}) as front:
            code, msg = self.relay(b"Subject: readme\r\n\r\nhi\r\n", ["r@example.org"], "s@example.com",
                                   port=front.port)
        self.assertEqual(code, 250, msg)
        (got, env), = self.taken(self.tls_authed, before)
        self.assertEqual(strip_trace(got), b"Subject: readme\r\n\r\nhi\r\n")
        self.assertTrue(env["authenticated"])


if __name__ == "__main__":
    unittest.main()
