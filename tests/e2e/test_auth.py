"""AUTH PLAIN and LOGIN without TLS (allowInsecureAuth = true), with
protocol-test.js "AUTH" scenarios and security.md 1.4 malformed input."""

import base64
import smtplib
import socket
import time

from harness import E2ETest, Lua, Server, SharedServerTest, script, split_received, wait_for


def b64(s):
    if isinstance(s, str):
        s = s.encode()
    return base64.b64encode(s).decode()


AUTH_HOOKS = {
    "onAuth": Lua(r'''function(auth, session)
    record("auth", {method = auth.method, username = auth.username, password = auth.password,
                    port = session.remotePort})
    if auth.username == "luaerror" then error("auth boom") end
    if auth.username == "nouser" then return {message = "no user field"} end
    if auth.username == "custom" then return nil, smtp.reject(454, "4.7.0 try later") end
    if auth.username == "testuser" and auth.password == "testpass" then
      return {user = "testuser"}
    end
    if auth.username == "tableuser" and auth.password == "testpass" then
      return {user = {name = "tableuser", uid = 7}, message = "welcome aboard"}
    end
    return nil, "bad credentials"
  end'''),
    "onMailFrom": Lua(r'''function(address, session)
    local u = session.user
    if type(u) == "table" then u = u.name end
    record("mail", {port = session.remotePort, user = u, transmissionType = session.transmissionType})
  end'''),
}

GOOD_PLAIN = b64("\0testuser\0testpass")


