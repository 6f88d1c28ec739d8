"""Script options: listen, name, banner, hide*, size/hideSize,
disabledCommands (and session.disabledCommands), authMethods,
allowInsecureAuth, authOptional, maxCommandLength, socketTimeout,
closeTimeout, hideENHANCEDSTATUSCODES."""

import signal
import socket
import time

from harness import E2ETest, Lua, Server, default_with, free_port, script


def caps(reply):
    return [l.upper() for l in reply.lines[1:]]


class Identity(E2ETest):
    def test_name_and_banner(self):
        with Server(script(name="relay.example.org", banner="Welcome to the test")) as srv:
            with srv.client() as c:
                self.assertEqual(c.greeting.code, 220)
                self.assertEqual(c.greeting.text, "relay.example.org ESMTP Welcome to the test")
                r = c.ehlo()
                self.assertTrue(r.lines[0].startswith("relay.example.org "), r)
                r = c.cmd("HELO x.example")
                self.assertTrue(r.text.startswith("relay.example.org "), r)

    def test_greeting_without_banner(self):
        with Server(script(name="plain.example")) as srv:
            with srv.client() as c:
                self.assertEqual(c.greeting.text, "plain.example ESMTP")


class Listen(E2ETest):
    def test_script_listen_list(self):
        p1, p2 = free_port(), free_port()
        src = script(listen=["127.0.0.1:%d" % p1, "127.0.0.1:%d" % p2])
        with Server(src, listen=False, ports=[p1, p2]) as srv:
            for p in (p1, p2):
                with srv.client(port=p) as c:
                    self.assertReply(c.greeting, 220)
                    self.assertReply(c.cmd("NOOP"), 250, "2.0.0")

    def test_script_listen_string(self):
        p = free_port()
        with Server(script(listen="127.0.0.1:%d" % p), listen=False, ports=[p]) as srv:
            with srv.client(port=p) as c:
                self.assertReply(c.greeting, 220)

    def test_command_line_overrides_script(self):
        p_script, p_cli = free_port(), free_port()
        src = script(listen="127.0.0.1:%d" % p_script)
        with Server(src, listen=["127.0.0.1:%d" % p_cli]) as srv:
            with srv.client(port=p_cli) as c:
                self.assertReply(c.greeting, 220)
            with self.assertRaises(OSError, msg="the script's listen must be overridden by --listen"):
                socket.create_connection(("127.0.0.1", p_script), timeout=2).close()

    def test_repeated_listen_flags(self):
        p1, p2 = free_port(), free_port()
        with Server(script(), listen=["127.0.0.1:%d" % p1, "127.0.0.1:%d" % p2]) as srv:
            for p in (p1, p2):
                with srv.client(port=p) as c:
                    self.assertReply(c.greeting, 220)


class Capabilities(E2ETest):
    def ehlo_caps(self, **opts):
        with Server(script(**opts)) as srv:
            with srv.client() as c:
                r = c.ehlo()
                self.assertReply(r, 250)
                return caps(r)

    def test_hide_flags(self):
        for flag, kw in [("hidePIPELINING", "PIPELINING"), ("hide8BITMIME", "8BITMIME"),
                         ("hideSMTPUTF8", "SMTPUTF8"), ("hideENHANCEDSTATUSCODES", "ENHANCEDSTATUSCODES")]:
            with self.subTest(flag=flag):
                cs = self.ehlo_caps(**{flag: True})
                self.assertNotIn(kw, cs)
                others = {"PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"} - {kw}
                for o in others:
                    self.assertIn(o, cs)

    def test_size_advertised(self):
        self.assertIn("SIZE 10485760", self.ehlo_caps(size=10485760))

    def test_hide_size(self):
        with Server(script(size=1024, hideSize=True)) as srv:
            with srv.client() as c:
                cs = caps(c.ehlo())
                self.assertNotIn("SIZE 1024", cs)
                self.assertIn("SIZE", cs, "hideSize advertises SIZE without a number (smtp-server)")
                self.assertReply(c.cmd("MAIL FROM:<a@example.com> SIZE=2048"), 250, "2.1.0")

    def test_hide_8bitmime_keeps_behaviour(self):
        with Server(script(hide8BITMIME=True, hidePIPELINING=True)) as srv:
            with srv.client() as c:
                c.ehlo()
                c.send(b"MAIL FROM:<a@example.com> BODY=8BITMIME\r\nRCPT TO:<b@example.com>\r\nNOOP\r\n")
                self.assertCodes(c.read_replies(3), [250, 250, 250])

    def test_auth_advertised_with_insecure_auth(self):
        cs = self.ehlo_caps(allowInsecureAuth=True)
        self.assertIn("AUTH PLAIN LOGIN", cs)

    def test_auth_methods_order(self):
        self.assertIn("AUTH LOGIN PLAIN", self.ehlo_caps(allowInsecureAuth=True, authMethods=["LOGIN", "PLAIN"]))
        cs = self.ehlo_caps(allowInsecureAuth=True, authMethods=["PLAIN"])
        self.assertIn("AUTH PLAIN", cs)
        self.assertNotIn("AUTH PLAIN LOGIN", cs)


