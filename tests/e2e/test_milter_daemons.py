"""Declared milters (issue 19) with the real daemons of milterd.py, through
luasmtpd and the example scripts, with smtplib as the client:

- scripts/submission-dkim.lua: an authenticated user's message comes out
  of the Maildir DKIM-signed by OpenDKIM (sign mode), the rest of it byte
  for byte as sent;
- scripts/inbound-checks.lua: that signed message sent to an MX gets
  OpenDKIM's (verify mode) Authentication-Results with dkim=pass, and
  dkim=fail after one body byte changed; OpenDMARC's result with the
  policy our dnsmasq publishes; rspamd's X-Spam-*/X-Rspamd-* headers; the
  GTUBE message is refused with rspamd's 554 and nothing is stored. The
  body is stored byte-identical;
- faults with the real daemons: one stopped (down) or frozen by SIGSTOP
  (slow) gives milterDefaultAction within the timeouts, never a hung
  session, and the log names the milter."""

import os
import re
import shutil
import signal
import smtplib
import ssl
import subprocess
import tempfile
import time

import milterd
from harness import E2ETest, ROOT, Server, maildir_new, script_with, split_received
from tlsutil import certs

SUBMISSION = os.path.join(ROOT, "scripts", "submission-dkim.lua")
INBOUND = os.path.join(ROOT, "scripts", "inbound-checks.lua")
DOMAIN = milterd.DKIM_DOMAIN
PASSWORD = "correct horse"
FAULT_TIMEOUT = 2   # seconds: the milter timeouts of the fault tests
HANG_LIMIT = 15     # a session answered later than this counts as hung

MESSAGE = ("From: Alice <alice@%s>\r\n"
           "To: Bob <bob@example.org>\r\n"
           "Subject: through the milters\r\n"
           "Date: Sun, 06 Dec 2026 08:00:00 +0000\r\n"
           "Message-ID: <daemons.1@%s>\r\n"
           "MIME-Version: 1.0\r\n"
           "Content-Type: text/plain; charset=utf-8\r\n"
           "\r\n"
           "Hello Bob,\r\n"
           "\r\n"
           "every byte of this body is signed, even the trailing spaces   \r\n"
           ".a line that starts with a dot\r\n" % (DOMAIN, DOMAIN)).encode()


def users_file(path):
    """A users file for auth-file.lua, the hash made by openssl."""
    h = subprocess.run(["openssl", "passwd", "-6", "-salt", "milterd1", PASSWORD], stdout=subprocess.PIPE,
                       check=True, timeout=20).stdout.decode().strip()
    with open(path, "w") as f:
        f.write("alice:%s\n" % h)
    return path


def stored(srv, count=1):
    """The newest message in srv's Maildir without luasmtpd's Received."""
    files = maildir_new(srv.maildir)
    if len(files) != count:
        raise AssertionError("%d message(s) stored, expected %d" % (len(files), count))
    with open(files[-1], "rb") as f:
        return split_received(f.read())[1]


def fields(message):
    """The header fields of a message: [(lower-cased name, unfolded value)]."""
    head = message.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    return [(n.lower(), re.sub(r"\s+", " ", v).strip())
            for n, v in re.findall(r"(?m)^([^:\s][^:]*):([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", head)]


def values(message, name):
    return [v for n, v in fields(message) if n == name]


def body(message):
    return message.split(b"\r\n\r\n", 1)[1]


def send(port, message, rcpt="bob@example.org", login=False):
    """One message by smtplib; returns {} or raises smtplib's error."""
    with smtplib.SMTP("localhost", port, timeout=HANG_LIMIT) as s:
        s.ehlo("client.example")
        if login:
            s.starttls(context=ssl.create_default_context(cafile=certs().ca))
            s.ehlo("client.example")
            s.login("alice", PASSWORD)
        return s.sendmail("alice@" + DOMAIN, [rcpt], message)