class Auth(SharedServerTest):
    SCRIPT = script(authOptional=False, allowInsecureAuth=True, hooks=AUTH_HOOKS)

    def mine(self, kind, c):
        return [e for e in self.srv.events(kind) if e["port"] == c.local_port]

    def test_auth_before_ehlo(self):
        with self.client() as c:
            self.assertReply(c.cmd("AUTH PLAIN " + GOOD_PLAIN), 503, "5.5.1")

    def test_mail_before_auth(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 530, "5.7.0")

    def test_unknown_mechanism(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("AUTH FOO"), 504, "5.5.4")
            self.assertReply(c.cmd("AUTH CRAM-MD5"), 504, "5.5.4")
            self.assertReply(c.cmd("AUTH XOAUTH2 abc"), 504, "5.5.4")

    def test_plain_initial_response(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("AUTH PLAIN " + GOOD_PLAIN), 235, "2.7.0")
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")
        a = self.mine("auth", c)
        self.assertEqual(a, [{"method": "PLAIN", "username": "testuser", "password": "testpass",
                              "port": c.local_port}])
        m = self.mine("mail", c)[0]
        self.assertEqual(m["user"], "testuser")
        self.assertEqual(m["transmissionType"], "ESMTPA")

    def test_plain_continuation(self):
        with self.ehlo_client() as c:
            r = c.cmd("AUTH PLAIN")
            self.assertReply(r, 334)
            self.assertEqual(r.raw, b"334 \r\n")
            self.assertReply(c.cmd(GOOD_PLAIN), 235, "2.7.0")

    def test_plain_cancel(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("AUTH PLAIN"), 334)
            self.assertReply(c.cmd("*"), 501, "5.0.0")
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 530, "5.7.0")

    def test_plain_authzid(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("AUTH PLAIN " + b64("admin\0testuser\0testpass")), 235, "2.7.0")
        self.assertEqual(self.mine("auth", c)[0]["username"], "testuser")

    def test_plain_too_many_arguments(self):
        with self.ehlo_client() as c:
            r = c.cmd("AUTH PLAIN a b")
            self.assertEqual(r.code, 501, r)

    def test_plain_malformed(self):
        """security.md case 14: never 235 on malformed input."""
        cases = {
            "AAAA": (501,),                           # three NULs
            b64("nonul"): (501,),
            b64("\0\0"): (501, 535),
            b64("a\0b\0c\0d"): (501,),
            "=": (501,),
            "!!!!": (501,),
            "dGVzdA": (501,),                         # bad padding
            "A" * 12000: (501, 500),
        }
        for token, codes in cases.items():
            with self.subTest(token=token[:20]), self.ehlo_client() as c:
                r = c.cmd("AUTH PLAIN " + token)
                self.assertIn(r.code, codes, r)
                self.assertEqual(r.enh[0] if r.enh else None, "5", r)
                self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 530, "5.7.0")

    def test_bad_base64(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("AUTH PLAIN !!!!"), 501, "5.5.2")
            self.assertReply(c.cmd("AUTH LOGIN"), 334)
            self.assertReply(c.cmd("%%%"), 501, "5.5.2")

    def test_login(self):
        with self.ehlo_client() as c:
            r = c.cmd("AUTH LOGIN")
            self.assertReply(r, 334)
            self.assertEqual(base64.b64decode(r.text), b"Username:")
            r = c.cmd(b64("testuser"))
            self.assertReply(r, 334)
            self.assertEqual(base64.b64decode(r.text), b"Password:")
            self.assertReply(c.cmd(b64("testpass")), 235, "2.7.0")
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")
        self.assertEqual(self.mine("auth", c)[0]["method"], "LOGIN")

    def test_login_initial_response(self):
        with self.ehlo_client() as c:
            r = c.cmd("AUTH LOGIN " + b64("testuser"))
            self.assertReply(r, 334)
            self.assertEqual(base64.b64decode(r.text), b"Password:")
            self.assertReply(c.cmd(b64("testpass")), 235, "2.7.0")

    def test_login_cancel(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("AUTH LOGIN"), 334)
            self.assertReply(c.cmd("*"), 501, "5.0.0")
            self.assertReply(c.cmd("AUTH LOGIN"), 334)
            self.assertReply(c.cmd(b64("testuser")), 334)
            self.assertReply(c.cmd("*"), 501, "5.0.0")
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 530, "5.7.0")
        self.assertEqual(self.mine("auth", c), [], "onAuth must not run for a cancelled exchange")

    def test_wrong_password(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("AUTH LOGIN"), 334)
            self.assertReply(c.cmd(b64("testuser")), 334)
            self.assertReply(c.cmd(b64("wrong")), 535, "5.7.8")
            self.assertReply(c.cmd("AUTH PLAIN " + b64("\0testuser\0wrong")), 535, "5.7.8")
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 530, "5.7.0")
            # a good attempt after failures still works
            self.assertReply(c.cmd("AUTH PLAIN " + GOOD_PLAIN), 235, "2.7.0")

    def test_onauth_result_forms(self):
        cases = [("nouser", 535, "5.7.8"), ("custom", 454, "4.7.0"), ("luaerror", 451, "4.3.0")]
        for user, code, enh in cases:
            with self.subTest(user=user), self.ehlo_client() as c:
                self.assertReply(c.cmd("AUTH PLAIN " + b64("\0%s\0pw" % user)), code, enh)
                self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 530, "5.7.0")
                self.assertReply(c.cmd("AUTH PLAIN " + GOOD_PLAIN), 235, "2.7.0")
        self.assertIn("auth boom", self.srv.log())

    def test_onauth_table_user_and_message(self):
        with self.ehlo_client() as c:
            r = c.cmd("AUTH PLAIN " + b64("\0tableuser\0testpass"))
            self.assertReply(r, 235, "2.7.0")
            self.assertIn("welcome aboard", r.text)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")
        self.assertEqual(self.mine("mail", c)[0]["user"], "tableuser")

    def test_auth_twice(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("AUTH PLAIN " + GOOD_PLAIN), 235, "2.7.0")
            self.assertReply(c.cmd("AUTH PLAIN " + GOOD_PLAIN), 503, "5.5.1")
            self.assertReply(c.cmd("AUTH LOGIN"), 503, "5.5.1")

    def test_auth_not_advertised_after_login(self):
        with self.client() as c:
            r = c.ehlo()
            self.assertIn("AUTH PLAIN LOGIN", [l.upper() for l in r.lines[1:]])
            self.assertReply(c.cmd("AUTH PLAIN " + GOOD_PLAIN), 235, "2.7.0")
            r = c.ehlo()
            self.assertFalse([l for l in r.lines[1:] if l.upper().startswith("AUTH")], r)
            # EHLO keeps the identity
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")

    def test_control_bytes_in_username(self):
        with self.ehlo_client() as c:
            self.assertEqual(c.cmd("AUTH PLAIN " + b64("\0test\r\nuser\0testpass")).code, 501)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 530, "5.7.0")
        with self.ehlo_client() as c:
            r = c.cmd("AUTH LOGIN " + b64("bad\x01name"))
            if r.code == 334:  # refused at the latest once the password is in
                r = c.cmd(b64("testpass"))
            self.assertEqual(r.code, 501, r)
        bad = [a for a in self.srv.events("auth") if any(ch in (a["username"] or "") for ch in "\r\n\x01")]
        self.assertEqual(bad, [], "onAuth called with a control character in the username")

    def test_smtplib_login_plain_and_login(self):
        for mech in ["PLAIN", "LOGIN"]:
            with self.subTest(mech=mech):
                with smtplib.SMTP("127.0.0.1", self.srv.port, local_hostname="client.example", timeout=10) as s:
                    s.ehlo()
                    s.user, s.password = "testuser", "testpass"
                    code, _ = s.auth(mech, getattr(s, "auth_" + mech.lower()), initial_response_ok=(mech == "PLAIN"))
                    self.assertEqual(code, 235)
                    self.assertEqual(s.sendmail("a@example.com", ["b@example.com"], b"Subject: x\r\n\r\nhi\r\n"), {})

    def test_smtplib_bad_login(self):
        with smtplib.SMTP("127.0.0.1", self.srv.port, local_hostname="client.example", timeout=10) as s:
            with self.assertRaises(smtplib.SMTPAuthenticationError) as cm:
                s.login("testuser", "nope")
            self.assertEqual(cm.exception.smtp_code, 535)
            with self.assertRaises(smtplib.SMTPSenderRefused) as cm:
                s.sendmail("a@example.com", ["b@example.com"], b"x\r\n")
            self.assertEqual(cm.exception.smtp_code, 530)


