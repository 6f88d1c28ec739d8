"""MAIL FROM / RCPT TO addresses and parameters (protocol-test.js
"Addresses" and "Parameters", mail-parameters-test.js, security.md 1.5)."""

from harness import Lua, SharedServerTest, script

RECORD_HOOKS = {
    "onMailFrom": Lua('function(address, session) record("mail", {port = session.remotePort, a = addr(address)}) end'),
    "onRcptTo": Lua('function(address, session) record("rcpt", {port = session.remotePort, a = addr(address)}) end'),
}


class Addresses(SharedServerTest):
    SCRIPT = script(hooks=RECORD_HOOKS)

    def seen(self, kind, c):
        return [e["a"] for e in self.srv.events(kind) if e["port"] == c.local_port]

    def mail(self, c, arg):
        return c.cmd("MAIL FROM:" + arg)

    def test_null_sender(self):
        with self.ehlo_client() as c:
            self.assertReply(self.mail(c, "<>"), 250, "2.1.0")
            self.assertEqual(self.seen("mail", c)[0]["address"], "")

    def test_postmaster_recipient(self):
        with self.ehlo_client() as c:
            self.assertReply(self.mail(c, "<a@example.com>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<postmaster>"), 250, "2.1.5")
            self.assertReply(c.cmd("RCPT TO:<PostMaster>"), 250, "2.1.5")

    def test_postmaster_sender_refused(self):
        with self.ehlo_client() as c:
            self.assertReply(self.mail(c, "<postmaster>"), 501, "5.1.7")

    def test_recipient_without_domain(self):
        with self.ehlo_client() as c:
            self.assertReply(self.mail(c, "<a@example.com>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<user>"), 501, "5.1.3")

    def test_source_route_removed(self):
        with self.ehlo_client() as c:
            self.assertReply(self.mail(c, "<@relay.example.com,@other.example.com:sender@example.com>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<@relay.example.com:rcpt@example.com>"), 250, "2.1.5")
            self.assertEqual(self.seen("mail", c)[0]["address"], "sender@example.com")
            self.assertEqual(self.seen("rcpt", c)[0]["address"], "rcpt@example.com")

    def test_quoted_local_part(self):
        with self.ehlo_client() as c:
            self.assertReply(self.mail(c, '<"sender"@example.com>'), 250, "2.1.0")

    def test_missing_brackets(self):
        with self.ehlo_client() as c:
            self.assertReply(self.mail(c, "sender@example.com"), 501, "5.5.4")
            self.assertReply(self.mail(c, "<a@example.com>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:rcpt@example.com"), 501, "5.5.4")

    def test_missing_from_keyword(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("MAIL <a@example.com>"), 501, "5.5.4")
            self.assertReply(c.cmd("MAIL"), 501, "5.5.4")
            self.assertReply(self.mail(c, "<a@example.com>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT <b@example.com>"), 501, "5.5.4")
            self.assertReply(c.cmd("RCPT"), 501, "5.5.4")

    def test_space_after_colon_accepted(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("MAIL FROM: <a@example.com>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO: <b@example.com>"), 250, "2.1.5")

    def test_bad_sender_addresses(self):
        for a in ["<a@>", "<@example.com>", "<a b@example.com>", "<a@exa mple.com>", "<<a@example.com>>",
                  "<a@example..com>", "<ilo.@example.com>"]:
            with self.subTest(address=a), self.ehlo_client() as c:
                r = self.mail(c, a)
                self.assertEqual(r.code, 501, r)
                self.assertIn(r.enh, ("5.1.7", "5.5.4"), r)
                self.assertReply(self.mail(c, "<a@example.com>"), 250, "2.1.0")

    def test_bad_recipient_addresses(self):
        for a in ["<a@>", "<@example.com>", "<a b@example.com>", "<a@example..com>", "<a@[300.1.1.1]>", "<>"]:
            with self.subTest(address=a), self.ehlo_client() as c:
                self.assertReply(self.mail(c, "<a@example.com>"), 250, "2.1.0")
                r = c.cmd("RCPT TO:" + a)
                self.assertEqual(r.code, 501, r)
                self.assertIn(r.enh, ("5.1.3", "5.5.4"), r)
                self.assertReply(c.cmd("RCPT TO:<b@example.com>"), 250, "2.1.5")

    def test_address_literals(self):
        with self.ehlo_client() as c:
            self.assertReply(self.mail(c, "<a@[127.0.0.1]>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<b@[192.0.2.1]>"), 250, "2.1.5")
            self.assertReply(c.cmd("RCPT TO:<c@[IPv6:2001:db8::1]>"), 250, "2.1.5")

    def test_path_too_long(self):
        with self.ehlo_client() as c:
            self.assertEqual(self.mail(c, "<%s@example.com>" % ("a" * 300)).code, 501)
            self.assertEqual(self.mail(c, "<a@%s.com>" % ".".join(["b" * 60] * 6)).code, 501)
            self.assertReply(self.mail(c, "<a@example.com>"), 250, "2.1.0")
            self.assertEqual(c.cmd("RCPT TO:<%s@example.com>" % ("r" * 600)).code, 501)

    def test_args_always_table(self):
        with self.ehlo_client() as c:
            self.assertReply(self.mail(c, "<a@example.com>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<b@example.com>"), 250, "2.1.5")
            m = self.seen("mail", c)[0]
            self.assertEqual(m["argsType"], "table")
            self.assertEqual(m["args"], {})
            self.assertEqual(self.seen("rcpt", c)[0]["argsType"], "table")

    def test_args_passed_upper_case(self):
        with self.ehlo_client() as c:
            self.assertReply(self.mail(c, "<a@example.com> size=100 body=8bitmime"), 250, "2.1.0")
            m = self.seen("mail", c)[0]
            self.assertEqual(m["address"], "a@example.com")
            self.assertEqual(m["args"].get("SIZE"), "100", m)
            self.assertIn(m["args"].get("BODY"), ("8bitmime", "8BITMIME"), m)

    def test_smtputf8_flag(self):
        with self.ehlo_client() as c:
            self.assertReply(self.mail(c, "<a@example.com> SMTPUTF8"), 250, "2.1.0")
            m = self.seen("mail", c)[0]
            self.assertIs(m["args"].get("SMTPUTF8"), True, m)

    def test_smtputf8_with_value(self):
        with self.ehlo_client() as c:
            self.assertReply(self.mail(c, "<a@example.com> SMTPUTF8=yes"), 501, "5.5.4")

    def test_body_values(self):
        for v, code in [("7BIT", 250), ("8BITMIME", 250), ("8bitmime", 250), ("BINARYMIME", 250),
                        ("INVALID", 501), ("", 501)]:
            with self.subTest(body=v), self.ehlo_client() as c:
                r = self.mail(c, "<a@example.com> BODY=" + v)
                self.assertReply(r, code, "2.1.0" if code == 250 else "5.5.4")

    def test_valueless_body_and_size(self):
        """robustness-test.js: a valueless BODY or SIZE is 501, the next MAIL works."""
        for p in ["BODY", "SIZE"]:
            with self.subTest(param=p), self.ehlo_client() as c:
                self.assertReply(self.mail(c, "<a@example.com> " + p), 501, "5.5.4")
                self.assertReply(self.mail(c, "<a@example.com>"), 250, "2.1.0")
                self.assertReply(c.cmd("QUIT"), 221, "2.0.0")

    def test_size_syntax(self):
        for v in ["abc", "-1", "1e9", "", "1.5", "0x10", "99999999999999999999999", " 10"]:
            with self.subTest(size=v), self.ehlo_client() as c:
                self.assertReply(self.mail(c, "<a@example.com> SIZE=" + v), 501, "5.5.4")

    def test_size_without_limit(self):
        with self.ehlo_client() as c:
            self.assertReply(self.mail(c, "<a@example.com> SIZE=100"), 250, "2.1.0")
            self.assertReply(c.cmd("RSET"), 250, "2.0.0")
            self.assertReply(self.mail(c, "<a@example.com> SIZE=12345678901234567890"), 250, "2.1.0")

    def test_duplicate_parameters(self):
        for p in ["SIZE=1 SIZE=2", "SIZE=1 size=1", "BODY=7BIT BODY=8BITMIME", "SMTPUTF8 SMTPUTF8"]:
            with self.subTest(params=p), self.ehlo_client() as c:
                self.assertReply(self.mail(c, "<a@example.com> " + p), 501, "5.5.4")

    def test_malformed_parameter(self):
        with self.ehlo_client() as c:
            self.assertReply(self.mail(c, "<a@example.com> =x"), 501, "5.5.4")

    def test_eight_bit_address_needs_smtputf8(self):
        with self.ehlo_client() as c:
            self.assertReply(self.mail(c, "<δοκιμή@παράδειγμα.δοκιμή>"), 553, "5.6.7")
            self.assertReply(self.mail(c, "<a@example.com>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<δοκιμή@παράδειγμα.δοκιμή>"), 553, "5.6.7")

    def test_eight_bit_address_with_smtputf8(self):
        with self.ehlo_client() as c:
            self.assertReply(self.mail(c, "<tëst@example.com> SMTPUTF8"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<δοκιμή@παράδειγμα.δοκιμή>"), 250, "2.1.5")
            got = self.seen("rcpt", c)[0]["address"].encode("latin-1").decode("utf-8")
            self.assertEqual(got, "δοκιμή@παράδειγμα.δοκιμή")
            got = self.seen("mail", c)[0]["address"].encode("latin-1").decode("utf-8")
            self.assertEqual(got, "tëst@example.com")

    def test_control_bytes_in_address(self):
        with self.ehlo_client() as c:
            c.send(b"MAIL FROM:<a\x01b@example.com>\r\n")
            r = c.read_reply()
            self.assertEqual(r.code, 501, r)
            c.send(b"MAIL FROM:<a@example.com> FOO=a\x01b\r\n")
            r = c.read_reply()
            self.assertEqual(r.code, 501, r)
            self.assertReply(self.mail(c, "<a@example.com>"), 250, "2.1.0")
        self.assertEqual(self.seen("mail", c), [{"address": "a@example.com", "args": {}, "argsType": "table"}])


class SizeLimit(SharedServerTest):
    SCRIPT = script(size=1024)

    def test_ehlo_advertises_size(self):
        with self.client() as c:
            r = c.ehlo()
            self.assertIn("SIZE 1024", [l.upper() for l in r.lines[1:]], r)

    def test_size_over_limit(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@example.com> SIZE=2048"), 552, "5.3.4")
            self.assertReply(c.cmd("MAIL FROM:<a@example.com> SIZE=1025"), 552, "5.3.4")
            self.assertReply(c.cmd("MAIL FROM:<a@example.com> SIZE=1024"), 250, "2.1.0")

    def test_size_overflow(self):
        """security.md case 10: never 250 for these."""
        for v, codes in [("99999999999999999999999", (501,)), ("18446744073709551617", (501, 552)),
                         ("18446744073709551615", (552,)), ("-1", (501,)), ("1e9", (501,)), ("", (501,))]:
            with self.subTest(size=v), self.ehlo_client() as c:
                r = c.cmd("MAIL FROM:<a@example.com> SIZE=" + v)
                self.assertIn(r.code, codes, r)
                self.assertReply(c.cmd("MAIL FROM:<a@example.com> SIZE=10"), 250, "2.1.0")


class Lenient(SharedServerTest):
    SCRIPT = script(lenientAddressParsing=True)

    def test_lenient_accepts_odd_local_part(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("MAIL FROM:<ilo.@example.com>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<a..b@example.com>"), 250, "2.1.5")

    def test_lenient_still_refuses_control_bytes(self):
        with self.ehlo_client() as c:
            c.send(b"MAIL FROM:<a\x01@example.com>\r\n")
            self.assertEqual(c.read_reply().code, 501)
