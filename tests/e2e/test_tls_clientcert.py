"""Client certificates: requestCert, rejectUnauthorized (default true with
requestCert), ca as a path, a PEM string or a list; onSecure's
conn:getPeerCertificate() fields, conn.authorized and
conn.authorizationError; onSecure rejecting with 554; contexts chosen by SNI
(sniOptions, SNICallback) asking and checking as their listener does unless
they set their own requestCert."""

import os
import re
import ssl
import subprocess

from harness import Closed, Lua, Server, SharedServerTest, free_port
from tlsutil import CA_CN, certs, cert_facts, client_context, multi_script, read, run_tool, starttls, tls_client

ON_SECURE = Lua(r'''function(conn, session)
    record("secure", {session = tlsinfo(session), conn = conninfo(conn)})
    local cert = conn:getPeerCertificate()
    -- the same table on a second call
    if cert and conn:getPeerCertificate().fingerprint256 ~= cert.fingerprint256 then error("unstable") end
    if cert and cert.subject and cert.subject.CN == "banned.example" then
      return nil, "certificate banned"
    end
    if cert and not conn.authorized and session.localPort == tonumber(os.getenv("REJECT_UNAUTHORIZED_PORT")) then
      return nil, "5.7.1 untrusted certificate"
    end
  end''')

ON_MAIL = Lua(r'''function(address, session)
    record("mail", tlsinfo(session))
  end''')


