"""MAIL/RCPT parameters: DSN (RFC 3461: RET, ENVID, NOTIFY, ORCPT, with
hideDSN = false, and passed through unvalidated with the default
hideDSN = true), REQUIRETLS (RFC 8689) and SMTPUTF8 / BODY (dsn-test.js and
mail-parameters-test.js of smtp-server)."""

import smtplib

from harness import Lua, SharedServerTest, script
from tlsutil import certs, client_context, ehlo_keywords, starttls

HOOKS = {
    # session.envelope gets the MAIL facts once onMailFrom has accepted:
    # onRcptTo reports them.
    "onMailFrom": Lua(r'''function(address, session)
    record("mail", {port = session.remotePort, address = address.address, args = addr(address).args})
  end'''),
    "onRcptTo": Lua(r'''function(address, session)
    local env = session.envelope
    record("rcpt", {port = session.remotePort, address = address.address, args = addr(address).args,
                    dsn = address.dsn, dsnType = type(address.dsn),
                    env = {dsn = env.dsn, dsnType = type(env.dsn), requireTLS = env.requireTLS,
                           smtpUtf8 = env.smtpUtf8, bodyType = env.bodyType,
                           mailFrom = env.mailFrom and env.mailFrom.address}})
  end'''),
    "onData": Lua(r'''function(stream, session)
    local body = readall(stream)
    local env = session.envelope
    local rcpts = {}
    for i, r in ipairs(env.rcptTo) do
      rcpts[i] = {address = r.address, args = addr(r).args, dsn = r.dsn}
    end
    record("data", {port = session.remotePort, dsn = env.dsn, requireTLS = env.requireTLS,
                    smtpUtf8 = env.smtpUtf8, bodyType = env.bodyType, rcpts = rcpts,
                    mailArgs = addr(env.mailFrom).args, body = body})
    return "queued"
  end'''),
}

UTF8_ADDR = "δοκιμή@παράδειγμα.δοκιμή"


def u8(s):
    """A string from record(): its JSON carries bytes >= 0x80 one by one."""
    return s.encode("latin-1").decode("utf-8") if isinstance(s, str) else s


class ParamTest(SharedServerTest):
    def mine(self, kind, c):
        return [e for e in self.srv.events(kind) if e["port"] == c.local_port]

    def mail(self, c, params, code=250, enh=None):
        r = c.cmd("MAIL FROM:<sender@example.com> " + params if params else "MAIL FROM:<sender@example.com>")
        self.assertReply(r, code, enh, msg="MAIL ... %s" % params)
        return r

    def env(self, c, rcpt="<probe@example.com>"):
        """The envelope's MAIL facts, as onRcptTo sees them (one RCPT)."""
        self.assertReply(c.cmd("RCPT TO:" + rcpt), 250, "2.1.5")
        return self.mine("rcpt", c)[-1]["env"]