class EnhancedCodesHidden(E2ETest):
    def test_no_enhanced_codes(self):
        with Server(script(hideENHANCEDSTATUSCODES=True)) as srv:
            with srv.client() as c:
                rs = [c.cmd("NOOP"), c.cmd("MAIL FROM:<a@example.com>"), c.ehlo(),
                      c.cmd("MAIL FROM:<a@example.com>"), c.cmd("RCPT TO:<bad"), c.cmd("RCPT TO:<b@example.com>"),
                      c.cmd("FOO"), c.cmd("RSET"), c.cmd("QUIT")]
                self.assertCodes(rs, [250, 503, 250, 250, 501, 250, 500, 250, 221])
                for r in rs:
                    self.assertIsNone(r.enh, "enhanced code despite hideENHANCEDSTATUSCODES: %r" % r.raw)


class DisabledCommands(E2ETest):
    def test_disabled_commands(self):
        with Server(script(disabledCommands=["VRFY", "help"])) as srv:
            with srv.client() as c:
                self.assertReply(c.cmd("VRFY x"), 500, "5.5.2")
                self.assertReply(c.cmd("HELP"), 500, "5.5.2")
                self.assertReply(c.cmd("NOOP"), 250, "2.0.0")

    def test_disabled_auth_hidden_and_refused(self):
        with Server(script(allowInsecureAuth=True, disabledCommands=["AUTH"])) as srv:
            with srv.client() as c:
                cs = caps(c.ehlo())
                self.assertFalse([k for k in cs if k.startswith("AUTH")], cs)
                self.assertReply(c.cmd("AUTH PLAIN AHRlc3QAdGVzdA=="), 500, "5.5.2")

    def test_session_disabled_commands(self):
        # every second connection disables NOOP for itself only
        prelude = "local nconn = 0\n"
        hooks = {"onConnect": Lua('''function(session)
            nconn = nconn + 1
            if nconn % 2 == 0 then session.disabledCommands = {"NOOP"} end
          end''')}
        with Server(script(hooks=hooks, prelude=prelude, disabledCommands=["HELP"])) as srv:
            for i in range(1, 7):
                with srv.client() as c:
                    r = c.cmd("NOOP")
                    if i % 2 == 0:
                        self.assertReply(r, 500, "5.5.2", "connection %d" % i)
                        # the session list replaces the server list
                        self.assertReply(c.cmd("HELP"), 214, "2.0.0")
                    else:
                        self.assertReply(r, 250, "2.0.0", "connection %d" % i)
                        self.assertReply(c.cmd("HELP"), 500, "5.5.2")


    def test_session_disabled_commands_from_address_hooks(self):
        # An accepted address's envelope call reads the list; a refusal's
        # is read from C.
        hooks = {"onMailFrom": Lua('''function(address, session)
            if address.address == "quiet@example.com" then session.disabledCommands = {"NOOP"} end
          end'''), "onRcptTo": Lua('''function(address, session)
            if address.address == "loud@example.com" then session.disabledCommands = {"HELP"} end
            if address.address == "no@example.com" then
              session.disabledCommands = {"NOOP"}
              return nil, smtp.reject(550, "no")
            end
          end''')}
        with Server(script(hooks=hooks, disabledCommands=["HELP"])) as srv:
            with srv.client() as c:
                c.ehlo()
                self.assertReply(c.cmd("MAIL FROM:<quiet@example.com>"), 250, "2.1.0")
                self.assertReply(c.cmd("NOOP"), 500, "5.5.2")
                self.assertReply(c.cmd("HELP"), 214, "2.0.0")
                self.assertReply(c.cmd("RCPT TO:<loud@example.com>"), 250, "2.1.5")
                self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
                self.assertReply(c.cmd("HELP"), 500, "5.5.2")
                self.assertReply(c.cmd("RCPT TO:<no@example.com>"), 550)
                self.assertReply(c.cmd("NOOP"), 500, "5.5.2")
                self.assertReply(c.cmd("HELP"), 214, "2.0.0")


class AuthGate(E2ETest):
    def test_auth_refused_before_tls(self):
        with Server(script()) as srv:
            with srv.client() as c:
                c.ehlo()
                self.assertReply(c.cmd("AUTH PLAIN AHVzZXIAcGFzcw=="), 538, "5.7.11")
                self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")

    def test_auth_required(self):
        with Server(script(authOptional=False, allowInsecureAuth=True)) as srv:
            with srv.client() as c:
                c.ehlo()
                self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 530, "5.7.0")