class ClientCert(SharedServerTest):
    @classmethod
    def setUpClass(cls):
        c = certs()
        cls.a, cls.b, cls.c, cls.d = free_port(), free_port(), free_port(), free_port()
        hooks = {"onSecure": ON_SECURE, "onMailFrom": ON_MAIL}
        ca_pem = read(c.ca).decode()
        cls.srv = Server(multi_script([
            # asks for a certificate, takes any (rejectUnauthorized = false)
            (dict(c.pair(), listen="127.0.0.1:%d" % cls.a, requestCert=True, rejectUnauthorized=False, ca=c.ca),
             hooks),
            # asks for one and refuses unverified ones (the default)
            (dict(c.pair(), listen="127.0.0.1:%d" % cls.b, requestCert=True, ca=[ca_pem]), hooks),
            # the same over implicit TLS, ca as a list of paths
            (dict(c.pair(), listen="127.0.0.1:%d" % cls.c, requestCert=True, rejectUnauthorized=True,
                  ca=[c.ca, c.crt("mail.example.com")], secure=True), hooks),
            # takes any, the hook refuses unauthorized ones; ca as PEM text
            (dict(c.pair(), listen="127.0.0.1:%d" % cls.d, requestCert=True, rejectUnauthorized=False,
                  ca=ca_pem), hooks),
        ]), listen=False, ports=[cls.a, cls.b, cls.c, cls.d],
            env={"REJECT_UNAUTHORIZED_PORT": str(cls.d)})

    def secure_events(self, c):
        return [e for e in self.srv.events("secure") if e["session"]["port"] == c.local_port]

    def connect(self, port, cert=None, key=None):
        ctx = client_context(cert=cert, key=key)
        c = self.client(port=port)
        self.assertReply(c.ehlo(), 250)
        starttls(c, ctx)
        return c

    def assert_refused(self, fn):
        """The handshake (or, with TLS 1.3, the first read after it) fails."""
        try:
            c = fn()
            r = c.ehlo()
        except (ssl.SSLError, ConnectionError, Closed):
            return
        self.fail("a client without a trusted certificate got %r" % r.raw)

    def test_signed_client_cert(self):
        k = certs()
        with self.connect(self.a, k.client_crt, k.client_key) as c:
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
        [ev] = self.secure_events(c)
        conn = ev["conn"]
        self.assertIs(conn["authorized"], True, conn)
        self.assertIsNone(conn.get("authorizationError"), conn)
        self.assertEqual(conn["certType"], "table")
        cert = conn["cert"]
        facts = cert_facts(k.client_crt)
        self.assertEqual(cert["subject"]["CN"], "client.example")
        self.assertEqual(cert["subject"]["O"], "luasmtpd tests")
        self.assertEqual(cert["issuer"]["CN"], CA_CN)
        self.assertEqual(cert["fingerprint256"], facts["fingerprint256"])
        self.assertRegex(cert["serialNumber"], r"^[0-9A-F]+$")
        self.assertEqual(int(cert["serialNumber"], 16), facts["serial"])
        self.assertEqual(cert["valid_from"], facts["valid_from"])
        self.assertEqual(cert["valid_to"], facts["valid_to"])
        self.assertEqual(cert["pem"].strip(), read(k.client_crt).decode().strip())
        self.assertEqual(ssl.PEM_cert_to_DER_cert(cert["pem"]), facts["der"])

    def test_self_signed_client_cert_not_authorized(self):
        k = certs()
        with self.connect(self.a, k.self_crt, k.self_key) as c:
            self.assertReply(c.ehlo(), 250)
        [ev] = self.secure_events(c)
        conn = ev["conn"]
        self.assertIs(conn["authorized"], False)
        self.assertEqual(conn["authorizationError"], "DEPTH_ZERO_SELF_SIGNED_CERT")
        self.assertEqual(conn["cert"]["subject"]["CN"], "selfsigned.example")
        self.assertEqual(conn["cert"]["fingerprint256"], cert_facts(k.self_crt)["fingerprint256"])

    def test_no_client_cert(self):
        with self.connect(self.a) as c:
            self.assertReply(c.ehlo(), 250)
        [ev] = self.secure_events(c)
        conn = ev["conn"]
        self.assertEqual(conn["certType"], "nil")
        self.assertIs(conn["authorized"], False)
        self.assertIsInstance(conn.get("authorizationError"), str, "Node gives a reason when no certificate came")

    def test_other_ca_in_list_not_trusted_for_client(self):
        # mail.example.com's certificate in `ca` (listener c) adds a trust
        # anchor but does not make the self-signed client certificate valid
        k = certs()
        self.assert_refused(lambda: tls_client(self.c, client_context(cert=k.self_crt, key=k.self_key)))

    def test_reject_unauthorized_default(self):
        k = certs()
        with self.connect(self.b, k.client_crt, k.client_key) as c:
            self.assertReply(c.ehlo(), 250)
        [ev] = self.secure_events(c)
        self.assertIs(ev["conn"]["authorized"], True)
        n = len(self.srv.events("secure"))
        self.assert_refused(lambda: self.connect(self.b, k.self_crt, k.self_key))
        self.assert_refused(lambda: self.connect(self.b))
        self.assertEqual(len(self.srv.events("secure")), n, "onSecure ran for a refused certificate")

    def test_reject_unauthorized_implicit(self):
        k = certs()
        with tls_client(self.c, client_context(cert=k.client_crt, key=k.client_key)) as c:
            self.assertReply(c.greeting, 220)
            self.assertReply(c.ehlo(), 250)
        [ev] = self.secure_events(c)
        self.assertIs(ev["conn"]["authorized"], True)
        self.assertEqual(ev["conn"]["cert"]["subject"]["CN"], "client.example")
        self.assert_refused(lambda: tls_client(self.c, client_context()))

    def test_on_secure_rejects_unauthorized(self):
        k = certs()
        c = self.client(port=self.d)
        c.ehlo()
        starttls(c, client_context(cert=k.self_crt, key=k.self_key))
        r = c.read_reply()
        self.assertReply(r, 554, "5.7.1")
        c.expect_close(5)
        # a trusted certificate passes the same hook
        with self.connect(self.d, k.client_crt, k.client_key) as c2:
            self.assertReply(c2.ehlo(), 250)
            self.assertReply(c2.cmd("MAIL FROM:<a@example.com>"), 250)
        [m] = [e for e in self.srv.events("mail") if e["port"] == c2.local_port]
        self.assertEqual(m["transmissionType"], "ESMTPS")

    def test_on_secure_reject_default_code(self):
        # onSecure returning nil, "msg" -> 554 then close (implicit TLS: no greeting)
        k = certs()
        d = os.path.join(self.srv.tmp, "banned")
        os.makedirs(d, exist_ok=True)
        key, crt = os.path.join(d, "banned.key"), os.path.join(d, "banned.crt")
        subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-subj", "/CN=banned.example", "-keyout", key, "-out", crt + ".csr"],
                       check=True, capture_output=True, timeout=10)
        subprocess.run(["openssl", "x509", "-req", "-in", crt + ".csr", "-CA", k.ca, "-CAkey", k.ca_key,
                        "-set_serial", "4242", "-days", "2", "-out", crt], check=True, capture_output=True, timeout=10)
        c = tls_client(self.c, client_context(cert=crt, key=key), greet=False)
        r = c.read_reply()
        self.assertReply(r, 554)
        self.assertFalse(re.match(r"^220", r.text))
        c.expect_close(5)
        [ev] = self.secure_events(c)
        self.assertIs(ev["conn"]["authorized"], True)
        self.assertEqual(ev["conn"]["cert"]["serialNumber"].lstrip("0"), "1092")


SNI_CALLBACK = Lua(r'''function(servername)
    if servername == "mail.example.com" then return nil end -- sniOptions has it
    local dir = os.getenv("CERT_DIR")
    local pair = {key = dir .. "/smtp.another.com.key", cert = dir .. "/smtp.another.com.crt"}
    if servername == "own.example" then
      pair.requestCert = false -- a context with settings of its own keeps them
    end
    return smtp.tls.context(pair)
  end''')


