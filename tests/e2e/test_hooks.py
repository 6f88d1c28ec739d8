"""Hooks: each hook, the three reject forms, Lua errors (451 4.3.0, the
session and the server go on), session fields, session isolation,
smtp.sleep concurrency, smtp.log."""

import os
import smtplib
import re
import socket
import threading
import time

from harness import E2ETest, Server, Lua, SharedServerTest, script, wait_for

HOOKS = {
    "onConnect": Lua(r'''function(session)
    record("connect", {port = session.remotePort, had = session.counter, id = session.id})
    local f = io.open(OUT .. "/connect-mode", "rb")
    local mode = f and f:read("*a") or ""
    if f then f:close() end
    if mode == "reject-string" then return nil, "go away" end
    if mode == "reject-421" then return nil, smtp.reject(421, "busy") end
    if mode == "reject-enh" then return nil, smtp.reject(550, "5.7.1 blocked") end
    if mode == "raise" then error(smtp.reject(554, "raised")) end
    if mode == "lua-error" then error("connect boom") end
    session.counter = 0
  end'''),
    "onMailFrom": Lua(r'''function(address, session)
    local a = address.address
    session.counter = (session.counter or 0) + 1
    local s = snap(session)
    s.counter = session.counter
    s.tag = session.tag
    record("mail", s)
    if a:match("^reject@") then return nil, "sender refused" end
    if a:match("^tempfail@") then return nil, smtp.reject(451, "try later") end
    local code = a:match("^code(%d+)@")
    if code then return nil, smtp.reject(tonumber(code), "coded") end
    if a:match("^enh@") then return nil, smtp.reject(553, "5.7.1 not you") end
    if a:match("^enhstr@") then return nil, "5.7.2 string with its own code" end
    if a:match("^raise@") then error(smtp.reject(554, "raised reject")) end
    if a:match("^throw@") then error("mail boom") end
    if a:match("^nilindex@") then local t = nil; return t.x end
    if a:match("^crlf@") then return nil, smtp.reject(550, "bad\r\n250 2.1.0 fake") end
    if a:match("^sleep@") then smtp.sleep(1) end
    if a:match("^shortsleep@") then smtp.sleep(0.05) end
    if a:match("^log@") then smtp.log.info("hello from lua", {answer = 42, who = "e2e"}) end
    if a:match("^true@") then return true end
    if a:match("^tag%-") then session.tag = a end
  end'''),
    "onRcptTo": Lua(r'''function(address, session)
    local a = address.address
    record("rcpt", {port = session.remotePort, a = addr(address)})
    if a:match("^nobody@") then return nil, "no such user" end
    if a:match("^full@") then return nil, smtp.reject(452, "mailbox full") end
    if a:match("^throw@") then error("rcpt boom") end
    if a:match("^raise@") then error(smtp.reject(550, "5.1.2 raised")) end
  end'''),
    "onData": Lua(r'''function(stream, session)
    local first = session.envelope.rcptTo[1].address
    if first:match("^dthrowunread@") then error("data boom unread") end
    local body = readall(stream)
    local s = snap(session)
    s.tag = session.tag
    s.counter = session.counter
    s.body = body
    record("data", s)
    if first:match("^dreject@") then return nil, "rejected data" end
    if first:match("^dreject554@") then return nil, smtp.reject(554, "5.7.1 spam") end
    if first:match("^draise@") then error(smtp.reject(550, "raised in data")) end
    if first:match("^dthrow@") then error("data boom") end
    return "stored " .. tostring(stream.byteLength)
  end'''),
    "onClose": Lua(r'''function(session)
    local s = snap(session)
    s.counter = session.counter
    record("close", s)
  end'''),
}


