"""XCLIENT and XFORWARD (Postfix extensions, useXClient / useXForward = true
or trusted CIDRs): advertised only to trusted peers, refused (550 5.7.0)
otherwise; XCLIENT re-greets and rewrites the session's client identity
(session.xClient keeps "ADDR:DEFAULT"), validated as a whole, locked after
ADDR; XCLIENT LOGIN through onAuth; XFORWARD's 7 attributes; swaks
--xclient-*. Also the EHLO capability order with everything turned on."""

import socket

from harness import Lua, Server, SharedServerTest, script
from tlsutil import certs, starttls

SNAP = Lua(r'''function(s)
    local function copy(t)
      if type(t) ~= "table" then return t end
      local r = {}
      for k, v in pairs(t) do r[k] = copy(v) end
      return r
    end
    local u = s.user
    if type(u) == "table" then u = u.name end
    return {remoteAddress = s.remoteAddress, remotePort = s.remotePort,
            clientHostname = s.clientHostname, hostNameAppearsAs = s.hostNameAppearsAs,
            xClient = copy(s.xClient), xForward = copy(s.xForward), user = u,
            authMethod = s.authMethod, transmissionType = s.transmissionType}
  end''')

PRE = "local xsnap = " + SNAP + "\n"

HOOKS = {
    "onConnect": Lua(r'''function(session)
    -- onConnect runs again after XCLIENT ADDR/NAME: keep the TCP port of the first run
    session.tcpPort = session.tcpPort or session.remotePort
  end'''),
    "onAuth": Lua(r'''function(auth, session)
    record("auth", {tcpPort = session.tcpPort, method = auth.method, username = auth.username,
                    password = auth.password})
    if auth.username == "bob" then return {user = "bob"} end
    if auth.username == "tbl" then return {user = {name = "tbl"}} end
    return nil, "who?"
  end'''),
    "onMailFrom": Lua(r'''function(address, session)
    local s = xsnap(session)
    s.tcpPort = session.tcpPort
    record("mail", s)
  end'''),
    "onData": Lua(r'''function(stream, session)
    readall(stream)
    local s = xsnap(session)
    s.tcpPort = session.tcpPort
    record("data", s)
  end'''),
}

XCLIENT_LINE = "XCLIENT NAME ADDR PORT PROTO HELO LOGIN"
XFORWARD_LINE = "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE"


def x_script(**opts):
    return script(hooks=HOOKS, prelude=PRE, **opts)


class XTest(SharedServerTest):
    def mine(self, kind, c):
        return [e for e in self.srv.events(kind) if e.get("tcpPort") == c.local_port]

    def mail_snap(self, c):
        """MAIL (then RSET) and what onMailFrom saw of the session."""
        self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")
        self.assertReply(c.cmd("RSET"), 250)
        return self.mine("mail", c)[-1]


