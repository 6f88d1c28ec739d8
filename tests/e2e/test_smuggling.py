"""SMTP smuggling (security.md 1.1, cases 1 and 2): only CRLF.CRLF ends
DATA. Default bareLineEndings = "reject": the message is answered
554 5.5.2 after its real end and not delivered, and no second 250/354
appears. "normalize": exactly one 250 and the stored body has no bare LF
or CR."""

import re
import time

from harness import DEFAULT_SCRIPT, SharedServerTest, default_with, split_received, wait_for

EODS = {
    "lf.lf": b"\n.\n",
    "lf.crlf": b"\n.\r\n",
    "crlf.lf": b"\r\n.\n",
    "cr.cr": b"\r.\r",
    "cr.crlf": b"\r.\r\n",
    "crlf.cr": b"\r\n.\r",
}

SMUGGLED = (b"MAIL FROM:<smuggled@attacker.example>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nsmuggled\r\n")


def payload(eod):
    return b"Subject: p\r\n\r\nouter" + eod + SMUGGLED + b".\r\n"


def read_all_replies(c, max_wait=3.0):
    """Reads every reply until the server is quiet for max_wait or closes."""
    out = []
    while True:
        try:
            out.append(c.read_reply(timeout=max_wait))
        except AssertionError:
            return out


def bare(data):
    """Positions of bare LF or bare CR in data."""
    return [m.start() for m in re.finditer(rb"(?<!\r)\n|\r(?!\n)", data)]


class RejectMode(SharedServerTest):
    SCRIPT = DEFAULT_SCRIPT

    def setUp(self):
        self.before = set(self.srv.maildir_new())

    def new_files(self):
        return set(self.srv.maildir_new()) - self.before

    def start_data(self, c):
        self.assertReply(c.ehlo(), 250)
        self.assertReply(c.cmd("MAIL FROM:<sender@example.com>"), 250, "2.1.0")
        self.assertReply(c.cmd("RCPT TO:<rcpt@example.com>"), 250, "2.1.5")
        self.assertReply(c.cmd("DATA"), 354)

    def check_variant(self, name, eod, chunk=None):
        c = self.client()
        try:
            self.start_data(c)
            data = payload(eod) + b"QUIT\r\n"
            if chunk:
                for i in range(0, len(data), chunk):
                    c.send(data[i:i + chunk])
                    time.sleep(0.001)
            else:
                c.send(data)
            rs = read_all_replies(c)
        finally:
            c.close()
        codes = [r.code for r in rs]
        self.assertNotIn(354, codes, "%s: a second DATA was started: %r" % (name, [r.raw for r in rs]))
        self.assertNotIn(250, codes, "%s: smuggled commands were answered: %r" % (name, [r.raw for r in rs]))
        self.assertTrue(rs, "%s: no reply at all" % name)
        self.assertReply(rs[0], 554, "5.5.2", name)
        self.assertEqual(codes, [554, 221], "%s: %r" % (name, [r.raw for r in rs]))

    def test_variants_one_write(self):
        for name, eod in EODS.items():
            with self.subTest(eod=name):
                self.check_variant(name, eod)
        time.sleep(0.2)
        self.assertEqual(self.new_files(), set(), "a 554 message must not be delivered")

    def test_variants_byte_by_byte(self):
        for name, eod in EODS.items():
            with self.subTest(eod=name):
                self.check_variant(name, eod, chunk=1)
        time.sleep(0.2)
        self.assertEqual(self.new_files(), set())

    def test_bare_lf_at_data_start(self):
        with self.client() as c:
            self.start_data(c)
            c.send(b".\n" + SMUGGLED + b".\r\nQUIT\r\n")
            rs = read_all_replies(c)
            self.assertEqual([r.code for r in rs], [554, 221], [r.raw for r in rs])
            self.assertEqual(rs[0].enh, "5.5.2")

    def test_bare_lf_in_body(self):
        with self.client() as c:
            self.start_data(c)
            c.send(b"Subject: x\r\n\r\nline1\nline2\r\n.\r\n")
            self.assertReply(c.read_reply(), 554, "5.5.2")
            # the session goes on
            self.assertReply(c.cmd("MAIL FROM:<sender@example.com>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<rcpt@example.com>"), 250, "2.1.5")
            self.assertReply(c.cmd("DATA"), 354)
            c.send(b"Subject: ok\r\n\r\nclean\r\n.\r\n")
            self.assertReply(c.read_reply(), 250, "2.6.0")
        files = wait_for(self.new_files)
        self.assertEqual(len(files), 1)
        with open(files.pop(), "rb") as f:
            self.assertEqual(split_received(f.read())[1], b"Subject: ok\r\n\r\nclean\r\n")

    def test_bare_cr_in_body(self):
        with self.client() as c:
            self.start_data(c)
            c.send(b"Subject: x\r\n\r\nab\rcd\r\n.\r\n")
            self.assertReply(c.read_reply(), 554, "5.5.2")
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")

    def test_curl_with_bare_lf_file_is_refused(self):
        """curl uploads a LF-only file as is (without --crlf): refused."""
        import os
        import tempfile
        fd, path = tempfile.mkstemp()
        os.write(fd, b"Subject: lf only\n\nline\n")
        os.close(fd)
        self.addCleanup(os.unlink, path)
        r = self.run_cmd(["curl", "-v", "smtp://127.0.0.1:%d/client.example" % self.srv.port,
                          "--mail-from", "a@example.com", "--mail-rcpt", "b@example.com", "--upload-file", path])
        self.assertNotEqual(r.returncode, 0, "curl reported success for a bare-LF body")
        self.assertRegex(r.stderr, rb"\n< 554 5\.5\.2 ")
        time.sleep(0.2)
        self.assertEqual(self.new_files(), set())


