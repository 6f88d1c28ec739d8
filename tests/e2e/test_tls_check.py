"""`luasmtpd -t` on TLS options: every certificate the script names is
loaded; a bad value exits 1 with a message naming the option; good
identities (paths, PEM strings, pfx path or bytes) exit 0."""

import os
import re
import tempfile

from harness import E2ETest, Lua, binary, free_port, lua_value
from tlsutil import PFX_PASS, certs, multi_script, tls_script

SLURP = r'''
local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end
'''


class TLSCheck(E2ETest):
    def write(self, text):
        fd, path = tempfile.mkstemp(suffix=".lua", prefix="e2e-tlscheck-")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self.addCleanup(os.unlink, path)
        return path

    def check(self, text):
        r = self.run_cmd([binary(), "-t", self.write(text)], timeout=10)
        err = r.stderr.decode("utf-8", "replace")
        self.check_sanitizer_text(err, "luasmtpd -t")
        return r.returncode, err

    def assertGood(self, text, what):
        code, err = self.check(text)
        self.assertEqual(code, 0, "%s: -t failed:\n%s" % (what, err))

    def assertBad(self, text, names, what):
        code, err = self.check(text)
        self.assertEqual(code, 1, "%s: -t exit %s, expected 1:\n%s" % (what, code, err))
        if isinstance(names, str):
            names = [names]
        # paths (the script's, the certificates') must not count as naming
        # the option: "/tmp/luasmtpd-tlscerts-x/localhost.key" contains "cert"
        text = re.sub(r"/[^\s'\"()]+", "<path>", err)
        found = [n for n in names if re.search(r"(?<![\w.-])%s(?![\w-])" % re.escape(n), text)]
        self.assertTrue(found, "%s: the message should name %s:\n%s" % (what, names, err))

    def test_good_identities(self):
        c = certs()
        cases = {
            "paths": tls_script(**c.pair()),
            "pem strings": tls_script(prelude=SLURP, key=Lua("slurp(%s)" % lua_value(c.key())),
                                      cert=Lua("slurp(%s)" % lua_value(c.crt()))),
            "pfx path": tls_script(pfx=c.p12, passphrase=PFX_PASS),
            "pfx bytes": tls_script(prelude=SLURP, pfx=Lua("slurp(%s)" % lua_value(c.p12)), passphrase=PFX_PASS,
                                    secure=True),
            "ca list": tls_script(requestCert=True, ca=[c.ca, c.crt("mail.example.com")], **c.pair()),
            "sniOptions": tls_script(sniOptions={"mail.example.com": c.pair("mail.example.com")}, **c.pair()),
            "all options": tls_script(minVersion="TLSv1.2", maxVersion="TLSv1.3", ciphers="HIGH:!aNULL",
                                      ciphersuites="TLS_AES_128_GCM_SHA256", honorCipherOrder=False,
                                      ecdhCurve="P-256:X25519", requestCert=True, rejectUnauthorized=False,
                                      sessionIdContext="ctx", sessionTimeout=600, ticketKeys=b"k" * 48,
                                      requestOCSP=True, hideSTARTTLS=True, needsUpgrade=True, **c.pair()),
            "ecdhCurve auto": tls_script(ecdhCurve="auto", **c.pair()),
            "two listeners": multi_script([
                dict(c.pair(), listen="127.0.0.1:%d" % free_port()),
                dict(c.pair(), listen="127.0.0.1:%d" % free_port(), secure=True)]),
            "default certificate": tls_script(secure=True),
        }
        for what, text in cases.items():
            with self.subTest(what):
                self.assertGood(text, what)

    def test_bad_values_name_the_option(self):
        c = certs()
        pair = c.pair()
        cases = [
            ("minVersion", dict(minVersion="TLSv9")),
            ("maxVersion", dict(maxVersion="SSLv3")),
            ("ciphers", dict(ciphers="NOPE")),
            ("ciphersuites", dict(ciphersuites="NOPE")),
            ("ecdhCurve", dict(ecdhCurve="P-999")),
            ("ticketKeys", dict(ticketKeys="short")),
            ("honorCipherOrder", dict(honorCipherOrder=3)),
            ("sessionTimeout", dict(sessionTimeout="x")),
            ("sessionIdContext", dict(sessionIdContext="x" * 33)),
            ("requestCert", dict(requestCert="yes")),
            ("rejectUnauthorized", dict(rejectUnauthorized="no")),
        ]
        for name, opts in cases:
            with self.subTest(name):
                self.assertBad(tls_script(**dict(pair, **opts)), name, name)

    def test_bad_identities(self):
        c = certs()
        missing = os.path.join(c.dir, "does-not-exist.pem")
        cases = [
            ("key", "key not matching the cert", dict(key=c.key("mail.example.com"), cert=c.crt())),
            ("key", "missing key file", dict(key=missing, cert=c.crt())),
            ("cert", "missing cert file", dict(key=c.key(), cert=missing)),
            ("cert", "a key given as cert", dict(key=c.key(), cert=c.key())),
            ("key", "garbage PEM key", dict(key="-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n",
                                            cert=c.crt())),
            (["pfx", "passphrase"], "pfx with a wrong passphrase", dict(pfx=c.p12, passphrase="wrong-pass")),
            (["pfx", "passphrase"], "pfx without passphrase", dict(pfx=c.p12)),
            ("pfx", "pfx not PKCS#12", dict(pfx=c.crt(), passphrase=PFX_PASS)),
            ("ca", "ca not a certificate", dict(c.pair(), ca=c.key(), requestCert=True)),
            ("ca", "ca missing", dict(c.pair(), ca=[c.ca, missing], requestCert=True)),
        ]
        for names, what, opts in cases:
            with self.subTest(what):
                self.assertBad(tls_script(**opts), names, what)

    def test_bad_sni_options(self):
        c = certs()
        self.assertBad(tls_script(sniOptions={"mail.example.com": {"key": c.key("localhost"),
                                                                   "cert": c.crt("mail.example.com")}}, **c.pair()),
                       "sniOptions", "sniOptions entry with a mismatched key")
        self.assertBad(tls_script(sniOptions={"mail.example.com": "not a table"}, **c.pair()),
                       "sniOptions", "sniOptions entry not a table")

    def test_bad_listener_in_array(self):
        c = certs()
        text = multi_script([
            dict(c.pair(), listen="127.0.0.1:%d" % free_port()),
            dict(c.pair(), listen="127.0.0.1:%d" % free_port(), secure=True, minVersion="TLSv9")])
        self.assertBad(text, "minVersion", "second listener")