class AuthOptional(SharedServerTest):
    SCRIPT = script(authOptional=True, allowInsecureAuth=True, hooks=AUTH_HOOKS)

    def test_mail_without_auth(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")

    def test_auth_still_works(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("AUTH PLAIN " + GOOD_PLAIN), 235, "2.7.0")
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")

    def test_many_failures_never_succeed(self):
        with self.ehlo_client() as c:
            for i in range(30):
                r = c.cmd("AUTH PLAIN " + b64("\0testuser\0wrong%d" % i))
                if r.code == 421:
                    c.expect_close()
                    break
                self.assertReply(r, 535, "5.7.8")


class AuthMaildir(E2ETest):
    """Real clients authenticating, message stored by the default script."""

    def server(self):
        src = ('local o = dofile(%r)\n'
               'o.allowInsecureAuth = true\no.authOptional = false\n'
               'o.onAuth = function(auth, session)\n'
               '  if auth.username == "testuser" and auth.password == "testpass" then return {user = "testuser"} end\n'
               '  return nil, "bad"\nend\nreturn o\n') % __import__("harness").DEFAULT_SCRIPT
        return Server(src)

    def test_swaks_auth(self):
        with self.server() as srv:
            for mech in ["PLAIN", "LOGIN"]:
                with self.subTest(mech=mech):
                    before = set(srv.maildir_new())
                    r = self.run_cmd(["swaks", "--server", "127.0.0.1:%d" % srv.port, "--to", "b@example.com",
                                      "--from", "a@example.com", "--auth", mech, "--auth-user", "testuser",
                                      "--auth-password", "testpass", "--body", "auth via %s" % mech,
                                      "--h-Subject", "swaks auth"])
                    self.assertEqual(r.returncode, 0, r.stdout.decode(errors="replace")[-2000:])
                    new = wait_for(lambda: set(srv.maildir_new()) - before)
                    self.assertEqual(len(new), 1)
                    with open(new.pop(), "rb") as f:
                        _, body = split_received(f.read())
                    self.assertIn(("auth via %s" % mech).encode(), body)
            r = self.run_cmd(["swaks", "--server", "127.0.0.1:%d" % srv.port, "--to", "b@example.com",
                              "--from", "a@example.com", "--auth", "PLAIN", "--auth-user", "testuser",
                              "--auth-password", "wrong"])
            self.assertNotEqual(r.returncode, 0)
            self.assertIn(b"535", r.stdout)

    def test_curl_auth(self):
        with self.server() as srv:
            msg = b"Subject: curl auth\r\n\r\nhello from curl\r\n"
            r = self.run_cmd(["curl", "-sS", "smtp://127.0.0.1:%d/client.example" % srv.port,
                              "--user", "testuser:testpass", "--mail-from", "a@example.com",
                              "--mail-rcpt", "b@example.com", "--upload-file", "-"], input=msg)
            self.assertEqual(r.returncode, 0, r.stderr)
            files = wait_for(srv.maildir_new)
            self.assertEqual(len(files), 1)
            with open(files[0], "rb") as f:
                self.assertEqual(split_received(f.read())[1], msg)
            r = self.run_cmd(["curl", "-sS", "smtp://127.0.0.1:%d/client.example" % srv.port,
                              "--user", "testuser:nope", "--mail-from", "a@example.com",
                              "--mail-rcpt", "b@example.com", "--upload-file", "-"], input=msg)
            self.assertEqual(r.returncode, 67, r.stderr)  # CURLE_LOGIN_DENIED
            self.assertEqual(len(srv.maildir_new()), 1)



def client_from(srv, source):
    """A client whose connection comes from source (127.0.0.x)."""
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10, source_address=(source, 0))
    return srv.client(sock=sock)


