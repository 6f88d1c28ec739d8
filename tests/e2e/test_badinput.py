"""Bad input (security.md section 5, cases 7, 8, 9, 10, 20, 21, 22, and
1.3/1.5/1.6), plus a small seeded command fuzzer (fuzz-test.js). Nothing
may crash the server (the ASan run checks memory), every line gets exactly
one reply, and the server stays usable."""

import random
import socket
import time

from harness import E2ETest, Lua, Server, SharedServerTest, sanitized, script


class CommandInjection(SharedServerTest):
    SCRIPT = script(allowInsecureAuth=True)

    def test_bare_cr_inside_command(self):
        """Case 7: a single 501 5.5.2; never two replies."""
        with self.client() as c:
            c.ehlo()
            c.send(b"MAIL FROM:<a@x.example>\rRCPT TO:<b@x.example>\r\n")
            self.assertReply(c.read_reply(), 501, "5.5.2")
            # had the tail been taken as a second command, its reply would come first
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
            c.no_reply(0.3)
            # and no transaction was opened
            self.assertReply(c.cmd("RCPT TO:<b@x.example>"), 503, "5.5.1")

    def test_reply_injection_in_ehlo(self):
        """Case 8: 501 5.5.2, no control bytes echoed in replies or logs."""
        with self.client() as c:
            c.send(b"EHLO a\r250-X\r\x00\r\n")
            r = c.read_reply()
            self.assertReply(r, 501, "5.5.2")
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
            c.no_reply(0.2)
        log = self.srv.log_bytes()
        self.assertNotIn(b"\x00", log, "a NUL reached the log")
        for line in log.split(b"\n"):
            self.assertNotIn(b"\r", line, "a CR reached the log: %r" % line)
            self.assertFalse(line.startswith(b"250-X"), "client bytes started a log line: %r" % line)

    def test_nul_in_helo(self):
        with self.client() as c:
            c.send(b"HELO a\x00b\r\n")
            self.assertReply(c.read_reply(), 501, "5.5.2")
            c.send(b"EHLO a\x01b\r\n")
            self.assertReply(c.read_reply(), 501, "5.5.2")
            self.assertReply(c.ehlo(), 250)

    def test_control_bytes_in_commands(self):
        with self.client() as c:
            c.ehlo()
            for line in [b"NOOP \x00", b"MAIL FROM:<a@b.example>\x00", b"VRFY a\x1bb", b"\x00", b"RSET\x7f\x00"]:
                c.send(line + b"\r\n")
                r = c.read_reply()
                self.assertEqual(r.code, 501, "%r -> %r" % (line, r.raw))
                self.assertEqual(r.enh, "5.5.2", "%r -> %r" % (line, r.raw))
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")

    def test_crlf_split_by_segments(self):
        with self.client() as c:
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for piece in [b"NO", b"OP", b"\r", b"\n", b"EH", b"LO x.example\r", b"\nNOOP\n"]:
                c.send(piece)
                time.sleep(0.02)
            self.assertCodes(c.read_replies(3), [250, 250, 250])
            c.no_reply(0.2)

    def test_eight_bit_garbage_command(self):
        with self.client() as c:
            c.send(b"\xff\xfe\xfd\r\n")
            self.assertReply(c.read_reply(), 500, "5.5.2")
            c.send("NOOP é😀\r\n".encode())
            self.assertReply(c.read_reply(), 250, "2.0.0")

    def test_auth_line_injection(self):
        with self.client() as c:
            c.ehlo()
            c.send(b"AUTH PLAIN\r\n")
            self.assertReply(c.read_reply(), 334)
            c.send(b"AHVzZXIAcGFzcw==\rNOOP\r\n")
            r = c.read_reply()
            self.assertEqual(r.code, 501, r)
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
            c.no_reply(0.2)


