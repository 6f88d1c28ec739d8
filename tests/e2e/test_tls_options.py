"""TLS options at work: key/cert as PEM strings, pfx (path and bytes) with
passphrase, needsUpgrade, hideSTARTTLS, min/maxVersion, ciphers,
ciphersuites, honorCipherOrder, ecdhCurve, requestOCSP, sessionTimeout,
ticketKeys (two processes resuming each other's sessions),
smtp.tls.options() defaults and smtp.tls.context()."""

import base64
import hashlib
import os
import ssl
import time

from harness import ROOT, Lua, Server, SharedServerTest, free_port, lua_value
from tlsutil import (DEV_CERT, DEV_KEY, PFX_PASS, RECORD_HOOKS, certs, client_context, ehlo_keywords, mine,
                     multi_script, peer_cn, read, s_client, starttls, tls_client, tls_script)

LISTENERS = ["up", "hide", "pfxbytes", "v12", "v13", "honor", "nohonor", "short", "long", "ocsp"]


def options_prelude():
    c = certs()
    return r'''
local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end
KEY_PEM = slurp(%(key)s)
CERT_PEM = slurp(%(crt)s)
PFX_BYTES = slurp(%(p12)s)

-- smtp.tls.options() and smtp.tls.context() at load time
local d = smtp.tls.options()
local m = smtp.tls.options({minVersion = "TLSv1.3", ciphers = "HIGH"})
local ctx = smtp.tls.context({key = %(key)s, cert = %(crt)s})
local bad, err = smtp.tls.context({key = "/nonexistent/key.pem", cert = %(crt)s})
local bad2, err2 = smtp.tls.context({minVersion = "TLSv9"})
record("defaults", {
  defaults = d, merged = m,
  ctxType = type(ctx), ctxString = tostring(ctx),
  badIsNil = bad == nil, err = tostring(err), bad2IsNil = bad2 == nil, err2 = tostring(err2),
})
''' % {"key": lua_value(c.key()), "crt": lua_value(c.crt()), "p12": lua_value(c.p12)}