class SNIClientCert(SharedServerTest):
    """Contexts chosen by SNI (SNICallback, sniOptions) ask for and check
    client certificates as the listener does, unless they set their own
    requestCert / rejectUnauthorized / ca."""

    @classmethod
    def setUpClass(cls):
        c = certs()
        cls.strict, cls.lax = free_port(), free_port()
        hooks = {"onSecure": ON_SECURE, "onMailFrom": ON_MAIL, "SNICallback": SNI_CALLBACK}
        sni = {"mail.example.com": c.pair("mail.example.com")}
        cls.srv = Server(multi_script([
            (dict(c.pair(), listen="127.0.0.1:%d" % cls.strict, requestCert=True, ca=c.ca, sniOptions=sni,
                  secure=True), hooks),
            (dict(c.pair(), listen="127.0.0.1:%d" % cls.lax, requestCert=True, rejectUnauthorized=False, ca=c.ca,
                  sniOptions=sni), hooks),
        ]), listen=False, ports=[cls.strict, cls.lax], env={"CERT_DIR": c.dir})

    def secure_event(self, c):
        [ev] = [e for e in self.srv.events("secure") if e["session"]["port"] == c.local_port]
        return ev

    def implicit(self, name, cert=None, key=None):
        return tls_client(self.strict, client_context(cert=cert, key=key, check_hostname=False), name)

    assert_refused = ClientCert.assert_refused

    def test_sni_contexts_ask_for_the_certificate(self):
        # what openssl s_client is told: a CertificateRequest naming the CA
        for name in ["smtp.another.com", "mail.example.com"]:
            with self.subTest(name=name):
                r = run_tool(["openssl", "s_client", "-connect", "127.0.0.1:%d" % self.lax, "-starttls", "smtp",
                              "-crlf", "-ign_eof", "-servername", name, "-tls1_2"], input=b"QUIT\n")
                out = r.stdout.decode("utf-8", "replace")
                self.assertRegex(out, r"Peer certificate: .*CN ?= ?%s|subject=.*CN ?= ?%s" % (name, name))
                self.assertIn("Acceptable client certificate CA names", out)
                self.assertIn(CA_CN, out.split("Acceptable client certificate CA names", 1)[1])

    def test_sni_contexts_accept_a_signed_certificate(self):
        k = certs()
        for name in ["smtp.another.com", "mail.example.com"]:
            with self.subTest(name=name):
                with self.implicit(name, k.client_crt, k.client_key) as c:
                    self.assertReply(c.greeting, 220)
                    self.assertReply(c.ehlo(), 250)
                ev = self.secure_event(c)
                self.assertEqual(ev["session"]["servername"], name)
                self.assertIs(ev["conn"]["authorized"], True, ev)
                self.assertEqual(ev["conn"]["cert"]["subject"]["CN"], "client.example")

    def test_sni_contexts_refuse_unverified_certificates(self):
        k = certs()
        for name in ["smtp.another.com", "mail.example.com"]:
            with self.subTest(name=name):
                n = len(self.srv.events("secure"))
                self.assert_refused(lambda: self.implicit(name, k.self_crt, k.self_key))
                self.assert_refused(lambda: self.implicit(name))
                self.assertEqual(len(self.srv.events("secure")), n, "onSecure ran for a refused certificate")

    def test_sni_context_lax_listener_judged_in_on_secure(self):
        k = certs()
        c = self.client(port=self.lax)
        c.ehlo()
        starttls(c, client_context(cert=k.self_crt, key=k.self_key, check_hostname=False), "smtp.another.com")
        self.assertReply(c.ehlo(), 250)
        c.close()
        ev = self.secure_event(c)
        self.assertIs(ev["conn"]["authorized"], False)
        self.assertEqual(ev["conn"]["authorizationError"], "DEPTH_ZERO_SELF_SIGNED_CERT")
        self.assertEqual(ev["conn"]["cert"]["subject"]["CN"], "selfsigned.example")

    def test_own_request_cert_false_is_not_asked(self):
        k = certs()
        with self.implicit("own.example", k.client_crt, k.client_key) as c:
            self.assertReply(c.greeting, 220)
            self.assertReply(c.ehlo(), 250)
        ev = self.secure_event(c)
        self.assertEqual(ev["conn"]["certType"], "nil", "a context with requestCert = false asked for a certificate")
        self.assertIsNone(ev["conn"].get("authorizationError"))
        with self.implicit("own.example") as c2:
            self.assertReply(c2.ehlo(), 250)
