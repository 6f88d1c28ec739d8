"""The README's example policies run as shown: a user who reads only the
README must succeed."""
import base64
import json
import os
import re
import smtplib

from harness import E2ETest, Server
from tlsutil import client_context, starttls

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def readme_policy():
    text = open(os.path.join(ROOT, "README.md")).read()
    return re.search(r"## A policy in 15 lines\n\n```lua\n(.*?)```", text, re.S).group(1)


class ReadmeExample(E2ETest):
    def test_example_policy_serves(self):
        src = readme_policy()
        self.assertLessEqual(len(src.strip().splitlines()), 20)
        # The one change: the Maildir goes to the test's own directory.
        self.assertIn('maildir.open("var/mail")', src)
        src = src.replace('maildir.open("var/mail")', 'maildir.open(os.getenv("LUASMTPD_MAILDIR"))')
        with Server(src) as srv:
            s = smtplib.SMTP("127.0.0.1", srv.port, timeout=10)
            try:
                s.ehlo()
                code, _ = s.mail("sender@example.com")
                self.assertEqual(code, 250)
                code, msg = s.rcpt("nobody@example.org")
                self.assertEqual((code, msg[:5]), (550, b"5.1.1"))
                self.assertEqual(s.rcpt("alice@example.org")[0], 250)
                code, _ = s.data(b"Subject: hi\r\n\r\nhello\r\n")
                self.assertEqual(code, 250)
            finally:
                s.quit()
            new = os.path.join(srv.maildir, "new")
            files = os.listdir(new)
            self.assertEqual(len(files), 1)
            self.assertTrue(open(os.path.join(new, files[0]), "rb").read().endswith(b"Subject: hi\r\n\r\nhello\r\n"))


def readme_auth_policy():
    text = open(os.path.join(ROOT, "README.md")).read()
    m = re.search(r"### onAuth, method by method\n.*?```lua\n(.*?)```", text, re.S)
    if not m:
        raise AssertionError("README.md: no ```lua block under '### onAuth, method by method'")
    return m.group(1)


class ReadmeAuthExample(E2ETest):
    """The README's onAuth example logs in with every mechanism it names,
    as real clients do: smtplib for PLAIN, LOGIN and CRAM-MD5, the raw
    XOAUTH2 exchange (RFC 7628) for XOAUTH2; all over STARTTLS."""

    @classmethod
    def setUpClass(cls):
        cls.srv = Server(readme_auth_policy())

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def smtplib_auth(self, mechanism, user, password):
        s = smtplib.SMTP("127.0.0.1", self.srv.port, timeout=10)
        try:
            s.starttls(context=client_context(ca=False))
            s.ehlo()
            s.user, s.password = user, password
            handler = getattr(s, "auth_" + mechanism.lower().replace("-", "_"))
            try:
                return s.auth(mechanism, handler, initial_response_ok=mechanism != "LOGIN")[0]
            except smtplib.SMTPAuthenticationError as e:
                return e.smtp_code
        finally:
            s.close()

    def test_password_mechanisms(self):
        for mechanism in ("PLAIN", "LOGIN", "CRAM-MD5"):
            with self.subTest(mechanism=mechanism):
                self.assertEqual(self.smtplib_auth(mechanism, "alice", "wonderland"), 235)
                self.assertEqual(self.smtplib_auth(mechanism, "alice", "looking-glass"), 535)
                self.assertEqual(self.smtplib_auth(mechanism, "mallory", "wonderland"), 535)

    def test_xoauth2(self):
        def xoauth2(user, token):
            return base64.b64encode(("user=%s\x01auth=Bearer %s\x01\x01" % (user, token)).encode()).decode()
        with self.srv.client() as c:
            c.ehlo()
            starttls(c, client_context(ca=False))
            self.assertIn("AUTH PLAIN LOGIN CRAM-MD5 XOAUTH2", c.ehlo().lines)
            # a refused token: the RFC 7628 error challenge, then 535
            r = c.cmd("AUTH XOAUTH2 " + xoauth2("alice", "stolen"))
            self.assertReply(r, 334)
            self.assertEqual(json.loads(base64.b64decode(r.text))["status"], "401")
            self.assertReply(c.cmd(""), 535, "5.7.8")
            self.assertReply(c.cmd("AUTH XOAUTH2 " + xoauth2("alice", "ya29.alice-token")), 235, "2.7.0")
