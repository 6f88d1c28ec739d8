"""TLS session resumption across reloads (issue 20, item 4): a client
that kept its session ticket (Python's ssl, as smtplib-based clients and
Postfix's TLS session cache do) resumes it after a HUP, with TLS 1.2 and
1.3, in one process and with --workers 2 (the ticket keys are derived from
a secret the master keeps in memory and every worker inherits); a HUP that
changes the certificate means a full handshake, and the new session
resumes in turn; ticketKeys given by the operator never reach a file the
server writes."""

import base64
import hashlib
import os
import signal
import sys
import time

from harness import ROOT, E2ETest, Server
from tlsutil import client_context, starttls

sys.path.insert(0, os.path.join(ROOT, "tests", "soak"))
import reloadkit as rk  # noqa: E402

VERSIONS = ("TLSv1.2", "TLSv1.3")


class ResumeAcrossReload(E2ETest):
    def setUp(self):
        self.dir = rk.TempDir("luasmtpd-resume-")
        self.addCleanup(self.dir.cleanup)
        self.pair_a = rk.make_pair(self.dir.path, "a")
        self.pair_b = rk.make_pair(self.dir.path, "b")
        # one CA file trusting both self-signed certificates
        self.ca = os.path.join(self.dir.path, "both.crt")
        with open(self.ca, "wb") as f:
            for p in (self.pair_a, self.pair_b):
                with open(p.crt, "rb") as c:
                    f.write(c.read())
        # a session resumes only through the client context that made it
        self.ctx = {v: client_context(ca=self.ca, min_version=v, max_version=v) for v in VERSIONS}

    def start(self, pair, workers=1, **opts):
        args = ["--workers", str(workers)] if workers > 1 else []
        srv = Server(rk.versioned_script("v1", key=pair.key, cert=pair.crt, **opts), args=args)
        self.log = rk.LogWatch(srv.stderr_path)
        if workers > 1:
            ok = rk.wait_value(lambda: len(rk.children(srv.proc.pid)), workers, timeout=5.0)[0]
            self.assertIsNotNone(ok, "expected %d workers\n%s" % (workers, srv.log_tail(10)))
        return srv

    def hup(self, srv, pair=None, **opts):
        if pair:
            rk.write_atomic(srv.script_path, rk.versioned_script("v2", key=pair.key, cert=pair.crt, **opts))
        before = self.log.count(rk.RELOADED)
        srv.send_signal(signal.SIGHUP)
        got = self.log.wait_count(rk.RELOADED, before + 1, 5.0)
        self.assertGreater(len(got), before, "no reload logged after HUP\n%s" % srv.log_tail(15))

    def session(self, srv, version, session=None):
        """A STARTTLS session like smtplib's (EHLO, STARTTLS, EHLO again):
        (resumed?, the session with its ticket, the peer's certificate)."""
        ctx = self.ctx[version]
        c = srv.client()
        try:
            self.assertReply(c.ehlo(), 250)
            s = starttls(c, ctx, session=session)
            self.assertEqual(s.version(), version)
            self.assertReply(c.ehlo(), 250)  # the tickets of TLS 1.3 come with this reply
            self.assertReply(c.cmd("QUIT"), 221)
            sess = s.session
            self.assertTrue(sess is not None and sess.has_ticket, "%s: no session ticket issued" % version)
            return s.session_reused, sess, s.getpeercert(binary_form=True)
        finally:
            c.close()

    def resumes_across_hup(self, version, workers):
        srv = self.start(self.pair_a, workers)
        with srv:
            reused, sess, _ = self.session(srv, version)
            self.assertFalse(reused, "the first session cannot be resumed")
            reused, _, _ = self.session(srv, version, sess)
            self.assertTrue(reused, "%s: no resumption before the reload" % version)
            old = set(rk.children(srv.proc.pid))
            self.hup(srv)
            if workers > 1:
                # only workers forked after the reload are left to resume it
                fresh = lambda: (lambda k: len(k) == workers and not k & old)(set(rk.children(srv.proc.pid)))
                self.assertIsNotNone(rk.wait_value(fresh, True, timeout=5.0)[0],
                                     "the old workers %s did not leave after HUP" % sorted(old))
            # with workers, several sessions: each lands on any worker of the new generation
            for i in range(6 if workers > 1 else 2):
                reused, _, _ = self.session(srv, version, sess)
                self.assertTrue(reused, "%s, %d worker(s): session %d after HUP was a full handshake"
                                % (version, workers, i + 1))
            self.hup(srv)
            reused, _, _ = self.session(srv, version, sess)
            self.assertTrue(reused, "%s: no resumption after a second HUP" % version)

    def test_tls13_single_process(self):
        self.resumes_across_hup("TLSv1.3", 1)

    def test_tls12_single_process(self):
        self.resumes_across_hup("TLSv1.2", 1)

    def test_tls13_two_workers(self):
        self.resumes_across_hup("TLSv1.3", 2)

    def test_tls12_two_workers(self):
        self.resumes_across_hup("TLSv1.2", 2)

    def certificate_change(self, version, workers):
        srv = self.start(self.pair_a, workers)
        with srv:
            _, sess, _ = self.session(srv, version)
            self.hup(srv, self.pair_b)
            # the old workers stop accepting on their own time: wait for the new certificate
            got = rk.wait_value(lambda: rk.fingerprint(srv.port), self.pair_b.fp, timeout=5.0)
            self.assertIsNotNone(got[0], "the new certificate is not served after HUP: %s" % (got[2][-2:],))
            for i in range(4 if workers > 1 else 1):
                reused, fresh, der = self.session(srv, version, sess)
                self.assertFalse(reused, "%s: a session made with the old certificate resumed after it changed"
                                 % version)
                self.assertEqual(hashlib.sha256(der).hexdigest(), self.pair_b.fp, "not the new certificate")
            reused, _, _ = self.session(srv, version, fresh)
            self.assertTrue(reused, "%s: the session made after the change does not resume" % version)

    def test_certificate_change_means_full_handshake(self):
        for version in VERSIONS:
            with self.subTest(version=version):
                self.certificate_change(version, 1)

    def test_certificate_change_two_workers(self):
        self.certificate_change("TLSv1.3", 2)

    def test_tls_option_change_means_full_handshake(self):
        srv = self.start(self.pair_a)
        with srv:
            _, sess, _ = self.session(srv, "TLSv1.3")
            self.hup(srv, self.pair_a, ciphersuites="TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256")
            reused, _, _ = self.session(srv, "TLSv1.3", sess)
            self.assertFalse(reused, "a session resumed after ciphersuites changed")

    def test_ticket_keys_never_written(self):
        keys = os.urandom(48)
        srv = self.start(self.pair_a, 2, ticketKeys=keys)
        with srv:
            _, sess, _ = self.session(srv, "TLSv1.3")
            self.hup(srv)
            reused, _, _ = self.session(srv, "TLSv1.3", sess)
            self.assertTrue(reused, "ticketKeys: no resumption after HUP")
        forms = [keys, keys.hex().encode(), keys.hex().upper().encode(), base64.b64encode(keys),
                 base64.b64encode(keys[:45]), keys[16:32], keys[32:]]
        seen = 0
        for root, _, files in os.walk(srv.tmp):
            for name in files:
                path = os.path.join(root, name)
                if path == srv.script_path:
                    continue  # the operator's own file
                with open(path, "rb") as f:
                    data = f.read()
                seen += 1
                for form in forms:
                    self.assertNotIn(form, data, "ticket key material in %s" % path)
        self.assertGreater(seen, 0, "the server wrote no file to look in")
