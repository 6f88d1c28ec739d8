"""SNI: sniOptions (servername -> key/cert), SNICallback returning
smtp.tls.context{...} or nil (default), yielding in it without blocking
other sessions, its answers cached per listener by name, refusals (nil, err
or smtp.reject) failing the handshake, a raised error falling back to the
default certificate; the cache's bound (sniCacheSize, least recently used
evicted), emptied by updateSecureContext({}) and HUP; session.servername."""

import os
import re
import shutil
import signal
import ssl
import threading
import time

from harness import E2ETest, Lua, Server, SharedServerTest, free_port, lua_value, wait_for
from tlsutil import (RECORD_HOOKS, certs, client_context, der_cn, multi_script, peer_cn, s_client, starttls,
                     tls_client, tls_script)


def sni_prelude():
    c = certs()
    return r'''
local CALLS = OUT .. "/sni-calls"
local function pair(name)
  return {key = %s .. "/" .. name .. ".key", cert = %s .. "/" .. name .. ".crt"}
end
-- one context built at load time and handed out for two names
local shared = assert(smtp.tls.context(pair("dyn.example")))
''' % (lua_value(c.dir), lua_value(c.dir))


SNI_CALLBACK = Lua(r'''function(servername)
    appendline(CALLS, servername)
    if servername == "slow.example" then
      smtp.sleep(1)
      return smtp.tls.context(pair("slow.example"))
    elseif servername == "dyn.example" or servername == "alias.example" then
      return shared
    elseif servername == "smtp.another.com" then
      return smtp.tls.context(pair("smtp.another.com"))
    elseif servername == "refuse.example" then
      return nil, "no certificate for this name"
    elseif servername == "reject.example" then
      return nil, smtp.reject(550, "go away")
    elseif servername == "boom.example" then
      error("boom in SNICallback")
    end
    return nil
  end''')