class MilterDaemons(E2ETest):
    @classmethod
    def setUpClass(cls):
        cls.key = milterd.make_dkim_key()
        cls.dns = milterd.start_milter_dns({cls.key.dns_name: cls.key.record,
                                            "_dmarc." + DOMAIN: milterd.dmarc_record("reject")})
        cls.signer = milterd.start_opendkim("s", cls.key)
        cls.verifier = milterd.start_opendkim("v", cls.key, dns=cls.dns)
        cls.dmarc = milterd.start_opendmarc(cls.dns)
        cls.rspamd = milterd.start_rspamd(cls.dns)
        cls.users = tempfile.mkdtemp(prefix="luasmtpd-users-")
        cls.submission = Server(script_with(SUBMISSION, **certs().pair()), env={
            "LUASMTPD_DKIM_MILTER": cls.signer.socket,
            "LUASMTPD_USERS": users_file(os.path.join(cls.users, "users"))})
        cls.inbound = Server(INBOUND, env={"LUASMTPD_MILTERS": " ".join(
            m.socket for m in (cls.verifier, cls.dmarc, cls.rspamd))})
        cls.signed = None

    @classmethod
    def tearDownClass(cls):
        for x in (cls.submission, cls.inbound, cls.signer, cls.verifier, cls.dmarc, cls.rspamd, cls.dns):
            x.stop()
        shutil.rmtree(cls.users, ignore_errors=True)

    def diagnostics(self):
        return "\n".join(m.diagnostics() for m in (self.rspamd,)) + "\n" + self.inbound.log()[-3000:]

    def signed_message(self):
        """MESSAGE sent through the submission server, as it stored it."""
        if MilterDaemons.signed is None:
            before = len(maildir_new(self.submission.maildir))
            self.assertEqual(send(self.submission.port, MESSAGE, login=True), {})
            MilterDaemons.signed = stored(self.submission, before + 1)
        return MilterDaemons.signed

    def inbound_stores(self, message):
        before = len(maildir_new(self.inbound.maildir))
        self.assertEqual(send(self.inbound.port, message), {})
        return stored(self.inbound, before + 1)

    def test_submission_signs_an_authenticated_users_message(self):
        signed = self.signed_message()
        self.assertTrue(signed.startswith(b"DKIM-Signature:"), signed[:300])
        self.assertTrue(signed.endswith(MESSAGE), "not the sent bytes after the signature:\n%r" % signed)
        sig = values(signed, "dkim-signature")
        self.assertEqual(len(sig), 1, sig)
        self.assertIn("d=%s;" % DOMAIN, sig[0])
        self.assertIn("s=%s;" % self.key.selector, sig[0])

    def test_submission_needs_auth_so_nothing_goes_unsigned(self):
        with self.assertRaises(smtplib.SMTPSenderRefused) as e:
            send(self.submission.port, MESSAGE)
        self.assertEqual(e.exception.smtp_code, 530)

    def test_inbound_dkim_pass_dmarc_and_spam_headers_body_unchanged(self):
        signed = self.signed_message()
        got = self.inbound_stores(signed)
        self.assertEqual(body(got), body(signed))
        ar = values(got, "authentication-results")
        dkim = [v for v in ar if v.startswith(milterd.OPENDKIM_AUTHSERV + ";")]
        self.assertEqual(len(dkim), 1, ar)
        self.assertIn("dkim=pass", dkim[0])
        self.assertIn("header.d=%s" % DOMAIN, dkim[0])
        dmarc = [v for v in ar if v.startswith(milterd.OPENDMARC_AUTHSERV + ";")]
        self.assertEqual(len(dmarc), 1, ar)
        self.assertIn("p=reject", dmarc[0])  # the policy from the test's dnsmasq
        self.assertIn("header.from=%s" % DOMAIN, dmarc[0])
        status = values(got, "x-spam-status")
        self.assertEqual(len(status), 1, fields(got))
        self.assertTrue(status[0].startswith("No, score="), status)
        self.assertEqual(len(values(got, "x-rspamd-queue-id")), 1, fields(got))
        # every field that was sent is still there, in its order
        sent = fields(signed)
        kept = [f for f in fields(got) if f in sent]
        self.assertEqual(kept, sent)

    def test_inbound_dmarc_pass_reads_opendkims_result(self):
        """OpenDMARC comes after OpenDKIM (Postfix's smtpd_milters order)
        and sees the Authentication-Results it added, as a later milter
        sees an earlier one's header changes in Postfix. NOT PASSING with
        i19-milter's smtp.milters: every milter gets the message as
        received, so OpenDMARC finds no DKIM result (dmarc=fail)."""
        got = self.inbound_stores(self.signed_message())
        dmarc = [v for v in values(got, "authentication-results")
                 if v.startswith(milterd.OPENDMARC_AUTHSERV + ";")]
        self.assertEqual(len(dmarc), 1, fields(got))
        self.assertIn("dmarc=pass", dmarc[0])

    def test_inbound_dkim_fail_after_one_body_byte_changed(self):
        signed = self.signed_message()
        tampered = signed.replace(b"Hello Bob,", b"Hello Bob.")
        self.assertEqual(len(tampered), len(signed))
        self.assertNotEqual(tampered, signed)
        got = self.inbound_stores(tampered)
        self.assertEqual(body(got), body(tampered))
        dkim = [v for v in values(got, "authentication-results")
                if v.startswith(milterd.OPENDKIM_AUTHSERV + ";")]
        self.assertEqual(len(dkim), 1, fields(got))
        self.assertIn("dkim=fail", dkim[0])

    def test_inbound_gtube_is_refused_with_rspamds_reply(self):
        before = len(maildir_new(self.inbound.maildir))
        gtube = MESSAGE + milterd.GTUBE.encode() + b"\r\n"
        with self.assertRaises(smtplib.SMTPDataError) as e:
            send(self.inbound.port, gtube)
        self.assertEqual(e.exception.smtp_code, 554, self.diagnostics())
        self.assertTrue(e.exception.smtp_error.startswith(b"5.7.1"), e.exception.smtp_error)
        self.assertEqual(len(maildir_new(self.inbound.maildir)), before)