class XClient(XTest):
    SCRIPT = x_script(useXClient=True, useXForward=True)

    def test_advertised(self):
        with self.client() as c:
            r = c.ehlo()
            self.assertEqual(r.lines[-2:], [XCLIENT_LINE, XFORWARD_LINE], r.raw)

    def test_xclient_addr_name(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            r = c.cmd("XCLIENT ADDR=192.0.2.1 NAME=client.example.com")
            self.assertEqual(r.raw, b"220 mx.test ESMTP\r\n", "XCLIENT answers with the greeting again")
            r = c.ehlo("helo.example")
            self.assertReply(r, 250)
            self.assertIn("client.example.com", r.lines[0])
            s = self.mail_snap(c)
        self.assertEqual(s["remoteAddress"], "192.0.2.1")
        self.assertEqual(s["clientHostname"], "client.example.com")
        self.assertEqual(s["remotePort"], c.local_port, "PORT was not given: the port stays")
        self.assertEqual(s["hostNameAppearsAs"], "helo.example")
        self.assertEqual(s["xClient"], {"ADDR": "192.0.2.1", "ADDR:DEFAULT": "127.0.0.1",
                                        "NAME": "client.example.com", "NAME:DEFAULT": "[127.0.0.1]"})

    def test_xclient_port_helo_proto(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            r = c.cmd("XCLIENT ADDR=198.51.100.7 PORT=4321 PROTO=ESMTP HELO=orig.example")
            self.assertReply(r, 220)
            self.assertReply(c.ehlo(), 250)
            s = self.mail_snap(c)
        self.assertEqual((s["remoteAddress"], s["remotePort"]), ("198.51.100.7", 4321))
        self.assertEqual(s["xClient"]["PORT"], "4321")
        self.assertEqual(s["xClient"]["PORT:DEFAULT"], c.local_port)
        self.assertEqual(s["xClient"]["PROTO"], "ESMTP")
        self.assertEqual(s["xClient"]["HELO"], "orig.example")
        self.assertEqual(s["clientHostname"], "[198.51.100.7]")

    def test_xclient_ipv6(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("XCLIENT ADDR=IPV6:2001:db8::1"), 220)
            self.assertReply(c.ehlo(), 250)
            s = self.mail_snap(c)
        self.assertEqual(s["remoteAddress"], "2001:db8::1")

    def test_session_starts_afresh(self):
        """XCLIENT forgets HELO: MAIL needs a new EHLO."""
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("XCLIENT ADDR=192.0.2.1"), 220)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 503, "5.5.1")
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)

    def test_locked_after_addr(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("XCLIENT ADDR=198.51.100.7 PORT=4321"), 220)
            r = c.ehlo()
            self.assertReply(r, 250)
            self.assertFalse([l for l in r.lines if l.startswith(("XCLIENT", "XFORWARD"))], r.raw)
            self.assertReply(c.cmd("XCLIENT ADDR=192.0.2.99"), 550, "5.7.0")
            self.assertReply(c.cmd("XFORWARD ADDR=192.0.2.1 PORT=1234"), 550, "5.7.0")
            s = self.mail_snap(c)
        self.assertEqual((s["remoteAddress"], s["remotePort"]), ("198.51.100.7", 4321))

    def test_xclient_without_addr_can_repeat(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("XCLIENT NAME=first.example"), 220)
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("XCLIENT NAME=second.example ADDR=192.0.2.5"), 220)
            self.assertReply(c.ehlo(), 250)
            s = self.mail_snap(c)
        self.assertEqual(s["clientHostname"], "second.example")
        self.assertEqual(s["xClient"]["NAME"], "second.example")

    def test_during_transaction(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
            self.assertReply(c.cmd("XCLIENT ADDR=192.0.2.1"), 503, "5.5.1")
            self.assertReply(c.cmd("XFORWARD ADDR=192.0.2.1"), 503, "5.5.1")
            self.assertReply(c.cmd("RCPT TO:<b@example.com>"), 250)

    def test_bad_parameters(self):
        bad = ["", "FOO=bar", "ADDR=192.0.2.1 FOO=bar", "ADDR=not-an-ip", "ADDR=192.0.2.256", "ADDR=",
               "NAME=bad!host", "NAME=bad!host.example.com", "NAME=" + "a" * 600, "PORT=70000", "PORT=abc",
               "IDENT=x", "SOURCE=LOCAL", "ADDR", "ADDR=192.0.2.1 ADDR=192.0.2.2", "NAME=a+ZZ"]
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            for params in bad:
                r = c.cmd(("XCLIENT " + params).rstrip())
                self.assertReply(r, 501, "5.5.4", msg="XCLIENT " + params)
            # nothing was applied, and XCLIENT is still allowed
            s = self.mail_snap(c)
            self.assertEqual(s["remoteAddress"], "127.0.0.1")
            self.assertIsNone(s.get("xClient"))
            self.assertReply(c.cmd("XCLIENT ADDR=192.0.2.3"), 220)

    def test_unavailable(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("XCLIENT NAME=[UNAVAILABLE] ADDR=[TEMPUNAVAIL] PORT=[UNAVAILABLE] "
                                   "HELO=[UNAVAILABLE] PROTO=[UNAVAILABLE]"), 220)
            self.assertReply(c.ehlo(), 250)
            s = self.mail_snap(c)
        x = s["xClient"]
        for k in ["NAME", "ADDR", "PORT", "HELO", "PROTO"]:
            self.assertIs(x[k], False, k)
        self.assertEqual(x["ADDR:DEFAULT"], "127.0.0.1")

    def test_xtext_values(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("XCLIENT HELO=orig+2Eexample"), 220)
            self.assertReply(c.ehlo(), 250)
            s = self.mail_snap(c)
        self.assertEqual(s["xClient"]["HELO"], "orig.example")

    def test_login(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("XCLIENT ADDR=192.0.2.1 LOGIN=bob"), 220)
            self.assertReply(c.ehlo(), 250)
            s = self.mail_snap(c)
        [a] = self.mine("auth", c)
        self.assertEqual(a["method"], "XCLIENT")
        self.assertEqual(a["username"], "bob")
        self.assertIsNone(a.get("password"))
        self.assertEqual(s["user"], "bob")
        self.assertEqual(s["authMethod"], "XCLIENT")  # Postfix's {auth_type} for it
        self.assertEqual(s["transmissionType"], "ESMTPA")
        self.assertEqual(s["xClient"]["LOGIN"], "bob")

    def test_login_table_user(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("XCLIENT LOGIN=tbl"), 220)
            self.assertReply(c.ehlo(), 250)
            s = self.mail_snap(c)
        self.assertEqual(s["user"], "tbl")

    def test_login_refused(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            r = c.cmd("XCLIENT LOGIN=mallory")
            self.assertEqual(r.code, 550, r)
        [a] = self.mine("auth", c)
        self.assertEqual(a["username"], "mallory")
        self.assertFalse([m for m in self.mine("mail", c) if m.get("user") == "mallory"])

    def test_login_unavailable_no_auth(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("XCLIENT LOGIN=[UNAVAILABLE]"), 220)
            self.assertReply(c.ehlo(), 250)
            s = self.mail_snap(c)
        self.assertEqual(self.mine("auth", c), [])
        self.assertIsNone(s.get("user"))
        self.assertIsNone(s.get("authMethod"))
        self.assertIs(s["xClient"]["LOGIN"], False)

    def test_full_message_after_xclient(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("XCLIENT ADDR=203.0.113.9 NAME=mail.sender.example PORT=2525"), 220)
            self.assertReply(c.ehlo("mail.sender.example"), 250)
            r = c.transaction(b"Subject: x\r\n\r\nbody\r\n")
            self.assertReply(r, 250, "2.6.0")
        [d] = self.mine("data", c)
        self.assertEqual((d["remoteAddress"], d["remotePort"], d["clientHostname"]),
                         ("203.0.113.9", 2525, "mail.sender.example"))

    def test_swaks_xclient(self):
        r = self.run_cmd(["swaks", "--server", "127.0.0.1:%d" % self.srv.port, "--from", "a@example.com",
                          "--to", "b@example.com", "--helo", "client.example", "--xclient-addr", "192.0.2.77",
                          "--xclient-name", "swaks.example", "--xclient-port", "3333", "--xclient-login", "bob",
                          "--body", "via swaks xclient"])
        out = r.stdout.decode(errors="replace")
        self.assertEqual(r.returncode, 0, out[-3000:])
        self.assertIn("XCLIENT", out)
        ds = [d for d in self.srv.events("data") if d["remoteAddress"] == "192.0.2.77"]
        self.assertEqual(len(ds), 1, out[-3000:])
        d = ds[0]
        self.assertEqual((d["remotePort"], d["clientHostname"], d["user"]), (3333, "swaks.example", "bob"))
        self.assertEqual(d["xClient"]["ADDR:DEFAULT"], "127.0.0.1")


class XForward(XTest):
    SCRIPT = x_script(useXClient=True, useXForward=True)

    def test_all_seven(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            r = c.cmd("XFORWARD NAME=client.example.com ADDR=192.0.2.1 PORT=1234 PROTO=ESMTP "
                      "HELO=helo.example.com IDENT=abc123 SOURCE=REMOTE")
            self.assertReply(r, 250, "2.0.0")
            s = self.mail_snap(c)
        self.assertEqual((s["remoteAddress"], s["remotePort"], s["clientHostname"], s["hostNameAppearsAs"]),
                         ("192.0.2.1", 1234, "client.example.com", "helo.example.com"))
        x = s["xForward"]
        for k, v in {"NAME": "client.example.com", "ADDR": "192.0.2.1", "PORT": "1234", "PROTO": "ESMTP",
                     "HELO": "helo.example.com", "IDENT": "abc123", "SOURCE": "REMOTE"}.items():
            self.assertEqual(x[k], v, k)
        self.assertEqual(x["ADDR:DEFAULT"], "127.0.0.1")

    def test_split_over_commands(self):
        """Postfix sends XFORWARD in several commands; the session keeps its
        EHLO and may go on with MAIL."""
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("XFORWARD NAME=client.example.com ADDR=192.0.2.1"), 250)
            self.assertReply(c.cmd("XFORWARD PORT=1234 PROTO=SMTP SOURCE=LOCAL"), 250)
            s = self.mail_snap(c)
        self.assertEqual((s["remoteAddress"], s["remotePort"]), ("192.0.2.1", 1234))
        self.assertEqual(s["xForward"]["SOURCE"], "LOCAL")
        self.assertEqual(s["xForward"]["NAME"], "client.example.com")

    def test_unavailable(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("XFORWARD ADDR=[UNAVAILABLE] NAME=[UNAVAILABLE]"), 250, "2.0.0")
            s = self.mail_snap(c)
        self.assertIs(s["xForward"]["ADDR"], False)
        self.assertIs(s["xForward"]["NAME"], False)

    def test_bad_parameters(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            for params in ["", "FOO=bar", "ADDR=not-an-ip", "NAME=bad!host.example.com", "NAME=" + "x" * 600,
                           "LOGIN=bob", "SOURCE=ELSEWHERE", "PROTO=HTTP", "PORT=-1"]:
                self.assertReply(c.cmd(("XFORWARD " + params).rstrip()), 501, "5.5.4", msg=params)
            s = self.mail_snap(c)
        self.assertEqual(s["remoteAddress"], "127.0.0.1")
        self.assertIsNone(s.get("xForward"))

    def test_after_xclient_addr(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("XCLIENT ADDR=198.51.100.7 PORT=4321"), 220)
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("XFORWARD ADDR=192.0.2.1 PORT=1234"), 550, "5.7.0")
            s = self.mail_snap(c)
        self.assertEqual((s["remoteAddress"], s["remotePort"]), ("198.51.100.7", 4321))

    def test_resets_transaction(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("XFORWARD ADDR=192.0.2.1"), 250)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
            self.assertReply(c.cmd("RCPT TO:<b@example.com>"), 250)
            self.assertReply(c.cmd("XFORWARD ADDR=192.0.2.2"), 503, "5.5.1")


class NotEnabled(XTest):
    SCRIPT = x_script()

    def test_refused(self):
        with self.client() as c:
            r = c.ehlo()
            self.assertFalse([l for l in r.lines if l.startswith(("XCLIENT", "XFORWARD"))], r.raw)
            self.assertReply(c.cmd("XCLIENT ADDR=192.0.2.1"), 550, "5.7.0")
            self.assertReply(c.cmd("XFORWARD ADDR=192.0.2.1"), 550, "5.7.0")
            self.assertReply(c.cmd("XCLIENT"), 550, "5.7.0")
            s = self.mail_snap(c)
        self.assertEqual(s["remoteAddress"], "127.0.0.1")


class OnlyOne(XTest):
    SCRIPT = x_script(useXForward=True)

    def test_xforward_only(self):
        with self.client() as c:
            r = c.ehlo()
            self.assertEqual(r.lines[-1], XFORWARD_LINE)
            self.assertNotIn(XCLIENT_LINE, r.lines)
            self.assertReply(c.cmd("XCLIENT ADDR=192.0.2.1"), 550, "5.7.0")
            self.assertReply(c.cmd("XFORWARD ADDR=192.0.2.1"), 250)


class Untrusted(XTest):
    SCRIPT = x_script(useXClient=["192.0.2.0/24", "10.0.0.1"], useXForward=["2001:db8::/32"])

    def test_refused_from_untrusted_peer(self):
        with self.client() as c:
            r = c.ehlo()
            self.assertFalse([l for l in r.lines if l.startswith(("XCLIENT", "XFORWARD"))], r.raw)
            self.assertReply(c.cmd("XCLIENT ADDR=192.0.2.1"), 550, "5.7.0")
            self.assertReply(c.cmd("XFORWARD ADDR=192.0.2.1"), 550, "5.7.0")


class Trusted(XTest):
    SCRIPT = x_script(useXClient=["192.0.2.0/24", "127.0.0.0/8"], useXForward=["127.0.0.1"])

    def test_allowed_from_trusted_peer(self):
        with self.client() as c:
            r = c.ehlo()
            self.assertEqual(r.lines[-2:], [XCLIENT_LINE, XFORWARD_LINE])
            self.assertReply(c.cmd("XFORWARD ADDR=192.0.2.50"), 250)
            # the trust is the front end's, not the forwarded client's
            self.assertReply(c.cmd("XCLIENT NAME=x.example"), 220)
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("XCLIENT ADDR=10.1.1.1"), 220)
            self.assertReply(c.ehlo(), 250)
            s = self.mail_snap(c)
        self.assertEqual(s["remoteAddress"], "10.1.1.1")


class Capabilities(XTest):
    """EHLO keyword order with everything on: PIPELINING, 8BITMIME,
    SMTPUTF8, ENHANCEDSTATUSCODES, DSN, CHUNKING, BINARYMIME, AUTH,
    STARTTLS, REQUIRETLS (TLS only), SIZE, XCLIENT, XFORWARD."""

    @classmethod
    def setUpClass(cls):
        cls.srv = Server(x_script(hideDSN=False, hideREQUIRETLS=False, allowInsecureAuth=True,
                                  authMethods=["PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2"], size=1024,
                                  useXClient=True, useXForward=True, **certs().pair("localhost")))

    def test_order_everything_on(self):
        with self.client() as c:
            r = c.ehlo()
            self.assertEqual(r.lines[0], "mx.test Nice to meet you, [127.0.0.1]")
            self.assertEqual(r.lines[1:], ["PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "DSN",
                                           "CHUNKING", "BINARYMIME", "AUTH PLAIN LOGIN CRAM-MD5 XOAUTH2", "STARTTLS",
                                           "SIZE 1024", XCLIENT_LINE, XFORWARD_LINE], r.raw)
            starttls(c)
            r = c.ehlo()
            self.assertEqual(r.lines[1:], ["PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "DSN",
                                           "CHUNKING", "BINARYMIME", "AUTH PLAIN LOGIN CRAM-MD5 XOAUTH2",
                                           "REQUIRETLS", "SIZE 1024", XCLIENT_LINE, XFORWARD_LINE], r.raw)

    def test_enhanced_codes_on_x_replies(self):
        """A refused XCLIENT gets 5.7.0 (covered above); the re-greeting
        has no enhanced code; every other reply line has one."""
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            r = c.cmd("XCLIENT ADDR=192.0.2.1")
            self.assertReply(r, 220)
            self.assertIsNone(r.enh)
            r = c.ehlo()
            self.assertNotIn(XCLIENT_LINE, r.lines)
            self.assertNotIn(XFORWARD_LINE, r.lines)


class OptInCapabilities(SharedServerTest):
    """smtp-server's opt-in case: AUTH and STARTTLS disabled, CHUNKING
    hidden, DSN, SIZE, XCLIENT and XFORWARD on."""
    SCRIPT = script(hideDSN=False, size=1024, useXClient=True, useXForward=True, hideCHUNKING=True,
                    disabledCommands=["AUTH", "STARTTLS"])

    def test_order(self):
        with self.client() as c:
            r = c.ehlo()
            self.assertEqual(r.lines[1:], ["PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "DSN",
                                           "SIZE 1024", XCLIENT_LINE, XFORWARD_LINE], r.raw)


class DefaultCapabilities(SharedServerTest):
    SCRIPT = script()

    def test_default_order(self):
        with self.client() as c:
            r = c.ehlo()
            self.assertEqual(r.lines[1:], ["PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING",
                                           "BINARYMIME", "STARTTLS"], r.raw)


class HiddenCapabilities(SharedServerTest):
    SCRIPT = script(hidePIPELINING=True, hide8BITMIME=True, hideSMTPUTF8=True, hideENHANCEDSTATUSCODES=True,
                    hideCHUNKING=True, hideSTARTTLS=True, allowInsecureAuth=True, authMethods=["XOAUTH2"],
                    size=5000, hideSize=True)

    def test_hidden(self):
        with self.client() as c:
            r = c.ehlo()
            self.assertEqual(r.lines[1:], ["AUTH XOAUTH2", "SIZE"], r.raw)


CONNECT_POLICY = {
    "onConnect": Lua(r'''function(session)
    record("connect", {remoteAddress = session.remoteAddress, clientHostname = session.clientHostname,
                       remotePort = session.remotePort, xClient = session.xClient ~= nil})
    if session.remoteAddress == "192.0.2.1" then
      return nil, smtp.reject(554, "5.7.1 " .. session.remoteAddress .. " is listed")
    end
    if session.remoteAddress == "203.0.113.5" then smtp.sleep(0.5) end
  end'''),
}


class XClientConnectPolicy(SharedServerTest):
    """issue 15: XCLIENT ADDR/NAME give the session a new client, so the
    connect-time policy (onConnect, and maxConnectionsPerIp) is judged again
    for it before the new greeting, as Postfix does."""
    SCRIPT = script(hooks=CONNECT_POLICY, useXClient=True)

    def connects(self, xclient):
        return [e for e in self.srv.events("connect") if e["xClient"] == xclient]

    def test_onconnect_refuses_the_new_address(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            r = c.cmd("XCLIENT ADDR=192.0.2.1")
            self.assertEqual(r.raw, b"554 5.7.1 192.0.2.1 is listed\r\n")
            c.expect_close()
        self.assertIn({"remoteAddress": "192.0.2.1", "clientHostname": "[192.0.2.1]", "remotePort": c.local_port,
                       "xClient": True}, self.connects(True))

    def test_onconnect_sees_the_new_identity(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("XCLIENT ADDR=198.51.100.7 NAME=mx.example.net PORT=4000"), 220)
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
        self.assertIn({"remoteAddress": "198.51.100.7", "clientHostname": "mx.example.net", "remotePort": 4000,
                       "xClient": True}, self.connects(True))

    def test_other_attributes_do_not_rerun_onconnect(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("XCLIENT HELO=front.example PORT=4100"), 220)
            self.assertReply(c.ehlo(), 250)
        self.assertEqual([e for e in self.connects(True) if e["remotePort"] == 4100], [])

    def test_greeting_waits_for_onconnect(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            c.send(b"XCLIENT ADDR=203.0.113.5\r\n")
            c.no_reply(0.25)  # onConnect sleeps 0.5 s
            self.assertReply(c.read_reply(), 220)
        self.assertTrue([e for e in self.connects(True) if e["remoteAddress"] == "203.0.113.5"])

    def test_per_address_connection_limit_counts_the_new_address(self):
        with Server(script(hooks=CONNECT_POLICY, useXClient=True, maxConnectionsPerIp=1)) as srv:
            with srv.client() as a:
                self.assertReply(a.ehlo(), 250)
                self.assertReply(a.cmd("XCLIENT ADDR=198.51.100.9"), 220)
                # from 127.0.0.2: 127.0.0.1's connection is a's, and its limit is one
                sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10, source_address=("127.0.0.2", 0))
                with srv.client(sock=sock) as b:
                    self.assertReply(b.ehlo(), 250)
                    self.assertReply(b.cmd("XCLIENT ADDR=198.51.100.9"), 421, "4.4.2")
                    b.expect_close()
                self.assertReply(a.ehlo(), 250, None, "the first session goes on")
