"""lua-resty-http, exactly as published (../shared/compat/lib), against a
real Python HTTP/1.1 and HTTPS server (svcutil.HttpServer, keepalive on):
onData posts the message as JSON with request_uri and the status decides
250 or 451 (seen with smtplib); the server gets the exact JSON; several
messages go over one kept-alive connection; HTTPS with ssl_verify against
the test CA passes, and against an untrusted certificate or one for
another name gives 451 with lua-nginx-module's error; chunked bodies; a server that never answers gives
451 after the timeout while another session goes on; connect + request +
body_reader streaming (cosockets in the coroutine lua-resty-http reads
with). Skipped with a message when the compat folder is absent."""

import json
import os
import smtplib
import time
import unittest

import svcutil
import tlsutil
from harness import COMPAT, E2ETest, Lua, Server, compat_reason, lua_value, script, wait_for

CHUNKS = [b"first chunk|", b"second|", b"x" * 3000, b"|last"]
STREAM_BODY = b"0123456789" * 500

PRELUDE = r'''
package.path = COMPAT .. "/?.lua;" .. package.path
require "smtp.ngx"
local cjson = require "cjson"
local http = require "resty.http"

-- the recipient's local part names the upstream and the path
local function url_for(name)
  local kind, rest = name:match("^(%a+)%-(.*)$")
  if kind == "https" or kind == "mismatch" then return "https://localhost:" .. HTTPS_PORT .. "/" .. rest end
  if kind == "untrusted" then return "https://localhost:" .. UNTRUSTED_PORT .. "/" .. rest end
  return "http://127.0.0.1:" .. HTTP_PORT .. "/" .. name:gsub("%-", "/")
end

local function streamed(doc)
  local httpc = http.new()
  httpc:set_timeouts(1000, 1000, 1000)
  local ok, err = httpc:connect{scheme = "http", host = "127.0.0.1", port = HTTP_PORT, pool = "streamed"}
  if not ok then return nil, err end
  local res, rerr = httpc:request{method = "POST", path = "/stream", body = cjson.encode(doc),
                                  headers = {["Content-Type"] = "application/json"}}
  if not res then return nil, rerr end
  local parts = {}
  repeat
    local chunk, cerr = res.body_reader(700)
    if cerr then return nil, cerr end
    parts[#parts + 1] = chunk
  until not chunk
  local times = httpc:get_reused_times()
  assert(httpc:set_keepalive(10000, 10))
  return {status = res.status, body = table.concat(parts), pieces = #parts, reused = times}
end
'''

ONDATA = Lua(r'''function(stream, session)
  local parts = {}
  for chunk in stream:chunks() do parts[#parts + 1] = chunk end
  local rcpt = session.envelope.rcptTo[1].address
  local name = rcpt:match("^(.-)@")
  local doc = {from = session.envelope.mailFrom.address, to = rcpt, message = table.concat(parts)}
  local res, err
  if name == "stream" then
    res, err = streamed(doc)
  else
    local httpc = http.new()
    httpc:set_timeout(name == "silent" and 300 or 2000)
    local json = cjson.encode(doc)
    record("sent", {name = name, json = json})
    res, err = httpc:request_uri(url_for(name), {
      method = "POST", body = json, headers = {["Content-Type"] = "application/json"},
      ssl_verify = true, ssl_server_name = name:find("^mismatch") and "wrong.example" or nil,
      keepalive_timeout = 10000, keepalive_pool = 4})
  end
  if not res then return nil, smtp.reject(451, "4.3.0 webhook: " .. err) end
  record("http", {name = name, status = res.status, body = res.body, pieces = res.pieces,
                  reused = res.reused})
  if res.status >= 300 then return nil, smtp.reject(451, "4.3.0 webhook said " .. res.status) end
  return "accepted by the webhook"
end''')


def respond(req):
    path = req.path
    if path == "/silent":
        return 200, None, None
    if path == "/chunked":
        return 200, {"Content-Type": "text/plain"}, list(CHUNKS)
    if path == "/stream":
        return 200, {"Content-Type": "text/plain"}, STREAM_BODY
    if path.startswith("/status/"):
        return int(path.rsplit("/", 1)[1]), {"Content-Type": "application/json"}, b'{"ok":true}'
    return 404, None, b"no such path"


