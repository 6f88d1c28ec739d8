"""smtp.milter (issue 19) against OpenDKIM, a milter nobody here wrote
(Debian's opendkim, started by milterd.py on a free port in the foreground
with its own configuration and a key made by opendkim-genkey, sign mode):
a hook sends the message it receives through OpenDKIM and gets a
DKIM-Signature back as a header change at the end of the message, its
body hash that of the bytes luasmtpd received. Faults against plain
Python sockets (allowed for faults only): a milter that accepts and never
answers, one that closes mid-conversation, one that sends garbage, one
that is down: each gives nil, err within its timeout, never a hung
session."""

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import struct
import tempfile
import time
import unittest

import milterd
import svcutil
from harness import ROOT, E2ETest, Lua, Server, binary, default_with, lua_value, script, split_received

_KEY = []


def dkim_key():
    """One key for example.com, selector test, for the whole module."""
    if not _KEY:
        _KEY.append(milterd.make_dkim_key(domain="example.com", selector="test"))
    return _KEY[0]


def tearDownModule():
    for key in _KEY:
        shutil.rmtree(os.path.dirname(key.private), ignore_errors=True)


def start_opendkim():
    """milterd's OpenDKIM signing for example.com, the mail of 127.0.0.1
    too (these sessions do not log in)."""
    return milterd.start_opendkim("s", dkim_key(), internal="127.0.0.1")


@contextlib.contextmanager
def opendkim(mode="s", on_no_signature="accept"):
    """milterd's OpenDKIM: signing as start_opendkim, or verifying ("v")
    with `on_no_signature` for an unsigned message, its key lookups going
    to a dnsmasq of milterd's."""
    with contextlib.ExitStack() as stack:
        if mode == "v":
            dns = stack.enter_context(milterd.start_milter_dns({}))
            svc = milterd.start_opendkim("v", dkim_key(), dns=dns, internal="192.0.2.1",
                                         on_no_signature=on_no_signature)
        else:
            svc = start_opendkim()
        stack.enter_context(svc)
        yield svc


def simple_body_hash(body):
    """RFC 6376 3.4.3: the body with its trailing empty lines removed, then
    sha256, base64."""
    while body.endswith(b"\r\n\r\n"):
        body = body[:-2]
    if body == b"":
        body = b"\r\n"
    return base64.b64encode(hashlib.sha256(body).digest()).decode()


# The hook of these tests: onData sends the message to the milter named
# by MILTER and records the verdict and the modifications.
CLIENT_HOOKS = {
    "onData": Lua(r'''function(stream, session)
    local milter = require "smtp.milter"
    local t0 = smtp.now()
    local m, err = milter.connect(MILTER, { connectTimeout = 2, commandTimeout = 2, contentTimeout = 2 })
    local res = { steps = {} }
    local function step(name, v, e)
      res.steps[#res.steps + 1] = { name = name, action = v and v.action, err = e }
      return v
    end
    if m then
      local neg, nerr = m:negotiate()
      res.negotiated = neg ~= nil
      if neg and step("connect", m:connect("client.example", "4", session.remotePort, session.remoteAddress,
          { j = "mx.test", ["{daemon_name}"] = "luasmtpd", ["{client_addr}"] = session.remoteAddress }))
        and step("helo", m:helo(session.hostNameAppearsAs or "client.example"))
        and step("mail", m:mail("<" .. session.envelope.mailFrom.address .. ">", nil, { i = "Q1" }))
        and step("rcpt", m:rcpt("<" .. session.envelope.rcptTo[1].address .. ">")) then
        local v, mods = m:message(stream, { i = "Q1" })
        if v then
          res.verdict, res.mods = v.action, mods
          if v.reply then res.reply = { code = v.reply.code, message = v.reply.message } end
        else
          res.err = mods
        end
      elseif not neg then
        res.err = nerr
      end
      m:close()
    else
      res.err = err
    end
    res.elapsed = smtp.now() - t0
    record("milter", res)
    return "done"
  end'''),
}


def events(srv, kind):
    path = os.path.join(srv.out, "events.jsonl")
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                e = json.loads(line)
                if e["kind"] == kind:
                    out.append(e["data"])
    return out


MESSAGE = (b"From: Alice <alice@example.com>\r\nTo: bob@example.net\r\n"
           b"Subject: signed by OpenDKIM\r\nDate: Sun, 6 Dec 2026 08:00:00 +0000\r\n"
           b"Message-ID: <m1@example.com>\r\n\r\nHello Bob,\r\n\r\nthe body, byte for byte.\r\n")