class Options(SharedServerTest):
    @classmethod
    def setUpClass(cls):
        c = certs()
        cls.port = {n: free_port() for n in LISTENERS}
        hooks = RECORD_HOOKS
        pair = c.pair()
        L = {
            "up": dict(key=Lua("KEY_PEM"), cert=Lua("CERT_PEM"), needsUpgrade=True),
            "hide": dict(pfx=c.p12, passphrase=PFX_PASS, hideSTARTTLS=True),
            "pfxbytes": dict(pfx=Lua("PFX_BYTES"), passphrase=PFX_PASS, secure=True),
            "v12": dict(pair, maxVersion="TLSv1.2", ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"),
            "v13": dict(pair, minVersion="TLSv1.3", ciphersuites="TLS_CHACHA20_POLY1305_SHA256", ecdhCurve="P-384"),
            "honor": dict(pair, maxVersion="TLSv1.2", honorCipherOrder=True,
                          ciphers="ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES256-GCM-SHA384"),
            "nohonor": dict(pair, maxVersion="TLSv1.2", honorCipherOrder=False,
                            ciphers="ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES256-GCM-SHA384"),
            "short": dict(pair, secure=True, sessionTimeout=1),
            "long": dict(pair, secure=True, sessionTimeout=300, sessionIdContext="e2e-long"),
            "ocsp": dict(pair, secure=True, requestOCSP=True),
        }
        listeners = [(dict(L[n], listen="127.0.0.1:%d" % cls.port[n], name=n + ".test"), hooks) for n in LISTENERS]
        cls.srv = Server(multi_script(listeners, prelude=options_prelude()), listen=False,
                         ports=[cls.port[n] for n in LISTENERS])

    def plain(self, name):
        c = self.client(port=self.port[name])
        self.assertReply(c.ehlo(), 250)
        return c

    # ---- identity sources
    def test_pem_strings(self):
        with self.plain("up") as c:
            s = starttls(c)
            self.assertEqual(peer_cn(s), "localhost")

    def test_pfx_path_with_passphrase(self):
        with self.plain("hide") as c:
            s = starttls(c)
            self.assertEqual(peer_cn(s), "localhost")
            self.assertReply(c.ehlo(), 250)

    def test_pfx_bytes_with_passphrase(self):
        with tls_client(self.port["pfxbytes"]) as c:
            self.assertEqual(peer_cn(c.sock), "localhost")
            self.assertReply(c.greeting, 220)

    # ---- needsUpgrade / hideSTARTTLS
    def test_needs_upgrade(self):
        with self.client(port=self.port["up"]) as c:
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 530, "5.7.0")
            r = c.ehlo()
            self.assertIn("STARTTLS", ehlo_keywords(r))
            for cmd in ["MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>", "DATA", "RSET", "NOOP",
                        "VRFY postmaster", "HELP", "AUTH PLAIN " + base64.b64encode(b"\0u\0p").decode()]:
                with self.subTest(cmd=cmd):
                    self.assertReply(c.cmd(cmd), 530, "5.7.0")
            self.assertReply(c.cmd("HELO client.example"), 250)
            self.assertReply(c.ehlo(), 250)
            starttls(c)
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
            self.assertReply(c.transaction(b"Subject: upgraded\r\n\r\nx\r\n"), 250)
        with self.client(port=self.port["up"]) as c2:
            self.assertReply(c2.cmd("QUIT"), 221, "2.0.0")
            c2.expect_close()

    def test_hide_starttls(self):
        with self.plain("hide") as c:
            r = c.ehlo()
            self.assertNotIn("STARTTLS", ehlo_keywords(r))
            starttls(c)  # still works
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
        [m] = mine(self.srv.events("mail"), c.local_port)
        self.assertEqual(m["transmissionType"], "ESMTPS")

    # ---- versions and ciphers
    def test_max_version(self):
        with self.plain("v12") as c:
            s = starttls(c)
            self.assertEqual(s.version(), "TLSv1.2")
            self.assertEqual(s.cipher()[0], "ECDHE-ECDSA-AES128-GCM-SHA256")
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
        [m] = mine(self.srv.events("mail"), c.local_port)
        self.assertEqual(m["tlsOptions"], {"name": "ECDHE-ECDSA-AES128-GCM-SHA256",
                                           "standardName": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                                           "version": "TLSv1.2"})
        [sec] = [e for e in self.srv.events("secure") if e["session"]["port"] == c.local_port]
        self.assertEqual(sec["conn"]["protocol"], "TLSv1.2")

    def test_ciphers_no_common_cipher(self):
        with self.plain("v12") as c:
            with self.assertRaises((ssl.SSLError, ConnectionError)):
                starttls(c, client_context(ciphers="ECDHE-ECDSA-CHACHA20-POLY1305"))

    def test_min_version_refuses_tls12_client(self):
        with self.plain("v13") as c:
            with self.assertRaises((ssl.SSLError, ConnectionError)):
                starttls(c, client_context(max_version="TLSv1.2"))
        with self.plain("v13") as c:
            s = starttls(c)
            self.assertEqual(s.version(), "TLSv1.3")
            self.assertEqual(s.cipher()[0], "TLS_CHACHA20_POLY1305_SHA256")
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
        [m] = mine(self.srv.events("mail"), c.local_port)
        self.assertEqual(m["tlsOptions"]["name"], "TLS_CHACHA20_POLY1305_SHA256")
        self.assertEqual(m["tlsOptions"]["version"], "TLSv1.3")

    def test_default_min_version_is_tls12(self):
        # smtp.tls.options() sets minVersion TLSv1.2: TLS 1.1 is refused
        with self.plain("hide") as c:
            ctx = client_context()
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            try:
                ctx.set_ciphers("ALL:@SECLEVEL=0")
            except ssl.SSLError:
                pass
            with self.assertRaises((ssl.SSLError, ConnectionError)):
                starttls(c, ctx)

    def test_ecdh_curve(self):
        r = s_client(self.port["v13"], "-servername", "localhost", input=b"QUIT\n")
        out = r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 0, out)
        self.assertRegex(out, r"Server Temp Key: ECDH, (secp384r1|P-384)")
        r = s_client(self.port["v13"], "-servername", "localhost", "-groups", "X25519", input=b"QUIT\n")
        out = r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")
        self.assertNotEqual(r.returncode, 0, "a client offering only X25519 got through ecdhCurve=P-384:\n" + out)

    def test_honor_cipher_order(self):
        client_pref = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305"
        for name, want in [("honor", "ECDHE-ECDSA-CHACHA20-POLY1305"), ("nohonor", "ECDHE-ECDSA-AES256-GCM-SHA384")]:
            with self.subTest(listener=name):
                with self.plain(name) as c:
                    s = starttls(c, client_context(ciphers=client_pref))
                    self.assertEqual(s.cipher()[0], want)

    def test_request_ocsp_accepted(self):
        with tls_client(self.port["ocsp"]) as c:
            self.assertReply(c.greeting, 220)
            self.assertReply(c.ehlo(), 250)

    # ---- sessions
    def test_session_resumption_and_timeout(self):
        ctx = client_context()
        sessions = {}
        for name in ["long", "short"]:
            c = tls_client(self.port[name], ctx)
            self.assertReply(c.greeting, 220)
            self.assertFalse(c.sock.session_reused)
            self.assertReply(c.cmd("QUIT"), 221)
            sessions[name] = c.sock.session
            self.assertTrue(sessions[name] is not None and sessions[name].has_ticket, name)
            c.close()
        # at once: both resume
        c = tls_client(self.port["long"], ctx, session=sessions["long"])
        self.assertTrue(c.sock.session_reused, "no resumption on the same listener")
        self.assertReply(c.greeting, 220)
        c.close()
        time.sleep(2.1)
        c = tls_client(self.port["long"], ctx, session=sessions["long"])
        self.assertTrue(c.sock.session_reused, "sessionTimeout=300: resumption after 2 s")
        c.close()
        c = tls_client(self.port["short"], ctx, session=sessions["short"])
        self.assertFalse(c.sock.session_reused, "sessionTimeout=1: the session resumed after 2 s")
        self.assertReply(c.greeting, 220)
        c.close()

    # ---- smtp.tls.options / smtp.tls.context
    def test_tls_options_defaults(self):
        [ev] = self.srv.events("defaults")
        d = ev["defaults"]
        self.assertIs(d["honorCipherOrder"], True)
        self.assertIs(d["requestOCSP"], False)
        self.assertEqual(d["minVersion"], "TLSv1.2")
        self.assertRegex(d["sessionIdContext"], r"^[0-9a-f]{32}$")
        argv = " ".join(self.srv.argv())
        self.assertEqual(d["sessionIdContext"], hashlib.sha1(argv.encode()).hexdigest()[:32],
                         "sessionIdContext should be sha1(argv joined by ' ')[:32]")
        for k, dev in [("key", DEV_KEY), ("cert", DEV_CERT)]:
            v = d[k]
            if "-----BEGIN" in v:  # the PEM text itself
                self.assertEqual(v.strip(), read(dev).decode().strip())
            else:  # a path, relative to the server's working directory (the repository)
                self.assertEqual(os.path.realpath(os.path.join(ROOT, v)), os.path.realpath(dev))
        m = ev["merged"]
        self.assertEqual(m["minVersion"], "TLSv1.3")
        self.assertEqual(m["ciphers"], "HIGH")
        self.assertIs(m["honorCipherOrder"], True)
        self.assertEqual(m["sessionIdContext"], d["sessionIdContext"])

    def test_tls_context_values(self):
        [ev] = self.srv.events("defaults")
        self.assertEqual(ev["ctxType"], "userdata")
        self.assertIn("smtp.tls.context", ev["ctxString"])
        self.assertIs(ev["badIsNil"], True)
        self.assertIn("key", ev["err"])
        self.assertIs(ev["bad2IsNil"], True)
        self.assertIn("minVersion", ev["err2"])


