"""The message spool (core/base/spool.c, smtp.core.spool) under the two
modules that keep a message with it: declared milters (the message, and a
body a milter replaced) and smtp.mime (the onData stream it parses). A
spool holds 256 KiB in memory and the rest in an unlinked file in
$TMPDIR; the milter is pymilter (Debian's python3-milter, Sendmail's
libmilter: tests/e2e/pymilter_actions.py).

A body a milter replaces with more than the memory holds reaches onData
byte for byte (a message past it does the same through OpenDKIM:
test_milter.py, test_large_message_past_the_memory_spool). With $TMPDIR
on a full file system (a 256 KiB tmpfs, mounted as test_faults.py mounts
its own: root is needed, and the test fails saying so without it), a
message that fits in memory still goes through; one that does not, or a
replaced body that does not, gets 451 4.3.0 naming the cause, the session
goes on, and the file system is empty again at once (the spool's file
was closed, not left to the garbage collector)."""

import os
import shutil
import tempfile

import test_faults
from harness import E2ETest, Lua, Server, script
from test_milter import events
from test_milter_actions import MESSAGE, ONDATA, Pymilter, transaction

SMALL = MESSAGE + b"".join(b"a line of a message the spool keeps in memory %05d\r\n" % i for i in range(2000))
BIG = MESSAGE + b"".join(b"a line of a message too big for the spool's memory %05d\r\n" % i for i in range(12000))
# what pymilter_actions.py's bigbody@ sends (BIG_BODY), its line breaks made CRLF
BIG_REPLACED = b"".join(b"replaced line %06d, a body past the memory of the spool\r\n" % i for i in range(6000))
NO_SPACE = "4.3.0 cannot spool the message: No space left on device"


def stored(srv, n):
    with open(os.path.join(srv.out, "msg-%d" % n), "rb") as f:
        return f.read()


class SpoolTest(E2ETest):
    def setUp(self):
        self.assertLess(len(SMALL), 256 * 1024)
        self.assertGreater(len(BIG), 256 * 1024)

    def full_tmpdir(self):
        """A 256 KiB tmpfs filled up: the TMPDIR of the server."""
        d = test_faults.FullDisk.mount_tmpfs(self)
        fd = os.open(os.path.join(d, "filler"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        self.assertLess(os.statvfs(d).f_bavail * os.statvfs(d).f_frsize, 4096, "could not fill the tmpfs")
        return d

    def assert_empty_but_filler(self, d):
        """Nothing but the filler takes space: what the spool wrote is gone."""
        self.assertEqual(os.listdir(d), ["filler"])
        st = os.statvfs(d)
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        self.assertLessEqual(used, os.path.getsize(os.path.join(d, "filler")) + 4096,
                             "the tmpfs still holds what a spool wrote")


class DeclaredMilter(SpoolTest):
    @classmethod
    def setUpClass(cls):
        cls.milter = Pymilter()

    @classmethod
    def tearDownClass(cls):
        cls.milter.stop()

    def server(self, tmpdir):
        return Server(script({"onData": ONDATA}, milters=[self.milter.socket], milterDefaultAction="reject"),
                      env={"TMPDIR": tmpdir})

    def test_replaced_body_past_the_memory(self):
        tmpdir = tempfile.mkdtemp(prefix="luasmtpd-spool-")
        self.addCleanup(shutil.rmtree, tmpdir, True)
        with self.server(tmpdir) as srv:
            transaction(self, srv, ["bigbody@example.net"], message=SMALL)
            head, body = stored(srv, 1).split(b"\r\n\r\n", 1)
            self.assertEqual(body, BIG_REPLACED)
            self.assertEqual(head + b"\r\n\r\n", MESSAGE[:MESSAGE.index(b"\r\n\r\n") + 4])
            # and the original, past the memory too, unchanged
            transaction(self, srv, ["bob@example.net"], message=BIG)
            self.assertEqual(stored(srv, 1), BIG)
        self.assertEqual(os.listdir(tmpdir), [], "a spool file was left behind")

    def test_full_tmpdir(self):
        tmpdir = self.full_tmpdir()
        with self.server(tmpdir) as srv:
            c = srv.client()
            self.assertReply(c.cmd("EHLO client.example"), 250)
            # (bigbody@ last: pymilter_actions.py keeps a connection's recipients)
            for n, (rcpt, message, code) in enumerate([("bob", SMALL, 250), ("bob", BIG, 451),
                                                      ("bob", SMALL, 250), ("bigbody", SMALL, 451)], 1):
                self.assertReply(c.cmd("MAIL FROM:<alice@example.com>"), 250)
                self.assertReply(c.cmd("RCPT TO:<%s@example.net>" % rcpt), 250)
                self.assertReply(c.cmd("DATA"), 354)
                c.send(message + b".\r\n")
                r = c.read_reply(timeout=15)
                self.assertReply(r, code, None if code == 250 else "4.3.0", msg="message %d" % n)
                if code == 250:
                    self.assertEqual(stored(srv, n), message)
                else:
                    self.assertIn(NO_SPACE, str(r))
                    self.assertFalse(os.path.exists(os.path.join(srv.out, "msg-%d" % n)))
                self.assert_empty_but_filler(tmpdir)
            self.assertReply(c.cmd("QUIT"), 221)
            # the message that failed to spool never reached onData; the
            # replaced body that failed did, refused
            refused = [d.get("refused") for d in events(srv, "data")]
            self.assertEqual(refused[:2], [None, None])
            self.assertEqual(len(refused), 3, refused)
            self.assertIn(NO_SPACE, refused[2])
            self.assertEqual(srv.log().count('msg="cannot spool the message" session='), 2, srv.log())


class MimeParse(SpoolTest):
    ONDATA = Lua(r'''function(stream, session)
    local msg, err = mime.parse(stream)
    if not msg then return nil, smtp.reject(451, "4.3.0 " .. tostring(err)) end
    return "parsed " .. tostring(msg:header("Subject"))
  end''')

    def test_full_tmpdir(self):
        tmpdir = self.full_tmpdir()
        with Server(script({"onData": self.ONDATA}, prelude='local mime = require "smtp.mime"\n'),
                    env={"TMPDIR": tmpdir}) as srv:
            c = srv.client()
            self.assertReply(c.cmd("EHLO client.example"), 250)
            for message, code in [(SMALL, 250), (BIG, 451), (SMALL, 250)]:
                r = c.transaction(message)
                self.assertReply(r, code)
                self.assertIn("parsed original subject" if code == 250
                              else "4.3.0 No space left on device", str(r))
                self.assert_empty_but_filler(tmpdir)
            self.assertReply(c.cmd("QUIT"), 221)