class TestClientOpenDKIM(E2ETest):
    @classmethod
    def setUpClass(cls):
        cls.dkim = start_opendkim()
        cls.srv = Server(script(CLIENT_HOOKS, prelude='local MILTER = "inet:127.0.0.1:%d"' % cls.dkim.port))

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()
        cls.dkim.stop()

    def send(self, msg):
        c = self.srv.client()
        self.assertReply(c.cmd("EHLO client.example"), 250)
        self.assertReply(c.cmd("MAIL FROM:<alice@example.com>"), 250)
        self.assertReply(c.cmd("RCPT TO:<bob@example.net>"), 250)
        self.assertReply(c.cmd("DATA"), 354)
        c.send(msg + b".\r\n")
        self.assertReply(c.read_reply(), 250)
        c.cmd("QUIT")
        recs = events(self.srv, "milter")
        self.assertTrue(recs, "the hook recorded nothing")
        return recs[-1]

    def test_signs_the_message(self):
        res = self.send(MESSAGE)
        self.assertEqual(res.get("err"), None, res)
        self.assertEqual([s["action"] for s in res["steps"]], ["continue"] * 4, res)
        self.assertEqual(res["verdict"], "accept", res)
        sigs = [m for m in res["mods"] if m["name"] == "DKIM-Signature"]
        self.assertEqual(len(sigs), 1, res["mods"])
        self.assertIn(sigs[0]["action"], ("insheader", "addheader"))
        sig = re.sub(r"\s+", "", sigs[0]["value"])
        self.assertIn("d=example.com;", sig)
        self.assertIn("s=test;", sig)
        body = MESSAGE.split(b"\r\n\r\n", 1)[1]
        self.assertIn("bh=%s;" % simple_body_hash(body), sig)

    def test_large_body_in_chunks(self):
        # over two of the protocol's 65535-byte chunks, from several stream reads
        body = b"".join(b"line %06d of a longer message body\r\n" % i for i in range(6000))
        msg = MESSAGE.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" + body
        res = self.send(msg)
        self.assertEqual(res["verdict"], "accept", res)
        sig = re.sub(r"\s+", "", [m for m in res["mods"] if m["name"] == "DKIM-Signature"][0]["value"])
        self.assertIn("bh=%s;" % simple_body_hash(body), sig)


def readme_policy():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    return re.search(r"### Milters: .*?```lua\n(.*?)```", text, re.S).group(1)


class TestReadmeExample(E2ETest):
    def test_readme_policy_keeps_the_signed_message(self):
        outbox = tempfile.mkdtemp(prefix="luasmtpd-outbox-")
        self.addCleanup(shutil.rmtree, outbox, True)
        with opendkim() as dkim, Server(readme_policy(), env={
                "DKIM_MILTER": "inet:127.0.0.1:%d" % dkim.port, "OUTBOX": outbox}) as srv:
            send_one(self, srv)
        (name,) = os.listdir(outbox)
        with open(os.path.join(outbox, name), "rb") as f:
            stored = f.read()
        self.assertTrue(stored.startswith(b"DKIM-Signature: v=1;"), stored[:100])
        self.assertTrue(stored.endswith(b"\r\n" + MESSAGE), stored)
        self.assertIn("bh=%s;" % simple_body_hash(MESSAGE.split(b"\r\n\r\n", 1)[1]),
                      re.sub(r"\s+", "", stored.decode()))


def packet(cmd, data=b""):
    return struct.pack(">I", len(data) + 1) + cmd + data


class Garbage(svcutil.ThreadedServer):
    """Reads the OPTNEG and answers `answer` (bytes), then waits."""

    def __init__(self, answer):
        self.answer = answer
        super().__init__()

    def handle(self, s):
        s.recv(65536)
        s.sendall(self.answer)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not self._stop:
            try:
                if not s.recv(65536):
                    return
            except socket.timeout:
                continue
            except OSError:
                return


OPTNEG_OK = packet(b"O", struct.pack(">III", 6, 0x1ff, 0))