class DSN(ParamTest):
    SCRIPT = script(hooks=HOOKS, hideDSN=False)

    def test_ehlo_advertises_dsn(self):
        with self.client() as c:
            r = c.ehlo()
            kw = [l.split(" ")[0].upper() for l in r.lines[1:]]
            self.assertIn("DSN", kw)
            self.assertEqual(kw.index("DSN"), kw.index("ENHANCEDSTATUSCODES") + 1, r.raw)

    def test_ret(self):
        for value in ["FULL", "HDRS"]:
            with self.subTest(ret=value), self.ehlo_client() as c:
                self.mail(c, "RET=" + value, 250, "2.1.0")
                env = self.env(c)
                [m] = self.mine("mail", c)
                self.assertEqual(m["args"]["RET"], value)
                self.assertEqual(env["dsn"], {"ret": value})

    def test_ret_invalid(self):
        with self.ehlo_client() as c:
            for params in ["RET=INVALID", "RET=", "RET", "RET=FULLER", "RET=FULL RET=HDRS", "RET=FULL RET=FULL"]:
                self.mail(c, params, 501, "5.5.4")
            self.mail(c, "RET=FULL", 250)
        self.assertEqual(len(self.mine("mail", c)), 1, "onMailFrom runs only for the valid MAIL")

    def test_envid(self):
        with self.ehlo_client() as c:
            self.mail(c, "ENVID=test-envelope-123", 250, "2.1.0")
            env = self.env(c)
        [m] = self.mine("mail", c)
        self.assertEqual(env["dsn"], {"envid": "test-envelope-123"})
        self.assertEqual(m["args"]["ENVID"], "test-envelope-123")

    def test_envid_xtext_decoded(self):
        with self.ehlo_client() as c:
            self.mail(c, "ENVID=QQ+2B314+3Dx RET=HDRS", 250)
            env = self.env(c)
        self.assertEqual(env["dsn"], {"ret": "HDRS", "envid": "QQ+314=x"})

    def test_envid_invalid(self):
        with self.ehlo_client() as c:
            for params in ["ENVID=", "ENVID", "ENVID=abc+ZZ", "ENVID=abc+2", "ENVID=a=b", "ENVID=abc+0A",
                           "ENVID=" + "x" * 101, "ENVID=a ENVID=b"]:
                self.mail(c, params, 501, "5.5.4")
            self.mail(c, "ENVID=" + "x" * 100, 250)

    def test_ret_and_envid_together(self):
        with self.ehlo_client() as c:
            self.mail(c, "RET=FULL ENVID=QQ314159 SIZE=100 BODY=8BITMIME", 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<a@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@example.com"), 250,
                             "2.1.5")
            self.assertReply(c.cmd("DATA"), 354)
            c.send(b"Subject: dsn\r\n\r\nbody\r\n.\r\n")
            self.assertReply(c.read_reply(), 250, "2.6.0")
        [d] = self.mine("data", c)
        self.assertEqual(d["dsn"], {"ret": "FULL", "envid": "QQ314159"})
        self.assertEqual(d["bodyType"], "8bitmime")
        self.assertEqual(d["mailArgs"], {"RET": "FULL", "ENVID": "QQ314159", "SIZE": "100", "BODY": "8BITMIME"})
        [r] = d["rcpts"]
        self.assertEqual(r["dsn"], {"notify": ["SUCCESS", "FAILURE"], "orcpt": "rfc822;a@example.com"})

    def test_no_dsn_parameters(self):
        with self.ehlo_client() as c:
            self.mail(c, "", 250)
            self.assertReply(c.cmd("RCPT TO:<a@example.com>"), 250)
        [r] = self.mine("rcpt", c)
        self.assertEqual(r["env"]["dsnType"], "table")
        self.assertEqual(r["dsnType"], "table")
        self.assertIsNone(r["dsn"].get("orcpt") if isinstance(r["dsn"], dict) else None)

    def test_notify(self):
        cases = {
            "NOTIFY=SUCCESS": ["SUCCESS"],
            "NOTIFY=SUCCESS,DELAY": ["SUCCESS", "DELAY"],
            "NOTIFY=FAILURE,DELAY,SUCCESS": ["FAILURE", "DELAY", "SUCCESS"],
            "NOTIFY=NEVER": ["NEVER"],
            "NOTIFY=never": ["NEVER"],
            "notify=Success,delay": ["SUCCESS", "DELAY"],
        }
        with self.ehlo_client() as c:
            self.mail(c, "", 250)
            for i, (params, want) in enumerate(cases.items()):
                self.assertReply(c.cmd("RCPT TO:<r%d@example.com> %s" % (i, params)), 250, "2.1.5", msg=params)
        rcpts = self.mine("rcpt", c)
        self.assertEqual(len(rcpts), len(cases))
        for r, (params, want) in zip(rcpts, cases.items()):
            with self.subTest(params=params):
                self.assertEqual(r["dsn"]["notify"], want)
                self.assertEqual(r["args"]["NOTIFY"].upper(), params.split("=", 1)[1].upper())

    def test_notify_invalid(self):
        with self.ehlo_client() as c:
            self.mail(c, "", 250)
            for params in ["NOTIFY=NEVER,SUCCESS", "NOTIFY=SUCCESS,NEVER", "NOTIFY=BOGUS", "NOTIFY=SUCCESS,BOGUS",
                           "NOTIFY=", "NOTIFY", "NOTIFY=,SUCCESS", "NOTIFY=SUCCESS,,DELAY",
                           "NOTIFY=NEVER NOTIFY=SUCCESS", "NOTIFY=SUCCESS NOTIFY=SUCCESS"]:
                self.assertReply(c.cmd("RCPT TO:<a@example.com> " + params), 501, "5.5.4", msg=params)
            # the transaction goes on
            self.assertReply(c.cmd("RCPT TO:<a@example.com> NOTIFY=DELAY"), 250, "2.1.5")
        self.assertEqual(len(self.mine("rcpt", c)), 1)

    def test_notify_trailing_comma(self):
        """RFC 3461 4.1: notify-list-element *("," notify-list-element); an
        empty element after the last comma is not one of the keywords."""
        with self.ehlo_client() as c:
            self.mail(c, "", 250)
            self.assertReply(c.cmd("RCPT TO:<a@example.com> NOTIFY=SUCCESS,"), 501, "5.5.4")
            self.assertReply(c.cmd("RCPT TO:<a@example.com> NOTIFY=SUCCESS,DELAY,"), 501, "5.5.4")

    def test_orcpt(self):
        with self.ehlo_client() as c:
            self.mail(c, "", 250)
            self.assertReply(c.cmd("RCPT TO:<a@example.com> ORCPT=rfc822;original@example.com"), 250, "2.1.5")
            self.assertReply(c.cmd("RCPT TO:<b@example.com> ORCPT=rfc822;x+2By@example.com NOTIFY=NEVER"), 250)
            self.assertReply(c.cmd("RCPT TO:<c@example.com> ORCPT=utf-8;caf+C3+A9@example.com"), 250)
        a, b, cc = self.mine("rcpt", c)
        self.assertEqual(a["dsn"]["orcpt"], "rfc822;original@example.com")
        self.assertEqual(a["args"]["ORCPT"], "rfc822;original@example.com")
        self.assertEqual(b["dsn"], {"notify": ["NEVER"], "orcpt": "rfc822;x+y@example.com"})
        # the record() JSON carries bytes >= 0x80 one by one
        self.assertEqual(cc["dsn"]["orcpt"].encode("latin-1"), "utf-8;café@example.com".encode())

    def test_orcpt_invalid(self):
        with self.ehlo_client() as c:
            self.mail(c, "", 250)
            for params in ["ORCPT=rcpt@example.com", "ORCPT=", "ORCPT", "ORCPT=;a@example.com", "ORCPT=rfc822;",
                           "ORCPT=rfc 822;a", "ORCPT=rfc822;a+ZZ", "ORCPT=rfc822;a=b",
                           "ORCPT=rfc822;a@b ORCPT=rfc822;c@d"]:
                self.assertReply(c.cmd("RCPT TO:<a@example.com> " + params), 501, "5.5.4", msg=params)
            self.assertReply(c.cmd("RCPT TO:<a@example.com> ORCPT=RFC822;a@example.com"), 250)

    def test_smtplib_dsn(self):
        """smtplib passes mail_options/rcpt_options through."""
        with smtplib.SMTP("127.0.0.1", self.srv.port, local_hostname="client.example", timeout=10) as s:
            port = s.sock.getsockname()[1]
            s.ehlo()
            self.assertTrue(s.has_extn("dsn"))
            refused = s.sendmail("a@example.com", ["b@example.com"], b"Subject: x\r\n\r\nhi\r\n",
                                 mail_options=["RET=HDRS", "ENVID=smtplib+2B1"],
                                 rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;b@example.com"])
            self.assertEqual(refused, {})
            with self.assertRaises(smtplib.SMTPSenderRefused) as cm:
                s.sendmail("a@example.com", ["b@example.com"], b"x\r\n", mail_options=["RET=BOTH"])
            self.assertEqual(cm.exception.smtp_code, 501)
        [d] = [e for e in self.srv.events("data") if e["port"] == port]
        self.assertEqual(d["dsn"], {"ret": "HDRS", "envid": "smtplib+1"})
        self.assertEqual(d["rcpts"][0]["dsn"], {"notify": ["SUCCESS", "FAILURE"], "orcpt": "rfc822;b@example.com"})


class DSNHidden(ParamTest):
    """hideDSN = true (the default): not advertised, and the parameters are
    passed to the hooks as they came, unvalidated."""
    SCRIPT = script(hooks=HOOKS)

    def test_not_advertised(self):
        with self.client() as c:
            self.assertNotIn("DSN", ehlo_keywords(c.ehlo()))

    def test_params_passed_through(self):
        with self.ehlo_client() as c:
            self.mail(c, "RET=INVALID ENVID=a+ZZ", 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<a@example.com> NOTIFY=NEVER,BOGUS ORCPT=nonsense"), 250, "2.1.5")
            self.assertReply(c.cmd("RCPT TO:<b@example.com> NOTIFY ORCPT"), 250, "2.1.5")
        [m] = self.mine("mail", c)
        self.assertEqual(m["args"], {"RET": "INVALID", "ENVID": "a+ZZ"})
        r1, r2 = self.mine("rcpt", c)
        self.assertNotEqual(r1["env"]["dsnType"], "table")
        self.assertEqual(r1["args"], {"NOTIFY": "NEVER,BOGUS", "ORCPT": "nonsense"})
        self.assertNotEqual(r1["dsnType"], "table")
        self.assertEqual(r2["args"], {"NOTIFY": True, "ORCPT": True})


class Utf8AndBody(ParamTest):
    SCRIPT = script(hooks=HOOKS)

    def test_8bit_address_needs_smtputf8(self):
        with self.ehlo_client() as c:
            r = c.cmd("MAIL FROM:<%s>" % UTF8_ADDR)
            self.assertReply(r, 553, "5.6.7")
            r = c.cmd("MAIL FROM:<%s> SMTPUTF8" % UTF8_ADDR)
            self.assertReply(r, 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<%s>" % UTF8_ADDR), 250, "2.1.5")
        [m] = self.mine("mail", c)
        self.assertEqual(m["args"], {"SMTPUTF8": True})
        self.assertEqual(u8(m["address"]), UTF8_ADDR)
        [r] = self.mine("rcpt", c)
        self.assertIs(r["env"]["smtpUtf8"], True)
        self.assertEqual(u8(r["address"]), UTF8_ADDR)

    def test_8bit_recipient_without_smtputf8(self):
        with self.ehlo_client() as c:
            self.mail(c, "", 250)
            self.assertReply(c.cmd("RCPT TO:<%s>" % UTF8_ADDR), 553, "5.6.7")
            self.assertReply(c.cmd("RCPT TO:<ascii@example.com>"), 250)
        [r] = self.mine("rcpt", c)
        self.assertIs(r["env"]["smtpUtf8"], False)

    def test_smtputf8_value_refused(self):
        with self.ehlo_client() as c:
            self.mail(c, "SMTPUTF8=yes", 501, "5.5.4")
            self.mail(c, "SMTPUTF8", 250)

    def test_smtputf8_resets_with_transaction(self):
        with self.ehlo_client() as c:
            self.mail(c, "SMTPUTF8", 250)
            self.assertReply(c.cmd("RSET"), 250)
            self.assertReply(c.cmd("MAIL FROM:<%s>" % UTF8_ADDR), 553, "5.6.7")

    def test_body(self):
        with self.ehlo_client() as c:
            seen = []
            for params in ["BODY=8BITMIME", "BODY=7BIT", "BODY=8bitmime", ""]:
                self.mail(c, params, 250)
                seen.append(self.env(c)["bodyType"])
                self.assertReply(c.cmd("RSET"), 250)
            self.mail(c, "BODY=INVALID", 501, "5.5.4")
            self.mail(c, "BODY=", 501, "5.5.4")
            self.mail(c, "BODY", 501, "5.5.4")
        self.assertEqual(seen, ["8bitmime", "7bit", "8bitmime", "7bit"])

    def test_smtplib_smtputf8(self):
        with smtplib.SMTP("127.0.0.1", self.srv.port, local_hostname="client.example", timeout=10) as s:
            port = s.sock.getsockname()[1]
            s.ehlo()
            self.assertTrue(s.has_extn("smtputf8"))
            refused = s.sendmail(UTF8_ADDR, [UTF8_ADDR], "Subject: ü\r\n\r\nγειά\r\n".encode(),
                                 mail_options=["SMTPUTF8", "BODY=8BITMIME"])
            self.assertEqual(refused, {})
        [d] = [e for e in self.srv.events("data") if e["port"] == port]
        self.assertIs(d["smtpUtf8"], True)
        self.assertEqual(d["bodyType"], "8bitmime")
        self.assertEqual(u8(d["rcpts"][0]["address"]), UTF8_ADDR)


class RequireTLS(ParamTest):
    @classmethod
    def setUpClass(cls):
        from harness import Server
        cls.srv = Server(script(hooks=HOOKS, hideREQUIRETLS=False, **certs().pair("localhost")))

    def test_refused_before_tls(self):
        with self.client() as c:
            r = c.ehlo()
            self.assertNotIn("REQUIRETLS", ehlo_keywords(r), "REQUIRETLS is advertised only over TLS")
            self.mail(c, "REQUIRETLS", 530, "5.7.10")
            self.mail(c, "", 250)
            env = self.env(c)
        self.assertNotEqual(env.get("requireTLS"), True)

    def test_after_starttls(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            starttls(c)
            r = c.ehlo()
            kw = [l.split(" ")[0].upper() for l in r.lines[1:]]
            self.assertIn("REQUIRETLS", kw)
            self.mail(c, "REQUIRETLS", 250, "2.1.0")
            env = self.env(c, "<a@example.com>")
            self.assertReply(c.cmd("DATA"), 354)
            c.send(b"Subject: rt\r\n\r\nx\r\n.\r\n")
            self.assertReply(c.read_reply(), 250)
        self.assertIs(env["requireTLS"], True)
        [m] = self.mine("mail", c)
        self.assertEqual(m["args"], {"REQUIRETLS": True})
        [d] = self.mine("data", c)
        self.assertIs(d["requireTLS"], True)

    def test_value_refused(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            starttls(c)
            self.assertReply(c.ehlo(), 250)
            self.mail(c, "REQUIRETLS=yes", 501, "5.5.4")

    def test_without_requiretls_after_tls(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            starttls(c)
            self.assertReply(c.ehlo(), 250)
            self.mail(c, "", 250)
            env = self.env(c)
        self.assertNotEqual(env.get("requireTLS"), True)

    def test_combined(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            starttls(c)
            self.assertReply(c.ehlo(), 250)
            r = c.cmd("MAIL FROM:<%s> SMTPUTF8 REQUIRETLS BODY=8BITMIME SIZE=10" % UTF8_ADDR)
            self.assertReply(r, 250, "2.1.0")
            env = self.env(c)
        self.assertIs(env["requireTLS"], True)
        self.assertIs(env["smtpUtf8"], True)
        self.assertEqual(env["bodyType"], "8bitmime")
        self.assertEqual(u8(env["mailFrom"]), UTF8_ADDR)

    def test_smtplib_requiretls(self):
        with smtplib.SMTP("127.0.0.1", self.srv.port, local_hostname="client.example", timeout=10) as s:
            port = s.sock.getsockname()[1]
            s.ehlo()
            self.assertFalse(s.has_extn("requiretls"))
            s.starttls(context=client_context())
            s.ehlo()
            self.assertTrue(s.has_extn("requiretls"))
            self.assertEqual(s.sendmail("a@example.com", ["b@example.com"], b"x\r\n", mail_options=["REQUIRETLS"]), {})
        [d] = [e for e in self.srv.events("data") if e["port"] == port]
        self.assertIs(d["requireTLS"], True)


class RequireTLSHidden(ParamTest):
    """hideREQUIRETLS defaults to true: not advertised even over TLS."""

    @classmethod
    def setUpClass(cls):
        from harness import Server
        cls.srv = Server(script(hooks=HOOKS, **certs().pair("localhost")))

    def test_not_advertised_after_tls(self):
        with self.client() as c:
            self.assertReply(c.ehlo(), 250)
            starttls(c)
            self.assertNotIn("REQUIRETLS", ehlo_keywords(c.ehlo()))