class TicketKeys(SharedServerTest):
    """Two processes with the same ticketKeys (and sessionIdContext) resume
    each other's TLS sessions; a third with other keys does not."""
    KEYS = bytes(range(48))
    OTHER = bytes(range(100, 148))

    @classmethod
    def setUpClass(cls):
        cls.a = Server(_ticket_script(cls.KEYS), listen=True)
        cls.b = Server(_ticket_script(cls.KEYS), listen=True)
        cls.c = Server(_ticket_script(cls.OTHER), listen=True)
        cls.srv = cls.a

    @classmethod
    def tearDownClass(cls):
        errors = []
        for s in (cls.a, cls.b, cls.c):
            try:
                s.stop()
            except AssertionError as e:
                errors.append(str(e))
        if errors:
            raise AssertionError("\n".join(errors))

    def first_session(self, ctx):
        c = tls_client(self.a.port, ctx)
        self.assertReply(c.greeting, 220)
        self.assertReply(c.cmd("QUIT"), 221)
        sess = c.sock.session
        c.close()
        self.assertTrue(sess is not None and sess.has_ticket)
        return sess

    def test_same_keys_resume_across_processes(self):
        ctx = client_context()
        sess = self.first_session(ctx)
        c = tls_client(self.b.port, ctx, session=sess)
        self.assertTrue(c.sock.session_reused, "server B did not resume server A's session")
        self.assertReply(c.greeting, 220)
        self.assertReply(c.ehlo(), 250)
        c.close()

    def test_other_keys_do_not_resume(self):
        ctx = client_context()
        sess = self.first_session(ctx)
        c = tls_client(self.c.port, ctx, session=sess)
        self.assertFalse(c.sock.session_reused, "server C resumed a session made with other ticketKeys")
        self.assertReply(c.greeting, 220)
        c.close()

    def test_same_process_resumes(self):
        ctx = client_context()
        sess = self.first_session(ctx)
        c = tls_client(self.a.port, ctx, session=sess)
        self.assertTrue(c.sock.session_reused)
        c.close()


