"""AUTH with every mechanism: PLAIN, LOGIN, CRAM-MD5 (auth.validatePassword),
XOAUTH2 (auth.accessToken, the JSON error challenge then 535); cancelling,
malformed base64, AUTH twice, unknown mechanisms, maxAuthFailures (421 4.7.0),
authOptional, and AUTH over STARTTLS (538 5.7.11 before it). Real clients:
smtplib (CRAM-MD5, PLAIN, LOGIN) and swaks --auth CRAM-MD5."""

import base64
import hashlib
import hmac
import json
import re
import smtplib

from harness import E2ETest, Lua, Server, SharedServerTest, script, wait_for
from tlsutil import certs, client_context, ehlo_keywords, starttls

ALL_METHODS = ["PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2"]


def b64(s):
    if isinstance(s, str):
        s = s.encode()
    return base64.b64encode(s).decode()


def xoauth2(user, token):
    return b64("user=%s\x01auth=Bearer %s\x01\x01" % (user, token))


def cram_answer(challenge_b64, user, password):
    challenge = base64.b64decode(challenge_b64)
    digest = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
    return challenge, digest, b64("%s %s" % (user, digest))


HOOKS = {
    "onAuth": Lua(r'''function(auth, session)
    local ev = {method = auth.method, username = auth.username, password = auth.password,
                accessToken = auth.accessToken, challenge = auth.challenge,
                challengeResponse = auth.challengeResponse,
                validateType = type(auth.validatePassword), port = session.remotePort,
                secure = session.secure}
    if auth.method == "CRAM-MD5" then
      -- called as a plain function, as smtp-server users write it
      local ok = auth.validatePassword("testpass")
      local wrong = auth.validatePassword("not-the-password")
      ev.valid, ev.wrongValid = ok, wrong
      record("auth", ev)
      if auth.username == "testuser" and ok then return {user = "cram:" .. auth.username} end
      return nil, "bad credentials"
    end
    if auth.method == "XOAUTH2" then
      record("auth", ev)
      if auth.username == "testuser" and auth.accessToken == "testtoken" then
        return {user = {name = "oauth:" .. auth.username}}
      end
      if auth.accessToken == "later" then return nil, smtp.reject(454, "token service down") end
      return nil, "bad token"
    end
    record("auth", ev)
    if auth.username == "testuser" and auth.password == "testpass" then
      return {user = auth.method:lower() .. ":testuser"}
    end
    return nil, "bad credentials"
  end'''),
    "onMailFrom": Lua(r'''function(address, session)
    local u = session.user
    if type(u) == "table" then u = u.name end
    record("mail", {port = session.remotePort, user = u, transmissionType = session.transmissionType,
                    authMethod = session.authMethod})
  end'''),
    "onData": Lua(r'''function(stream, session)
    local body = readall(stream)
    local u = session.user
    if type(u) == "table" then u = u.name end
    record("data", {port = session.remotePort, user = u, body = body,
                    transmissionType = session.transmissionType})
    return "stored"
  end'''),
}


def auth_script(**opts):
    # These tests fail AUTH from 127.0.0.1 on purpose, many times over one
    # server: the per-address limit (test_auth.AuthFailuresPerAddress) is off.
    base = dict(authMethods=ALL_METHODS, authOptional=False, allowInsecureAuth=True, maxAuthFailuresPerIp=False)
    base.update(opts)
    return script(hooks=HOOKS, **base)