class Unbounded(SharedServerTest):
    SCRIPT = script()

    def test_huge_line_without_lf(self):
        """Case 9: megabytes without LF: 421 and close once a megabyte has
        been dropped, memory bounded throughout; the server serves on."""
        with self.client() as c:
            rss0 = self.srv.rss_kb()
            chunk = b"A" * 65536
            try:
                for _ in range(64):
                    c.send(chunk)
            except OSError:
                pass  # the server may close while we still send
            data = c.expect_close(15)
            self.assertIn(b"421 4.4.2", data)
            rss1 = self.srv.rss_kb()
        with self.client() as c2:
            self.assertReply(c2.cmd("NOOP"), 250, "2.0.0")
        if sanitized():
            return  # ASan's quarantine makes RSS meaningless; the plain build checks it
        self.assertLess(rss1 - rss0, 8 * 1024, "server RSS grew by %d KiB while dropping a long line"
                        % (rss1 - rss0))

    def test_long_line_that_ends_gets_500(self):
        with self.client() as c:
            c.send(b"A" * 200000 + b"\r\n")
            self.assertReply(c.read_reply(timeout=15), 500, "5.5.6")
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")

    def test_long_line_then_close(self):
        c = self.client()
        c.send(b"X" * (1 << 20))
        c.rst()
        with self.client() as c2:
            self.assertReply(c2.cmd("NOOP"), 250, "2.0.0")


class ErrorFlood(SharedServerTest):
    SCRIPT = script()

    def test_hundred_unknown_commands_one_write(self):
        """Case 21: 421 + close by the 10th; no more than 10 replies."""
        with self.client() as c:
            c.send(b"".join(b"BOGUS%d\r\n" % i for i in range(100)))
            data = c.expect_close(5)
            lines = [l for l in data.split(b"\r\n") if l]
            self.assertLessEqual(len(lines), 10, lines)
            self.assertTrue(lines[-1].startswith(b"421 4.4.2"), lines)
            self.assertTrue(all(l.startswith(b"500 5.5.2") for l in lines[:-1]), lines)
        with self.client() as c2:
            self.assertReply(c2.cmd("NOOP"), 250, "2.0.0")


class Slowloris(E2ETest):
    def test_silent_client(self):
        """Case 22: a silent client gets 421 4.4.2 at socketTimeout."""
        with Server(script(socketTimeout=0.4)) as srv:
            with srv.client() as c:
                self.assertReply(c.read_reply(timeout=5), 421, "4.4.2")
                c.expect_close(3)

    def test_trickle_slower_than_timeout(self):
        with Server(script(socketTimeout=0.4)) as srv:
            with srv.client() as c:
                t0 = time.monotonic()
                closed = False
                for b in b"NOOP and some more bytes":
                    try:
                        c.sock.sendall(bytes([b]))
                    except OSError:
                        closed = True
                        break
                    if c.is_closed(0.7):
                        closed = True
                        break
                self.assertTrue(closed or c.is_closed(2), "trickling client never timed out")
                self.assertLess(time.monotonic() - t0, 5)
                self.assertIn(b"421 4.4.2", b"".join(d for w, d in c.transcript if w == "S") + c.buf)

    def test_many_idle_connections(self):
        with Server(script(socketTimeout=0.5)) as srv:
            cs = [srv.client() for _ in range(50)]
            for c in cs:
                self.assertReply(c.read_reply(timeout=5), 421, "4.4.2")
            for c in cs:
                c.close()
            with srv.client() as c:
                self.assertReply(c.cmd("NOOP"), 250, "2.0.0")


CORPUS = [
    b"EHLO client.example", b"HELO client.example", b"MAIL FROM:<a@example.com>", b"MAIL FROM:<>",
    b"MAIL FROM:<a@example.com> SIZE=100 BODY=8BITMIME", b"MAIL FROM:<a@example.com> SMTPUTF8",
    b"RCPT TO:<b@example.com>", b"RCPT TO:<postmaster>", b"RCPT TO:<@r.example:c@example.com>",
    b"RSET", b"NOOP", b"HELP", b"VRFY user", b"EXPN list", b"AUTH PLAIN AHVzZXIAcGFzcw==",
    b"AUTH LOGIN dXNlcg==", b"MAIL FROM:<a@[127.0.0.1]>", b"RCPT TO:<x@[IPv6:::1]>",
    b"MAIL FROM:<\"q x\"@example.com>", b"EHLO [127.0.0.1]", b"NOOP xyz",
]
TOKENS = [b"\x00", b"\r", b"<<a@b>>", "é".encode(), "😀".encode(), b"xn--", b"A" * 600, b"=", b":", b"<", b">",
          b" ", b"\t", b"-1", b"4294967296", b"18446744073709551616", b"1e308", b"NaN", b"0x10", b"1.5",
          b"SIZE=", b"BODY=", b"@", b"[", b"]", b"\"", b"\\", b"\xff", b"%s%n%x"]