class SNI(SharedServerTest):
    @classmethod
    def setUpClass(cls):
        c = certs()
        cls.a, cls.b, cls.c = free_port(), free_port(), free_port()
        hooks = dict(RECORD_HOOKS, SNICallback=SNI_CALLBACK)
        # sniOptions maps smtp.another.com to the wrong certificate on
        # purpose: SNICallback is asked first and must win.
        sni_cb = {"mail.example.com": c.pair("mail.example.com"), "smtp.another.com": c.pair("mail.example.com")}
        sni_plain = {"mail.example.com": c.pair("mail.example.com"), "smtp.another.com": c.pair("smtp.another.com")}
        cls.srv = Server(multi_script([
            (dict(c.pair("localhost"), listen="127.0.0.1:%d" % cls.a, sniOptions=sni_cb), hooks),
            (dict(c.pair("localhost"), listen="127.0.0.1:%d" % cls.b, sniOptions=sni_cb, secure=True), hooks),
            (dict(c.pair("localhost"), listen="127.0.0.1:%d" % cls.c, sniOptions=sni_plain), RECORD_HOOKS),
        ], prelude=sni_prelude()), listen=False, ports=[cls.a, cls.b, cls.c])

    def calls(self):
        try:
            return self.srv.out_file("sni-calls").decode().split()
        except FileNotFoundError:
            return []

    def handshake(self, port, name, check=True, implicit=False):
        """Returns (client, server certificate CN)."""
        ctx = client_context(check_hostname=check)
        if implicit:
            c = tls_client(port, ctx, name)
        else:
            c = self.client(port=port)
            c.ehlo()
            starttls(c, ctx, name)
        return c, peer_cn(c.sock)

    # ---- sniOptions
    def test_sni_options_python(self):
        for name in ["mail.example.com", "smtp.another.com", "localhost"]:
            with self.subTest(name=name):
                c, cn = self.handshake(self.c, name)
                self.assertEqual(cn, name)
                self.assertReply(c.ehlo(), 250)
                self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
                c.close()
                ev = [e for e in self.srv.events("mail") if e["port"] == c.local_port]
                self.assertEqual(ev[0]["servername"], name)

    def test_sni_options_unknown_name_gets_default(self):
        c, cn = self.handshake(self.c, "unknown.example", check=False)
        self.assertEqual(cn, "localhost")
        self.assertReply(c.ehlo(), 250)
        c.close()

    def test_sni_options_s_client(self):
        for name, cn in [("mail.example.com", "mail.example.com"), ("smtp.another.com", "smtp.another.com"),
                         ("nobody.example", "localhost")]:
            with self.subTest(name=name):
                r = s_client(self.c, "-servername", name, "-showcerts", input=b"QUIT\n")
                out = r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")
                self.assertEqual(r.returncode, 0, out)
                self.assertRegex(out, r"Peer certificate: .*CN ?= ?%s\b" % re.escape(cn))

    def test_no_sni_gets_default(self):
        c, cn = self.handshake(self.c, "127.0.0.1")
        self.assertEqual(cn, "localhost")
        c.close()

    # ---- SNICallback
    def test_callback_context(self):
        c, cn = self.handshake(self.a, "smtp.another.com")
        self.assertEqual(cn, "smtp.another.com", "SNICallback must be asked before sniOptions")
        self.assertReply(c.ehlo(), 250)
        c.close()
        [sec] = [e for e in self.srv.events("secure") if e["session"]["port"] == c.local_port]
        self.assertEqual(sec["session"]["servername"], "smtp.another.com")

    def test_callback_nil_falls_back_to_sni_options(self):
        c, cn = self.handshake(self.a, "mail.example.com")
        self.assertEqual(cn, "mail.example.com")
        c.close()

    def test_callback_nil_gets_default(self):
        c, cn = self.handshake(self.a, "nothing.example", check=False)
        self.assertEqual(cn, "localhost")
        self.assertReply(c.ehlo(), 250)
        c.close()
        self.assertIn("nothing.example", self.calls())

    def test_callback_shared_context_two_names(self):
        c1, cn1 = self.handshake(self.a, "dyn.example")
        c2, cn2 = self.handshake(self.a, "alias.example", check=False)
        self.assertEqual((cn1, cn2), ("dyn.example", "dyn.example"))
        for c in (c1, c2):
            self.assertReply(c.ehlo(), 250)
            c.close()

    def test_callback_cached_per_listener(self):
        before = self.calls().count("dyn.example")
        c1, _ = self.handshake(self.a, "dyn.example")
        c1.close()
        c2, cn = self.handshake(self.a, "dyn.example")
        self.assertEqual(cn, "dyn.example")
        self.assertReply(c2.ehlo(), 250)
        c2.close()
        after_a = self.calls().count("dyn.example")
        self.assertLessEqual(after_a - before, 1, "the second handshake with the same name called SNICallback again")
        # the secure listener has its own cache
        for _ in range(2):
            c3, cn3 = self.handshake(self.b, "dyn.example", implicit=True)
            self.assertEqual(cn3, "dyn.example")
            self.assertReply(c3.greeting, 220)
            c3.close()
        self.assertEqual(self.calls().count("dyn.example") - after_a, 1, self.calls())

    def test_callback_refuses(self):
        for name in ["refuse.example", "reject.example"]:
            with self.subTest(name=name):
                c = self.client(port=self.a)
                c.ehlo()
                with self.assertRaises((ssl.SSLError, ConnectionError)):
                    starttls(c, client_context(check_hostname=False), name)
                c.close()
        with self.assertRaises((ssl.SSLError, ConnectionError)):
            tls_client(self.b, client_context(check_hostname=False), "refuse.example")
        # the server goes on
        c, cn = self.handshake(self.a, "localhost")
        self.assertEqual(cn, "localhost")
        self.assertReply(c.ehlo(), 250)
        c.close()
        self.assertFalse([e for e in self.srv.events("secure")
                          if e["session"].get("servername") in ("refuse.example", "reject.example")])

    def test_callback_error_logged_default_used(self):
        c, cn = self.handshake(self.a, "boom.example", check=False)
        self.assertEqual(cn, "localhost")
        self.assertReply(c.ehlo(), 250)
        c.close()
        self.assertIn("boom in SNICallback", self.srv.log())

    def test_callback_sleep_does_not_block(self):
        result = {}

        def slow():
            t0 = time.monotonic()
            try:
                c = tls_client(self.b, client_context(), "slow.example")
                result["cn"] = peer_cn(c.sock)
                result["greeting"] = c.greeting.code
                c.close()
            except Exception as e:  # noqa: BLE001
                result["error"] = repr(e)
            result["t"] = time.monotonic() - t0

        th = threading.Thread(target=slow)
        th.start()
        time.sleep(0.2)  # the handshake is now waiting in SNICallback's sleep
        t0 = time.monotonic()
        with self.client(port=self.c) as c:
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.transaction(b"Subject: meanwhile\r\n\r\nx\r\n"), 250)
            self.assertReply(c.cmd("QUIT"), 221)
        plain_t = time.monotonic() - t0
        self.assertTrue(th.is_alive(), "the slow handshake finished before the plain session: %r" % result)
        th.join(10)
        self.assertLess(plain_t, 0.7, "a plain session waited for SNICallback's sleep")
        self.assertNotIn("error", result, result)
        self.assertEqual(result["cn"], "slow.example")
        self.assertEqual(result["greeting"], 220)
        self.assertGreaterEqual(result["t"], 0.9)

    def test_s_client_callback(self):
        r = s_client(self.a, "-servername", "smtp.another.com", "-CAfile", certs().ca, "-verify_return_error",
                     input=b"EHLO x\nQUIT\n")
        out = r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 0, out)
        self.assertIn("Verification: OK", out)
        self.assertRegex(out, r"Peer certificate: .*CN ?= ?smtp\.another\.com")

    def test_unverified_peer_cn_helper(self):
        # the default certificate, read without verification
        c = self.client(port=self.c)
        c.ehlo()
        s = starttls(c, client_context(ca=None), "unknown.example")
        self.assertEqual(der_cn(s.getpeercert(binary_form=True)), "localhost")
        c.close()


