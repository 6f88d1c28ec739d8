"""Real TLS clients against one process with a STARTTLS listener and an
implicit-TLS one: openssl s_client, swaks --tls / --tlsc, curl --ssl-reqd
smtp:// and smtps://. Each checks the client's exit status and what the
hooks saw."""

import re

from harness import Server, SharedServerTest, free_port
from tlsutil import RECORD_HOOKS, certs, multi_script, run_tool, s_client


class RealClients(SharedServerTest):
    @classmethod
    def setUpClass(cls):
        c = certs()
        cls.plain, cls.secure = free_port(), free_port()
        common = c.pair("localhost")
        cls.srv = Server(multi_script([
            (dict(common, listen="127.0.0.1:%d" % cls.plain, sniOptions={"mail.example.com": c.pair("mail.example.com")}),
             RECORD_HOOKS),
            (dict(common, listen="127.0.0.1:%d" % cls.secure, secure=True, requestCert=True,
                  rejectUnauthorized=False, ca=c.ca), RECORD_HOOKS),
        ]), listen=False, ports=[cls.plain, cls.secure])

    def setUp(self):
        self.n_data = len(self.srv.events("data"))

    def new_data(self, n=1):
        evs = self.srv.wait_events("data", self.n_data + n)[self.n_data:]
        self.assertEqual(len(evs), n, evs)
        return evs

    # ---- openssl s_client
    def test_s_client_starttls_servername(self):
        for name, cn in [("localhost", "localhost"), ("mail.example.com", "mail.example.com")]:
            with self.subTest(servername=name):
                r = s_client(self.plain, "-servername", name, "-CAfile", certs().ca, "-verify_return_error",
                             "-verify_hostname", name, input=b"EHLO s-client.example\nNOOP\nQUIT\n")
                out = r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")
                self.assertEqual(r.returncode, 0, out)
                self.assertIn("Verification: OK", out)
                self.assertRegex(out, r"Peer certificate: .*CN ?= ?%s" % re.escape(cn))
                self.assertIn("Protocol version: TLSv1.3", out)
                self.assertRegex(out, r"(?m)^250[ -]AUTH PLAIN LOGIN")
                self.assertRegex(out, r"(?m)^250 2\.0\.0")
                self.assertRegex(out, r"(?m)^221 2\.0\.0")
        secs = [e["session"].get("servername") for e in self.srv.events("secure")
                if e["session"]["localPort"] == self.plain]
        self.assertIn("mail.example.com", secs)

    def test_s_client_implicit(self):
        r = s_client(self.secure, "-servername", "localhost", "-CAfile", certs().ca, "-verify_return_error",
                     starttls=False, input=b"EHLO s-client.example\nQUIT\n")
        out = r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 0, out)
        self.assertIn("Verification: OK", out)
        self.assertRegex(out, r"(?m)^220 mx\.test")
        self.assertNotRegex(out, r"(?m)^250[ -]STARTTLS")
        self.assertRegex(out, r"(?m)^221 2\.0\.0")

    def test_s_client_tls12(self):
        r = s_client(self.plain, "-servername", "localhost", "-CAfile", certs().ca, "-tls1_2",
                     input=b"EHLO s-client.example\nQUIT\n")
        out = r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 0, out)
        self.assertIn("Protocol version: TLSv1.2", out)
        self.assertRegex(out, r"(?m)^221 2\.0\.0")

    # ---- swaks
    def swaks(self, port, *args):
        r = run_tool(["swaks", "--server", "127.0.0.1:%d" % port, "--helo", "client.example", "--timeout", "10",
                      "--to", "b@example.com", "--from", "a@example.com"] + list(args))
        self.assertEqual(r.returncode, 0, r.stdout.decode("utf-8", "replace")[-3000:] + r.stderr.decode()[-1000:])
        return r.stdout.decode("utf-8", "replace")

    def test_swaks_starttls_auth(self):
        out = self.swaks(self.plain, "--tls", "--tls-verify", "--tls-ca-path", certs().ca, "--tls-sni", "localhost",
                         "--auth", "PLAIN", "--auth-user", "testuser", "--auth-password", "testpass")
        self.assertIn("TLS started with cipher TLSv1.3", out)
        self.assertRegex(out, r"<~ +235 2\.7\.0")
        [d] = self.new_data()
        self.assertEqual(d["transmissionType"], "ESMTPSA")
        self.assertEqual(d["user"], "testuser")
        self.assertEqual(d["servername"], "localhost")
        self.assertIn("This is a test mailing", d["body"])

    def test_swaks_starttls_login(self):
        out = self.swaks(self.plain, "--tls", "--auth", "LOGIN", "--auth-user", "testuser",
                         "--auth-password", "testpass")
        self.assertRegex(out, r"<~ +235 2\.7\.0")
        [d] = self.new_data()
        self.assertEqual(d["transmissionType"], "ESMTPSA")

    def test_swaks_auth_without_tls_fails(self):
        r = run_tool(["swaks", "--server", "127.0.0.1:%d" % self.plain, "--helo", "client.example", "--timeout", "10",
                      "--to", "b@example.com", "--from", "a@example.com", "--auth", "PLAIN", "--auth-user", "testuser",
                      "--auth-password", "testpass"])
        self.assertNotEqual(r.returncode, 0, r.stdout[-2000:])
        self.assertEqual(len(self.srv.events("data")), self.n_data)

    def test_swaks_tls_on_connect_client_cert(self):
        c = certs()
        out = self.swaks(self.secure, "--tlsc", "--tls-verify", "--tls-ca-path", c.ca, "--tls-sni", "localhost",
                         "--tls-cert", c.client_crt, "--tls-key", c.client_key)
        self.assertIn("TLS started", out)
        [d] = self.new_data()
        self.assertEqual(d["transmissionType"], "ESMTPS")
        self.assertEqual(d["localPort"], self.secure)
        # A client port is unique per listener only: match both.
        sec = [e for e in self.srv.events("secure")
               if (e["session"]["port"], e["session"]["localPort"]) == (d["port"], d["localPort"])]
        self.assertEqual(len(sec), 1)
        conn = sec[0]["conn"]
        self.assertIs(conn["authorized"], True)
        self.assertEqual(conn["cert"]["subject"]["CN"], "client.example")

    # ---- curl
    def curl(self, url, *args, input=b"Subject: curl tls\r\n\r\nfrom curl\r\n"):
        r = run_tool(["curl", "-sS", "--max-time", "15", url, "--mail-from", "a@example.com", "--mail-rcpt",
                      "b@example.com", "--upload-file", "-"] + list(args), input=input)
        self.assertEqual(r.returncode, 0, r.stderr.decode("utf-8", "replace"))
        return r

    def test_curl_ssl_reqd_starttls(self):
        self.curl("smtp://127.0.0.1:%d/client.example" % self.plain, "--ssl-reqd", "--cacert", certs().ca,
                  "--user", "testuser:testpass")
        [d] = self.new_data()
        self.assertEqual(d["body"], "Subject: curl tls\r\n\r\nfrom curl\r\n")
        self.assertEqual(d["transmissionType"], "ESMTPSA")
        self.assertIs(d["secure"], True)

    def test_curl_smtps(self):
        self.curl("smtps://127.0.0.1:%d/client.example" % self.secure, "--cacert", certs().ca)
        [d] = self.new_data()
        self.assertEqual(d["transmissionType"], "ESMTPS")
        self.assertEqual(d["localPort"], self.secure)

    def test_curl_smtps_insecure_flag(self):
        self.curl("smtps://localhost:%d/client.example" % self.secure, "-k")
        [d] = self.new_data()
        self.assertEqual(d["servername"], "localhost")

    def test_curl_wrong_ca_fails(self):
        r = run_tool(["curl", "-sS", "--max-time", "15", "smtp://127.0.0.1:%d/client.example" % self.plain,
                      "--ssl-reqd", "--cacert", "certs/dev/localhost.crt", "--mail-from", "a@example.com",
                      "--mail-rcpt", "b@example.com", "--upload-file", "-"], input=b"x\r\n")
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(len(self.srv.events("data")), self.n_data)
