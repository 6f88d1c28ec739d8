"""DATA and Maildir delivery: the stored file must be one Received header
followed by the message exactly as sent after dot-unstuffing (default
script), and the stream API must hand hooks the exact body."""

import hashlib
import os
import re
import shutil
import smtplib
import socket
import subprocess
import time

from harness import (maildir_files, DEFAULT_SCRIPT, E2ETest, Lua, Server, SharedServerTest, default_with, script,
                     split_received, stuff, wait_for, free_port)


def read(path):
    with open(path, "rb") as f:
        return f.read()


class MaildirDelivery(SharedServerTest):
    SCRIPT = DEFAULT_SCRIPT

    def setUp(self):
        self.before = set(self.srv.maildir_new())

    def new_files(self, n=1, timeout=5.0):
        got = wait_for(lambda: [p for p in self.srv.maildir_new() if p not in self.before]
                       if len(set(self.srv.maildir_new()) - self.before) >= n else None, timeout)
        self.assertTrue(got, "expected %d new Maildir file(s), have %r" % (n, self.srv.maildir_new()))
        self.assertEqual(len(got), n, got)
        return got

    def send_raw(self, wire, chunk=None):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("MAIL FROM:<sender@example.com>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<rcpt@example.com>"), 250, "2.1.5")
            self.assertReply(c.cmd("DATA"), 354)
            data = wire + b".\r\n"
            if chunk:
                c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for i in range(0, len(data), chunk):
                    c.send(data[i:i + chunk])
            else:
                c.send(data)
            r = c.read_reply(timeout=30)
            self.assertReply(r, 250, "2.6.0")
            self.assertReply(c.cmd("QUIT"), 221, "2.0.0")
        return r

    def check_stored(self, expected, n=1):
        files = self.new_files(n)
        data = read(files[-1])
        header, rest = split_received(data)
        if rest != expected:
            # find the first difference for a readable failure
            i = next((k for k in range(min(len(rest), len(expected))) if rest[k] != expected[k]),
                     min(len(rest), len(expected)))
            self.fail("stored body differs at byte %d (stored %d bytes, sent %d): stored %r... expected %r..."
                      % (i, len(rest), len(expected), rest[max(0, i - 20):i + 40], expected[max(0, i - 20):i + 40]))
        self.assertEqual(self.srv.maildir_tmp(), [], "tmp/ must be empty after delivery")
        return header

    def test_simple_message_smtplib(self):
        msg = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hello\r\n\r\nHello world.\r\n"
        with smtplib.SMTP("127.0.0.1", self.srv.port, local_hostname="client.example", timeout=10) as s:
            refused = s.sendmail("a@example.com", ["b@example.com"], msg)
            self.assertEqual(refused, {})
        header = self.check_stored(msg)
        self.assertTrue(header.startswith(b"Received: "), header)
        for line in header.split(b"\r\n")[:-1]:
            for ch in line:
                self.assertTrue(32 <= ch < 127 or ch == 9, "non-printable byte in Received: %r" % header)

    def test_dot_lines(self):
        body = (b"Subject: dots\r\n\r\n.\r\n..\r\n...\r\n.x\r\n..x\r\na.b\r\n .\r\n.\t\r\n"
                b"line\r\n.\r\nend\r\n")
        wire, expected = stuff(body)
        self.assertIn(b"\r\n..\r\n", wire)
        self.send_raw(wire)
        self.check_stored(expected)

    def test_leading_dot_first_line(self):
        wire, expected = stuff(b".starts with a dot\r\nsecond\r\n")
        self.assertTrue(wire.startswith(b".."))
        self.send_raw(wire)
        self.check_stored(expected)

    def test_empty_message(self):
        self.send_raw(b"")
        self.check_stored(b"")

    def test_eight_bit_bytes(self):
        body = (b"Subject: =?utf-8?q?x?=\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                + "héllo wörld – ✓ 😀\r\n".encode("utf-8") + bytes(range(0x80, 0x100)) + b"\r\n")
        wire, expected = stuff(body)
        self.send_raw(wire)
        self.check_stored(expected)

    def test_binary_ish_content(self):
        allbytes = bytes(b for b in range(256) if b not in (10, 13))
        lines = [allbytes[i:i + 61] for i in range(0, len(allbytes), 61)]
        lines += [b"\x00", b"\x00.\x00", b".\x00", b"\x1b[31mred\x1b[0m", b"\x7f\xff\xfe"]
        body = b"\r\n".join(lines) + b"\r\n"
        wire, expected = stuff(body)
        self.send_raw(wire)
        self.check_stored(expected)

    def test_long_body_line(self):
        body = b"Subject: long\r\n\r\n" + b"x" * 200000 + b"\r\n" + b"." + b"y" * 70000 + b"\r\n"
        wire, expected = stuff(body)
        self.send_raw(wire)
        self.check_stored(expected)

    def test_ten_mib_message(self):
        lines = []
        size = 0
        i = 0
        while size < 10 * 1024 * 1024:
            seed = hashlib.sha256(str(i).encode()).hexdigest()
            line = (("." if i % 7 == 0 else "") + seed * 15)[:998].encode()
            lines.append(line)
            size += len(line) + 2
            i += 1
        body = b"Subject: big\r\n\r\n" + b"\r\n".join(lines) + b"\r\n"
        wire, expected = stuff(body)
        t0 = time.monotonic()
        self.send_raw(wire)
        files = self.new_files(1, timeout=10)
        data = read(files[0])
        _, rest = split_received(data)
        self.assertEqual(len(rest), len(expected))
        self.assertEqual(hashlib.sha256(rest).hexdigest(), hashlib.sha256(expected).hexdigest())
        self.assertLess(time.monotonic() - t0, 20)

    def test_chunked_writes(self):
        """fuzz-test.js chunked session: the same message in 1, 3 and 17
        byte writes is stored identically."""
        body = b"Subject: chunks\r\n\r\n.leading dot\r\n..two dots\r\nend\r\n.\r\nafter\r\n"
        wire, expected = stuff(body)
        for n, chunk in enumerate([1, 3, 17], 1):
            with self.subTest(chunk=chunk):
                self.send_raw(wire, chunk=chunk)
                files = self.new_files(n)
                _, rest = split_received(read(files[-1]))
                self.assertEqual(rest, expected)

    def test_two_messages_one_connection(self):
        with self.ehlo_client() as c:
            self.assertReply(c.transaction(b"Subject: one\r\n\r\nfirst\r\n"), 250, "2.6.0")
            self.assertReply(c.transaction(b"Subject: two\r\n\r\nsecond\r\n"), 250, "2.6.0")
        files = self.new_files(2)
        bodies = sorted(split_received(read(p))[1] for p in files)
        self.assertEqual(bodies, [b"Subject: one\r\n\r\nfirst\r\n", b"Subject: two\r\n\r\nsecond\r\n"])
        self.assertNotEqual(os.path.basename(files[0]), os.path.basename(files[1]))

    def test_several_recipients_one_file(self):
        with self.ehlo_client() as c:
            r = c.transaction(b"Subject: many\r\n\r\nhi\r\n",
                              rcpts=("<a@example.com>", "<b@example.com>", "<c@example.org>"))
            self.assertReply(r, 250, "2.6.0")
        self.check_stored(b"Subject: many\r\n\r\nhi\r\n")

    def test_disconnect_mid_data_stores_nothing(self):
        for how in ["close", "rst", "close-after-partial-end"]:
            with self.subTest(how=how):
                c = self.ehlo_client()
                self.assertReply(c.cmd("MAIL FROM:<sender@example.com>"), 250, "2.1.0")
                self.assertReply(c.cmd("RCPT TO:<rcpt@example.com>"), 250, "2.1.5")
                self.assertReply(c.cmd("DATA"), 354)
                c.send(b"Subject: partial\r\n\r\n" + b"z" * 100000 + b"\r\nmore")
                if how == "close-after-partial-end":
                    c.send(b"\r\n.")
                time.sleep(0.2)
                if how == "rst":
                    c.rst()
                else:
                    c.close()
                time.sleep(0.5)
                self.assertEqual(set(self.srv.maildir_new()) - self.before, set(),
                                 "an interrupted message must not be delivered")
        # the server still works
        self.send_raw(b"Subject: after\r\n\r\nok\r\n")
        self.check_stored(b"Subject: after\r\n\r\nok\r\n")


class SizeLimitMaildir(SharedServerTest):
    SCRIPT = default_with(size=1024)

    def test_body_over_size_552_and_not_delivered(self):
        before = set(self.srv.maildir_new())
        with self.ehlo_client() as c:
            r = c.transaction(b"x" * 2000 + b"\r\n")
            self.assertReply(r, 552, "5.3.4")
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
        time.sleep(0.3)
        self.assertEqual(set(self.srv.maildir_new()) - before, set(), "a message answered 552 must not be delivered")

    def test_body_at_size_accepted(self):
        before = set(self.srv.maildir_new())
        with self.ehlo_client() as c:
            body = b"y" * 1022 + b"\r\n"
            self.assertEqual(len(body), 1024)
            self.assertReply(c.transaction(body), 250, "2.6.0")
        files = wait_for(lambda: set(self.srv.maildir_new()) - before)
        self.assertEqual(len(files), 1)
        self.assertEqual(split_received(read(files.pop()))[1], b"y" * 1022 + b"\r\n")


STREAM_HOOKS = {
    "onData": Lua(r'''function(stream, session)
    local mode = session.envelope.rcptTo[1].address:match("^([^@]+)")
    local base = OUT .. "/" .. session.id .. "-" .. tostring(session.transaction)
    local info = {mode = mode}
    if mode == "read" then
      local parts, n = {}, 0
      while true do
        local c = stream:read()
        if c == nil then break end
        n = n + 1
        parts[#parts + 1] = c
      end
      info.nchunks = n
      writefile(base .. ".body", table.concat(parts))
    elseif mode == "chunks" then
      writefile(base .. ".body", readall(stream))
    elseif mode == "save" then
      local ok, err = stream:save(base .. ".body")
      info.ok, info.err = ok, err
    elseif mode == "saveprefix" then
      local ok, err = stream:save(base .. ".body", "X-Prefix: yes\r\n")
      info.ok, info.err = ok, err
    elseif mode == "readthensave" then
      info.first = #(stream:read() or "")
      local ok, err = stream:save(base .. ".body")
      info.ok, info.err, info.exists = ok, err, exists(base .. ".body")
    elseif mode == "notastream" then
      -- the methods refuse anything but the stream they came from
      local others = {{}, 1, newproxy(true), io.stdout}
      info.errs = {}
      for _, v in ipairs(others) do
        info.errs[#info.errs + 1] = select(2, pcall(stream.read, v))
        info.errs[#info.errs + 1] = select(2, pcall(stream.save, v, OUT .. "/x"))
        info.errs[#info.errs + 1] = select(2, pcall(getmetatable(stream).__index, v, "byteLength"))
      end
      readall(stream)
    elseif mode == "keep" then
      -- a stream the script keeps past its message: cut loose, its figures
      -- those of its own message (streams of one session share a slot)
      local prev = session.kept
      if prev then
        info.prevSame = rawequal(prev, stream)
        info.prevByteLength = prev.byteLength
        info.prevReadNil = prev:read() == nil
      end
      session.kept = stream
      readall(stream)
    elseif mode == "ignore" then
      -- does not read: the core drains the body
    elseif mode == "partial" then
      info.first = #(stream:read() or "")
    elseif mode == "rejectafter" then
      readall(stream)
      record("stream", {id = session.id, byteLength = stream.byteLength, sizeExceeded = stream.sizeExceeded})
      return nil, "not wanted"
    end
    info.byteLength = stream.byteLength
    info.sizeExceeded = stream.sizeExceeded
    info.id = session.id
    record("stream", info)
    return "done " .. tostring(stream.byteLength)
  end'''),
}


class StreamApi(SharedServerTest):
    SCRIPT = script(size=4096, hooks=STREAM_HOOKS)

    BODY = b"Subject: s\r\n\r\n.dotted\r\nline two\r\n" + b"0123456789" * 300 + b"\r\n"

    def deliver(self, mode, body=None):
        body = self.BODY if body is None else body
        wire, expected = stuff(body)
        with self.ehlo_client() as c:
            r = c.transaction(wire, rcpts=("<%s@example.com>" % mode,))
            c.cmd("QUIT")
        ev = [e for e in self.srv.events("stream") if e.get("mode") == mode]
        return r, expected, ev[-1] if ev else None

    def body_file(self, info):
        return self.srv.out_file("%s-1.body" % info["id"])

    def test_read_loop(self):
        r, expected, info = self.deliver("read")
        self.assertReply(r, 250, "2.6.0")
        self.assertIn("done %d" % len(expected), r.text)
        self.assertEqual(self.body_file(info), expected)
        self.assertEqual(info["byteLength"], len(expected))
        self.assertIs(info["sizeExceeded"], False)
        self.assertGreaterEqual(info["nchunks"], 1)

    def test_chunks_iterator(self):
        r, expected, info = self.deliver("chunks")
        self.assertReply(r, 250, "2.6.0")
        self.assertEqual(self.body_file(info), expected)
        self.assertEqual(info["byteLength"], len(expected))

    def test_save(self):
        r, expected, info = self.deliver("save")
        self.assertReply(r, 250, "2.6.0")
        self.assertIs(info["ok"], True, info)
        self.assertEqual(self.body_file(info), expected)

    def test_save_with_prefix(self):
        r, expected, info = self.deliver("saveprefix")
        self.assertReply(r, 250, "2.6.0")
        self.assertIs(info["ok"], True, info)
        self.assertEqual(self.body_file(info), b"X-Prefix: yes\r\n" + expected)

    def test_save_after_a_read_refused(self):
        """The bytes read are gone: a save would store only the rest of the
        message, so it returns nil, err and writes no file."""
        r, expected, info = self.deliver("readthensave")
        self.assertReply(r, 250, "2.6.0")
        self.assertGreater(info["first"], 0)
        self.assertIsNone(info.get("ok"), info)
        self.assertIn("already read", info["err"])
        self.assertIs(info["exists"], False)

    def test_unread_body_is_drained(self):
        r, expected, info = self.deliver("ignore")
        self.assertReply(r, 250, "2.6.0")
        with self.ehlo_client() as c:
            self.assertReply(c.transaction(b"next\r\n", rcpts=("<read@example.com>",)), 250, "2.6.0")

    def test_partial_read_is_drained(self):
        r, expected, info = self.deliver("partial")
        self.assertReply(r, 250, "2.6.0")
        self.assertGreater(info["first"], 0)

    def test_byte_length_after_unstuffing(self):
        r, expected, info = self.deliver("read", b"..\r\n.a\r\n")
        self.assertReply(r, 250, "2.6.0")
        self.assertEqual(expected, b"..\r\n.a\r\n")
        self.assertEqual(info["byteLength"], 8)

    def test_size_exceeded_552_whatever_ondata_says(self):
        body = b"z" * 5000 + b"\r\n"
        r, expected, info = self.deliver("read", body)
        self.assertReply(r, 552, "5.3.4")
        self.assertIs(info["sizeExceeded"], True, info)
        self.assertGreater(info["byteLength"], 4096, info)

    def test_size_exceeded_with_rejecting_ondata(self):
        r, expected, info = self.deliver("rejectafter", b"z" * 5000 + b"\r\n")
        self.assertReply(r, 552, "5.3.4")

    def test_size_exceeded_unread(self):
        r, expected, info = self.deliver("ignore", b"z" * 50000 + b"\r\n")
        self.assertReply(r, 552, "5.3.4")

    def test_at_size_not_exceeded(self):
        body = b"q" * 4094 + b"\r\n"
        r, expected, info = self.deliver("read", body)
        self.assertReply(r, 250, "2.6.0")
        self.assertIs(info["sizeExceeded"], False)
        self.assertEqual(info["byteLength"], 4096)

    def test_stream_kept_past_its_message(self):
        first, second = self.BODY, b"Subject: t\r\n\r\nshort\r\n"
        with self.ehlo_client() as c:
            for body in (first, second):
                self.assertReply(c.transaction(stuff(body)[0], rcpts=("<keep@example.com>",)), 250, "2.6.0")
            c.cmd("QUIT")
        ev = [e for e in self.srv.events("stream") if e.get("mode") == "keep"][-2:]
        self.assertEqual(len(ev), 2)
        self.assertNotIn("prevSame", ev[0])
        self.assertIs(ev[1]["prevSame"], False)
        self.assertEqual(ev[1]["prevByteLength"], len(stuff(first)[1]))
        self.assertIs(ev[1]["prevReadNil"], True)
        self.assertEqual(ev[1]["byteLength"], len(stuff(second)[1]))

    def test_methods_refuse_other_objects(self):
        r, expected, info = self.deliver("notastream")
        self.assertReply(r, 250, "2.6.0")
        self.assertEqual(info["byteLength"], len(expected))
        self.assertEqual(len(info["errs"]), 12)
        for err in info["errs"]:
            self.assertIn("stream expected", err)


class SaveError(E2ETest):
    def test_save_to_missing_directory(self):
        hooks = {"onData": Lua(r'''function(stream, session)
            local ok, err = stream:save(OUT .. "/no/such/dir/file")
            record("save", {ok = ok, err = err})
            if not ok then return nil, smtp.reject(451, "save failed") end
            return "saved"
          end''')}
        with Server(script(hooks=hooks)) as srv:
            with srv.client() as c:
                c.ehlo()
                r = c.transaction(b"hello\r\n")
                self.assertReply(r, 451, "4.3.0")
                self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
            ev = srv.events("save")
            self.assertEqual(len(ev), 1)
            self.assertIsNone(ev[0].get("ok"))
            self.assertIsInstance(ev[0].get("err"), str)


class MaxLineLength(E2ETest):
    def test_long_body_line_refused_session_goes_on(self):
        with Server(default_with(maxLineLength=100)) as srv:
            with srv.client() as c:
                c.ehlo()
                for body, code in ((b"x" * 100 + b"\r\nok\r\n", 250), (b"y" * 101 + b"\r\n", 554),
                                   (b"short\r\n" + b"z" * 5000 + b"\r\n", 554), (b"fine\r\n", 250)):
                    self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
                    self.assertReply(c.cmd("RCPT TO:<b@example.org>"), 250)
                    self.assertReply(c.cmd("DATA"), 354)
                    # in small pieces: a line is measured across reads
                    data = body + b".\r\n"
                    for i in range(0, len(data), 37):
                        c.send(data[i:i + 37])
                    r = c.read_reply()
                    self.assertEqual(r.code, code, r)
                    if code == 554:
                        self.assertEqual(r.enh, "5.6.0")
            self.assertEqual(len(maildir_files(srv.maildir)), 2)  # the refused ones are not stored
            self.assertEqual(len(maildir_files(srv.maildir, "tmp")), 0)


# The Received header the Maildir module writes (RFC 5321 4.4), byte for
# byte but its date: Postfix's "from helo (name [addr])" with "unknown" when
# the client has no confirmed name, "[IPv6:...]" for IPv6, and the RFC
# 3848 / RFC 6531 protocol after "with".
RECEIVED_HOOKS = {
    "onAuth": Lua(r'''function(auth, session) return {user = auth.username} end'''),
    "onData": Lua(r'''function(stream, session)
    local path = assert(box:deliver(stream, session, "mx.test"))
    return "OK id=" .. session.id
  end'''),
}
RECEIVED_PRELUDE = ('local box = assert(require("smtp.maildir").open(os.getenv("LUASMTPD_MAILDIR")))\n')
RECEIVED_DATE = re.compile(rb"\t(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                           rb"\d{4} \d\d:\d\d:\d\d \+0000\r\n$")


class ReceivedHeader(SharedServerTest):
    @classmethod
    def setUpClass(cls):
        from tlsutil import certs, tls_script
        cls.port6, port = free_port("::1"), free_port()
        # Readiness is checked on the IPv4 port (the harness connects to 127.0.0.1).
        cls.srv = Server(tls_script(RECEIVED_HOOKS, prelude=RECEIVED_PRELUDE, useXClient=True,
                                    **certs().pair("localhost")),
                         listen=["127.0.0.1:%d" % port, "[::1]:%d" % cls.port6], ports=[port])

    def deliver(self, c, mail="<sender@example.com>", helo="EHLO client.example"):
        """helo (unless None), then one message to rcpt@example.com; returns
        the stored Received header with its date cut off, and the session id."""
        before = set(self.srv.maildir_new())
        if helo:
            self.assertReply(c.cmd(helo), 250)
        r = c.transaction(b"Subject: r\r\n\r\nhi\r\n", mail=mail)
        self.assertReply(r, 250, "2.6.0")
        session = r.text.split("id=")[1]
        [path] = wait_for(lambda: [p for p in self.srv.maildir_new() if p not in before] or None, 5)
        header, _ = split_received(read(path))
        m = RECEIVED_DATE.search(header)
        self.assertTrue(m, header)
        return header[:m.start()], session

    def expect(self, tcp_info, with_, session, helo="client.example"):
        return (b"Received: from %s (%s)\r\n\tby mx.test (luasmtpd) with %s id %s\r\n\tfor <rcpt@example.com>;\r\n"
                % (helo.encode(), tcp_info.encode(), with_.encode(), session.encode()))

    def tls(self, c, auth=False):
        from tlsutil import starttls
        self.assertReply(c.cmd("EHLO client.example"), 250)
        starttls(c)
        if auth:
            self.assertReply(c.cmd("EHLO client.example"), 250)
            self.assertReply(c.cmd("AUTH PLAIN AGNhcm9sAHB3"), 235)

    def test_plain_esmtp_without_reverse_dns(self):
        with self.client() as c:
            header, session = self.deliver(c)
        self.assertEqual(header, self.expect("unknown [127.0.0.1]", "ESMTP", session))

    def test_helo_is_smtp(self):
        with self.client() as c:
            header, session = self.deliver(c, helo="HELO client.example")
        self.assertEqual(header, self.expect("unknown [127.0.0.1]", "SMTP", session))

    def test_tls(self):
        with self.client() as c:
            self.tls(c)
            header, session = self.deliver(c)
        self.assertEqual(header, self.expect("unknown [127.0.0.1]", "ESMTPS", session))

    def test_tls_and_auth(self):
        with self.client() as c:
            self.tls(c, auth=True)
            header, session = self.deliver(c, helo=None)
        self.assertEqual(header, self.expect("unknown [127.0.0.1]", "ESMTPSA", session))

    def test_smtputf8(self):
        with self.client() as c:
            header, session = self.deliver(c, mail="<sender@example.com> SMTPUTF8")
            self.assertEqual(header, self.expect("unknown [127.0.0.1]", "UTF8SMTP", session))
            header, _ = self.deliver(c, helo=None)
            self.assertEqual(header, self.expect("unknown [127.0.0.1]", "ESMTP", session),
                             "the next message without SMTPUTF8 is ESMTP again")

    def test_smtputf8_tls_and_auth(self):
        with self.client() as c:
            self.tls(c, auth=True)
            header, session = self.deliver(c, mail="<sender@example.com> SMTPUTF8", helo=None)
        self.assertEqual(header, self.expect("unknown [127.0.0.1]", "UTF8SMTPSA", session))

    def test_ipv6_client(self):
        with self.srv.client(port=self.port6, host="::1") as c:
            header, session = self.deliver(c)
        self.assertEqual(header, self.expect("unknown [IPv6:::1]", "ESMTP", session))

    def test_client_with_a_name(self):
        with self.client() as c:
            self.assertReply(c.cmd("XCLIENT NAME=relay.example ADDR=192.0.2.7"), 220)
            header, session = self.deliver(c)
        self.assertEqual(header, self.expect("relay.example [192.0.2.7]", "ESMTP", session))


class MaildirDurability(E2ETest):
    """The 250 promises that the message survives a power loss: seen with
    strace on the running server, smtp.maildir fsyncs the file, then tmp/
    (the file's name), renames it into new/, fsyncs new/, and only then is
    the 250 sent."""

    def test_fsync_order_before_the_250(self):
        self.assertTrue(shutil.which("strace"), "strace is missing: make test installs it")
        with Server(DEFAULT_SCRIPT) as srv:
            trace = os.path.join(srv.tmp, "strace.out")
            st = subprocess.Popen(["strace", "-f", "-y", "-s", "512", "-o", trace, "-e",
                                   "trace=fsync,fdatasync,rename,renameat,renameat2,sendto,write",
                                   "-p", str(srv.proc.pid)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                with srv.client() as c:
                    # attached once strace shows a reply of ours
                    self.assertTrue(wait_for(lambda: c.cmd("NOOP") and os.path.exists(trace)
                                             and b"250 2.0.0 OK" in read(trace), timeout=15),
                                    "strace did not attach")
                    c.ehlo()
                    self.assertReply(c.transaction(b"Subject: durable\r\n\r\nkeep me\r\n"), 250, "2.6.0")
                    self.assertReply(c.cmd("NOOP"), 250)
            finally:
                st.terminate()
                st.wait(timeout=10)
            [path] = srv.maildir_new()
            name = os.path.basename(path)
            box = os.path.realpath(srv.maildir)
            lines = read(trace).decode("utf-8", "replace").splitlines()

            def first(pattern):
                rx = re.compile(pattern)
                for i, line in enumerate(lines):
                    if rx.search(line):
                        return i
                self.fail("no %r in the trace:\n%s" % (pattern, "\n".join(lines[-40:])))

            tmp, new = re.escape(box + "/tmp"), re.escape(box + "/new")
            steps = [
                ("fsync(file)", first(r"fsync\(\d+<%s/%s>\) = 0" % (tmp, re.escape(name)))),
                ("fsync(tmp/)", first(r"fsync\(\d+<%s>\) = 0" % tmp)),
                ("rename", first(r"rename.*\"%s/%s\".*\"%s/%s\"" % (tmp, re.escape(name), new, re.escape(name)))),
                ("fsync(new/)", first(r"fsync\(\d+<%s>\) = 0" % new)),
                ("250", first(r"(sendto|write)\(.*\"250 2\.6\.0 ")),
            ]
            order = [what for what, _ in sorted(steps, key=lambda s: s[1])]
            self.assertEqual(order, [what for what, _ in steps], steps)