class TestClientFaults(E2ETest):
    """Each fault: nil, err in the hook within the 2 s timeouts, the session
    answered."""

    def run_against(self, milter_spec):
        with Server(script(CLIENT_HOOKS, prelude="local MILTER = %s" % lua_value(milter_spec))) as srv:
            c = srv.client()
            self.assertReply(c.cmd("EHLO client.example"), 250)
            self.assertReply(c.cmd("MAIL FROM:<alice@example.com>"), 250)
            self.assertReply(c.cmd("RCPT TO:<bob@example.net>"), 250)
            self.assertReply(c.cmd("DATA"), 354)
            c.send(MESSAGE + b".\r\n")
            self.assertReply(c.read_reply(timeout=15), 250)
            recs = events(srv, "milter")
        self.assertEqual(len(recs), 1)
        res = recs[0]
        self.assertLess(res["elapsed"], 5, res)
        return res

    def test_down(self):
        res = self.run_against("inet:127.0.0.1:%d" % svcutil.closed_port())
        self.assertEqual(res["err"], "connection refused")

    def test_silent(self):
        with svcutil.SilentServer() as silent:
            res = self.run_against("inet:127.0.0.1:%d" % silent.port)
        self.assertEqual(res["err"], "timeout")

    def test_garbage(self):
        with Garbage(b"\x00\x00\x00\x03Zxx") as g:
            res = self.run_against("inet:127.0.0.1:%d" % g.port)
        self.assertEqual(res["err"], "bad answer")

    def test_oversized_packet(self):
        with Garbage(b"\x7f\xff\xff\xffc") as g:
            res = self.run_against("inet:127.0.0.1:%d" % g.port)
        self.assertEqual(res["err"], "bad answer")

    def test_closes_mid_conversation(self):
        # negotiates, then closes before answering the connect step
        with svcutil.ScriptedServer(OPTNEG_OK) as s:
            res = self.run_against("inet:127.0.0.1:%d" % s.port)
        self.assertTrue(res["negotiated"], res)
        self.assertEqual(res["steps"], [{"name": "connect", "err": "closed"}], res)

    def test_bad_socket_name(self):
        res = self.run_against("tcp:nowhere")
        self.assertEqual(res["err"], "bad name")


# A script declaring milters: onData stores what it reads in $OUT/msg-N and
# records the envelope and the quarantine flag.
DECLARED_ONDATA = Lua(r'''function(stream, session)
    assert(stream:addHeader("X-Policy", "seen"))
    local body, err = read_to_end(stream)
    local rcpts = {}
    for i, r in ipairs(session.envelope.rcptTo) do rcpts[i] = r.address end
    record("data", {refused = err and tostring(err), rcpts = rcpts, quarantine = session.milterQuarantine})
    if err then return "the hook's own text" end
    writefile(OUT .. "/msg-" .. session.transaction, body)
    return "stored"
  end''')


def declared(milters, **opts):
    return script({"onData": DECLARED_ONDATA}, milters=milters, **opts)


def send_one(test, srv, msg=MESSAGE, expect=250):
    c = srv.client()
    test.assertReply(c.greeting, 220)
    test.assertReply(c.cmd("EHLO client.example"), 250)
    test.assertReply(c.cmd("MAIL FROM:<alice@example.com>"), 250)
    test.assertReply(c.cmd("RCPT TO:<bob@example.net>"), 250)
    test.assertReply(c.cmd("DATA"), 354)
    c.send(msg + b".\r\n")
    r = c.read_reply(timeout=15)
    test.assertReply(r, expect)
    c.cmd("QUIT")
    return r