class NormalizeMode(SharedServerTest):
    SCRIPT = default_with(bareLineEndings="normalize")
    start_data = RejectMode.start_data

    def setUp(self):
        self.before = set(self.srv.maildir_new())

    def test_variants(self):
        for name, eod in EODS.items():
            with self.subTest(eod=name):
                before = set(self.srv.maildir_new())
                with self.client() as c:
                    self.start_data(c)
                    c.send(payload(eod) + b"QUIT\r\n")
                    rs = read_all_replies(c)
                self.assertEqual([r.code for r in rs], [250, 221], "%s: %r" % (name, [r.raw for r in rs]))
                self.assertEqual(rs[0].enh, "2.6.0")
                new = wait_for(lambda: set(self.srv.maildir_new()) - before)
                self.assertEqual(len(new), 1, "%s: exactly one message" % name)
                with open(new.pop(), "rb") as f:
                    _, body = split_received(f.read())
                self.assertEqual(bare(body), [], "%s: bare CR/LF stored: %r" % (name, body))
                self.assertIn(b"MAIL FROM:<smuggled@attacker.example>", body, "kept as content")
                self.assertTrue(body.startswith(b"Subject: p\r\n\r\nouter\r\n"), body[:60])

    def test_bare_lf_normalized(self):
        with self.client() as c:
            c.ehlo()
            r = c.transaction(b"Subject: x\n\nline1\nline2\r\nline3\rline4\r\n")
            self.assertReply(r, 250, "2.6.0")
        new = wait_for(lambda: set(self.srv.maildir_new()) - self.before)
        self.assertEqual(len(new), 1)
        with open(new.pop(), "rb") as f:
            _, body = split_received(f.read())
        self.assertEqual(body, b"Subject: x\r\n\r\nline1\r\nline2\r\nline3\r\nline4\r\n")

    def test_dot_stuffing_after_bare_lf_removed(self):
        """A bare LF made a CRLF starts a line like any other: its stuffed dot
        goes ("..x" is stored ".x"), but a "." line after it is content,
        never the end. Whole and byte by byte."""
        wire = b"Subject: n\n\n..dotted\n.\n...two\r\r..cr\r\nend\n.x\r\n"
        expected = b"Subject: n\r\n\r\n.dotted\r\n.\r\n..two\r\n\r\n.cr\r\nend\r\nx\r\n"
        for chunk in (None, 1):
            with self.subTest(chunk=chunk):
                before = set(self.srv.maildir_new())
                with self.client() as c:
                    self.start_data(c)
                    data = wire + b".\r\n"
                    for i in range(0, len(data), chunk or len(data)):
                        c.send(data[i:i + (chunk or len(data))])
                    self.assertReply(c.read_reply(), 250, "2.6.0")
                new = wait_for(lambda: set(self.srv.maildir_new()) - before)
                self.assertEqual(len(new), 1)
                with open(new.pop(), "rb") as f:
                    self.assertEqual(split_received(f.read())[1], expected)

    def test_curl_lf_file_normalized(self):
        import os
        import tempfile
        fd, path = tempfile.mkstemp()
        os.write(fd, b"Subject: lf only\n\nline\n")
        os.close(fd)
        self.addCleanup(os.unlink, path)
        r = self.run_cmd(["curl", "-sS", "smtp://127.0.0.1:%d/client.example" % self.srv.port,
                          "--mail-from", "a@example.com", "--mail-rcpt", "b@example.com", "--upload-file", path])
        self.assertEqual(r.returncode, 0, r.stderr)
        new = wait_for(lambda: set(self.srv.maildir_new()) - self.before)
        self.assertEqual(len(new), 1)
        with open(new.pop(), "rb") as f:
            _, body = split_received(f.read())
        # curl adds CRLF before the final dot when the file does not end in CRLF
        self.assertEqual(body, b"Subject: lf only\r\n\r\nline\r\n\r\n")