class MilterDaemonFaults(E2ETest):
    """A real OpenDKIM (verify mode) that is stopped or frozen."""

    @classmethod
    def setUpClass(cls):
        cls.key = milterd.make_dkim_key()
        cls.dns = milterd.start_milter_dns({cls.key.dns_name: cls.key.record})

    @classmethod
    def tearDownClass(cls):
        cls.dns.stop()

    def inbound(self, milter, action=None):
        opts = dict(milterConnectTimeout=FAULT_TIMEOUT, milterCommandTimeout=FAULT_TIMEOUT,
                    milterContentTimeout=FAULT_TIMEOUT)
        if action:
            opts["milterDefaultAction"] = action
        srv = Server(script_with(INBOUND, **opts), env={"LUASMTPD_MILTERS": milter.socket})
        self.addCleanup(srv.stop)
        return srv

    def verifier(self):
        v = milterd.start_opendkim("v", self.key, dns=self.dns)
        self.addCleanup(v.stop)
        return v

    def refused_in_time(self, srv, code):
        t0 = time.monotonic()
        with self.assertRaises(smtplib.SMTPException) as e:
            send(srv.port, MESSAGE)
        elapsed = time.monotonic() - t0
        self.assertLess(elapsed, HANG_LIMIT)
        self.assertEqual(getattr(e.exception, "smtp_code", None), code, repr(e.exception))
        self.assertEqual(maildir_new(srv.maildir), [])
        return elapsed

    def test_down_is_the_default_tempfail(self):
        v = self.verifier()
        v.stop()
        srv = self.inbound(v)
        self.refused_in_time(srv, 451)
        self.assertIn("milter failed", srv.log())
        self.assertIn(v.socket, srv.log())

    def test_down_with_accept_stores_without_it(self):
        v = self.verifier()
        v.stop()
        srv = self.inbound(v, "accept")
        self.assertEqual(send(srv.port, MESSAGE), {})
        got = stored(srv)
        self.assertTrue(got.endswith(MESSAGE), got)
        self.assertEqual(values(got, "authentication-results"), [])

    def test_frozen_times_out_to_the_default_action(self):
        v = self.verifier()
        os.kill(v.pid, signal.SIGSTOP)
        self.addCleanup(os.kill, v.pid, signal.SIGCONT)  # before its stop (cleanups run last first)
        srv = self.inbound(v)
        elapsed = self.refused_in_time(srv, 451)
        self.assertGreaterEqual(elapsed, FAULT_TIMEOUT * 0.9)  # it waited for the milter first
        self.assertIn("milter failed", srv.log())

    def test_frozen_with_accept_stores_after_the_timeout(self):
        v = self.verifier()
        srv = self.inbound(v, "accept")
        os.kill(v.pid, signal.SIGSTOP)
        self.addCleanup(os.kill, v.pid, signal.SIGCONT)
        t0 = time.monotonic()
        self.assertEqual(send(srv.port, MESSAGE), {})
        self.assertLess(time.monotonic() - t0, HANG_LIMIT)
        got = stored(srv)
        self.assertTrue(got.endswith(MESSAGE), got)