class TestDeclaredOpenDKIM(E2ETest):
    """milters = {...} in the script: OpenDKIM signs, and in verify mode
    rejects or discards an unsigned message (its On-NoSignature)."""

    def test_signature_in_the_stored_message(self):
        with opendkim() as dkim, Server(declared(["inet:127.0.0.1:%d" % dkim.port])) as srv:
            send_one(self, srv)
            with open(os.path.join(srv.out, "msg-1"), "rb") as f:
                stored = f.read()
        self.assertTrue(stored.startswith(b"DKIM-Signature:"), stored[:200])
        head, body = stored.split(b"\r\n\r\n", 1)
        orig_head, orig_body = MESSAGE.split(b"\r\n\r\n", 1)
        self.assertEqual(body, orig_body)                  # byte for byte
        # the fields as they came after it, then the hook's own edit
        self.assertTrue(head.endswith(orig_head + b"\r\nX-Policy: seen"), head)
        sig = re.sub(rb"\s+", b"", head[:len(head) - len(orig_head) - 16]).decode()
        self.assertIn("d=example.com;", sig)
        self.assertIn("bh=%s;" % simple_body_hash(orig_body), sig)

    def test_large_message_past_the_memory_spool(self):
        # small bodies are spooled in memory, this one (over 256 KiB) in a
        # temporary file: signed and stored byte for byte all the same
        body = b"".join(b"line %06d of a message spooled to a file\r\n" % i for i in range(8000))
        msg = MESSAGE.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" + body
        with opendkim() as dkim, Server(declared(["inet:127.0.0.1:%d" % dkim.port])) as srv:
            send_one(self, srv, msg)
            with open(os.path.join(srv.out, "msg-1"), "rb") as f:
                stored = f.read()
        head, got = stored.split(b"\r\n\r\n", 1)
        self.assertGreater(len(body), 256 * 1024)
        self.assertEqual(got, body)
        self.assertTrue(head.startswith(b"DKIM-Signature:"), head[:200])
        self.assertIn("bh=%s;" % simple_body_hash(body), re.sub(r"\s+", "", head.decode()))

    def test_two_messages_in_one_session(self):
        with opendkim() as dkim, Server(declared(["inet:127.0.0.1:%d" % dkim.port])) as srv:
            c = srv.client()
            self.assertReply(c.cmd("EHLO client.example"), 250)
            for n in (1, 2):
                self.assertReply(c.cmd("MAIL FROM:<alice@example.com>"), 250)
                self.assertReply(c.cmd("RCPT TO:<bob@example.net>"), 250)
                self.assertReply(c.cmd("DATA"), 354)
                c.send(MESSAGE.replace(b"<m1@", b"<m%d@" % n) + b".\r\n")
                self.assertReply(c.read_reply(timeout=15), 250)
            c.cmd("QUIT")
            for n in (1, 2):
                with open(os.path.join(srv.out, "msg-%d" % n), "rb") as f:
                    self.assertTrue(f.read().startswith(b"DKIM-Signature:"), n)

    def test_no_delayed_ack_wait(self):
        """OpenDKIM (libmilter) writes its header edit and its accept in two
        writes without TCP_NODELAY: Nagle holds the second until the ACK of
        the first, which Linux delays by at least 40 ms (its minimum ACK
        timeout) unless the socket is in quickack mode. So without
        setoption("quickack") in milter.lua no message is answered in
        under 40 ms; with it, one of five must be, however loaded the
        machine (a message takes about 5 ms, tests/bench/milter_bench.py)."""
        with opendkim() as dkim, Server(declared(["inet:127.0.0.1:%d" % dkim.port])) as srv:
            c = srv.client()
            self.assertReply(c.cmd("EHLO client.example"), 250)
            waits = []
            for n in range(1, 6):
                self.assertReply(c.cmd("MAIL FROM:<alice@example.com>"), 250)
                self.assertReply(c.cmd("RCPT TO:<bob@example.net>"), 250)
                self.assertReply(c.cmd("DATA"), 354)
                t0 = time.monotonic()
                c.send(MESSAGE.replace(b"<m1@", b"<m%d@" % n) + b".\r\n")
                self.assertReply(c.read_reply(timeout=15), 250)
                waits.append(time.monotonic() - t0)
            c.cmd("QUIT")
            with open(os.path.join(srv.out, "msg-5"), "rb") as f:
                self.assertTrue(f.read().startswith(b"DKIM-Signature:"))
        self.assertLess(min(waits), 0.040, "every message waited a delayed ACK: %r" % waits)

    def test_maildir_delivery_has_the_signature(self):
        # the default script: box:deliver, so stream:save with its Received prefix
        with opendkim() as dkim, Server(default_with(milters=["inet:127.0.0.1:%d" % dkim.port])) as srv:
            send_one(self, srv)
            files = srv.maildir_new()
            self.assertEqual(len(files), 1)
            with open(files[0], "rb") as f:
                received, rest = split_received(f.read())
        self.assertTrue(rest.startswith(b"DKIM-Signature:"), rest[:200])
        self.assertTrue(rest.endswith(MESSAGE), rest)

    def verify_mode(self, action):
        return opendkim(mode="v", on_no_signature=action)

    def test_reject_is_the_reply_whatever_ondata_returns(self):
        with self.verify_mode("reject") as dkim, Server(declared(["inet:127.0.0.1:%d" % dkim.port])) as srv:
            r = send_one(self, srv, expect=550)
            recs = events(srv, "data")
            self.assertFalse(os.path.exists(os.path.join(srv.out, "msg-1")))
        self.assertEqual(len(recs), 1)
        self.assertTrue(recs[0]["refused"].startswith("550"), recs)
        self.assertNotIn(b"own text", r.raw)

    def test_discard_answers_250_and_stores_nothing(self):
        with self.verify_mode("discard") as dkim, Server(declared(["inet:127.0.0.1:%d" % dkim.port])) as srv:
            send_one(self, srv, expect=250)
            self.assertEqual(events(srv, "data"), [])
            self.assertFalse(os.path.exists(os.path.join(srv.out, "msg-1")))