def mutate(rng, line):
    op = rng.randrange(6)
    b = bytearray(line)
    if op == 0 and b:
        b[rng.randrange(len(b))] = rng.randrange(256)
    elif op == 1 and b:
        del b[rng.randrange(len(b)):]
    elif op == 2:
        i = rng.randrange(len(b) + 1)
        b[i:i] = rng.choice(TOKENS)
    elif op == 3:
        parts = bytes(b).split(b" ")
        i = rng.randrange(len(parts))
        parts.insert(i, parts[i])
        b = bytearray(b" ".join(parts))
    elif op == 4:
        parts = bytes(b).split(b" ")
        if len(parts) > 1:
            del parts[rng.randrange(len(parts))]
        b = bytearray(b" ".join(parts))
    else:
        i = rng.randrange(len(b) + 1)
        b[i:i] = rng.choice(TOKENS) + rng.choice(TOKENS)
    return bytes(b).replace(b"\n", b"")


class Fuzz(E2ETest):
    def test_seeded_mutations(self):
        """fuzz-test.js: every line gets exactly one reply; a connection is
        closed only after 221 or 421; RSET answers 250 as a liveness probe."""
        rng = random.Random(0x5EED)
        hooks = {"onAuth": "function(auth, session) return nil, 'no' end"}
        with Server(script(size=1048576, allowInsecureAuth=True, hooks=hooks)) as srv:
            c = srv.client()
            reconnects = 0
            last = None
            for i in range(400):
                line = mutate(rng, rng.choice(CORPUS))
                c.send(line + b"\r\n")
                try:
                    r = c.read_reply()
                except AssertionError as e:
                    self.fail("no reply to %r (after %r): %s" % (line, last, e))
                if r.code == 354:
                    c.send(b"fuzz body\r\n.\r\n")
                    r = c.read_reply()
                    self.assertLess(r.code, 600)
                elif r.code == 334:
                    c.send(b"*\r\n")
                    r = c.read_reply()
                    self.assertEqual(r.code, 501, "cancelled AUTH: %r" % r.raw)
                if r.code in (221, 421):
                    c.expect_close()
                    c.close()
                    c = srv.client()
                    reconnects += 1
                    continue
                self.assertTrue(200 <= r.code < 600, r)
                if i % 25 == 0:
                    self.assertReply(c.cmd("RSET"), 250, "2.0.0")
                last = line
            c.no_reply(0.2)
            c.close()
            self.assertLess(reconnects, 100)


class Pregreet(SharedServerTest):
    SCRIPT = script({"onConnect": Lua(r'''function(session)
        if session.pregreet then return nil, smtp.reject(554, "5.7.1 you talk too soon") end
      end''')}, greetingDelay=0.3)

    def test_client_that_speaks_first_is_refused_by_policy(self):
        s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=5)
        s.sendall(b"EHLO bot.example\r\nMAIL FROM:<spam@example.com>\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        self.assertTrue(data.startswith(b"554 5.7.1"), data)
        self.assertNotIn(b"250", data)

    def test_patient_client_is_greeted(self):
        with self.client() as c:
            self.assertReply(c.greeting, 220)
            self.assertReply(c.ehlo(), 250)


class ErrorCap(SharedServerTest):
    SCRIPT = script()

    def test_syntax_errors_count_toward_the_cap(self):
        """501s (control bytes, bad syntax) and 503s have their own cap
        (Postfix's hard error limit, 20): the 20th ends the session with 421."""
        with self.client() as c:
            c.send(b"".join(b"MAIL FROM:<a@x>\x01\r\n" if i % 2 else b"RCPT TO:<b@y>\r\n" for i in range(40)))
            data = c.expect_close(5)
            lines = [l for l in data.split(b"\r\n") if l]
            self.assertLessEqual(len(lines), 21, lines)  # 20 errors, then the 421
            self.assertTrue(lines[-1].startswith(b"421 4.4.2"), lines)
