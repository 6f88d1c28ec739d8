"""Limits: command line length, maxRecipients, maxClients, socketTimeout
(also mid-DATA), the unrecognized-command cap,
maxAllowedUnauthenticatedCommands, pipelining order."""

import socket
import threading
import time

from harness import (DEFAULT_SCRIPT, E2ETest, Lua, Server, SharedServerTest, default_with, sanitized, script,
                     wait_for)


class LineLength(SharedServerTest):
    SCRIPT = script()

    def test_line_just_under_default_limit(self):
        with self.client() as c:
            self.assertReply(c.cmd("NOOP " + "x" * 4000), 250, "2.0.0")

    def test_line_over_default_limit_session_goes_on(self):
        with self.client() as c:
            c.send(b"NOOP " + b"x" * 5000 + b"\r\n")
            self.assertReply(c.read_reply(), 500, "5.5.6")
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
            self.assertReply(c.ehlo(), 250)
            c.no_reply(0.2)

    def test_auth_line_may_be_12288_octets(self):
        """RFC 4954 4: AUTH lines get 12,288 octets, other commands 4,096."""
        with self.client() as c:
            c.ehlo()
            r = c.cmd("AUTH PLAIN " + "A" * 12000)
            self.assertNotEqual(r.enh, "5.5.6", r)
            self.assertReply(c.cmd("NOOP " + "x" * 12000), 500, "5.5.6")
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")

    def test_long_line_then_pipelined_commands(self):
        with self.client() as c:
            c.send(b"NOOP " + b"x" * 40000 + b"\r\nNOOP\r\nHELP\r\n")
            self.assertCodes(c.read_replies(3), [500, 250, 214])

    def test_long_mail_line(self):
        with self.client() as c:
            c.ehlo()
            c.send(b"MAIL FROM:<a@example.com> X=" + b"y" * 20000 + b"\r\n")
            self.assertReply(c.read_reply(), 500, "5.5.6")
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")


class MaxRecipients(SharedServerTest):
    SCRIPT = script(maxRecipients=3)

    def test_fourth_recipient_refused(self):
        with self.client() as c:
            c.ehlo()
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")
            for i in range(3):
                self.assertReply(c.cmd("RCPT TO:<r%d@example.com>" % i), 250, "2.1.5")
            self.assertReply(c.cmd("RCPT TO:<r3@example.com>"), 452, "4.5.3")
            self.assertReply(c.cmd("RCPT TO:<r4@example.com>"), 452, "4.5.3")
            self.assertReply(c.cmd("DATA"), 354)
            c.send(b"x\r\n.\r\n")
            self.assertReply(c.read_reply(), 250, "2.6.0")
            # the limit is per transaction
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")
            for i in range(3):
                self.assertReply(c.cmd("RCPT TO:<s%d@example.com>" % i), 250, "2.1.5")

    def test_pipelined_over_limit(self):
        with self.client() as c:
            c.ehlo()
            c.send(b"MAIL FROM:<a@example.com>\r\n" + b"".join(b"RCPT TO:<p%d@example.com>\r\n" % i
                                                              for i in range(6)))
            rs = c.read_replies(7)
            self.assertCodes(rs, [250, 250, 250, 250, 452, 452, 452])


class ManyRecipientsDefault(SharedServerTest):
    SCRIPT = DEFAULT_SCRIPT

    def test_thousand_recipients(self):
        """security.md 1.5: 1000 RCPTs are either accepted or refused with
        452 4.5.3 past a limit; never anything else, and the message still
        goes through."""
        with self.client() as c:
            c.ehlo()
            c.send(b"MAIL FROM:<a@example.com>\r\n" + b"".join(b"RCPT TO:<u%d@example.com>\r\n" % i
                                                              for i in range(1000)))
            rs = c.read_replies(1001, timeout=20)
            self.assertReply(rs[0], 250, "2.1.0")
            codes = [r.code for r in rs[1:]]
            self.assertTrue(set(codes) <= {250, 452}, set(codes))
            first452 = codes.index(452) if 452 in codes else len(codes)
            self.assertGreaterEqual(first452, 100, "RFC 5321: at least 100 recipients must be accepted")
            self.assertEqual(codes[first452:], [452] * (len(codes) - first452))
            for r in rs[1 + first452:]:
                self.assertEqual(r.enh, "4.5.3")
            self.assertReply(c.cmd("DATA"), 354)
            c.send(b"x\r\n.\r\n")
            self.assertReply(c.read_reply(timeout=20), 250, "2.6.0")