class FakeMilter(svcutil.ThreadedServer):
    """A milter for faults only: negotiates, answers CONTINUE to each step,
    and at the end of the message does `at_eom`: "garbage", "close" or
    "silent"."""

    def __init__(self, at_eom):
        self.at_eom = at_eom
        super().__init__()

    def handle(self, s):
        buf = b""
        while True:
            while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
                d = s.recv(65536)
                if not d:
                    return
                buf += d
            n = struct.unpack(">I", buf[:4])[0]
            cmd, buf = buf[4:5], buf[4 + n:]
            if cmd == b"O":
                s.sendall(OPTNEG_OK)
            elif cmd == b"E":
                if self.at_eom == "garbage":
                    s.sendall(b"\x00\x00\x00\x02Zz")
                elif self.at_eom == "close":
                    return
                else:
                    time.sleep(3)
                    return
            elif cmd in b"CHMRTLNB":
                s.sendall(packet(b"c"))


class TestDeclaredFaults(E2ETest):
    """milterDefaultAction for a milter down, slow, closing or speaking
    nonsense: the reply it gives, a logged reason, never a hung session."""

    def test_down_tempfail_by_default(self):
        with Server(declared(["inet:127.0.0.1:%d" % svcutil.closed_port()])) as srv:
            c = srv.client()
            self.assertReply(c.greeting, 451, "4.7.1")
            self.assertIn("milter failed", srv.log())
            self.assertIn("connection refused", srv.log())

    def test_down_accept_goes_on_without_it(self):
        with Server(declared(["inet:127.0.0.1:%d" % svcutil.closed_port()],
                             milterDefaultAction="accept")) as srv:
            send_one(self, srv)
            with open(os.path.join(srv.out, "msg-1"), "rb") as f:
                stored = f.read()
        head, body = MESSAGE.split(b"\r\n\r\n", 1)
        self.assertEqual(stored, head + b"\r\nX-Policy: seen\r\n\r\n" + body)

    def test_down_reject(self):
        with Server(declared([{"socket": "inet:127.0.0.1:%d" % svcutil.closed_port(),
                               "defaultAction": "reject"}])) as srv:
            c = srv.client()
            self.assertReply(c.greeting, 550, "5.7.1")

    def test_slow_at_connect(self):
        with svcutil.SilentServer() as silent, \
                Server(declared(["inet:127.0.0.1:%d" % silent.port], milterConnectTimeout=1)) as srv:
            t0 = time.monotonic()
            c = srv.client()
            self.assertReply(c.greeting, 451, "4.7.1")
            self.assertLess(time.monotonic() - t0, 5)
            self.assertIn("timeout", srv.log())

    def at_eom(self, what, **opts):
        with FakeMilter(what) as fake, \
                Server(declared(["inet:127.0.0.1:%d" % fake.port], milterContentTimeout=1, **opts)) as srv:
            t0 = time.monotonic()
            r = send_one(self, srv, expect=451 if not opts else 250)
            self.assertLess(time.monotonic() - t0, 8)
            log = srv.log()
            stored = os.path.exists(os.path.join(srv.out, "msg-1"))
        self.assertIn("milter failed", log)
        return r, log, stored

    def test_garbage_at_end_of_message(self):
        r, log, stored = self.at_eom("garbage")
        self.assertIn("bad answer", log)
        self.assertFalse(stored)

    def test_closes_at_end_of_message(self):
        r, log, stored = self.at_eom("close")
        self.assertIn("closed", log)
        self.assertFalse(stored)

    def test_slow_at_end_of_message_accept(self):
        r, log, stored = self.at_eom("silent", milterDefaultAction="accept")
        self.assertIn("timeout", log)
        self.assertTrue(stored)

    def test_bad_options_refused_at_start(self):
        tmp = tempfile.mkdtemp(prefix="luasmtpd-milter-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "probe.lua")
        for opts, want in (('milters = {"tcp:nowhere"}', "entry 1 is not"),
                           ('milters = {}, milterDefaultAction = "maybe"', "milterDefaultAction"),
                           ('milters = "inet:127.0.0.1:1"', "a list")):
            with open(path, "w") as f:
                f.write("return { %s }\n" % opts)
            r = self.run_cmd([binary(), "-t", path])
            err = r.stderr.decode("utf-8", "replace")
            with self.subTest(opts=opts):
                self.assertNotEqual(r.returncode, 0, err)
                self.assertIn(want, err)
                self.assertNotIn("traceback", err)

if __name__ == "__main__":
    unittest.main()