def _ticket_script(keys):
    return tls_script(hooks=RECORD_HOOKS, secure=True, ticketKeys=keys, sessionIdContext="e2e-ticket-keys",
                      **certs().pair())



class DefaultCiphers(SharedServerTest):
    """TLS 1.2 offers only AEAD suites by default (Mozilla's "intermediate"
    profile: no CBC, so no LUCKY13); `ciphers` still overrides it, and
    SNICallback's contexts get the same default."""

    @classmethod
    def setUpClass(cls):
        c = certs()
        cls.dflt, cls.own = free_port(), free_port()
        sni = Lua(r'''function(servername)
    return smtp.tls.context({key = %s, cert = %s})
  end''' % (lua_value(c.key("mail.example.com")), lua_value(c.crt("mail.example.com"))))
        cls.srv = Server(multi_script([
            (dict(c.pair(), listen="127.0.0.1:%d" % cls.dflt), {"SNICallback": sni}),
            (dict(c.pair(), listen="127.0.0.1:%d" % cls.own, ciphers="ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA"),
             None),
        ]), listen=False, ports=[cls.dflt, cls.own])

    def tls12(self, port, cipher, *extra):
        r = s_client(port, "-tls1_2", "-cipher", cipher, *extra)
        return r.returncode, r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")

    def test_cbc_suites_refused_by_default(self):
        for cipher in ["ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"]:
            for extra in [(), ("-servername", "mail.example.com")]:
                with self.subTest(cipher=cipher, sni=extra):
                    rc, out = self.tls12(self.dflt, cipher, *extra)
                    self.assertNotEqual(rc, 0, out)
                    self.assertNotIn("Cipher is " + cipher, out)

    def test_aead_suites_accepted_by_default(self):
        for cipher in ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                       "ECDHE-ECDSA-CHACHA20-POLY1305"]:
            with self.subTest(cipher=cipher):
                rc, out = self.tls12(self.dflt, cipher)
                self.assertEqual(rc, 0, out)
                self.assertRegex(out, r"Ciphersuite: %s|Cipher is %s" % (cipher, cipher))

    def test_ciphers_option_overrides_the_default(self):
        rc, out = self.tls12(self.own, "ECDHE-ECDSA-AES128-SHA256")
        self.assertEqual(rc, 0, out)
        self.assertRegex(out, r"Ciphersuite: ECDHE-ECDSA-AES128-SHA256|Cipher is ECDHE-ECDSA-AES128-SHA256")
        rc, out = self.tls12(self.own, "ECDHE-ECDSA-AES128-GCM-SHA256")
        self.assertNotEqual(rc, 0, out)