class Mechanisms(SharedServerTest):
    SCRIPT = auth_script()

    def mine(self, kind, c):
        port = c.local_port if hasattr(c, "local_port") else c
        return [e for e in self.srv.events(kind) if e["port"] == port]

    def assert_user(self, c, user, ttype="ESMTPA"):
        self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")
        m = self.mine("mail", c)[-1]
        self.assertEqual(m["user"], user)
        self.assertEqual(m["transmissionType"], ttype)

    def test_advertised_in_order(self):
        with self.client() as c:
            r = c.ehlo()
            self.assertReply(r, 250)
            auth = [l for l in r.lines[1:] if l.upper().startswith("AUTH")]
            self.assertEqual(auth, ["AUTH PLAIN LOGIN CRAM-MD5 XOAUTH2"], r.raw)

    # -- PLAIN
    def test_plain_initial_response(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("AUTH PLAIN " + b64("\0testuser\0testpass")), 235, "2.7.0")
            self.assert_user(c, "plain:testuser")
        [a] = self.mine("auth", c)
        self.assertEqual((a["method"], a["username"], a["password"]), ("PLAIN", "testuser", "testpass"))

    def test_plain_continuation(self):
        with self.ehlo_client() as c:
            r = c.cmd("AUTH PLAIN")
            self.assertEqual(r.raw, b"334 \r\n")
            self.assertReply(c.cmd(b64("\0testuser\0testpass")), 235, "2.7.0")
            self.assert_user(c, "plain:testuser")

    def test_plain_empty_initial_response(self):
        """RFC 4954: "=" is an empty initial response; an empty PLAIN
        message is malformed."""
        with self.ehlo_client() as c:
            r = c.cmd("AUTH PLAIN =")
            self.assertEqual(r.code, 501, r)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 530, "5.7.0")

    # -- LOGIN
    def test_login(self):
        with self.ehlo_client() as c:
            r = c.cmd("AUTH LOGIN")
            self.assertEqual(r.raw, b"334 VXNlcm5hbWU6\r\n")
            r = c.cmd(b64("testuser"))
            self.assertEqual(r.raw, b"334 UGFzc3dvcmQ6\r\n")
            self.assertReply(c.cmd(b64("testpass")), 235, "2.7.0")
            self.assert_user(c, "login:testuser")

    def test_login_username_as_initial_response(self):
        with self.ehlo_client() as c:
            r = c.cmd("AUTH LOGIN " + b64("testuser"))
            self.assertEqual(r.raw, b"334 UGFzc3dvcmQ6\r\n")
            self.assertReply(c.cmd(b64("testpass")), 235, "2.7.0")
            self.assert_user(c, "login:testuser")

    # -- CRAM-MD5
    def test_cram_md5(self):
        with self.ehlo_client() as c:
            r = c.cmd("AUTH CRAM-MD5")
            self.assertReply(r, 334)
            self.assertIsNone(r.enh)
            challenge, digest, answer = cram_answer(r.text, "testuser", "testpass")
            self.assertRegex(challenge.decode(), r"^<[0-9a-f]+\.\d+@mx\.test>$")
            ts = int(re.search(rb"\.(\d+)@", challenge).group(1))
            import time
            self.assertLess(abs(ts - time.time()), 120, "challenge timestamp is the current time")
            self.assertReply(c.cmd(answer), 235, "2.7.0")
            self.assert_user(c, "cram:testuser")
        [a] = self.mine("auth", c)
        self.assertEqual(a["method"], "CRAM-MD5")
        self.assertEqual(a["username"], "testuser")
        self.assertEqual(a["challenge"], challenge.decode())
        self.assertEqual(a["challengeResponse"], digest)
        self.assertEqual(a["validateType"], "function")
        self.assertIs(a["valid"], True)
        self.assertIs(a["wrongValid"], False)
        self.assertIsNone(a.get("password"))

    def test_cram_md5_challenges_differ(self):
        seen = set()
        for _ in range(3):
            with self.ehlo_client() as c:
                r = c.cmd("AUTH CRAM-MD5")
                self.assertReply(r, 334)
                seen.add(r.text)
                self.assertReply(c.cmd("*"), 501)
        self.assertEqual(len(seen), 3, "every CRAM-MD5 challenge is fresh")

    def test_cram_md5_wrong_password(self):
        with self.ehlo_client() as c:
            r = c.cmd("AUTH CRAM-MD5")
            _, _, answer = cram_answer(r.text, "testuser", "wrong")
            self.assertReply(c.cmd(answer), 535, "5.7.8")
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 530, "5.7.0")
        [a] = self.mine("auth", c)
        self.assertIs(a["valid"], False)

    def test_cram_md5_upper_case_digest(self):
        with self.ehlo_client() as c:
            r = c.cmd("AUTH CRAM-MD5")
            challenge = base64.b64decode(r.text)
            digest = hmac.new(b"testpass", challenge, hashlib.md5).hexdigest().upper()
            self.assertReply(c.cmd(b64("testuser " + digest)), 235, "2.7.0")

    def test_cram_md5_replayed_answer_fails(self):
        """An answer to one challenge does not open another session."""
        with self.ehlo_client() as c:
            r = c.cmd("AUTH CRAM-MD5")
            _, _, answer = cram_answer(r.text, "testuser", "testpass")
            self.assertReply(c.cmd(answer), 235, "2.7.0")
        with self.ehlo_client() as c2:
            self.assertReply(c2.cmd("AUTH CRAM-MD5"), 334)
            self.assertReply(c2.cmd(answer), 535, "5.7.8")

    def test_cram_md5_malformed(self):
        with self.ehlo_client() as c:
            # no initial response for CRAM-MD5
            self.assertReply(c.cmd("AUTH CRAM-MD5 " + b64("testuser 0123")), 501)
            self.assertReply(c.cmd("AUTH CRAM-MD5"), 334)
            self.assertReply(c.cmd(b64("no-space-here")), 501, "5.5.2")
            self.assertReply(c.cmd("AUTH CRAM-MD5"), 334)
            self.assertReply(c.cmd("%%%%"), 501, "5.5.2")
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 530, "5.7.0")
        self.assertEqual(self.mine("auth", c), [], "onAuth must not run for malformed CRAM-MD5")

    def test_smtplib_cram_md5(self):
        """smtplib.login prefers CRAM-MD5 when offered."""
        with smtplib.SMTP("127.0.0.1", self.srv.port, local_hostname="client.example", timeout=10) as s:
            port = s.sock.getsockname()[1]
            code, _ = s.login("testuser", "testpass")
            self.assertEqual(code, 235)
            self.assertEqual(s.sendmail("a@example.com", ["b@example.com"], b"Subject: cram\r\n\r\nhi\r\n"), {})
        [a] = self.mine("auth", port)
        self.assertEqual(a["method"], "CRAM-MD5")
        [d] = self.mine("data", port)
        self.assertEqual(d["user"], "cram:testuser")
        self.assertEqual(d["transmissionType"], "ESMTPA")
        self.assertEqual(d["body"], "Subject: cram\r\n\r\nhi\r\n")

    def test_smtplib_each_mechanism(self):
        for mech in ["CRAM-MD5", "PLAIN", "LOGIN"]:
            with self.subTest(mech=mech):
                with smtplib.SMTP("127.0.0.1", self.srv.port, local_hostname="client.example", timeout=10) as s:
                    port = s.sock.getsockname()[1]
                    s.ehlo()
                    s.user, s.password = "testuser", "testpass"
                    fn = getattr(s, "auth_" + mech.lower().replace("-", "_"))
                    code, _ = s.auth(mech, fn, initial_response_ok=(mech != "LOGIN"))
                    self.assertEqual(code, 235)
                    s.sendmail("a@example.com", ["b@example.com"], b"x\r\n")
                [a] = self.mine("auth", port)
                self.assertEqual(a["method"], mech)
                # session.authMethod: the mechanism, as a milter's {auth_type}
                [m] = self.mine("mail", port)
                self.assertEqual(m["authMethod"], mech)
                with smtplib.SMTP("127.0.0.1", self.srv.port, local_hostname="client.example", timeout=10) as s:
                    s.ehlo()
                    s.user, s.password = "testuser", "wrong"
                    fn = getattr(s, "auth_" + mech.lower().replace("-", "_"))
                    with self.assertRaises(smtplib.SMTPAuthenticationError) as cm:
                        s.auth(mech, fn, initial_response_ok=(mech != "LOGIN"))
                    self.assertEqual(cm.exception.smtp_code, 535)

    def test_smtplib_xoauth2(self):
        with smtplib.SMTP("127.0.0.1", self.srv.port, local_hostname="client.example", timeout=10) as s:
            port = s.sock.getsockname()[1]
            s.ehlo()
            code, _ = s.auth("XOAUTH2", lambda challenge=None: "user=testuser\x01auth=Bearer testtoken\x01\x01")
            self.assertEqual(code, 235)
            s.sendmail("a@example.com", ["b@example.com"], b"x\r\n")
        [d] = self.mine("data", port)
        self.assertEqual(d["user"], "oauth:testuser")

    # -- XOAUTH2
    def test_xoauth2_initial_response(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("AUTH XOAUTH2 " + xoauth2("testuser", "testtoken")), 235, "2.7.0")
            self.assert_user(c, "oauth:testuser")
        [a] = self.mine("auth", c)
        self.assertEqual((a["method"], a["username"], a["accessToken"]), ("XOAUTH2", "testuser", "testtoken"))
        self.assertIsNone(a.get("password"))

    def test_xoauth2_continuation(self):
        with self.ehlo_client() as c:
            r = c.cmd("AUTH XOAUTH2")
            self.assertEqual(r.raw, b"334 \r\n")
            self.assertReply(c.cmd(xoauth2("testuser", "testtoken")), 235, "2.7.0")
            self.assert_user(c, "oauth:testuser")

    def test_xoauth2_rejected(self):
        with self.ehlo_client() as c:
            r = c.cmd("AUTH XOAUTH2 " + xoauth2("testuser", "expired"))
            self.assertReply(r, 334)
            err = json.loads(base64.b64decode(r.text))
            self.assertEqual(err["status"], "401", err)
            self.assertReply(c.cmd(""), 535, "5.7.8")
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 530, "5.7.0")
            # a later attempt with a good token works
            self.assertReply(c.cmd("AUTH XOAUTH2 " + xoauth2("testuser", "testtoken")), 235, "2.7.0")
        self.assertEqual([a["accessToken"] for a in self.mine("auth", c)], ["expired", "testtoken"])

    def test_xoauth2_failure_is_the_hooks(self):
        """issue 15: after RFC 7628's error challenge, the final reply is
        onAuth's (code and text), as for PLAIN and LOGIN."""
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("AUTH XOAUTH2 " + xoauth2("testuser", "expired")), 334)
            r = c.cmd("")
            self.assertReply(r, 535, "5.7.8")
            self.assertEqual(r.text, "5.7.8 bad token")
            r = c.cmd("AUTH XOAUTH2")
            self.assertEqual(r.raw, b"334 \r\n")
            self.assertReply(c.cmd(xoauth2("testuser", "later")), 334)
            r = c.cmd("")
            self.assertEqual(r.raw, b"454 4.7.0 token service down\r\n")
            self.assertReply(c.cmd("AUTH PLAIN " + b64("\0testuser\0wrong")), 535, "5.7.8")
            self.assertEqual(c.cmd("AUTH PLAIN " + b64("\0testuser\0wrong")).text, "5.7.8 bad credentials")

    def test_xoauth2_malformed(self):
        bad = [b64("user=testuser"), b64("nouser\x01auth=Bearer t\x01\x01"),
               b64("user=testuser\x01auth=Basic t\x01\x01"), b64("user=testuser\x01auth=Bearer t"), "!!!"]
        for tok in bad:
            with self.subTest(tok=tok), self.ehlo_client() as c:
                self.assertReply(c.cmd("AUTH XOAUTH2 " + tok), 501, "5.5.2")
                self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 530, "5.7.0")
        self.assertEqual([a for a in self.srv.events("auth") if a["method"] == "XOAUTH2" and a["accessToken"] == "t"],
                         [])

    # -- errors common to all
    def test_cancel_every_mechanism(self):
        steps = {"PLAIN": 0, "LOGIN": 0, "CRAM-MD5": 0, "XOAUTH2": 0}
        for mech in steps:
            with self.subTest(mech=mech), self.ehlo_client() as c:
                self.assertReply(c.cmd("AUTH " + mech), 334)
                self.assertReply(c.cmd("*"), 501)
                self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 530, "5.7.0")
                self.assertReply(c.cmd("NOOP"), 250)
        with self.ehlo_client() as c:
            # LOGIN cancelled at the password step
            self.assertReply(c.cmd("AUTH LOGIN " + b64("testuser")), 334)
            self.assertReply(c.cmd("*"), 501)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 530, "5.7.0")

    def test_malformed_base64(self):
        for mech in ALL_METHODS:
            with self.subTest(mech=mech), self.ehlo_client() as c:
                self.assertReply(c.cmd("AUTH " + mech), 334)
                self.assertReply(c.cmd("@@@@"), 501, "5.5.2")
                self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("AUTH PLAIN dGVzdA"), 501, "5.5.2")
            self.assertReply(c.cmd("AUTH LOGIN ****"), 501, "5.5.2")

    def test_auth_twice(self):
        for first in ["AUTH PLAIN " + b64("\0testuser\0testpass"), "AUTH XOAUTH2 " + xoauth2("testuser", "testtoken")]:
            with self.subTest(first=first[:12]), self.ehlo_client() as c:
                self.assertReply(c.cmd(first), 235, "2.7.0")
                for again in ["AUTH PLAIN " + b64("\0testuser\0testpass"), "AUTH CRAM-MD5", "AUTH LOGIN", "AUTH FOO"]:
                    self.assertReply(c.cmd(again), 503, "5.5.1")
                r = c.ehlo()
                self.assertNotIn("AUTH", ehlo_keywords(r))

    def test_unknown_mechanism(self):
        with self.ehlo_client() as c:
            for m in ["FOO", "GSSAPI", "SCRAM-SHA-1", "DIGEST-MD5", "EXTERNAL", "CRAM-SHA1"]:
                self.assertReply(c.cmd("AUTH " + m), 504, "5.5.4")
            # the session goes on
            self.assertReply(c.cmd("AUTH plain " + b64("\0testuser\0testpass")), 235, "2.7.0")

    def test_pipelined_after_auth(self):
        """Commands sent right behind AUTH wait for onAuth's verdict."""
        with self.ehlo_client() as c:
            c.send("AUTH XOAUTH2 %s\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
                   % xoauth2("testuser", "testtoken"))
            self.assertCodes(c.read_replies(3), [235, 250, 250])
        with self.ehlo_client() as c:
            c.send("AUTH PLAIN %s\r\nMAIL FROM:<a@example.com>\r\n" % b64("\0testuser\0wrong"))
            self.assertCodes(c.read_replies(2), [535, 530])

    def test_auth_before_ehlo(self):
        with self.client() as c:
            self.assertReply(c.cmd("AUTH CRAM-MD5"), 503, "5.5.1")

    def test_max_auth_failures_default(self):
        """maxAuthFailures defaults to 5: the 5th failed attempt gets 421
        4.7.0 and the connection closes."""
        with self.ehlo_client() as c:
            for i in range(4):
                self.assertReply(c.cmd("AUTH PLAIN " + b64("\0testuser\0wrong%d" % i)), 535, "5.7.8")
            r = c.cmd("AUTH PLAIN " + b64("\0testuser\0wrong4"))
            self.assertReply(r, 421, "4.7.0")
            c.expect_close()

    def test_max_auth_failures_mixed_mechanisms(self):
        """Failures count across mechanisms (the XOAUTH2 one after its
        error challenge)."""
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("AUTH PLAIN " + b64("\0testuser\0wrong")), 535, "5.7.8")
            self.assertReply(c.cmd("AUTH LOGIN " + b64("testuser")), 334)
            self.assertReply(c.cmd(b64("wrong")), 535, "5.7.8")
            r = c.cmd("AUTH CRAM-MD5")
            self.assertReply(c.cmd(cram_answer(r.text, "testuser", "wrong")[2]), 535, "5.7.8")
            self.assertReply(c.cmd("AUTH XOAUTH2 " + xoauth2("testuser", "bad")), 334)
            self.assertReply(c.cmd(""), 535, "5.7.8")
            self.assertReply(c.cmd("AUTH XOAUTH2 " + xoauth2("testuser", "bad")), 334)
            self.assertReply(c.cmd(""), 421, "4.7.0")
            c.expect_close()

    def test_auth_method_is_the_successful_mechanism_kept_after_rset(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("AUTH LOGIN " + b64("testuser")), 334)
            self.assertReply(c.cmd(b64("wrong")), 535, "5.7.8")
            self.assertReply(c.cmd("AUTH PLAIN " + b64("\0testuser\0testpass")), 235, "2.7.0")
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
            self.assertReply(c.cmd("RSET"), 250)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
        self.assertEqual([m["authMethod"] for m in self.mine("mail", c)], ["PLAIN", "PLAIN"])

    def test_failures_below_limit_then_success(self):
        with self.ehlo_client() as c:
            for i in range(4):
                self.assertReply(c.cmd("AUTH PLAIN " + b64("\0testuser\0wrong")), 535, "5.7.8")
            self.assertReply(c.cmd("AUTH PLAIN " + b64("\0testuser\0testpass")), 235, "2.7.0")
            self.assert_user(c, "plain:testuser")

    def test_swaks_cram_md5(self):
        before = len(self.srv.events("data"))
        r = self.run_cmd(["swaks", "--server", "127.0.0.1:%d" % self.srv.port, "--to", "b@example.com",
                          "--from", "a@example.com", "--auth", "CRAM-MD5", "--auth-user", "testuser",
                          "--auth-password", "testpass", "--body", "via swaks cram", "--helo", "client.example"])
        out = r.stdout.decode(errors="replace")
        self.assertEqual(r.returncode, 0, out[-2000:])
        self.assertIn("235", out)
        evs = wait_for(lambda: self.srv.events("data")[before:])
        self.assertEqual(len(evs), 1)
        self.assertEqual(evs[0]["user"], "cram:testuser")
        self.assertIn("via swaks cram", evs[0]["body"])
        r = self.run_cmd(["swaks", "--server", "127.0.0.1:%d" % self.srv.port, "--to", "b@example.com",
                          "--from", "a@example.com", "--auth", "CRAM-MD5", "--auth-user", "testuser",
                          "--auth-password", "wrong", "--helo", "client.example"])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"535", r.stdout)


