"""Issue 19: the milter replies no Debian daemon here sends — replace body,
add/delete recipient (with ESMTP args), change sender, change and delete a
header field, quarantine, a custom reply code, reject and tempfail at RCPT
time — from a milter written with pymilter (Debian's python3-milter, so
Sendmail's libmilter speaks the protocol, not code of ours), started on a
free port, and again on a unix socket, with /usr/bin/python3
(tests/e2e/pymilter_actions.py). luasmtpd
declares it (`milters = {...}`) and its onData records what it sees: the
envelope, session.milterQuarantine, the bytes. One case goes through
`require "smtp.milter"` from a hook and reads the modifications list."""

import os
import shutil
import socket
import subprocess
import tempfile
import time

from harness import ROOT, E2ETest, Lua, Server, lua_value, script
from svcutil import Service
from test_milter import CLIENT_HOOKS, events

MILTER_SCRIPT = os.path.join(ROOT, "tests", "e2e", "pymilter_actions.py")

MESSAGE = (b"From: Alice <alice@example.com>\r\n"
           b"To: bob@example.net\r\n"
           b"Subject: original subject\r\n"
           b"X-Drop: goes away\r\n"
           b"X-Keep: stays\r\n"
           b"\r\n"
           b"the original body\r\n")

# what pymilter_actions.py's replacebody() sends, its line breaks made CRLF
REPLACED_BODY = b"replaced by pymilter\r\nsecond line\r\n.a dot line\r\nlast\r\n"

# onData reads the message as the milter left it and records the envelope
# (addresses and ESMTP args), the quarantine reason and the bytes.
ONDATA = Lua(r'''function(stream, session)
    local body, err = read_to_end(stream)
    local env = session.envelope
    local rcpts = {}
    for i, r in ipairs(env.rcptTo) do rcpts[i] = { address = r.address, args = r.args } end
    record("data", { refused = err and tostring(err), rcpts = rcpts,
      from = { address = env.mailFrom.address, args = env.mailFrom.args },
      quarantine = session.milterQuarantine })
    if err then return "moot" end
    writefile(OUT .. "/msg-" .. session.transaction, body)
    return "stored"
  end''')


def transaction(test, srv, rcpts, message=MESSAGE, data_code=250, diagnostics=None):
    """One mail transaction from alice@example.com; returns the DATA reply."""
    c = srv.client()
    test.assertReply(c.cmd("EHLO client.example"), 250)
    test.assertReply(c.cmd("MAIL FROM:<alice@example.com>"), 250)
    for r in rcpts:
        test.assertReply(c.cmd("RCPT TO:<%s>" % r), 250, msg=diagnostics)
    test.assertReply(c.cmd("DATA"), 354)
    c.send(message + b".\r\n")
    reply = c.read_reply(timeout=15)
    test.assertReply(reply, data_code, msg=diagnostics)
    c.cmd("QUIT")
    return reply


class Pymilter(Service):
    """pymilter_actions.py on a free 127.0.0.1 port (.socket in Postfix's
    notation), stopped by its PID."""

    def __init__(self):
        self._start_on_a_free_port(
            "pymilter", lambda port, tmp: ["/usr/bin/python3", MILTER_SCRIPT, str(port)], None)
        self.socket = "inet:127.0.0.1:%d" % self.port

    def stop(self):
        # libmilter waits seconds for its threads after SIGTERM; this milter
        # keeps nothing, so it is killed by its PID
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)
        super().stop()


