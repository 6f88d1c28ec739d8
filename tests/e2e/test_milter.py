"""smtp.milter (issue 19) against OpenDKIM, a milter nobody here wrote
(Debian's opendkim, started by the test on a free port in the foreground
with its own configuration and a key made by opendkim-genkey, sign mode):
a hook sends the message it receives through OpenDKIM and gets a
DKIM-Signature back as a header change at the end of the message, its
body hash that of the bytes luasmtpd received. Faults against plain
Python sockets (allowed for faults only): a milter that accepts and never
answers, one that closes mid-conversation, one that sends garbage, one
that is down: each gives nil, err within its timeout, never a hung
session."""

import base64
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

import svcutil
from harness import E2ETest, Lua, Server, lua_value, script

OPENDKIM = ["opendkim", "/usr/sbin/opendkim"]
GENKEY = ["opendkim-genkey", "/usr/sbin/opendkim-genkey"]


def start_opendkim(mode="s", canon="simple/simple"):
    """OpenDKIM on a free port, signing for example.com with selector test."""
    exe = svcutil.require_binary("opendkim", OPENDKIM, "opendkim")
    genkey = svcutil.require_binary("opendkim-genkey", GENKEY, "opendkim-tools")
    tmp = tempfile.mkdtemp(prefix="luasmtpd-opendkim-")
    import subprocess
    subprocess.run([genkey, "-D", tmp, "-d", "example.com", "-s", "test"], check=True, timeout=60)
    port = svcutil.free_port()
    conf = os.path.join(tmp, "opendkim.conf")
    with open(conf, "w") as f:
        f.write("Mode %s\nDomain example.com\nSelector test\nKeyFile %s/test.private\n"
                "Socket inet:%d@127.0.0.1\nPidFile %s/opendkim.pid\nSyslog no\n"
                "RequireSafeKeys false\nCanonicalization %s\nInternalHosts 127.0.0.1\n"
                % (mode, tmp, port, tmp, canon))
    return svcutil.Service("opendkim", [exe, "-f", "-x", conf], port, tmp)


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


if __name__ == "__main__":
    unittest.main()