class Hooks(SharedServerTest):
    SCRIPT = script(hooks=HOOKS, disableReverseLookup=True)

    def tearDown(self):
        try:
            os.unlink(os.path.join(self.srv.out, "connect-mode"))
        except FileNotFoundError:
            pass

    def connect_mode(self, mode):
        with open(os.path.join(self.srv.out, "connect-mode"), "w") as f:
            f.write(mode)

    def mine(self, kind, c):
        return [e for e in self.srv.events(kind)
                if e.get("remotePort", e.get("port")) == c.local_port]

    # ---- onConnect
    def test_connect_reject_string(self):
        self.connect_mode("reject-string")
        c = self.srv.client(greet=False)
        self.assertReply(c.read_reply(), 554, "5.6.0")
        c.expect_close()

    def test_connect_reject_object(self):
        self.connect_mode("reject-421")
        c = self.srv.client(greet=False)
        self.assertReply(c.read_reply(), 421, "4.4.2")
        c.expect_close()

    def test_connect_reject_with_enhanced_code(self):
        self.connect_mode("reject-enh")
        c = self.srv.client(greet=False)
        self.assertReply(c.read_reply(), 550, "5.7.1")
        c.expect_close()

    def test_connect_raise_reject(self):
        self.connect_mode("raise")
        c = self.srv.client(greet=False)
        self.assertReply(c.read_reply(), 554, "5.6.0")
        c.expect_close()

    def test_connect_lua_error(self):
        self.connect_mode("lua-error")
        c = self.srv.client(greet=False)
        self.assertReply(c.read_reply(), 451, "4.3.0")
        c.close()
        os.unlink(os.path.join(self.srv.out, "connect-mode"))
        with self.srv.client() as c2:
            self.assertReply(c2.greeting, 220)
            self.assertReply(c2.ehlo(), 250)
        self.assertIn("connect boom", self.srv.log())

    # ---- onMailFrom
    def test_mail_accept(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("MAIL FROM:<ok@example.com>"), 250, "2.1.0")
            self.assertReply(c.cmd("RSET"), 250, "2.0.0")
            self.assertReply(c.cmd("MAIL FROM:<true@example.com>"), 250, "2.1.0")

    def test_mail_reject_forms(self):
        cases = [("reject", 550, "5.1.1"), ("tempfail", 451, "4.3.0"), ("code452", 452, "4.2.2"),
                 ("enh", 553, "5.7.1"), ("enhstr", 550, "5.7.2"), ("raise", 554, "5.6.0")]
        with self.ehlo_client() as c:
            for who, code, enh in cases:
                with self.subTest(sender=who):
                    self.assertReply(c.cmd("MAIL FROM:<%s@example.com>" % who), code, enh)
            # the session goes on and the transaction is not open
            self.assertReply(c.cmd("RCPT TO:<a@example.com>"), 503, "5.5.1")
            self.assertReply(c.cmd("MAIL FROM:<ok@example.com>"), 250, "2.1.0")

    def test_enhanced_code_table(self):
        """docs/replies.md: the enhanced code comes from smtp-server's table,
        otherwise X.0.0."""
        table = {450: "4.2.1", 451: "4.3.0", 452: "4.2.2", 454: "4.7.0", 530: "5.7.0", 535: "5.7.8",
                 550: "5.1.1", 551: "5.1.6", 552: "5.2.2", 553: "5.1.3", 554: "5.6.0", 555: "5.5.4",
                 456: "4.0.0", 557: "5.0.0", 599: "5.0.0"}
        with self.ehlo_client() as c:
            for code, enh in table.items():
                with self.subTest(code=code):
                    self.assertReply(c.cmd("MAIL FROM:<code%d@example.com>" % code), code, enh)
            self.assertReply(c.cmd("MAIL FROM:<ok@example.com>"), 250, "2.1.0")

    def test_reject_text_is_used(self):
        with self.ehlo_client() as c:
            r = c.cmd("MAIL FROM:<reject@example.com>")
            self.assertIn("sender refused", r.text)
            r = c.cmd("MAIL FROM:<enh@example.com>")
            self.assertEqual(r.text, "5.7.1 not you")

    def test_mail_lua_error(self):
        """robustness-test.js: a throwing onMailFrom gets 451, the next MAIL
        works, a new connection still works."""
        for who in ["throw", "nilindex"]:
            with self.subTest(sender=who):
                with self.ehlo_client() as c:
                    self.assertReply(c.cmd("MAIL FROM:<%s@example.com>" % who), 451, "4.3.0")
                    self.assertReply(c.cmd("MAIL FROM:<ok@example.com>"), 250, "2.1.0")
                    self.assertReply(c.cmd("RCPT TO:<a@example.com>"), 250, "2.1.5")
                with self.ehlo_client() as c:
                    self.assertReply(c.cmd("MAIL FROM:<ok@example.com>"), 250, "2.1.0")
        log = self.srv.log()
        self.assertIn("mail boom", log)
        self.assertRegex(log, re.compile("traceback", re.I), "a Lua error is logged with its traceback")

    def test_reply_splitting_prevented(self):
        """A hook message with CR/LF must not produce a second reply."""
        with self.ehlo_client() as c:
            r = c.cmd("MAIL FROM:<crlf@example.com>")
            self.assertEqual(r.code, 550, r)
            self.assertEqual(len(r.lines), 1, r)
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
            c.no_reply(0.2)

    # ---- onRcptTo
    def test_rcpt_rejections(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("MAIL FROM:<ok@example.com>"), 250, "2.1.0")
            self.assertReply(c.cmd("RCPT TO:<nobody@example.com>"), 550, "5.1.1")
            self.assertReply(c.cmd("RCPT TO:<full@example.com>"), 452, "4.2.2")
            self.assertReply(c.cmd("RCPT TO:<throw@example.com>"), 451, "4.3.0")
            self.assertReply(c.cmd("RCPT TO:<raise@example.com>"), 550, "5.1.2")
            self.assertReply(c.cmd("DATA"), 503, "5.5.1", "no recipient accepted yet")
            self.assertReply(c.cmd("RCPT TO:<good1@example.com>"), 250, "2.1.5")
            self.assertReply(c.cmd("RCPT TO:<nobody@example.org>"), 550, "5.1.1")
            self.assertReply(c.cmd("RCPT TO:<good2@example.com>"), 250, "2.1.5")
            self.assertReply(c.cmd("DATA"), 354)
            c.send(b"hi\r\n.\r\n")
            self.assertReply(c.read_reply(), 250, "2.6.0")
        d = self.mine("data", c)
        self.assertEqual(len(d), 1)
        self.assertEqual([a["address"] for a in d[0]["rcptTo"]], ["good1@example.com", "good2@example.com"])
        self.assertIn("rcpt boom", self.srv.log())

    # ---- onData
    def test_data_reply_text(self):
        with self.ehlo_client() as c:
            r = c.transaction(b"12345\r\n")
            self.assertReply(r, 250, "2.6.0")
            self.assertIn("stored 7", r.text)

    def test_data_reject_forms(self):
        cases = [("dreject", 450, "4.2.1"), ("dreject554", 554, "5.7.1"), ("draise", 550, "5.1.1"),
                 ("dthrow", 451, "4.3.0"), ("dthrowunread", 451, "4.3.0")]
        for who, code, enh in cases:
            with self.subTest(rcpt=who), self.ehlo_client() as c:
                r = c.transaction(b"Subject: x\r\n\r\n" + b"body line\r\n" * 2000,
                                  rcpts=("<%s@example.com>" % who,))
                self.assertReply(r, code, enh)
                # the session goes on: a new transaction works
                self.assertReply(c.transaction(b"again\r\n"), 250, "2.6.0")
        self.assertIn("data boom", self.srv.log())

    def test_envelope_in_ondata(self):
        with self.ehlo_client() as c:
            r = c.transaction(b"x\r\n", mail="<env@example.com> BODY=8BITMIME",
                              rcpts=("<r1@example.com>", "<r2@example.org>"))
            self.assertReply(r, 250, "2.6.0")
        d = self.mine("data", c)[0]
        self.assertEqual(d["mailFrom"]["address"], "env@example.com")
        self.assertEqual(d["mailFrom"]["args"].get("BODY"), "8BITMIME")
        self.assertEqual([a["address"] for a in d["rcptTo"]], ["r1@example.com", "r2@example.org"])
        self.assertEqual(d["body"], "x\r\n")

    # ---- session fields
    def test_session_fields_ehlo(self):
        with self.client() as c:
            self.assertReply(c.cmd("EHLO Client.Example"), 250)
            self.assertReply(c.transaction(b"x\r\n"), 250, "2.6.0")
            self.assertReply(c.transaction(b"y\r\n"), 250, "2.6.0")
        m = self.mine("mail", c)
        d = self.mine("data", c)
        self.assertEqual(len(m), 2)
        self.assertEqual(len(d), 2)
        s = d[0]
        self.assertIsInstance(s["id"], str)
        self.assertTrue(len(s["id"]) >= 8, s["id"])
        self.assertEqual(s["remoteAddress"], "127.0.0.1")
        self.assertEqual(s["remotePort"], c.local_port)
        self.assertEqual(s["localAddress"], "127.0.0.1")
        self.assertEqual(s["localPort"], self.srv.port)
        self.assertEqual(s["clientHostname"], "[127.0.0.1]")
        self.assertEqual(s["hostNameAppearsAs"], "client.example")
        self.assertEqual(s["openingCommand"], "EHLO")
        self.assertEqual(s["transmissionType"], "ESMTP")
        self.assertIn(s["secure"], (False, None))
        self.assertIsNone(s.get("servername"))
        self.assertEqual(s["tlsOptionsType"], "nil")
        self.assertIsNone(s.get("user"))
        self.assertEqual([x["transaction"] for x in m], [1, 2])
        self.assertEqual([x["transaction"] for x in d], [1, 2])
        self.assertEqual(d[1]["id"], s["id"], "one session, one id")
        # the session id is on the session's log lines
        self.assertIn("session=" + s["id"], self.srv.log())

    def test_session_fields_helo(self):
        with self.client() as c:
            self.assertReply(c.cmd("HELO old.example"), 250)
            self.assertReply(c.transaction(b"x\r\n"), 250, "2.6.0")
        s = self.mine("data", c)[0]
        self.assertEqual(s["openingCommand"], "HELO")
        self.assertEqual(s["transmissionType"], "SMTP")
        self.assertEqual(s["hostNameAppearsAs"], "old.example")

    def test_session_ids_unique(self):
        ids = set()
        for _ in range(5):
            with self.ehlo_client() as c:
                self.assertReply(c.cmd("MAIL FROM:<ok@example.com>"), 250, "2.1.0")
            ids.add(self.mine("mail", c)[0]["id"])
        self.assertEqual(len(ids), 5)

    def test_session_storage_persists_and_is_isolated(self):
        a = self.ehlo_client()
        b = self.ehlo_client()
        try:
            self.assertReply(a.cmd("MAIL FROM:<tag-a@example.com>"), 250, "2.1.0")
            self.assertReply(b.cmd("MAIL FROM:<tag-b@example.com>"), 250, "2.1.0")
            for c in (a, b):
                self.assertReply(c.cmd("RCPT TO:<r@example.com>"), 250, "2.1.5")
                self.assertReply(c.cmd("DATA"), 354)
                c.send(b"x\r\n.\r\n")
                self.assertReply(c.read_reply(), 250, "2.6.0")
            self.assertReply(a.transaction(b"second\r\n"), 250, "2.6.0")
        finally:
            a.close()
            b.close()
        da, db = self.mine("data", a), self.mine("data", b)
        self.assertEqual([d["tag"] for d in da], ["tag-a@example.com"] * 2)
        self.assertEqual([d["tag"] for d in db], ["tag-b@example.com"])
        self.assertEqual([d["counter"] for d in da], [1, 2], "session data survives transactions")
        self.assertEqual(db[0]["counter"], 1)
        # a new session starts clean
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("MAIL FROM:<ok@example.com>"), 250, "2.1.0")
        m = self.mine("mail", c)[0]
        self.assertIsNone(m.get("tag"), "session data leaked into another session")
        self.assertEqual(m["counter"], 1)
        conn = self.mine("connect", c)
        self.assertEqual(len(conn), 1)
        self.assertIsNone(conn[0].get("had"))

    # ---- onClose
    def test_onclose_once_per_connection(self):
        clients = []
        c = self.ehlo_client()
        c.cmd("QUIT")
        c.expect_close()
        clients.append(c)
        c = self.ehlo_client()
        c.close()
        clients.append(c)
        c = self.ehlo_client()
        c.cmd("MAIL FROM:<ok@example.com>")
        c.cmd("RCPT TO:<a@example.com>")
        c.cmd("DATA")
        c.send(b"partial")
        c.rst()
        clients.append(c)
        for c in clients:
            ev = wait_for(lambda: self.mine("close", c), 5)
            self.assertTrue(ev, "onClose not called for client port %d" % c.local_port)
        time.sleep(0.3)
        for c in clients:
            self.assertEqual(len(self.mine("close", c)), 1)

    def test_onclose_fifty_clients(self):
        clients = [self.srv.client() for _ in range(50)]
        for c in clients:
            c.close()
        ok = wait_for(lambda: all(self.mine("close", c) for c in clients), 10)
        self.assertTrue(ok, "onClose missing for %d of 50 clients"
                        % sum(1 for c in clients if not self.mine("close", c)))

    # ---- smtp.sleep and smtp.log
    def test_sleep_does_not_block_other_sessions(self):
        n = 5
        clients = [self.ehlo_client() for _ in range(n)]
        try:
            t0 = time.monotonic()
            for c in clients:
                c.line("MAIL FROM:<sleep@example.com>")
            # while they sleep, another session is served at once
            with self.ehlo_client() as other:
                t1 = time.monotonic()
                self.assertReply(other.cmd("NOOP"), 250, "2.0.0")
                self.assertReply(other.cmd("MAIL FROM:<ok@example.com>"), 250, "2.1.0")
                self.assertLess(time.monotonic() - t1, 0.5, "a sleeping hook blocked another session")
            for c in clients:
                self.assertReply(c.read_reply(), 250, "2.1.0")
            dt = time.monotonic() - t0
            self.assertGreaterEqual(dt, 0.9, "smtp.sleep(1) returned too early")
            self.assertLess(dt, 2.5, "5 concurrent smtp.sleep(1) took %.2fs: not concurrent" % dt)
        finally:
            for c in clients:
                c.close()

    def test_sleep_in_pipeline_keeps_order(self):
        with self.ehlo_client() as c:
            c.send(b"MAIL FROM:<shortsleep@example.com>\r\nRCPT TO:<a@example.com>\r\nNOOP\r\nRSET\r\n"
                   b"MAIL FROM:<shortsleep@example.com>\r\nQUIT\r\n")
            rs = c.read_replies(6)
            self.assertCodes(rs, [250, 250, 250, 250, 250, 221])
            self.assertEqual([r.enh for r in rs], ["2.1.0", "2.1.5", "2.0.0", "2.0.0", "2.1.0", "2.0.0"])

    def test_client_gone_while_hook_sleeps(self):
        c = self.ehlo_client()
        c.line("MAIL FROM:<sleep@example.com>")
        time.sleep(0.1)
        c.rst()
        time.sleep(1.3)
        with self.ehlo_client() as c2:
            self.assertReply(c2.cmd("NOOP"), 250, "2.0.0")
        self.assertTrue(wait_for(lambda: self.mine("close", c), 3))

    def test_smtp_log(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("MAIL FROM:<log@example.com>"), 250, "2.1.0")
        sid = self.mine("mail", c)[0]["id"]
        line = wait_for(lambda: [l for l in self.srv.log().splitlines() if "hello from lua" in l], 3)
        self.assertTrue(line, "smtp.log.info line not found")
        l = line[-1]
        self.assertRegex(l, r"(^|\s)level=info(\s|$)")
        self.assertRegex(l, r"(^|\s)answer=42(\s|$)")
        self.assertRegex(l, r"(^|\s)who=e2e(\s|$)")
        self.assertIn("session=" + sid, l)