class MaxCommandLength(E2ETest):
    def test_custom_limit(self):
        with Server(script(maxCommandLength=600)) as srv:
            with srv.client() as c:
                self.assertReply(c.cmd("NOOP " + "x" * 590), 250, "2.0.0")
                self.assertReply(c.cmd("NOOP " + "x" * 700), 500, "5.5.6")
                self.assertReply(c.cmd("NOOP"), 250, "2.0.0")


class Timeouts(E2ETest):
    def test_socket_timeout_fraction(self):
        with Server(script(socketTimeout=0.5)) as srv:
            with srv.client() as c:
                t0 = time.monotonic()
                r = c.read_reply(timeout=5)
                dt = time.monotonic() - t0
                self.assertReply(r, 421, "4.4.2")
                c.expect_close(3)
                self.assertGreater(dt, 0.3)
                self.assertLess(dt, 3.0)

    def test_active_client_not_timed_out(self):
        with Server(script(socketTimeout=0.5)) as srv:
            with srv.client() as c:
                for _ in range(8):
                    time.sleep(0.25)
                    self.assertReply(c.cmd("NOOP"), 250, "2.0.0")

    def test_term_idle_session_gets_421(self):
        """On TERM the listeners close at once; an idle session gets
        421 4.4.2 (at once or on its next command) and is closed."""
        with Server(script(closeTimeout=5)) as srv:
            c = srv.client()
            self.assertReply(c.ehlo(), 250)
            t0 = time.monotonic()
            srv.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            with self.assertRaises(OSError, msg="the listener must close at once on TERM"):
                socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
            try:
                c.line("NOOP")
            except OSError:
                pass
            r = c.read_reply(timeout=8)
            self.assertReply(r, 421, "4.4.2")
            c.expect_close(3)
            self.assertEqual(srv.wait_exit(8), 0)
            self.assertLess(time.monotonic() - t0, 7)
            srv.stop()  # exit code + sanitizer check

    def test_close_timeout_ends_stalled_transfer(self):
        """A transfer that does not finish within closeTimeout gets
        421 4.4.2 and is closed; nothing is delivered; exit 0."""
        with Server(default_with(closeTimeout=1)) as srv:
            c = srv.client()
            c.ehlo()
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<b@example.com>"), 250, "2.1.5")
            self.assertReply(c.cmd("DATA"), 354)
            c.send(b"Subject: stalled\r\n\r\nnever finished")
            t0 = time.monotonic()
            srv.send_signal(signal.SIGTERM)
            r = c.read_reply(timeout=8)
            dt = time.monotonic() - t0
            self.assertReply(r, 421, "4.4.2")
            self.assertGreater(dt, 0.7, "421 came before closeTimeout")
            self.assertLess(dt, 4, "421 came long after closeTimeout")
            c.expect_close(3)
            self.assertEqual(srv.wait_exit(5), 0)
            srv.stop()
            self.assertEqual(srv.maildir_new(), [])

    def test_term_with_no_sessions_exits_fast(self):
        with Server(script(closeTimeout=10)) as srv:
            t0 = time.monotonic()
            srv.send_signal(signal.SIGTERM)
            self.assertEqual(srv.wait_exit(5), 0)
            self.assertLess(time.monotonic() - t0, 3)
            srv.stop()


class ServerObject(E2ETest):
    def test_auth_required_message(self):
        src = script(authRequiredMessage="Please log in first", allowInsecureAuth=True, authOptional=False)
        with Server(src) as srv:
            with srv.client() as c:
                c.ehlo()
                r = c.cmd("MAIL FROM:<a@example.com>")
                self.assertReply(r, 530, "5.7.0")
                self.assertIn("Please log in first", r.text)

    def test_smtp_server_close_stops_like_term(self):
        hooks = {"onMailFrom": Lua(r'''function(address, session)
            if address.address == "stop@example.com" then smtp.server:close() end
          end''')}
        with Server(script(hooks, authOptional=True, closeTimeout=1)) as srv:
            with srv.client() as idle, srv.client() as c:
                self.assertReply(idle.ehlo(), 250)
                c.ehlo()
                # The transaction in flight may finish; the idle session is ended.
                self.assertReply(c.cmd("MAIL FROM:<stop@example.com>"), 250, "2.1.0")
                self.assertReply(idle.read_reply(timeout=5), 421, "4.4.2")
                self.assertReply(c.cmd("RCPT TO:<b@example.com>"), 250, "2.1.5")
                self.assertReply(c.cmd("QUIT"), 221)
            self.assertEqual(srv.wait_exit(10), 0)
