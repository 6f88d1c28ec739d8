"""The milter daemons of milterd.py work, checked with a minimal milter
probe before the milter tests lean on them: each speaks milter version 6
on its port; OpenDKIM signs the mail of SMTP-authenticated clients only
and verifies with the key the test's dnsmasq publishes (dkim=pass, and
dkim=fail after one body byte changed); OpenDMARC reads the policy from
that dnsmasq and trusts OpenDKIM's Authentication-Results, not anyone's;
rspamd rejects GTUBE with its reply and adds its headers to a clean
message; stopping a daemon leaves no process of it running."""

import re

import milterd
from harness import E2ETest
from mta import group_alive

FROM = milterd.DKIM_DOMAIN
MESSAGE = ("From: Alice <alice@%s>\r\n"
           "To: Bob <bob@example.org>\r\n"
           "Subject: milter fixture check\r\n"
           "Date: Sun, 06 Dec 2026 08:00:00 +0000\r\n"
           "Message-ID: <fixture.1@%s>\r\n"
           "\r\n"
           "Hello Bob,\r\n"
           "\r\n"
           "a body whose every byte is signed.\r\n" % (FROM, FROM)).encode()


def converse(milter, message, **kw):
    p = milterd.MilterProbe(milter.port)
    try:
        version, actions, _ = p.negotiate()
        final, mods = p.message(message, **kw)
    finally:
        p.close()
    return version, actions, final, mods


def compact(value):
    return re.sub(r"\s+", " ", value)


class MilterFixtureTest(E2ETest):
    def assertStopsClean(self, milter):
        pgid = milter.pid
        milter.stop()
        self.assertEqual(group_alive(pgid), [], "%s left processes behind" % milter.service.name)


class OpenDkimFixture(MilterFixtureTest):
    @classmethod
    def setUpClass(cls):
        cls.key = milterd.make_dkim_key()
        cls.dns = milterd.start_milter_dns({cls.key.dns_name: cls.key.record})
        cls.signer = milterd.start_opendkim("s", cls.key)
        cls.verifier = milterd.start_opendkim("v", cls.key, dns=cls.dns)

    @classmethod
    def tearDownClass(cls):
        cls.signer.stop()
        cls.verifier.stop()
        cls.dns.stop()

    def test_signs_authenticated_mail_with_the_generated_key(self):
        version, actions, _, _ = converse(self.signer, MESSAGE)
        self.assertEqual(version, 6)
        self.assertTrue(actions & 0x1, "OpenDKIM may not add headers: 0x%x" % actions)
        sig = compact(milterd.probe_sign(self.signer, MESSAGE))
        self.assertIn("d=%s;" % self.key.domain, sig)
        self.assertIn("s=%s;" % self.key.selector, sig)
        self.assertIn("a=rsa-sha256;", sig)

    def test_does_not_sign_unauthenticated_mail(self):
        _, _, final, mods = converse(self.signer, MESSAGE)
        self.assertEqual(final, (b"a", b""))
        self.assertNotIn("dkim-signature", milterd.added_headers(mods))

    def verify(self, message):
        _, _, final, mods = converse(self.verifier, message)
        self.assertEqual(final, (b"a", b""))
        ar = milterd.added_headers(mods).get("authentication-results", [])
        self.assertEqual(len(ar), 1, mods)
        return compact(ar[0]).strip()

    def test_verifies_pass_with_the_key_from_dns_and_fail_after_a_body_change(self):
        signed = milterd.with_header("DKIM-Signature", milterd.probe_sign(self.signer, MESSAGE), MESSAGE)
        ar = self.verify(signed)
        self.assertTrue(ar.startswith(milterd.OPENDKIM_AUTHSERV + ";"), ar)
        self.assertIn("dkim=pass", ar)
        self.assertIn("header.d=%s" % self.key.domain, ar)
        tampered = signed.replace(b"every byte", b"every Byte")
        self.assertNotEqual(tampered, signed)
        ar = self.verify(tampered)
        self.assertIn("dkim=fail", ar)
        self.assertIn("signature verification failed", ar)