class MaxClients(E2ETest):
    def test_extra_client_refused(self):
        with Server(script(maxClients=2)) as srv:
            a = srv.client()
            b = srv.client()
            self.assertReply(a.greeting, 220)
            self.assertReply(b.greeting, 220)
            x = srv.client(greet=False)
            self.assertReply(x.read_reply(), 421, "4.4.2")
            x.expect_close()
            # the first two still work
            self.assertReply(a.cmd("NOOP"), 250, "2.0.0")
            self.assertReply(b.cmd("NOOP"), 250, "2.0.0")
            a.cmd("QUIT")
            a.expect_close()

            def try_again():
                c = srv.client(greet=False)
                r = c.read_reply()
                if r.code == 220:
                    return c
                c.close()
                return None
            c = wait_for(try_again, 3, 0.1)
            self.assertTrue(c, "a slot freed by QUIT was not reused")
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
            c.close()
            b.close()

    def test_seven_clients_five_slots(self):
        with Server(script(maxClients=5)) as srv:
            cs = [srv.client(greet=False) for _ in range(7)]
            codes = sorted(c.read_reply().code for c in cs)
            self.assertEqual(codes, [220] * 5 + [421] * 2)
            for c in cs:
                c.close()


class SocketTimeout(E2ETest):
    def test_idle_mid_data_times_out_and_stores_nothing(self):
        with Server(default_with(socketTimeout=0.5)) as srv:
            with srv.client() as c:
                c.ehlo()
                c.cmd("MAIL FROM:<a@example.com>")
                c.cmd("RCPT TO:<b@example.com>")
                self.assertReply(c.cmd("DATA"), 354)
                c.send(b"Subject: stalled\r\n\r\npartial")
                r = c.read_reply(timeout=5)
                self.assertReply(r, 421, "4.4.2")
                c.expect_close(3)
            time.sleep(0.3)
            self.assertEqual(srv.maildir_new(), [])

    def test_idle_before_ehlo(self):
        with Server(script(socketTimeout=0.3)) as srv:
            clients = [srv.client() for _ in range(5)]
            for c in clients:
                self.assertReply(c.read_reply(timeout=5), 421, "4.4.2")
                c.expect_close(3)
            with srv.client() as c:
                self.assertReply(c.cmd("NOOP"), 250, "2.0.0")


class UnrecognizedCap(SharedServerTest):
    SCRIPT = script()

    def test_tenth_unknown_command_closes(self):
        with self.client() as c:
            for i in range(9):
                self.assertReply(c.cmd("FOO%d" % i), 500, "5.5.2")
            self.assertReply(c.cmd("FOO9"), 421, "4.4.2")
            c.expect_close()

    def test_known_commands_do_not_count(self):
        with self.client() as c:
            for i in range(8):
                self.assertReply(c.cmd("BAR"), 500, "5.5.2")
            for i in range(20):
                self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
            self.assertReply(c.cmd("BAR"), 500, "5.5.2")
            self.assertReply(c.cmd("BAR"), 421, "4.4.2")
            c.expect_close()


