"""The next-hop fixtures of mta.py work, checked with Python's smtplib (a
client nobody here wrote) before the relay tests lean on them: Postfix
takes mail in plain and over STARTTLS with a certificate of our test CA
(verified; refused by a client that does not trust that CA) and stores it
byte for byte (modulo its trace headers and its LF line ends), SMTPUTF8 and
8-bit included, refusing unknown recipients at RCPT; Dovecot LMTP answers
per recipient after the data (one over quota, 552 5.2.2) and at RCPT (an
unknown user, 550 5.1.1), storing the good recipients' copies byte for byte;
stopping a fixture leaves no process of it running."""

import smtplib
import ssl

import mta
from harness import E2ETest
from tlsutil import certs

MESSAGE = (b"From: Sender <sender@example.com>\r\n"
           b"To: Alice <alice@postfix.test>\r\n"
           b"Subject: fixture check\r\n"
           b"\r\n"
           b"first line\r\n"
           b".a line that starts with a dot\r\n"
           b"..two dots\r\n"
           b"\r\n"
           b"last line\r\n")

UTF8_MESSAGE = ("From: Séverine <sévérine@example.com>\r\n"
                "To: José <jösé@postfix.test>\r\n"
                "Subject: ünïcödé\r\n"
                "MIME-Version: 1.0\r\n"
                "Content-Type: text/plain; charset=utf-8\r\n"
                "Content-Transfer-Encoding: 8bit\r\n"
                "\r\n"
                "Grüße aus Köln — 8-bit body\r\n").encode("utf-8")


def verifying_context(cafile=None):
    """A client context that verifies the server's certificate and name
    against cafile (or the system store when None)."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class PostfixFixture(E2ETest):
    @classmethod
    def setUpClass(cls):
        c = certs()
        cls.ca = c.ca
        cls.mta = mta.start_postfix(c.crt("localhost"), c.key("localhost"))

    @classmethod
    def tearDownClass(cls):
        cls.mta.stop()

    def smtp(self):
        s = smtplib.SMTP("localhost", self.mta.port, timeout=10)
        self.addCleanup(s.close)
        return s

    def test_plain_delivery_is_byte_exact(self):
        before = len(self.mta.files("alice"))
        s = self.smtp()
        self.assertEqual(s.sendmail("sender@example.com", ["alice@postfix.test"], MESSAGE), {})
        s.quit()
        data = self.mta.wait_message("alice", before + 1)
        self.assertIn(b"\nDelivered-To: alice@postfix.test\n", data)
        self.assertEqual(mta.strip_trace(data), mta.as_postfix_stores(MESSAGE))

    def test_starttls_with_our_ca_is_verified_and_delivers(self):
        before = len(self.mta.files("bob"))
        s = self.smtp()
        s.ehlo()
        self.assertTrue(s.has_extn("starttls"))
        code, _ = s.starttls(context=verifying_context(self.ca))
        self.assertEqual(code, 220)
        self.assertEqual(s.sock.getpeercert()["subject"], ((("commonName", "localhost"),),))
        self.assertEqual(s.sendmail("sender@example.com", ["bob@postfix.test"], MESSAGE), {})
        s.quit()
        data = self.mta.wait_message("bob", before + 1)
        # Postfix's own Received line says the message came over TLS
        self.assertRegex(data, rb"\n\tby mx\.postfix\.test \(Postfix\) with ESMTPS id ")
        self.assertEqual(mta.strip_trace(data), mta.as_postfix_stores(MESSAGE))

    def test_starttls_without_our_ca_fails_verification(self):
        s = self.smtp()
        s.ehlo()
        with self.assertRaises(ssl.SSLCertVerificationError):
            s.starttls(context=verifying_context())

    def test_smtputf8_and_8bit_delivery_is_byte_exact(self):
        box = "utf8"
        before = len(self.mta.files(box))
        s = self.smtp()
        s.ehlo()
        self.assertTrue(s.has_extn("smtputf8"))
        refused = s.sendmail("sévérine@example.com", [self.mta.mailboxes[box]], UTF8_MESSAGE,
                             mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        self.assertEqual(refused, {})
        s.quit()
        data = self.mta.wait_message(box, before + 1)
        self.assertIn("\nDelivered-To: jösé@postfix.test\n".encode("utf-8"), data)
        self.assertEqual(mta.strip_trace(data), mta.as_postfix_stores(UTF8_MESSAGE))

    def test_unknown_recipient_is_refused_at_rcpt(self):
        s = self.smtp()
        s.ehlo()
        self.assertEqual(s.mail("sender@example.com")[0], 250)
        code, text = s.rcpt("nobody@postfix.test")
        self.assertEqual(code, 550, text)
        self.assertTrue(text.startswith(b"5.1.1 "), text)
        s.quit()


class DovecotFixture(E2ETest):
    @classmethod
    def setUpClass(cls):
        cls.mta = mta.start_dovecot_lmtp(users=("alice", "bob"), over_quota=("full",))

    @classmethod
    def tearDownClass(cls):
        cls.mta.stop()

    def test_per_recipient_replies_and_byte_exact_copies(self):
        counts = {u: len(self.mta.files(u)) for u in ("alice", "bob", "full")}
        s = smtplib.LMTP("127.0.0.1", self.mta.port, timeout=10)
        self.addCleanup(s.close)
        code, _ = s.ehlo()  # smtplib's LMTP class says LHLO
        self.assertEqual(code, 250)
        self.assertEqual(s.mail("sender@example.com")[0], 250)
        rcpt = [s.rcpt(a) for a in ("alice@lmtp.test", "full@lmtp.test", "nobody@lmtp.test", "bob@lmtp.test")]
        self.assertEqual([c for c, _ in rcpt], [250, 250, 550, 250], rcpt)
        self.assertTrue(rcpt[2][1].startswith(b"5.1.1 "), rcpt[2])
        # one reply per accepted recipient, in RCPT order (RFC 2033 4.2)
        replies = [s.data(MESSAGE), s.getreply(), s.getreply()]
        self.assertEqual([c for c, _ in replies], [250, 552, 250], replies)
        self.assertTrue(replies[1][1].startswith(b"5.2.2 <full@lmtp.test> "), replies[1])
        s.quit()
        for user in ("alice", "bob"):
            data = self.mta.wait_message(user, counts[user] + 1)
            self.assertEqual(mta.strip_trace(data), MESSAGE)
        self.assertEqual(len(self.mta.files("full")), counts["full"])


class FixtureStop(E2ETest):
    def test_stop_leaves_no_process_and_no_listener(self):
        c = certs()
        for hop in (mta.start_postfix(c.crt("localhost"), c.key("localhost")), mta.start_dovecot_lmtp()):
            pgid = hop.service.proc.pid
            self.assertTrue(mta.group_alive(pgid))
            hop.stop()
            self.assertEqual(mta.group_alive(pgid), [])
            with self.assertRaises(ConnectionRefusedError):
                smtplib.SMTP("127.0.0.1", hop.port, timeout=5)
