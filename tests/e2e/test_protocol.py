"""Protocol basics and command sequencing (smtp-server protocol-test.js,
"Sequencing", "Basic" and "Enhanced codes"), checked against docs/replies.md."""

import ctypes
import os
import re
import socket
import struct
import time

from harness import STORE_ONDATA, SharedServerTest, script

ENH_LINE = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3} ")


class Sequencing(SharedServerTest):
    SCRIPT = script(hooks={"onData": STORE_ONDATA})

    def test_greeting(self):
        with self.client() as c:
            self.assertReply(c.greeting, 220)
            self.assertTrue(c.greeting.text.startswith("mx.test"), c.greeting)
            self.assertIn("ESMTP", c.greeting.text)
            self.assertIsNone(c.greeting.enh, "the greeting carries no enhanced code")

    def test_mail_rcpt_data_before_ehlo(self):
        with self.client() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 503, "5.5.1")
            self.assertReply(c.cmd("RCPT TO:<b@example.com>"), 503, "5.5.1")
            self.assertReply(c.cmd("DATA"), 503, "5.5.1")

    def test_rcpt_before_mail(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("RCPT TO:<b@example.com>"), 503, "5.5.1")

    def test_data_before_mail(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("DATA"), 503, "5.5.1")

    def test_data_before_rcpt(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")
            self.assertReply(c.cmd("DATA"), 503, "5.5.1")

    def test_nested_mail(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 503, "5.5.1")

    def test_rset_ends_transaction(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")
            self.assertReply(c.cmd("RSET"), 250, "2.0.0")
            self.assertReply(c.cmd("RCPT TO:<b@example.com>"), 503, "5.5.1")

    def test_ehlo_again_ends_transaction(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")
            self.assertReply(c.ehlo(), 250)
            self.assertReply(c.cmd("RCPT TO:<b@example.com>"), 503, "5.5.1")

    def test_helo_again_ends_transaction(self):
        with self.client() as c:
            self.assertReply(c.cmd("HELO client.example"), 250)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")
            self.assertReply(c.cmd("HELO client.example"), 250)
            self.assertReply(c.cmd("RCPT TO:<b@example.com>"), 503, "5.5.1")

    def test_rset_keeps_identity(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("RSET"), 250, "2.0.0")
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")

    def test_lower_case_commands(self):
        with self.client() as c:
            self.assertReply(c.cmd("ehlo client.example"), 250)
            self.assertReply(c.cmd("mail from:<a@example.com>"), 250, "2.1.0")
            self.assertReply(c.cmd("rcpt to:<b@example.com>"), 250, "2.1.5")
            self.assertReply(c.cmd("Data"), 354)

    def test_full_transaction_codes(self):
        with self.client() as c:
            rs = [c.ehlo(), c.cmd("MAIL FROM:<a@example.com>"), c.cmd("RCPT TO:<b@example.com>"), c.cmd("DATA")]
            c.send(b"Subject: x\r\n\r\nhello\r\n.\r\n")
            rs.append(c.read_reply())
            rs.append(c.cmd("QUIT"))
            self.assertCodes(rs, [250, 250, 250, 354, 250, 221])
            self.assertEqual([r.enh for r in rs[1:]], ["2.1.0", "2.1.5", None, "2.6.0", "2.0.0"],
                             [r.raw for r in rs])
            c.expect_close()

    def test_second_transaction_on_same_connection(self):
        with self.ehlo_client() as c:
            self.assertReply(c.transaction(b"one\r\n"), 250, "2.6.0")
            self.assertReply(c.transaction(b"two\r\n"), 250, "2.6.0")

    def test_after_rejected_data_new_transaction(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<b@example.com>"), 250, "2.1.5")
            self.assertReply(c.cmd("RSET"), 250, "2.0.0")
            self.assertReply(c.cmd("DATA"), 503, "5.5.1")
            self.assertReply(c.transaction(b"x\r\n"), 250, "2.6.0")


class Basic(SharedServerTest):
    SCRIPT = script()

    def test_helo(self):
        with self.client() as c:
            r = c.cmd("HELO client.example")
            self.assertReply(r, 250)
            self.assertEqual(len(r.lines), 1, r)
            self.assertTrue(r.text.startswith("mx.test"), r)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")

    def test_helo_ehlo_argument_errors(self):
        for line in ["HELO", "HELO a b", "EHLO", "EHLO a b"]:
            with self.subTest(line=line), self.client() as c:
                self.assertReply(c.cmd(line), 501, "5.5.4")
                # the session goes on
                self.assertReply(c.cmd("NOOP"), 250, "2.0.0")

    def test_bad_hostname(self):
        for line in ["EHLO " + "a" * 300, "HELO " + "b" * 300]:
            with self.subTest(line=line[:10]), self.client() as c:
                self.assertReply(c.cmd(line), 501, "5.5.4")
                self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 503, "5.5.1", "no identity after a bad EHLO")

    def test_address_literal_hostname(self):
        with self.client() as c:
            self.assertReply(c.cmd("EHLO [127.0.0.1]"), 250)
            self.assertReply(c.cmd("EHLO [IPv6:::1]"), 250)

    def test_ehlo_capabilities_default(self):
        with self.client() as c:
            r = c.ehlo()
            self.assertReply(r, 250)
            self.assertTrue(r.lines[0].startswith("mx.test"), r)
            self.assertIsNone(r.enh, "EHLO lines carry no enhanced code")
            caps = [l.upper() for l in r.lines[1:]]
            for kw in ["PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"]:
                self.assertIn(kw, caps, r)
            self.assertFalse([k for k in caps if k.startswith("AUTH")],
                             "AUTH must not be offered without TLS or allowInsecureAuth: %r" % r)
            self.assertFalse([k for k in caps if k.startswith("SIZE")], "no SIZE without size: %r" % r)
            self.assertNotIn("DSN", caps, "DSN hidden by default")
            self.assertNotIn("REQUIRETLS", caps)
            self.assertEqual(caps[:4], ["PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"], r)

    def test_noop_before_ehlo(self):
        with self.client() as c:
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")

    def test_noop_with_argument(self):
        with self.client() as c:
            self.assertReply(c.cmd("NOOP anything here"), 250, "2.0.0")

    def test_help(self):
        with self.client() as c:
            self.assertReply(c.cmd("HELP"), 214, "2.0.0")

    def test_vrfy(self):
        with self.client() as c:
            self.assertReply(c.cmd("VRFY user"), 252, "2.0.0")
            self.assertReply(c.cmd("VRFY"), 501, "5.5.4")

    def test_expn_unknown(self):
        with self.client() as c:
            self.assertReply(c.cmd("EXPN list"), 500, "5.5.2")

    def test_unknown_command(self):
        with self.client() as c:
            self.assertReply(c.cmd("FOO bar"), 500, "5.5.2")
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")

    def test_empty_line(self):
        with self.client() as c:
            self.assertReply(c.cmd(""), 500, "5.5.2")
            self.assertReply(c.cmd("   "), 500, "5.5.2")
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")

    def test_quit_closes(self):
        with self.client() as c:
            self.assertReply(c.cmd("QUIT"), 221, "2.0.0")
            rest = c.expect_close()
            self.assertEqual(rest, b"")

    def test_quit_reply_and_fin_in_one_segment(self):
        """The last reply is held for the close that follows (MSG_MORE), so
        221 and FIN go in one segment: the client is woken once, not twice.
        Seen on the loopback by a packet socket (root)."""
        sniff = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
        try:
            sniff.bind(("lo", 0x0800))
            sniff.settimeout(0.2)
            with self.client() as c:
                self.assertReply(c.cmd("QUIT"), 221, "2.0.0")
                self.assertEqual(c.expect_close(), b"")
                client_port = c.local_port
            flags = None
            deadline = time.monotonic() + 5
            while flags is None and time.monotonic() < deadline:
                try:
                    pkt = sniff.recv(65535)
                except socket.timeout:
                    continue
                ihl = (pkt[0] & 15) * 4
                if len(pkt) < ihl + 20 or pkt[9] != socket.IPPROTO_TCP:
                    continue
                sport, dport = struct.unpack("!HH", pkt[ihl:ihl + 4])
                data = pkt[ihl + (pkt[ihl + 12] >> 4) * 4:]
                if (sport, dport) == (self.srv.port, client_port) and data.startswith(b"221"):
                    flags = pkt[ihl + 13]
            self.assertIsNotNone(flags, "no segment carrying the 221 seen on lo")
            self.assertTrue(flags & 0x01, "the 221 went without the FIN (flags %#x)" % flags)
        finally:
            sniff.close()

    def test_accepted_connection_has_tcp_nodelay(self):
        """Replies go out as written (TCP_NODELAY), set once on the
        listener, whose accepted connections inherit it. Read off the
        server's own socket for this connection, duplicated into the test
        with pidfd_getfd (root)."""
        libc = ctypes.CDLL(None, use_errno=True)
        SYS_pidfd_getfd = 438
        with self.client() as c:
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
            pidfd = os.pidfd_open(self.srv.proc.pid)
            try:
                found = None
                for name in os.listdir("/proc/%d/fd" % self.srv.proc.pid):
                    fd = libc.syscall(SYS_pidfd_getfd, pidfd, int(name), 0)
                    if fd < 0:
                        continue
                    try:
                        s = socket.socket(fileno=fd)
                    except OSError:
                        os.close(fd)
                        continue
                    try:
                        if s.type == socket.SOCK_STREAM and s.getpeername() == c.sock.getsockname():
                            found = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                    except OSError:
                        pass
                    finally:
                        s.close()
            finally:
                os.close(pidfd)
            self.assertIsNotNone(found, "the server's socket for this connection was not found")
            self.assertEqual(found, 1, "TCP_NODELAY is off on the accepted connection")

    def test_quit_then_pipelined_noop_not_answered(self):
        with self.client() as c:
            c.send(b"QUIT\r\nNOOP\r\n")
            self.assertReply(c.read_reply(), 221, "2.0.0")
            self.assertEqual(c.expect_close(), b"", "nothing may be answered after QUIT")

    def test_command_with_bare_lf(self):
        with self.client() as c:
            c.send(b"EHLO client.example\n")
            self.assertReply(c.read_reply(), 250)
            c.send(b"NOOP\n")
            self.assertReply(c.read_reply(), 250, "2.0.0")

    def test_tab_separator(self):
        with self.client() as c:
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
            self.assertReply(c.cmd("HELO\tclient.example"), 250)

    def test_http_request_line(self):
        for line in ["GET / HTTP/1.1", "POST /x HTTP/1.0"]:
            with self.subTest(line=line), self.client() as c:
                self.assertReply(c.cmd(line), 421, "4.4.2")
                c.expect_close()

    def test_enhanced_codes_on_every_reply(self):
        """Every reply but the greeting, EHLO/HELO and 3xx carries an
        enhanced code (protocol-test.js "Enhanced codes")."""
        with self.client() as c:
            lines = ["NOOP", "MAIL FROM:<a@example.com>", "EHLO client.example", "MAIL FROM:<a@example.com>",
                     "RCPT TO:<bad", "RCPT TO:<b@example.com>", "FOO", "VRFY x", "HELP", "RSET", "DATA", "QUIT"]
            for l in lines:
                c.line(l)
            rs = c.read_replies(len(lines))
            self.assertCodes(rs, [250, 503, 250, 250, 501, 250, 500, 252, 214, 250, 503, 221])
            for l, r in zip(lines, rs):
                if l.startswith("EHLO"):
                    continue
                for raw in r.raw.decode("latin-1").split("\r\n")[:-1]:
                    self.assertRegex(raw, ENH_LINE, "reply to %r" % l)


class Pipelining(SharedServerTest):
    # 200 NOOP/VRFY/RSET/HELP in one session below: over maxJunkCommands
    # (tested in test_limits.JunkCommands), so that limit is off here.
    SCRIPT = script(hooks={"onData": STORE_ONDATA}, maxJunkCommands=False)

    def test_pipelined_transaction_in_one_write(self):
        """fuzz-test.js: MAIL, RCPT a, RCPT <bad, RCPT b, DATA in one write."""
        with self.ehlo_client() as c:
            c.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<a@example.com>\r\nRCPT TO:<bad\r\n"
                   b"RCPT TO:<b@example.com>\r\nDATA\r\n")
            rs = c.read_replies(5)
            self.assertCodes(rs, [250, 250, 501, 250, 354])
            c.send(b"Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n")
            rs = c.read_replies(2)
            self.assertCodes(rs, [250, 221])
            c.expect_close()
        ev = self.srv.wait_events("data", 1)
        mine = [e for e in ev if e["session"]["remotePort"] == c.local_port]
        self.assertEqual(len(mine), 1, ev)
        self.assertEqual([a["address"] for a in mine[0]["session"]["rcptTo"]], ["a@example.com", "b@example.com"])

    def test_many_commands_answered_in_order(self):
        with self.ehlo_client() as c:
            cmds = []
            expect = []
            for i in range(50):
                cmds += ["NOOP", "MAIL FROM:<s%d@example.com>" % i, "RCPT TO:<r%d@example.com>" % i,
                         "VRFY x%d" % i, "RSET", "HELP"]
                expect += [250, 250, 250, 252, 250, 214]
            c.send("".join(x + "\r\n" for x in cmds))
            rs = c.read_replies(len(cmds))
            self.assertCodes(rs, expect)
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
            c.no_reply(0.2)

    def test_many_clients_pipelining_at_once_each_get_their_own(self):
        """Clients whose transactions arrive in the same loop turn: the
        server reads every ready socket first, then acts on each one's
        input in turn (conn_batch_run). Each gets its own replies and its
        own envelope and body, nothing of another's."""
        n = 40
        clients = [self.ehlo_client() for _ in range(n)]
        try:
            for i, c in enumerate(clients):
                c.send(("MAIL FROM:<s%d@example.com>\r\nRCPT TO:<r%d@example.com>\r\nDATA\r\n" % (i, i)).encode())
            for c in clients:
                self.assertCodes(c.read_replies(3), [250, 250, 354])
            for i, c in enumerate(clients):
                c.send(("Subject: %d\r\n\r\nbody of client %d\r\n.\r\n" % (i, i)).encode())
            sizes = {}
            for i, c in enumerate(clients):
                r = c.read_reply()
                self.assertEqual(r.code, 250, r)
                sizes[c.local_port] = r.text
        finally:
            for c in clients:
                c.close()
        ports = {c.local_port: i for i, c in enumerate(clients)}
        events = self.srv.wait_events("data", n)
        mine = [e for e in events if e["session"]["remotePort"] in ports]
        self.assertEqual(len(mine), n)
        for e in mine:
            i = ports[e["session"]["remotePort"]]
            self.assertEqual(e["session"]["mailFrom"]["address"], "s%d@example.com" % i)
            self.assertEqual([a["address"] for a in e["session"]["rcptTo"]], ["r%d@example.com" % i])
            body = "Subject: %d\r\n\r\nbody of client %d\r\n" % (i, i)
            self.assertEqual(e["byteLength"], len(body))
            self.assertIn("stored %d" % len(body), sizes[e["session"]["remotePort"]])
            with open(os.path.join(self.srv.out, "body-%s-1" % e["session"]["id"]), "rb") as f:
                self.assertEqual(f.read().decode(), body)

    def test_pipelined_two_messages(self):
        with self.ehlo_client() as c:
            msg = (b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
            c.send(msg)
            self.assertCodes(c.read_replies(3), [250, 250, 354])
            c.send(b"first\r\n.\r\n" + msg)
            self.assertCodes(c.read_replies(4), [250, 250, 250, 354])
            c.send(b"second\r\n.\r\nQUIT\r\n")
            self.assertCodes(c.read_replies(2), [250, 221])