class UnauthenticatedCommands(E2ETest):
    def test_default_limit_ten(self):
        with Server(script(authOptional=False, allowInsecureAuth=True)) as srv:
            with srv.client() as c:
                for i in range(9):
                    self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
                self.assertReply(c.cmd("NOOP"), 421, "4.4.2")
                c.expect_close()

    def test_custom_limit(self):
        with Server(script(authOptional=False, allowInsecureAuth=True, maxAllowedUnauthenticatedCommands=3)) as srv:
            with srv.client() as c:
                self.assertReply(c.ehlo(), 250)
                self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
                self.assertReply(c.cmd("NOOP"), 421, "4.4.2")
                c.expect_close()

    def test_not_counted_when_auth_optional(self):
        with Server(script(authOptional=True, allowInsecureAuth=True)) as srv:
            with srv.client() as c:
                for i in range(30):
                    self.assertReply(c.cmd("NOOP"), 250, "2.0.0")


class PipeliningOrder(SharedServerTest):
    SCRIPT = DEFAULT_SCRIPT

    def test_flood_of_noops_unread(self):
        """security.md case 20: 20 000 NOOPs in one write, replies unread
        until the end: all answered in order (or a 421)."""
        n = 20000
        with self.client() as c:
            sender_err = []

            import threading

            def send():
                try:
                    c.sock.sendall(b"NOOP\r\n" * n + b"QUIT\r\n")
                except OSError as e:
                    sender_err.append(e)
            t = threading.Thread(target=send)
            t.start()
            time.sleep(1.0)
            data = b""
            c.sock.settimeout(10)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    d = c.sock.recv(1 << 20)
                except socket.timeout:
                    break
                if not d:
                    break
                data += d
            t.join(5)
            lines = data.split(b"\r\n")
            self.assertEqual(lines[-1], b"")
            lines = lines[:-1]
            codes = [l[:3] for l in lines]
            if b"421" in codes:
                self.assertEqual(codes[-1], b"421")
                self.assertEqual(set(codes[:-1]), {b"250"})
            else:
                self.assertEqual(len(lines), n + 1, "expected %d replies" % (n + 1))
                self.assertEqual(set(codes[:-1]), {b"250"})
                self.assertEqual(codes[-1], b"221")
        with self.client() as c2:
            self.assertReply(c2.cmd("NOOP"), 250, "2.0.0")


class PerIpAndPathLimits(E2ETest):
    def test_max_connections_per_ip(self):
        with Server(script(maxConnectionsPerIp=2)) as srv:
            with srv.client() as a, srv.client() as b:
                self.assertReply(a.greeting, 220)
                self.assertReply(b.greeting, 220)
                with srv.client() as extra:
                    self.assertReply(extra.greeting, 421, "4.4.2")
                    extra.expect_close(5)
            # Once they are gone, the address may connect again.
            deadline = time.time() + 5
            while True:
                with srv.client() as again:
                    if again.greeting.code == 220 or time.time() > deadline:
                        self.assertReply(again.greeting, 220)
                        break
                time.sleep(0.1)

    def test_path_over_256_octets(self):
        with Server(script()) as srv:
            with srv.client() as c:
                c.ehlo()
                local = "a" * 60
                domain = ".".join(["d" * 60] * 4) + ".example"  # 252 octets: under the parser's limits
                self.assertReply(c.cmd("MAIL FROM:<%s@%s>" % (local, domain)), 501, "5.1.7")
                self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
                self.assertReply(c.cmd("RCPT TO:<%s@%s>" % (local, domain)), 501, "5.1.3")
                self.assertReply(c.cmd("RCPT TO:<b@example.com>"), 250)


class SlowClients(E2ETest):
    def test_slowloris_command_times_out(self):
        """A byte every 0.2 s never completes a line: socketTimeout (1 s)
        counts from the last complete command, not the last byte."""
        with Server(script(socketTimeout=1)) as srv:
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            s.recv(1000)
            start = time.time()
            closed = False
            for ch in b"EHLO slow.example.and.more.bytes.never.ending":
                try:
                    s.sendall(bytes([ch]))
                except OSError:
                    closed = True
                    break
                time.sleep(0.2)
                s.setblocking(False)
                try:
                    data = s.recv(1000)
                    if data.startswith(b"421") or data == b"":
                        closed = True
                        break
                except BlockingIOError:
                    pass
                finally:
                    s.setblocking(True)
            s.close()
            self.assertTrue(closed, "the dripping client was never dropped")
            self.assertLess(time.time() - start, 4)

    def test_connection_rate_per_address(self):
        with Server(script(maxConnectionRate=3)) as srv:
            for _ in range(3):
                with srv.client() as c:
                    self.assertReply(c.greeting, 220)
            with srv.client() as c:
                self.assertReply(c.greeting, 421, "4.4.2")