class AuthFailuresPerAddress(E2ETest):
    """issue 15: failed AUTH is counted per client address across sessions
    (maxAuthFailuresPerIp within authFailureWindow); over it AUTH gets
    454 4.7.0 without onAuth running, until the window has passed. Other
    addresses are not affected; successes do not count."""

    def fail_once(self, srv, code=535, source="127.0.0.1"):
        with client_from(srv, source) as c:
            c.ehlo()
            self.assertReply(c.cmd("AUTH PLAIN " + b64("\0testuser\0wrong")), code)

    def auth_good(self, srv, source="127.0.0.1"):
        with client_from(srv, source) as c:
            c.ehlo()
            return c.cmd("AUTH PLAIN " + GOOD_PLAIN)

    def test_default_ten_failures_then_refused_without_onauth(self):
        with Server(script(allowInsecureAuth=True, hooks=AUTH_HOOKS)) as srv:
            for _ in range(10):
                self.fail_once(srv)
            calls = len(srv.events("auth"))
            self.assertEqual(calls, 10)
            with srv.client() as c:
                c.ehlo()
                self.assertReply(c.cmd("AUTH PLAIN " + GOOD_PLAIN), 454, "4.7.0")
                self.assertReply(c.cmd("AUTH LOGIN"), 454, "4.7.0")
                # the session goes on: mail without AUTH is still possible here
                self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
            self.assertEqual(len(srv.events("auth")), calls, "onAuth must not run for a refused address")
            self.assertReply(self.auth_good(srv, "127.0.0.2"), 235, "2.7.0")

    def test_window_passes_and_successes_do_not_count(self):
        opts = dict(allowInsecureAuth=True, hooks=AUTH_HOOKS, maxAuthFailuresPerIp=3, authFailureWindow=2)
        with Server(script(**opts)) as srv:
            self.fail_once(srv)
            self.fail_once(srv)
            for _ in range(4):
                self.assertReply(self.auth_good(srv), 235, "2.7.0")
            self.fail_once(srv)  # the third failure: still onAuth's 535
            self.assertReply(self.auth_good(srv), 454, "4.7.0")
            self.fail_once(srv, 535, "127.0.0.2")
            self.assertReply(self.auth_good(srv, "127.0.0.2"), 235, "2.7.0")
            time.sleep(2.5)
            self.assertReply(self.auth_good(srv), 235, "2.7.0")

    def test_temporary_failures_do_not_count(self):
        with Server(script(allowInsecureAuth=True, hooks=AUTH_HOOKS, maxAuthFailuresPerIp=2)) as srv:
            for _ in range(4):
                with srv.client() as c:
                    c.ehlo()
                    self.assertReply(c.cmd("AUTH PLAIN " + b64("\0custom\0x")), 454, "4.7.0")
            self.assertReply(self.auth_good(srv), 235, "2.7.0")
            self.assertEqual(len(srv.events("auth")), 5)

    def test_off(self):
        with Server(script(allowInsecureAuth=True, hooks=AUTH_HOOKS, maxAuthFailuresPerIp=False)) as srv:
            for _ in range(12):
                self.fail_once(srv)
            self.assertReply(self.auth_good(srv), 235, "2.7.0")
