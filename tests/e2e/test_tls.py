"""STARTTLS (RFC 3207): advertisement, the 220 and the handshake, the
session reset after it, bytes pipelined after STARTTLS (CVE-2011-0411),
session.secure / servername / tlsOptions / transmissionType in every hook,
onSecure's conn object, AUTH only after TLS (538 before), onSecure
rejection."""

import base64
import smtplib
import ssl

from harness import Server, SharedServerTest
from tlsutil import (DEV_CERT, RECORD_HOOKS, certs, client_context, ehlo_keywords, mine, peer_cn, read, starttls,
                     tls_script)


def b64(s):
    return base64.b64encode(s.encode()).decode()


class StartTLS(SharedServerTest):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server(tls_script(hooks=RECORD_HOOKS, **certs().pair("localhost")))

    def tls_client(self, hostname="localhost", ctx=None):
        c = self.ehlo_client()
        starttls(c, ctx, hostname)
        return c

    def test_advertised_before_tls_only(self):
        with self.client() as c:
            kw = ehlo_keywords(c.ehlo())
            self.assertIn("STARTTLS", kw)
            self.assertNotIn("AUTH", kw, "AUTH must not be offered before TLS (allowInsecureAuth=false)")
            starttls(c)
            r = c.ehlo()
            self.assertReply(r, 250)
            kw = ehlo_keywords(r)
            self.assertNotIn("STARTTLS", kw)
            auth = [ln for ln in r.lines if ln.upper().startswith("AUTH ")]
            self.assertEqual(len(auth), 1, r.lines)
            self.assertEqual(auth[0].upper().split()[1:], ["PLAIN", "LOGIN"])

    def test_reply_220_and_cert(self):
        with self.ehlo_client() as c:
            s = starttls(c)  # asserts 220 2.0.0
            self.assertEqual(peer_cn(s), "localhost")
            self.assertEqual(s.version(), "TLSv1.3")

    def test_session_reset_mail_before_ehlo(self):
        with self.tls_client() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 503, "5.5.1")
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")

    def test_pre_tls_transaction_forgotten(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("MAIL FROM:<before@example.com>"), 250, "2.1.0")
            starttls(c)
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("RCPT TO:<b@example.com>"), 503, "5.5.1")
            self.assertReply(c.cmd("DATA"), 503, "5.5.1")
            self.assertReply(c.cmd("MAIL FROM:<after@example.com>"), 250, "2.1.0")

    def test_pipelined_after_starttls_discarded(self):
        # CVE-2011-0411: NOOP in the same packet as STARTTLS must never run,
        # neither in plaintext nor after the handshake.
        with self.ehlo_client() as c:
            c.send(b"STARTTLS\r\nNOOP\r\n")
            r = c.read_reply()
            self.assertReply(r, 220, "2.0.0")
            self.assertEqual(c.buf, b"", "plaintext after the 220")
            c.sock = client_context().wrap_socket(c.sock, server_hostname="localhost")
            c.no_reply(1.5)
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")

    def test_pipelined_mail_after_starttls_discarded(self):
        with self.ehlo_client() as c:
            c.send(b"STARTTLS\r\nMAIL FROM:<smuggled@example.com>\r\nRCPT TO:<x@example.com>\r\n")
            self.assertReply(c.read_reply(), 220, "2.0.0")
            c.sock = client_context().wrap_socket(c.sock, server_hostname="localhost")
            c.no_reply(1.0)
            self.assertReply(c.ehlo(), 250)
            # the smuggled MAIL did not start a transaction
            self.assertReply(c.cmd("RCPT TO:<x@example.com>"), 503, "5.5.1")
        self.assertEqual(mine(self.srv.events("mail"), c.local_port), [])

    def test_plaintext_instead_of_client_hello(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("STARTTLS"), 220, "2.0.0")
            c.send(b"EHLO x\r\n")
            got = c.expect_close(5)
            self.assertNotIn(b"250", got)
        # the server goes on
        with self.tls_client() as c2:
            self.assertReply(c2.ehlo(), 250)

    def test_starttls_when_secure(self):
        with self.tls_client() as c:
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("STARTTLS"), 503, "5.5.1")
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")

    def test_starttls_with_argument(self):
        with self.ehlo_client() as c:
            r = c.cmd("STARTTLS now")
            self.assertReply(r, 501)
            self.assertEqual(r.enh[:2] if r.enh else None, "5.", r.raw)
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")  # still plaintext

    def test_session_fields_before_and_after(self):
        with self.ehlo_client() as c:
            c.transaction(b"Subject: plain\r\n\r\nx\r\n")
            starttls(c)
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.transaction(b"Subject: tls\r\n\r\ny\r\n"), 250)
            cipher = c.sock.cipher()[0]
        for kind in ["mail", "rcpt", "data"]:
            with self.subTest(hook=kind):
                evs = mine(self.srv.events(kind), c.local_port)
                self.assertEqual(len(evs), 2, evs)
                before, after = evs
                self.assertIs(before["secure"], False)
                self.assertEqual(before["tlsOptionsType"], "nil")
                self.assertIsNone(before.get("servername"))
                self.assertEqual(before["transmissionType"], "ESMTP")
                self.assertIs(after["secure"], True)
                self.assertEqual(after["servername"], "localhost")
                self.assertEqual(after["transmissionType"], "ESMTPS")
                t = after["tlsOptions"]
                self.assertEqual(t["version"], "TLSv1.3")
                self.assertEqual(t["name"], cipher)
                self.assertTrue(t["standardName"].startswith("TLS_"), t)
        self.assertEqual([e["body"] for e in mine(self.srv.events("data"), c.local_port)],
                         ["Subject: plain\r\n\r\nx\r\n", "Subject: tls\r\n\r\ny\r\n"])

    def test_no_sni_servername_nil(self):
        # Python sends no SNI for an IP address; the certificate has IP:127.0.0.1
        with self.tls_client(hostname="127.0.0.1") as c:
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
        [ev] = mine(self.srv.events("mail"), c.local_port)
        self.assertIs(ev["secure"], True)
        self.assertIsNone(ev.get("servername"), ev)
        [sec] = mine(self.srv.events("secure"), c.local_port)
        self.assertIsNone(sec["session"].get("servername"), sec)

    def test_on_secure_conn(self):
        with self.tls_client() as c:
            self.assertReply(c.ehlo(), 250)
            name, proto, _ = c.sock.cipher()
        evs = mine(self.srv.events("secure"), c.local_port)
        self.assertEqual(len(evs), 1, evs)
        s, conn = evs[0]["session"], evs[0]["conn"]
        self.assertIs(s["secure"], True)
        self.assertEqual(s["servername"], "localhost")
        self.assertEqual(s["tlsOptions"]["version"], "TLSv1.3")
        self.assertTrue(conn["certOk"] and conn["cipherOk"] and conn["protocolOk"], conn)
        self.assertEqual(conn["certType"], "nil", "no client certificate was sent")
        self.assertIs(conn["authorized"], False)
        self.assertIsNone(conn.get("authorizationError"), "no certificate was requested")
        self.assertEqual(conn["protocol"], "TLSv1.3")
        self.assertEqual(conn["cipher"]["name"], name)
        self.assertEqual(conn["cipher"]["version"], "TLSv1.3")
        self.assertEqual(conn["cipher"]["standardName"], s["tlsOptions"]["standardName"])

    def test_on_secure_reject(self):
        ctx = client_context(check_hostname=False)
        with self.ehlo_client() as c:
            starttls(c, ctx, "deny.example")
            r = c.read_reply()
            self.assertReply(r, 554)
            c.expect_close(5)

    def test_auth_before_tls_538(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("AUTH PLAIN " + b64("\0testuser\0testpass")), 538, "5.7.11")
            self.assertReply(c.cmd("AUTH LOGIN"), 538, "5.7.11")
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
        self.assertEqual(mine(self.srv.events("auth"), c.local_port), [])

    def test_auth_after_starttls_raw(self):
        with self.tls_client() as c:
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("AUTH PLAIN " + b64("\0testuser\0wrong")), 535, "5.7.8")
            self.assertReply(c.cmd("AUTH PLAIN " + b64("\0testuser\0testpass")), 235, "2.7.0")
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")
        auth = mine(self.srv.events("auth"), c.local_port)
        self.assertEqual(len(auth), 2)
        self.assertIs(auth[1]["secure"], True)
        self.assertEqual(auth[1]["tlsOptions"]["version"], "TLSv1.3")
        self.assertEqual(auth[1]["servername"], "localhost")
        [m] = mine(self.srv.events("mail"), c.local_port)
        self.assertEqual(m["transmissionType"], "ESMTPSA")
        self.assertEqual(m["user"], "testuser")

    def test_smtplib_starttls_login(self):
        with smtplib.SMTP("127.0.0.1", self.srv.port, local_hostname="client.example", timeout=10) as s:
            s.ehlo()
            self.assertTrue(s.has_extn("starttls"))
            self.assertFalse(s.has_extn("auth"))
            code, _ = s.starttls(context=client_context(check_hostname=False))
            self.assertEqual(code, 220)
            s.ehlo()
            self.assertFalse(s.has_extn("starttls"))
            self.assertIn("PLAIN", s.esmtp_features.get("auth", "").upper())
            code, _ = s.login("testuser", "testpass")
            self.assertEqual(code, 235)
            self.assertEqual(s.sendmail("a@example.com", ["b@example.com"], b"Subject: smtplib tls\r\n\r\nhi\r\n"), {})
            port = s.sock.getsockname()[1]
        [d] = mine(self.srv.events("data"), port)
        self.assertEqual(d["transmissionType"], "ESMTPSA")
        self.assertEqual(d["user"], "testuser")
        self.assertEqual(d["body"], "Subject: smtplib tls\r\n\r\nhi\r\n")

    def test_smtplib_login_refused_before_tls(self):
        with smtplib.SMTP("127.0.0.1", self.srv.port, local_hostname="client.example", timeout=10) as s:
            s.ehlo()
            with self.assertRaises(smtplib.SMTPNotSupportedError):
                s.login("testuser", "testpass")  # AUTH not advertised

    def test_bad_server_cert_for_name(self):
        # the default certificate is for localhost: a client checking the
        # name mail.example.com refuses it (the server gives no other)
        with self.ehlo_client() as c:
            with self.assertRaises(ssl.SSLCertVerificationError):
                starttls(c, client_context(), "mail.example.com")


class DevelopmentCertificate(SharedServerTest):
    """A script that names no key or cert gets the development certificate
    (certs/dev/localhost.crt) and offers STARTTLS with it."""
    SCRIPT = None

    @classmethod
    def setUpClass(cls):
        cls.srv = Server(tls_script(hooks=RECORD_HOOKS))

    def test_dev_cert_is_default(self):
        with self.ehlo_client() as c:
            s = starttls(c, client_context(ca=DEV_CERT))
            self.assertEqual(s.getpeercert(binary_form=True), ssl.PEM_cert_to_DER_cert(read(DEV_CERT).decode()))
            self.assertEqual(peer_cn(s), "localhost")
            self.assertReply(c.ehlo(), 250)

    def test_test_ca_does_not_verify_it(self):
        with self.ehlo_client() as c:
            with self.assertRaises(ssl.SSLCertVerificationError):
                starttls(c, client_context())