RCPT_HOOKS = {"onData": Lua(r'''function(stream, session)
    readall(stream)
    local to = {}
    for i, a in ipairs(session.envelope.rcptTo) do to[i] = a.address .. " " .. tostring(a.args.NOTIFY) end
    record("data", {count = #session.envelope.rcptTo, first = to[1], last = to[#to]})
  end''')}


def pipeline_rcpts(c, n, fmt=b"RCPT TO:<u%d@example.com>\r\n", timeout=60):
    """Sends MAIL and n RCPTs in one go (from a thread, so that the replies
    are read meanwhile) and returns the n + 1 replies."""
    payload = b"MAIL FROM:<a@example.com>\r\n" + b"".join(fmt % i for i in range(n))
    t = threading.Thread(target=c.sock.sendall, args=(payload,))
    t.start()
    try:
        return c.read_replies(n + 1, timeout=timeout)
    finally:
        t.join(timeout)


class RecipientsDefaultLimit(SharedServerTest):
    """issue 15: maxRecipients defaults to 1000 (Postfix's
    smtpd_recipient_limit); the next one gets 452 4.5.3 (RFC 5321
    4.5.3.1.10) and the message still goes to the first 1000."""
    SCRIPT = script(hooks=RCPT_HOOKS)

    def test_thousand_and_first_recipient_refused(self):
        with self.client() as c:
            c.ehlo()
            rs = pipeline_rcpts(c, 1002)
            self.assertReply(rs[0], 250, "2.1.0")
            self.assertEqual([r.code for r in rs[1:1001]], [250] * 1000)
            self.assertReply(rs[1001], 452, "4.5.3")
            self.assertReply(rs[1002], 452, "4.5.3")
            # a repeated recipient is not a new one: still accepted at the limit
            self.assertReply(c.cmd("RCPT TO:<U7@EXAMPLE.COM>"), 250, "2.1.5")
            self.assertReply(c.cmd("DATA"), 354)
            c.send(b"x\r\n.\r\n")
            self.assertReply(c.read_reply(timeout=20), 250, "2.6.0")
        [ev] = self.srv.wait_events("data", 1)
        self.assertEqual(ev["count"], 1000)


class RecipientDuplicates(SharedServerTest):
    """A recipient given twice (compared case-insensitively, as before) is
    one recipient: the later RCPT replaces the earlier in place and does
    not count towards maxRecipients; a new transaction starts empty."""
    SCRIPT = script(hooks=RCPT_HOOKS, maxRecipients=2, hideDSN=False)

    def test_duplicates_replace_and_do_not_count(self):
        first = [("MAIL FROM:<a@example.com>", 250), ("RCPT TO:<one@example.com>", 250),
                 ("RCPT TO:<ONE@Example.COM> NOTIFY=NEVER", 250), ("RCPT TO:<two@example.com>", 250),
                 ("RCPT TO:<One@example.com> NOTIFY=NEVER", 250), ("RCPT TO:<three@example.com>", 452),
                 ("DATA", 354), ("x\r\n.", 250)]
        # the set goes with the transaction: the same addresses are new again
        again = [("MAIL FROM:<a@example.com>", 250), ("RCPT TO:<three@example.com>", 250), ("RSET", 250),
                 ("MAIL FROM:<a@example.com>", 250), ("RCPT TO:<one@example.com>", 250),
                 ("RCPT TO:<two@example.com>", 250), ("RCPT TO:<three@example.com>", 452)]
        with self.client() as c:
            c.ehlo()
            for line, code in first + again:
                self.assertReply(c.cmd(line), code, "4.5.3" if code == 452 else None, line)
        ev = self.srv.wait_events("data", 1)[0]
        self.assertEqual((ev["count"], ev["first"], ev["last"]),
                         (2, "One@example.com NEVER", "two@example.com nil"))