class UnixPymilter:
    """pymilter_actions.py on a unix socket in a temporary directory
    (.socket "unix:/path"), killed by its PID."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="luasmtpd-pymilter-unix-")
        path = os.path.join(self.tmp, "milter.sock")
        self.socket = "unix:" + path
        self.log_path = os.path.join(self.tmp, "pymilter.log")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(["/usr/bin/python3", MILTER_SCRIPT, self.socket], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 10
        while not self._accepts(path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("pymilter on %s did not start:\n%s" % (path, self.log()))
            time.sleep(0.02)

    @staticmethod
    def _accepts(path):
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(path)
                return True
            except OSError:
                return False

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.tmp, ignore_errors=True)


class PymilterActions(E2ETest):
    MILTER = Pymilter

    @classmethod
    def setUpClass(cls):
        cls.milter = cls.MILTER()
        try:
            cls.srv = Server(script({"onData": ONDATA}, milters=[cls.milter.socket]))
        except BaseException:
            cls.milter.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()
        cls.milter.stop()

    def diagnostics(self):
        return self.milter.log()[-2000:] + "\n" + self.srv.log()[-3000:]

    def send(self, rcpts, message=MESSAGE, data_code=250):
        """One transaction; returns the DATA reply, the onData record and
        the stored bytes (None when refused)."""
        before = len(events(self.srv, "data"))
        reply = transaction(self, self.srv, rcpts, message, data_code, self.diagnostics())
        recs = events(self.srv, "data")
        self.assertEqual(len(recs), before + 1, self.diagnostics())
        stored = os.path.join(self.srv.out, "msg-1")
        data = None
        if recs[-1].get("refused") is None:
            with open(stored, "rb") as f:
                data = f.read()
            os.remove(stored)
        return reply, recs[-1], data

    def test_replacebody_is_stored_exactly_with_crlf(self):
        _, rec, data = self.send(["replbody@example.net"])
        head, body = data.split(b"\r\n\r\n", 1)
        self.assertEqual(body, REPLACED_BODY)
        self.assertIn(b"Subject: original subject", head)

    def test_addrcpt_with_and_without_esmtp_args(self):
        _, rec, _ = self.send(["addrcpt@example.net"])
        self.assertEqual([r["address"] for r in rec["rcpts"]],
                         ["addrcpt@example.net", "added@example.net", "added-par@example.net"])
        # ADDRCPT_PAR's ESMTP args, as the core gives a RCPT's: keys upper-cased
        self.assertEqual([r["args"] for r in rec["rcpts"][1:]], [{}, {"NOTIFY": "NEVER"}])

    def test_delrcpt_removes_only_that_recipient(self):
        _, rec, data = self.send(["delrcpt@example.net", "bob@example.net"])
        self.assertEqual([r["address"] for r in rec["rcpts"]], ["bob@example.net"])
        self.assertTrue(data.endswith(b"\r\n\r\nthe original body\r\n"), data)

    def test_chgfrom_changes_the_sender(self):
        _, rec, _ = self.send(["chgfrom@example.net"])
        self.assertEqual(rec["from"]["address"], "changed@example.org")
        self.assertEqual(rec["from"]["args"], {"BODY": "8BITMIME"})

    def test_chgheader_changes_and_deletes(self):
        _, rec, data = self.send(["chgheader@example.net"])
        head, body = data.split(b"\r\n\r\n", 1)
        self.assertEqual(head.split(b"\r\n"), [
            b"From: Alice <alice@example.com>", b"To: bob@example.net",
            b"Subject: changed by pymilter", b"X-Keep: stays"])
        self.assertEqual(body, b"the original body\r\n")

    def test_quarantine_reason_in_session_and_log(self):
        _, rec, data = self.send(["quarantine@example.net"])
        self.assertEqual(rec["quarantine"], "held by pymilter")
        self.assertIn("held by pymilter", self.srv.log())
        self.assertTrue(data.endswith(b"\r\n\r\nthe original body\r\n"), data)

    def test_no_quarantine_leaks_into_the_next_transaction(self):
        self.send(["quarantine@example.net"])
        _, rec, _ = self.send(["bob@example.net"])
        self.assertIsNone(rec.get("quarantine"))

    def test_setreply_reject_reaches_the_client(self):
        reply, rec, data = self.send(["reply@example.net"], data_code=554)
        self.assertEqual(reply.enh, "5.7.1")
        self.assertIn("go away", reply.raw.decode() if isinstance(reply.raw, bytes) else reply.raw)
        self.assertIsNotNone(rec.get("refused"))
        self.assertIsNone(data)

    def test_rcpt_reject_and_tempfail(self):
        c = self.srv.client()
        self.assertReply(c.cmd("EHLO client.example"), 250)
        self.assertReply(c.cmd("MAIL FROM:<alice@example.com>"), 250)
        r = c.cmd("RCPT TO:<rcpt-reject@example.net>")
        self.assertReply(r, 550, "5.1.1", msg=self.diagnostics())
        self.assertIn("no such user here", r.raw.decode() if isinstance(r.raw, bytes) else r.raw)
        self.assertReply(c.cmd("RCPT TO:<rcpt-tempfail@example.net>"), 451)
        self.assertReply(c.cmd("RCPT TO:<bob@example.net>"), 250)
        c.cmd("QUIT")


class PymilterActionsOnAUnixSocket(PymilterActions):
    """Every action again with the milter on a unix socket ("unix:/path")."""
    MILTER = UnixPymilter


class PymilterFromHook(E2ETest):
    """require "smtp.milter" from onData: the modifications list as the
    pymilter milter asked for them."""

    def test_modifications_list(self):
        milter = Pymilter()
        try:
            with Server(script(CLIENT_HOOKS, prelude="local MILTER = %s" % lua_value(milter.socket))) as srv:
                transaction(self, srv, ["chgheader@example.net"])
                recs = events(srv, "milter")
        finally:
            milter.stop()
        self.assertEqual(len(recs), 1)
        self.assertEqual(recs[0]["verdict"], "accept", recs[0])
        self.assertEqual(recs[0]["mods"], [
            {"action": "chgheader", "name": "Subject", "index": 1, "value": "changed by pymilter"},
            {"action": "chgheader", "name": "X-Drop", "index": 1, "value": ""}])