CACHE_PRELUDE = r'''
local CALLS = OUT .. "/sni-calls"
'''

# Serves the certificate in OUT/live.key, OUT/live.crt for every name.
CACHE_SNI = Lua(r'''function(servername)
    appendline(CALLS, servername)
    return smtp.tls.context({key = OUT .. "/live.key", cert = OUT .. "/live.crt"})
  end''')

# MAIL FROM:<usc@ctl.test> calls smtp.server:updateSecureContext({}).
CACHE_CONTROL = Lua(r'''function(address, session)
    record("mail", {servername = session.servername})
    if address.address == "usc@ctl.test" then
      local ok, err = smtp.server:updateSecureContext({})
      return nil, smtp.reject(550, "5.7.1 usc " .. tostring(ok) .. " " .. tostring(err))
    end
  end''')


class SNICache(E2ETest):
    """SNICallback's answers are cached per listener, by name: at most
    sniCacheSize names, the least recently used one evicted first; the cache
    is emptied by updateSecureContext({}) and by a reload (HUP), and only
    then does a certificate SNICallback loads from disk change."""

    def start(self, **opts):
        srv = Server(tls_script(hooks={"SNICallback": CACHE_SNI, "onMailFrom": CACHE_CONTROL}, prelude=CACHE_PRELUDE,
                                **dict(certs().pair(), **opts)), start=False)
        self.addCleanup(srv.stop)
        self.srv, self.out = srv, srv.out
        self.live("smtp.another.com")
        srv.start()
        return srv

    def live(self, name):
        """Puts name's pair at OUT/live.* (renamed over, as a renewal would)."""
        out = self.out
        k = certs()
        for ext in ("key", "crt"):
            tmp = os.path.join(out, "live.%s.tmp" % ext)
            shutil.copyfile(os.path.join(k.dir, "%s.%s" % (name, ext)), tmp)
            os.rename(tmp, os.path.join(out, "live.%s" % ext))

    def calls(self):
        try:
            return self.srv.out_file("sni-calls").decode().split()
        except FileNotFoundError:
            return []

    def cn(self, name):
        """Server certificate CN for a STARTTLS handshake asking for name."""
        c = self.srv.client()
        c.ehlo()
        starttls(c, client_context(check_hostname=False), name)
        cn = peer_cn(c.sock)
        self.assertReply(c.ehlo(), 250)
        c.close()
        return cn

    def test_least_recently_used_name_evicted(self):
        self.start(sniCacheSize=2)
        for name in ["a.example", "b.example", "a.example", "c.example", "a.example"]:
            self.assertEqual(self.cn(name), "smtp.another.com")
        # a was used again before c came: b, the least recently used, went
        self.assertEqual(self.calls(), ["a.example", "b.example", "c.example"])
        self.cn("b.example")
        self.assertEqual(self.calls()[-1:], ["b.example"], "an evicted name was not asked again")
        n = len(self.calls())
        self.cn("b.example")
        self.assertEqual(len(self.calls()), n, "a cached name was asked again")

    def test_default_bound_keeps_many_names(self):
        self.start()
        names = ["n%d.example" % i for i in range(30)]
        for name in names + names:
            self.cn(name)
        self.assertEqual(self.calls(), names)

    def test_update_secure_context_empties_the_cache(self):
        self.start()
        self.cn("a.example")
        self.cn("a.example")
        self.assertEqual(self.calls(), ["a.example"])
        with self.srv.client() as c:
            c.ehlo()
            r = c.cmd("MAIL FROM:<usc@ctl.test>")
            self.assertReply(r, 550)
            self.assertIn("usc true", r.text)
        self.cn("a.example")
        self.assertEqual(self.calls(), ["a.example", "a.example"])

    def test_session_servername_lower_cased(self):
        self.start()
        c = self.srv.client()
        c.ehlo()
        starttls(c, client_context(check_hostname=False), "MiXed.Example")
        self.assertReply(c.ehlo(), 250)
        self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
        c.close()
        self.assertEqual(self.srv.events("mail"), [{"servername": "mixed.example"}])
        self.assertEqual(self.calls(), ["mixed.example"])

    def test_callback_certificates_change_after_hup(self):
        self.start()
        self.assertEqual(self.cn("a.example"), "smtp.another.com")
        self.live("dyn.example")
        time.sleep(2.5)  # longer than watched files take: these are not watched
        self.assertEqual(self.cn("a.example"), "smtp.another.com", "the cached context changed without a reload")
        before = self.srv.log().count("msg=reloaded")
        self.srv.send_signal(signal.SIGHUP)
        self.assertTrue(wait_for(lambda: self.srv.log().count("msg=reloaded") > before, 10), self.srv.log_tail(10))
        self.assertEqual(self.cn("a.example"), "dyn.example")