class ManyPipelinedRecipients(SharedServerTest):
    """issue 15: duplicates are found in a set, not by scanning the list,
    so 20,000 pipelined RCPTs (maxRecipients raised) cost linear time and
    other sessions are not stalled. Before the fix (two scans per RCPT)
    the batch took ~10 s here and other sessions' NOOPs waited up to ~1.2 s
    (the loop serves them between 64 KiB reads, so that stall is too noisy
    to be the failing assertion: the batch's total time is)."""
    SCRIPT = script(hooks=RCPT_HOOKS, maxRecipients=50000)

    def test_twenty_thousand_recipients_do_not_stall_others(self):
        n = 20000
        limit = 12.0 if sanitized() else 4.0
        with self.client() as c:
            c.ehlo()
            lag = []
            done = threading.Event()

            def other_client():
                # greeting + NOOP of other sessions, again and again while the batch runs
                for _ in range(100):
                    t0 = time.monotonic()
                    with self.client() as o:
                        o.cmd("NOOP")
                    lag.append(time.monotonic() - t0)
                    if done.wait(0.2):
                        return
            probe = threading.Thread(target=other_client)
            probe.start()
            t0 = time.monotonic()
            rs = pipeline_rcpts(c, n)
            took = time.monotonic() - t0
            done.set()
            probe.join(30)
            self.assertEqual([r.code for r in rs], [250] * (n + 1))
            self.assertReply(c.cmd("DATA"), 354)
            c.send(b"x\r\n.\r\n")
            self.assertReply(c.read_reply(timeout=30), 250, "2.6.0")
        self.assertLess(max(lag), limit / 2, "another session waited %.1f s (the batch took %.1f s)" % (max(lag), took))
        self.assertLess(took, limit, "20,000 RCPTs took %.1f s (others waited up to %.2f s)" % (took, max(lag)))
        self.assertEqual(self.srv.wait_events("data", 1)[0]["count"], n)


class JunkCommands(E2ETest):
    """issue 15, Postfix's smtpd_junk_command_limit: past maxJunkCommands
    (default 100) NOOP, RSET, VRFY and HELP each count as an error, so the
    error limit (20) ends the session with 421."""

    def test_default_hundred_then_errors(self):
        with Server(script()) as srv, srv.client() as c:
            cmds = ["NOOP", "RSET", "HELP", "VRFY a@example.com"] * 25
            c.send("".join(x + "\r\n" for x in cmds))
            rs = c.read_replies(100)
            self.assertEqual([r.code for r in rs], [250, 250, 214, 252] * 25)
            for i in range(19):
                self.assertReply(c.cmd("NOOP"), 250, "2.0.0", "junk %d" % (101 + i))
            c.send(b"NOOP\r\n")  # the 20th error: answered, then 421
            r = c.read_replies(2)
            self.assertReply(r[0], 250, "2.0.0")
            self.assertReply(r[1], 421, "4.4.2")
            c.expect_close()

    def test_a_message_resets_the_count(self):
        with Server(script(maxJunkCommands=5)) as srv, srv.client() as c:
            for _ in range(5):
                self.assertReply(c.cmd("NOOP"), 250)
            c.ehlo()  # not junk
            c.transaction(b"Subject: x\r\n\r\nx\r\n")
            for _ in range(24):
                self.assertReply(c.cmd("RSET"), 250)
            c.send(b"RSET\r\n")
            self.assertCodes(c.read_replies(2), [250, 421])

    def test_no_limit(self):
        with Server(script(maxJunkCommands=False)) as srv, srv.client() as c:
            c.send(b"NOOP\r\n" * 300)
            self.assertEqual({r.code for r in c.read_replies(300)}, {250})
            self.assertReply(c.cmd("NOOP"), 250)