@unittest.skipUnless(COMPAT, compat_reason())
class RestyHttp(svcutil.Fixtures, E2ETest):

    @classmethod
    def start_fixtures(cls):
        pki = tlsutil.certs()
        cls.http = cls.use(svcutil.HttpServer(respond))
        cls.https = cls.use(svcutil.HttpServer(respond, pki.crt("localhost"), pki.key("localhost")))
        cls.untrusted = cls.use(svcutil.HttpServer(respond, *svcutil.self_signed()))
        prelude = ("local COMPAT = %s\nlocal HTTP_PORT = %d\nlocal HTTPS_PORT = %d\n"
                   "local UNTRUSTED_PORT = %d\n"
                   % (lua_value(os.path.abspath(COMPAT)), cls.http.port, cls.https.port,
                      cls.untrusted.port)) + PRELUDE
        # ssl_verify uses OpenSSL's default store, which SSL_CERT_FILE names
        cls.srv = cls.use(Server(script(hooks={"onData": ONDATA}, prelude=prelude, disableReverseLookup=True,
                                        hookTimeout=5, closeTimeout=3),
                                 env={"SSL_CERT_FILE": pki.ca}))

    def send(self, rcpt, body="Subject: hi\r\n\r\nhello\r\n"):
        """Sends one message with smtplib; returns (250, "accepted") or the
        code and text of the refusal of DATA."""
        with smtplib.SMTP("127.0.0.1", self.srv.port, timeout=10) as s:
            try:
                s.sendmail("sender@example.com", [rcpt], body)
            except smtplib.SMTPDataError as e:
                return e.smtp_code, e.smtp_error.decode()
            return 250, "accepted"

    def http_events(self, name):
        return [e for e in self.srv.events("http") if e.get("name") == name]

    def test_status_decides_250_or_451(self):
        with smtplib.SMTP("127.0.0.1", self.srv.port, timeout=10) as s:
            s.sendmail("sender@example.com", ["status-200@example.org"], "Subject: a\r\n\r\nyes\r\n")
            with self.assertRaises(smtplib.SMTPDataError) as cm:
                s.sendmail("sender@example.com", ["status-503@example.org"], "Subject: b\r\n\r\nno\r\n")
        self.assertEqual(cm.exception.smtp_code, 451)
        self.assertIn(b"webhook said 503", cm.exception.smtp_error)
        self.assertEqual([e["status"] for e in self.http_events("status-200")][-1:], [200])

    def test_server_receives_the_exact_json(self):
        body = "Subject: json\r\n\r\n\"quoted\" \\ tab\t and \u00e9\r\n"
        with smtplib.SMTP("127.0.0.1", self.srv.port, timeout=10) as s:
            s.sendmail("json@example.com", ["status-201@example.org"], body.encode("utf-8"))
        sent = [e["json"] for e in self.srv.events("sent") if e.get("name") == "status-201"]
        got = [r for r in self.http.requests if r.path == "/status/201"]
        self.assertEqual(len(sent), 1)
        self.assertEqual(len(got), 1)
        self.assertEqual(got[0].method, "POST")
        self.assertEqual(got[0].headers["Content-Type"], "application/json")
        # the event log carries the Lua string's bytes one char each
        self.assertEqual(got[0].body, sent[0].encode("latin-1"))
        doc = json.loads(got[0].body)
        self.assertEqual(doc["from"], "json@example.com")
        self.assertEqual(doc["to"], "status-201@example.org")
        self.assertIn("\"quoted\" \\ tab\t and \u00e9", doc["message"])

    def test_keepalive_reuses_one_connection(self):
        with smtplib.SMTP("127.0.0.1", self.srv.port, timeout=10) as s:
            for i in range(4):
                s.sendmail("k@example.com", ["status-200@example.org"], "Subject: %d\r\n\r\nk\r\n" % i)
        conns = [r.conn for r in self.http.requests if r.path == "/status/200"][-4:]
        self.assertEqual(len(conns), 4)
        self.assertEqual(len(set(conns)), 1, "all four over one kept-alive connection: %r" % conns)

    def test_https_verified_against_the_test_ca(self):
        before = self.https.accepted
        self.assertEqual(self.send("https-status/200@example.org"), (250, "accepted"))
        self.assertEqual(self.send("https-status/200@example.org"), (250, "accepted"))
        self.assertEqual(self.https.accepted - before, 1, "the TLS connection was kept alive")
        self.assertEqual([r.path for r in self.https.requests][-2:], ["/status/200"] * 2)

    def test_untrusted_certificate_gives_451(self):
        code, text = self.send("untrusted-status/200@example.org")
        self.assertEqual(code, 451, text)
        # lua-nginx-module's spelling: OpenSSL's code and reason
        self.assertRegex(text, r"webhook: 18: self.signed certificate$")
        self.assertEqual(self.untrusted.requests, [])
        self.assertTrue(wait_for(lambda: self.untrusted.failed_handshakes >= 1, 3), "the server saw it refused")

    def test_certificate_for_another_name_gives_451(self):
        code, text = self.send("mismatch-status/200@example.org")
        self.assertEqual(code, 451, text)
        self.assertTrue(text.endswith("webhook: certificate host mismatch"), text)

    def test_chunked_response_body(self):
        self.assertEqual(self.send("chunked@example.org"), (250, "accepted"))
        self.assertEqual(self.http_events("chunked")[-1]["body"], b"".join(CHUNKS).decode())

    def test_timeout_gives_451_while_another_session_goes_on(self):
        with self.srv.client() as slow:
            self.assertEqual(slow.ehlo().code, 250)
            self.assertEqual(slow.cmd("MAIL FROM:<s@example.com>").code, 250)
            self.assertEqual(slow.cmd("RCPT TO:<silent@example.org>").code, 250)
            self.assertEqual(slow.cmd("DATA").code, 354)
            t0 = time.monotonic()
            slow.send("Subject: slow\r\n\r\nwait\r\n.\r\n")
            self.assertEqual(self.send("status-200@example.org"), (250, "accepted"))
            other = time.monotonic() - t0
            r = slow.read_reply()
        self.assertEqual(r.code, 451, r.raw)
        self.assertIn(b"timeout", r.raw)
        self.assertLess(other, 2)

    def test_connect_request_and_body_reader(self):
        self.assertEqual(self.send("stream@example.org"), (250, "accepted"))
        self.assertEqual(self.send("stream@example.org"), (250, "accepted"))
        evs = self.http_events("stream")[-2:]
        for e in evs:
            self.assertEqual(e["body"], STREAM_BODY.decode())
            self.assertGreaterEqual(e["pieces"], len(STREAM_BODY) // 700)
        self.assertEqual([e["reused"] for e in evs], [0, 1])
        got = [r for r in self.http.requests if r.path == "/stream"][-2:]
        self.assertEqual(json.loads(got[-1].body)["to"], "stream@example.org")
        self.assertEqual(got[0].conn, got[1].conn)