class HookConcurrencyAcrossThreads(SharedServerTest):
    """Many clients at once through the hooks (each runs in its own coroutine)."""
    SCRIPT = script(hooks=HOOKS, disableReverseLookup=True)

    def test_twenty_parallel_sessions(self):
        errors = []

        def run(i):
            try:
                with self.srv.client() as c:
                    c.ehlo("c%d.example" % i)
                    r = c.cmd("MAIL FROM:<shortsleep@example.com>")
                    assert r.code == 250, r
                    r = c.cmd("RSET")
                    assert r.code == 250, r
                    r = c.transaction(b"msg %d\r\n" % i, mail="<tag-%d@example.com>" % i)
                    assert r.code == 250, r
                    c.cmd("QUIT")
            except Exception as e:  # noqa: BLE001
                errors.append("%d: %r" % (i, e))
        ts = [threading.Thread(target=run, args=(i,)) for i in range(20)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        self.assertEqual(errors, [])
        data = self.srv.events("data")
        tags = sorted(d["tag"] for d in data)
        self.assertEqual(tags, sorted("tag-%d@example.com" % i for i in range(20)))
        for d in data:
            i = d["tag"].split("-")[1].split("@")[0]
            self.assertEqual(d["body"], "msg %s\r\n" % i, "a body went to the wrong session")
            self.assertEqual(d["hostNameAppearsAs"], "c%s.example" % i)


class MessageSummaryLine(E2ETest):
    def test_one_line_per_message_with_its_facts(self):
        hooks = {"onAuth": Lua(r'''function(auth, session) return {user = auth.username} end'''),
                 "onData": Lua(r'''function(stream, session) for _ in stream:chunks() do end end''')}
        with Server(script(hooks, authOptional=True, allowInsecureAuth=True)) as srv:
            s = smtplib.SMTP("127.0.0.1", srv.port, timeout=10)
            s.ehlo()
            s.login("carol", "pw")
            s.sendmail("from@example.com", ["r1@example.org", "r2@example.org"], b"Subject: x\r\n\r\nhello\r\n")
            s.quit()
            srv.stop()
            lines = [l for l in srv.log().splitlines() if "msg=message " in l]
            self.assertEqual(len(lines), 1, lines)
            line = lines[0]
            for field in ("session=", "client=127.0.0.1", "user=carol", "from=from@example.com",
                          "to=r1@example.org,r2@example.org", "size=21", 'reply="250 2.6.0', "hook_ms="):
                self.assertIn(field, line)


    def test_hook_ms_counts_the_hooks_not_the_waits(self):
        """hook_ms is the time the hooks ran: two that each keep the CPU
        busy 30 ms, the first of its loop iteration (MAIL) and one
        pipelined behind it (RCPT), are counted; the client's pauses of
        1.5 s before the envelope and before the body are not."""
        busy = r'''function(address, session)
    local t = os.clock()
    while os.clock() - t < 0.03 do end
  end'''
        hooks = {"onMailFrom": Lua(busy), "onRcptTo": Lua(busy),
                 "onData": Lua(r'''function(stream, session) for _ in stream:chunks() do end end''')}
        with Server(script(hooks)) as srv:
            sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            f = sock.makefile("rb")

            def reply():
                while True:
                    line = f.readline()
                    if not line or line[3:4] != b"-":
                        return line

            reply()
            sock.sendall(b"EHLO client.example\r\n")
            reply()
            time.sleep(1.5)
            sock.sendall(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
            self.assertEqual([reply()[:3] for _ in range(3)], [b"250", b"250", b"354"])
            time.sleep(1.5)
            sock.sendall(b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n")
            self.assertEqual(reply()[:3], b"250")
            reply()
            sock.close()
            srv.stop()
            m = re.findall(r" msg=message .* hook_ms=(\d+\.\d{3})$", srv.log(), re.M)
            self.assertEqual(len(m), 1, srv.log())
            self.assertGreaterEqual(float(m[0]), 60.0)
            self.assertLess(float(m[0]), 1400.0)


# A hook's text that begins with its own enhanced code keeps it: the core
# adds its default only to texts without one (issue 15). The sender's local
# part picks what the hooks answer.
OWN_CODE_HOOKS = {
    "onAuth": Lua(r'''function(auth, session)
    return {user = auth.username, message = "2.7.0 Welcome " .. auth.username}
  end'''),
    "onMailFrom": Lua(r'''function(address, session)
    if address.address:match("^badsender@") then return nil, smtp.reject(550, "5.7.1 sender blocked") end
  end'''),
    "onRcptTo": Lua(r'''function(address, session)
    if address.address:match("^nobody@") then return nil, smtp.reject(550, "5.1.1 no such user") end
    if address.address:match("^later@") then return nil, "4.2.2 mailbox full" end
  end'''),
    "onData": Lua(r'''function(stream, session)
    for _ in stream:chunks() do end
    local mode = session.envelope.mailFrom.address:match("^([%w-]+)@")
    if mode == "own" then return "2.6.1 queued as X1" end
    if mode == "long" then return "queued as " .. string.rep("q", 190) .. " end" end
    return "queued as Q2"
  end'''),
}


class HookTextsAndTheirLog(SharedServerTest):
    """Hook texts with their own enhanced codes, the whole reply in the
    summary line, and a line for each refused sender or recipient."""
    SCRIPT = script(OWN_CODE_HOOKS, allowInsecureAuth=True, maxRecipients=2)

    def session_lines(self, c, msg):
        """The log lines with msg of the session c spoke in (by its port)."""
        wait_for(lambda: "msg=%s" % msg in self.srv.log(), 5)
        ids = [m.group(1) for m in re.finditer(r'msg=connection session=(\S+) remote=127\.0\.0\.1 port=%d\b' % c.local_port,
                                               self.srv.log())]
        self.assertTrue(ids, "no connection line for port %d:\n%s" % (c.local_port, self.srv.log_tail()))
        return [l for l in self.srv.log().splitlines() if "msg=%s " % msg in l and "session=%s " % ids[0] in l]

    def test_data_text_with_its_own_enhanced_code(self):
        with self.ehlo_client() as c:
            r = c.transaction(b"Subject: x\r\n\r\nhi\r\n", mail="<own@example.com>")
            self.assertEqual(r.raw, b"250 2.6.1 queued as X1\r\n")
            r = c.transaction(b"Subject: x\r\n\r\nhi\r\n", mail="<plain@example.com>")
            self.assertEqual(r.raw, b"250 2.6.0 queued as Q2\r\n")

    def test_auth_message_with_its_own_enhanced_code(self):
        with self.ehlo_client() as c:
            r = c.cmd("AUTH PLAIN AGNhcm9sAHB3")  # \0carol\0pw
            self.assertEqual(r.raw, b"235 2.7.0 Welcome carol\r\n")

    def test_rejections_with_their_own_enhanced_codes(self):
        with self.ehlo_client() as c:
            self.assertEqual(c.cmd("MAIL FROM:<badsender@example.com>").raw, b"550 5.7.1 sender blocked\r\n")
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250, "2.1.0")
            self.assertEqual(c.cmd("RCPT TO:<nobody@example.com>").raw, b"550 5.1.1 no such user\r\n")
            self.assertEqual(c.cmd("RCPT TO:<later@example.com>").raw, b"550 4.2.2 mailbox full\r\n")

    def test_summary_line_has_the_whole_reply(self):
        with self.ehlo_client() as c:
            r = c.transaction(b"Subject: x\r\n\r\nhi\r\n", mail="<long@example.com>")
            self.assertReply(r, 250, "2.6.0")
            text = "queued as " + "q" * 190 + " end"
            self.assertEqual(r.text, "2.6.0 " + text)
            c.cmd("QUIT")
            [line] = wait_for(lambda: self.session_lines(c, "message") or None, 5)
        self.assertIn(' reply="250 2.6.0 %s" ' % text, line)

    def test_refused_sender_and_recipients_are_logged(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("MAIL FROM:<badsender@example.com>"), 550)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
            self.assertReply(c.cmd("RCPT TO:<nobody@example.com>"), 550)
            self.assertReply(c.cmd("RCPT TO:<later@example.com>"), 550)
            self.assertReply(c.cmd("RCPT TO:<ok@example.com>"), 250)
            c.cmd("QUIT")
            senders = wait_for(lambda: self.session_lines(c, '"sender refused"') or None, 5)
            rcpts = wait_for(lambda: len(self.session_lines(c, '"recipient refused"')) >= 2 or None, 5)
            rcpts = self.session_lines(c, '"recipient refused"')
        self.assertEqual(len(senders), 1, senders)
        self.assertIn(' client=127.0.0.1 from=badsender@example.com reply="550 5.7.1 sender blocked"', senders[0])
        self.assertEqual(len(rcpts), 2, rcpts)
        self.assertIn(' client=127.0.0.1 from=a@example.com to=nobody@example.com '
                      'reply="550 5.1.1 no such user"', rcpts[0])
        self.assertIn(' to=later@example.com reply="550 4.2.2 mailbox full"', rcpts[1])

    def test_refused_by_the_core_are_logged(self):
        """Syntax, parameter and SMTPUTF8 refusals are refusals too."""
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("MAIL FROM:<not an address>"), 501)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com> BODY=9BIT"), 501)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
            self.assertReply(c.cmd("RCPT TO:nobody"), 501)
            self.assertReply(c.cmd("RCPT TO:<j\u00f6rg@example.com>"), 553, "5.6.7")
            c.cmd("QUIT")
            rcpts = wait_for(lambda: len(self.session_lines(c, '"recipient refused"')) >= 2 or None, 5)
            senders = self.session_lines(c, '"sender refused"')
            rcpts = self.session_lines(c, '"recipient refused"')
        self.assertEqual(len(senders), 2, senders)
        self.assertIn(' from="FROM:<not an address>" reply="501 5.1.7 ', senders[0])
        self.assertIn(' from=a@example.com reply="501 5.5.4 ', senders[1])
        self.assertEqual(len(rcpts), 2, rcpts)
        self.assertIn(' from=a@example.com to=TO:nobody reply="501 5.5.4 ', rcpts[0])
        self.assertIn(' reply="553 5.6.7 ', rcpts[1])

    def test_recipient_over_the_limit_is_logged(self):
        with self.ehlo_client() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
            self.assertReply(c.cmd("RCPT TO:<r1@example.com>"), 250)
            self.assertReply(c.cmd("RCPT TO:<r2@example.com>"), 250)
            self.assertReply(c.cmd("RCPT TO:<r3@example.com>"), 452, "4.5.3")
            c.cmd("QUIT")
            [line] = wait_for(lambda: self.session_lines(c, '"recipient refused"') or None, 5)
        self.assertIn(' client=127.0.0.1 from=a@example.com to=r3@example.com reply="452 4.5.3 ', line)


# A script's own tables may be changed under the core: a "strict" metatable
# on the session (refusing new fields and reads of missing ones), or an
# envelope or address a hook replaced with something else. The core writes
# the session raw and updates the envelope in a protected call: the worst a
# hook can do is fail its own command (451, logged), never the process
# (an unprotected error there was a panic: the server exited).
TAMPERING_HOOKS = {
    "onConnect": Lua(r'''function(session)
    setmetatable(session, {
      __newindex = function(t, k) error("strict session: new field " .. tostring(k)) end,
      __index = function(t, k) error("strict session: no field " .. tostring(k)) end,
    })
  end'''),
    "onAuth": Lua(r'''function(auth, session) return {user = auth.username} end'''),
    "onMailFrom": Lua(r'''function(address, session)
    local a = address.address
    if a:match("^args@") then address.args = 5 end
    if a:match("^noenv@") then rawset(session, "envelope", nil) end
  end'''),
    "onRcptTo": Lua(r'''function(address, session)
    if address.address:match("^norcpt@") then rawget(session, "envelope").rcptTo = false end
  end'''),
    "onData": Lua(r'''function(stream, session)
    for _ in stream:chunks() do end
    local env = rawget(session, "envelope")
    record("data", {from = env.mailFrom.address, to = env.rcptTo[1].address, n = #env.rcptTo,
                    user = rawget(session, "user"), helo = rawget(session, "hostNameAppearsAs")})
  end'''),
}


class ScriptAlteredTables(E2ETest):
    def test_strict_session_and_broken_envelopes_fail_one_command_not_the_server(self):
        with Server(script(TAMPERING_HOOKS, allowInsecureAuth=True, disableReverseLookup=True)) as srv:
            c = srv.client()
            c.ehlo()
            self.assertReply(c.cmd("AUTH PLAIN AGNhcm9sAHB3"), 235)
            # the address's args replaced: MAIL fails, as a hook that raised
            self.assertReply(c.cmd("MAIL FROM:<args@example.com>"), 451, "4.3.0")
            self.assertReply(c.cmd("MAIL FROM:<ok@example.com>"), 250)
            # the recipient list replaced: RCPT fails until the next transaction
            self.assertReply(c.cmd("RCPT TO:<norcpt@example.org>"), 451, "4.3.0")
            self.assertReply(c.cmd("RCPT TO:<r1@example.org>"), 451, "4.3.0")
            self.assertReply(c.cmd("RSET"), 250)
            # the envelope removed: MAIL fails; RSET makes a new one
            self.assertReply(c.cmd("MAIL FROM:<noenv@example.com>"), 451, "4.3.0")
            self.assertReply(c.cmd("RSET"), 250)
            self.assertReply(c.cmd("MAIL FROM:<ok@example.com>"), 250)
            self.assertReply(c.cmd("RCPT TO:<r1@example.org>"), 250)
            self.assertReply(c.cmd("DATA"), 354)
            self.assertReply(c.cmd("Subject: x\r\n\r\nhello\r\n."), 250)
            c.ehlo()  # a second EHLO writes the session again
            self.assertReply(c.cmd("QUIT"), 221)
            self.assertTrue(srv.alive())
            [d] = srv.events("data")
            self.assertEqual(d, {"from": "ok@example.com", "to": "r1@example.org", "n": 1, "user": "carol",
                                 "helo": "client.example"})
            srv.stop()
            log = srv.log()
            self.assertEqual(log.count('msg="the session table could not be updated"'), 4, log)
            self.assertIn('update=mailFrom error="address.args is not a table"', log)
            self.assertIn('update=rcptTo error="session.envelope.rcptTo is not a table"', log)
            self.assertIn('update=mailFrom error="session.envelope is not a table"', log)

    def test_a_returned_object_whose_index_raises_fails_its_hook(self):
        """The core reads what a hook returns (onAuth's {user, message}, a
        rejection table's code and message) as Lua would, __index and all,
        but protected: an object whose __index raises makes the hook fail
        (451 4.3.0, "hook failed" logged); it was a panic."""
        strict = r'''setmetatable(%s, {__index = function(t, k) error("strict: no field " .. tostring(k)) end})'''
        hooks = {
            "onAuth": Lua(r'''function(auth, session) return %s end''' % (strict % "{user = auth.username}")),
            "onMailFrom": Lua(r'''function(address, session)
    if address.address:match("^strict@") then return nil, %s end
    if address.address:match("^object@") then
      return nil, setmetatable({}, {__index = {code = 553, message = "5.7.1 from the class"}})
    end
  end''' % (strict % "{}")),
        }
        with Server(script(hooks, allowInsecureAuth=True, disableReverseLookup=True)) as srv:
            c = srv.client()
            c.ehlo()
            self.assertReply(c.cmd("AUTH PLAIN AGNhcm9sAHB3"), 451, "4.3.0")
            self.assertReply(c.cmd("MAIL FROM:<strict@example.com>"), 451, "4.3.0")
            # an object's fields from its class are read as Lua reads them
            r = c.cmd("MAIL FROM:<object@example.com>")
            self.assertReply(r, 553, "5.7.1")
            self.assertIn(b"from the class", r.raw)
            self.assertReply(c.cmd("MAIL FROM:<ok@example.com>"), 250)
            self.assertReply(c.cmd("QUIT"), 221)
            self.assertTrue(srv.alive())
            srv.stop()
            log = srv.log()
            self.assertIn('hook=onAuth error="', log)
            self.assertIn("strict: no field message", log)
            self.assertIn("hook=onMailFrom", log)
            self.assertIn("strict: no field code", log)

    def test_a_finalizer_that_raises_is_logged_not_a_crash(self):
        """A __gc finalizer runs when the collector reaches its object,
        often during the core's own work between hooks, where LuaJIT's
        passing its error on was a panic (the server exited after some
        sessions). The ones a script sets (a newproxy's, ffi.gc's) are
        run protected; their errors are logged."""
        hooks = {"onConnect": Lua(r'''function(session)
    local ffi = require "ffi"
    for i = 1, 40 do
      local p = newproxy(true)
      getmetatable(p).__gc = function() error("proxy finalizer boom") end
      ffi.gc(ffi.new("int[1]"), function() error("ffi finalizer boom") end)
      debug.setmetatable(newproxy(false), {__gc = function() error("debug finalizer boom") end})
      BoomType()
    end
  end''')}
        prelude = r'''
local ffi = require "ffi"
ffi.cdef "struct boom_t { int x; };"
BoomType = ffi.metatype("struct boom_t", {__gc = function() error("metatype finalizer boom") end})
'''
        with Server(script(hooks, prelude=prelude)) as srv:
            for i in range(150):
                s = smtplib.SMTP("127.0.0.1", srv.port, timeout=10)
                s.ehlo("client.example")
                s.sendmail("a@example.com", ["b@example.org"], b"Subject: x\r\n\r\n" + b"x" * 2000 + b"\r\n")
                s.quit()
            self.assertTrue(srv.alive())
            srv.stop()
            log = srv.log()
            self.assertIn('msg="a __gc finalizer raised"', log)
            for kind in ("proxy", "ffi", "debug", "metatype"):
                self.assertIn("%s finalizer boom" % kind, log)

    def test_a_lua_error_outside_any_hook_is_logged_and_the_worker_replaced(self):
        """The last resort, for what the core cannot wrap (a __gc put into
        a userdata's metatable after debug.setmetatable): the process ends
        with a line that says why (it ended silently before), and under
        --workers the master starts another worker, which serves on."""
        hooks = {"onConnect": Lua(r'''function(session)
    if session.remoteAddress ~= "127.0.0.1" then return end
    for i = 1, 40 do
      local mt = {}
      debug.setmetatable(newproxy(false), mt)
      -- raising only where nothing protects it: in the core's own calls
      -- on the main state (in a hook's coroutine it would fail the hook)
      mt.__gc = function() if coroutine.running() == nil then error("late finalizer boom") end end
    end
  end''')}
        with Server(script(hooks), args=("--workers", "2")) as srv:
            deadline = time.monotonic() + 30
            while 'a Lua error outside any hook' not in srv.log() and time.monotonic() < deadline:
                try:
                    s = smtplib.SMTP("127.0.0.1", srv.port, timeout=10)
                    s.ehlo("client.example")
                    s.sendmail("a@example.com", ["b@example.org"], b"Subject: x\r\n\r\nhello\r\n")
                    s.quit()
                except (smtplib.SMTPException, OSError):
                    time.sleep(0.05)
            log = srv.log()
            self.assertIn('msg="a Lua error outside any hook: this process ends"', log)
            self.assertIn("late finalizer boom", log)
            # a fresh worker serves (connections from 127.0.0.2 make no finalizers)
            wait_for(lambda: self._one_session(srv.port, "127.0.0.2"), timeout=15)
            self.assertTrue(srv.alive())

    def _one_session(self, port, source):
        try:
            s = smtplib.SMTP("127.0.0.1", port, timeout=5, source_address=(source, 0))
            s.ehlo("client.example")
            s.sendmail("a@example.com", ["b@example.org"], b"Subject: x\r\n\r\nhello\r\n")
            s.quit()
            return True
        except (smtplib.SMTPException, OSError):
            return False