class OpenDmarcFixture(MilterFixtureTest):
    @classmethod
    def setUpClass(cls):
        cls.dns = milterd.start_milter_dns({"_dmarc." + FROM: milterd.dmarc_record("quarantine")})
        cls.dmarc = milterd.start_opendmarc(cls.dns)

    @classmethod
    def tearDownClass(cls):
        cls.dmarc.stop()
        cls.dns.stop()

    def result(self, message):
        version, _, final, mods = converse(self.dmarc, message)
        self.assertEqual(version, 6)
        self.assertIn(final[0], (b"a", b"c"), final)  # it rejects nothing
        ar = milterd.added_headers(mods).get("authentication-results", [])
        self.assertEqual(len(ar), 1, mods)
        self.assertTrue(ar[0].strip().startswith(milterd.OPENDMARC_AUTHSERV + ";"), ar)
        return compact(ar[0])

    def dkim_result(self, authserv, result):
        return milterd.with_header("Authentication-Results",
                           " %s; dkim=%s header.d=%s header.i=@%s" % (authserv, result, FROM, FROM),
                           MESSAGE)

    def test_passes_on_trusted_dkim_pass_with_the_policy_from_dns(self):
        ar = self.result(self.dkim_result(milterd.OPENDKIM_AUTHSERV, "pass"))
        self.assertIn("dmarc=pass", ar)
        self.assertIn("p=quarantine", ar)  # only the test's dnsmasq says so
        self.assertIn("header.from=%s" % FROM, ar)

    def test_fails_without_dkim_and_ignores_untrusted_results(self):
        self.assertIn("dmarc=fail", self.result(MESSAGE))
        self.assertIn("dmarc=fail", self.result(self.dkim_result("forged.example", "pass")))


class RspamdFixture(MilterFixtureTest):
    @classmethod
    def setUpClass(cls):
        cls.dns = milterd.start_milter_dns({})
        cls.rspamd = milterd.start_rspamd(cls.dns)

    @classmethod
    def tearDownClass(cls):
        cls.rspamd.stop()
        cls.dns.stop()

    def test_adds_its_headers_to_a_clean_message(self):
        version, _, final, mods = converse(self.rspamd, MESSAGE, macros_mail={"i": "QCLEAN1"})
        self.assertEqual(version, 6)
        self.assertEqual(final, (b"a", b""), self.rspamd.diagnostics())
        added = milterd.added_headers(mods)
        self.assertTrue(added.get("x-spam-status", [""])[0].startswith("No, score="), added)
        self.assertEqual(added.get("x-rspamd-queue-id"), ["QCLEAN1"], added)
        self.assertIn("x-spamd-result", added)

    def test_rejects_gtube_with_its_reply(self):
        gtube = MESSAGE + milterd.GTUBE.encode() + b"\r\n"
        _, _, final, mods = converse(self.rspamd, gtube)
        self.assertEqual(final[0], b"y", (final, mods))
        code = final[1].rstrip(b"\0").decode()
        self.assertTrue(code.startswith("554 5.7.1 "), code)


class StopLeavesNothing(MilterFixtureTest):
    def test_each_daemon_stops_with_its_children(self):
        dns = milterd.start_milter_dns({})
        self.addCleanup(dns.stop)
        key = milterd.make_dkim_key()
        for milter in (milterd.start_opendkim("s", key), milterd.start_opendmarc(dns),
                       milterd.start_rspamd(dns)):
            p = milterd.MilterProbe(milter.port)
            self.assertEqual(p.negotiate()[0], 6)
            p.close()
            self.assertStopsClean(milter)
        pgid = dns.service.proc.pid
        dns.stop()
        self.assertEqual(group_alive(pgid), [])