class MaxAuthFailures(E2ETest):
    def test_configured_limit(self):
        with Server(auth_script(maxAuthFailures=2)) as srv:
            with srv.client() as c:
                self.assertReply(c.ehlo(), 250)
                self.assertReply(c.cmd("AUTH PLAIN " + b64("\0testuser\0wrong")), 535, "5.7.8")
                self.assertReply(c.cmd("AUTH PLAIN " + b64("\0testuser\0wrong")), 421, "4.7.0")
                c.expect_close()
            # the limit is per connection
            with srv.client() as c:
                self.assertReply(c.ehlo(), 250)
                self.assertReply(c.cmd("AUTH PLAIN " + b64("\0testuser\0wrong")), 535, "5.7.8")
                self.assertReply(c.cmd("AUTH PLAIN " + b64("\0testuser\0testpass")), 235, "2.7.0")


class Optional(SharedServerTest):
    SCRIPT = auth_script(authOptional=True)

    def test_mail_without_auth(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")
        [m] = [e for e in self.srv.events("mail") if e["port"] == c.local_port]
        self.assertIsNone(m.get("user"))
        self.assertEqual(m["transmissionType"], "ESMTP")

    def test_auth_still_offered_and_works(self):
        with self.client() as c:
            r = c.ehlo()
            self.assertIn("AUTH PLAIN LOGIN CRAM-MD5 XOAUTH2", r.lines)
            r = c.cmd("AUTH CRAM-MD5")
            self.assertReply(c.cmd(cram_answer(r.text, "testuser", "testpass")[2]), 235, "2.7.0")
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")


class Required(SharedServerTest):
    SCRIPT = auth_script()

    def test_mail_without_auth_refused(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 530, "5.7.0")
            self.assertReply(c.cmd("RCPT TO:<b@example.com>"), 530, "5.7.0")
            self.assertReply(c.cmd("AUTH XOAUTH2 " + xoauth2("testuser", "testtoken")), 235, "2.7.0")
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")


class OverTLS(SharedServerTest):
    """allowInsecureAuth = false (the default): AUTH only after STARTTLS."""

    @classmethod
    def setUpClass(cls):
        cls.srv = Server(script(hooks=HOOKS, authMethods=ALL_METHODS, authOptional=False, **certs().pair("localhost")))

    def test_refused_before_tls(self):
        with self.client() as c:
            r = c.ehlo()
            self.assertNotIn("AUTH", ehlo_keywords(r))
            self.assertIn("STARTTLS", ehlo_keywords(r))
            for m in ALL_METHODS:
                self.assertReply(c.cmd("AUTH " + m), 538, "5.7.11")
            self.assertReply(c.cmd("AUTH PLAIN " + b64("\0testuser\0testpass")), 538, "5.7.11")
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 530, "5.7.0")
        self.assertEqual([a for a in self.srv.events("auth") if a["port"] == c.local_port], [])

    def test_every_mechanism_after_starttls(self):
        for mech in ALL_METHODS:
            with self.subTest(mech=mech), self.client() as c:
                self.assertReply(c.ehlo(), 250)
                starttls(c)
                r = c.ehlo()
                self.assertIn("AUTH PLAIN LOGIN CRAM-MD5 XOAUTH2", r.lines)
                if mech == "PLAIN":
                    self.assertReply(c.cmd("AUTH PLAIN " + b64("\0testuser\0testpass")), 235, "2.7.0")
                elif mech == "LOGIN":
                    self.assertReply(c.cmd("AUTH LOGIN"), 334)
                    self.assertReply(c.cmd(b64("testuser")), 334)
                    self.assertReply(c.cmd(b64("testpass")), 235, "2.7.0")
                elif mech == "CRAM-MD5":
                    r = c.cmd("AUTH CRAM-MD5")
                    self.assertReply(c.cmd(cram_answer(r.text, "testuser", "testpass")[2]), 235, "2.7.0")
                else:
                    self.assertReply(c.cmd("AUTH XOAUTH2 " + xoauth2("testuser", "testtoken")), 235, "2.7.0")
                self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")
                [a] = [e for e in self.srv.events("auth") if e["port"] == c.local_port]
                self.assertEqual(a["method"], mech)
                self.assertIs(a["secure"], True)
                [m] = [e for e in self.srv.events("mail") if e["port"] == c.local_port]
                self.assertEqual(m["transmissionType"], "ESMTPSA")

    def test_smtplib_starttls_login(self):
        with smtplib.SMTP("127.0.0.1", self.srv.port, local_hostname="client.example", timeout=10) as s:
            port = s.sock.getsockname()[1]
            s.ehlo()
            self.assertFalse(s.has_extn("auth"))
            s.starttls(context=client_context())
            s.ehlo()
            self.assertEqual(s.esmtp_features.get("auth", "").split(), ALL_METHODS)
            code, _ = s.login("testuser", "testpass")
            self.assertEqual(code, 235)
            self.assertEqual(s.sendmail("a@example.com", ["b@example.com"], b"Subject: tls\r\n\r\nhi\r\n"), {})
        [d] = [e for e in self.srv.events("data") if e["port"] == port]
        self.assertEqual(d["user"], "cram:testuser")
        self.assertEqual(d["transmissionType"], "ESMTPSA")

    def test_swaks_starttls_cram_md5(self):
        r = self.run_cmd(["swaks", "--server", "127.0.0.1:%d" % self.srv.port, "--to", "b@example.com",
                          "--from", "a@example.com", "--tls", "--auth", "CRAM-MD5", "--auth-user", "testuser",
                          "--auth-password", "testpass", "--body", "swaks tls cram", "--helo", "client.example"])
        self.assertEqual(r.returncode, 0, r.stdout.decode(errors="replace")[-2000:])
        evs = [e for e in self.srv.events("data") if "swaks tls cram" in e["body"]]
        self.assertEqual(len(evs), 1)
        self.assertEqual(evs[0]["transmissionType"], "ESMTPSA")
