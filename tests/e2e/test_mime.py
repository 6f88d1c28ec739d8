"""smtp.mime (GMime) on real-world shaped messages sent with smtplib: the
policy parses the onData stream and writes what it found as JSON (cjson);
the test reads the same bytes with Python's email package (policy.default)
and compares the header fields, the addresses, the part tree and the
decoded texts. Malformed MIME (broken boundaries, bad base64, 1,000-deep
nesting, huge headers) gives a partial result with defects; a 10 MiB
attachment is parsed with the worker's memory bounded."""

import base64
import email
import email.policy
import json
import os
import re
import smtplib
import tempfile
from email.message import EmailMessage

from harness import ROOT, E2ETest, Lua, Server, SharedServerTest, binary, sanitized, script

# onData: the recipient's local part picks maxText ("maxtext-64@...");
# the worker's peak RSS is reset first (clear_refs 5), so VmHWM after the
# parse is the most the parse took.
ONDATA = Lua(r'''function(stream, session)
    local function status(field)
      local f = io.open("/proc/self/status")
      local s = f:read("*a")
      f:close()
      return tonumber(s:match(field .. ":%s*(%d+)"))
    end
    local f = io.open("/proc/self/clear_refs", "w")
    if f then f:write("5") f:close() end
    local rss = status("VmRSS")
    local opts
    if session.envelope.rcptTo[1].address:match("^stamp@") then
      assert(stream:prependHeader("X-Stamp", "yes"))
      assert(stream:removeHeader("X-Drop"))
    end
    local max = session.envelope.rcptTo[1].address:match("^maxtext%-(%d+)@")
    if max then opts = { maxText = tonumber(max) } end
    local msg, err = mime.parse(stream, opts)
    if not msg then return nil, smtp.reject(451, "4.3.0 " .. tostring(err)) end
    local walked = {}
    for part in msg:walk() do walked[#walked + 1] = part.type end
    local id = session.id .. "-" .. session.transaction
    local subject = msg:header("Subject")
    writefile(OUT .. "/mime-" .. id .. ".json", cjson.encode {
      headers = msg:headers(), subject = subject or cjson.null, received = msg:headers("Received"),
      from = msg:addresses("From"), to = msg:addresses("To"), cc = msg:addresses("Cc"),
      root = msg.root, defects = msg.defects, walked = walked,
      growth = status("VmHWM") - rss, bytes = stream.byteLength,
    })
    return "parsed " .. id
  end''')

SCRIPT = script({"onData": ONDATA}, prelude='local mime = require "smtp.mime"\nlocal cjson = require "cjson"\n',
                size=64 * 1024 * 1024)

CRLF = email.policy.SMTP  # what goes on the wire


def py_part(part):
    """The part tree as smtp.mime gives it, read by Python's email."""
    ct = part.get("content-type")
    d = {"type": part.get_content_type(),
         "params": dict(ct.params) if ct is not None else {},
         "disposition": part.get_content_disposition(),
         "filename": part.get_filename(),
         "charset": part.get_content_charset()}
    if part.is_multipart():
        d["parts"] = [py_part(p) for p in part.get_payload()]
    else:
        d["size"] = len(part.get_payload(decode=True) or b"")
        if part.get_content_maintype() == "text":
            d["text"] = part.get_content()
    return d


def ours(part):
    """The same fields of a part smtp.mime gave (cjson: absent is None)."""
    d = {k: part.get(k) for k in ("type", "disposition", "filename", "charset")}
    d["params"] = part.get("params") or {}
    if "parts" in part:
        d["parts"] = [ours(p) for p in part["parts"]]
    else:
        d["size"] = part["size"]
        if "text" in part:
            d["text"] = part["text"]
    return d


def depth(part):
    return 1 + max((depth(p) for p in part.get("parts") or []), default=0)


class Mime(SharedServerTest):
    SCRIPT = SCRIPT

    def send(self, data, rcpt="rcpt@example.com"):
        """Sends data (bytes, CRLF) and returns what the policy wrote."""
        with smtplib.SMTP("127.0.0.1", self.srv.port, local_hostname="client.example", timeout=60) as s:
            s.ehlo()
            s.mail("sender@example.com", ["BODY=8BITMIME"])
            code, resp = s.rcpt(rcpt)
            self.assertEqual(code, 250, resp)
            code, resp = s.data(data)
            self.assertEqual(code, 250, resp)
        ident = resp.decode().rsplit(" ", 1)[1]
        return json.loads(self.srv.out_file("mime-%s.json" % ident).decode("utf-8", "surrogateescape"))

    def compare(self, data, rcpt="rcpt@example.com"):
        got = self.send(data, rcpt)
        py = email.message_from_bytes(data, policy=email.policy.default)
        self.assertEqual(ours(got["root"]), py_part(py))
        raw = email.message_from_bytes(data, policy=email.policy.compat32)
        self.assertEqual([(h["name"], h["raw"]) for h in got["headers"]],
                         [(n, v.rstrip("\r\n")) for n, v in py.raw_items()])
        self.assertEqual(len(got["headers"]), len(raw.keys()))
        if py["subject"] is not None:
            self.assertEqual(got["subject"], str(py["subject"]))
        for field in ("from", "to", "cc"):
            want = [(a.display_name or None, a.addr_spec) for a in (py[field].addresses if py[field] else ())]
            self.assertEqual([(a.get("name"), a["address"]) for a in got[field]], want, field)
        self.assertEqual(got["walked"], [p.get_content_type() for p in py.walk()])
        return got

    def test_mixed_with_alternative_inline_image_and_attachments(self):
        m = EmailMessage(policy=CRLF)
        m["From"] = "Jörg Müller <joerg@example.de>"
        m["To"] = "Ana <ana@example.org>, bob@example.org"
        m["Cc"] = "Équipe: carl@example.net, \"Dee, D.\" <dee@example.net>;"
        m["Subject"] = "Réunion — résumé ✓ of a subject long enough to be folded across lines by the generator"
        m.set_content("Hello,\nsee the résumé attached.\n-- \nJörg\n")
        m.add_alternative("<p>Hello, see the <b>résumé</b> attached.</p><img src=\"cid:logo\">\n", subtype="html")
        m.get_payload()[1].add_related(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "image", "png",
                                       cid="<logo>", disposition="inline", filename="logo.png")
        m.add_attachment(b"%PDF-1.4\n" + os.urandom(3000), "application", "pdf", filename="Résumé 2024.pdf")
        m.add_attachment("a;b\n1;2\n", subtype="csv", filename="données.csv")
        got = self.compare(m.as_bytes())
        self.assertEqual(got["root"]["type"], "multipart/mixed")
        self.assertEqual(got["root"]["parts"][1]["filename"], "Résumé 2024.pdf")
        self.assertEqual(got["root"]["parts"][1]["encoding"], "base64")

    def test_rfc2231_continuations_and_encoded_names(self):
        data = (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: names\r\nMIME-Version: 1.0\r\n"
                b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
                b"--b1\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nsee attachments\r\n"
                b"--b1\r\nContent-Type: application/octet-stream;\r\n name*0=\"a very long \";\r\n"
                b" name*1=\"name.bin\"\r\nContent-Transfer-Encoding: base64\r\n"
                b"Content-Disposition: attachment;\r\n filename*0*=UTF-8''%E6%97%A5%E6%9C%AC;\r\n"
                b" filename*1*=%E8%AA%9E%20file.txt\r\n\r\nAAECAwQF\r\n"
                b"--b1\r\nContent-Type: application/zip; name=\"=?UTF-8?B?0L/RgNC40LLQtdGCLnppcA==?=\"\r\n"
                b"Content-Disposition: attachment; filename*=iso-8859-1'fr'caf%E9.zip\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\nUEsFBgAAAAAAAAAAAAAAAAAAAAAAAA==\r\n--b1--\r\n")
        got = self.compare(data)
        names = [p.get("filename") for p in got["root"]["parts"]]
        self.assertEqual(names, [None, "日本語 file.txt", "café.zip"])
        self.assertEqual(got["root"]["parts"][1]["params"]["name"], "a very long name.bin")

    def test_8bit_iso_8859_1_and_shift_jis_texts(self):
        jp = "日本語のテキストです。\r\nこんにちは、世界！\r\n"
        data = (b"From: =?ISO-8859-1?Q?Andr=E9?= Pirard <PIRARD@vm1.ulg.ac.be>\r\n"
                b"To: =?UTF-8?B?5bGx55Sw?= <yamada@example.jp>, Undisclosed:;\r\n"
                b"Subject: =?UTF-8?B?w4lzdMOpIMOgIGxhIG1lcg==?= =?ISO-8859-1?Q?_caf=E9?=\r\n"
                b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XYZ\r\n\r\n"
                b"--XYZ\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                + "Grüße aus Köln — ünïcödé\r\n".encode() +
                b"\r\n--XYZ\r\nContent-Type: text/plain; charset=ISO-8859-1\r\n"
                b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                b"Voil=E0 un caf=E9 tr=E8s =\r\nchaud.\r\n"
                b"\r\n--XYZ\r\nContent-Type: text/plain; charset=Shift_JIS\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                + jp.encode("shift_jis") +
                b"\r\n--XYZ\r\nContent-Type: text/html; charset=iso-8859-1\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                + base64.encodebytes("<p>Ærø — no, Ærø</p>".replace("—", "-").encode("iso-8859-1")).replace(b"\n", b"\r\n")
                + b"--XYZ--\r\n")
        got = self.compare(data)
        texts = [p["text"] for p in got["root"]["parts"]]
        self.assertEqual(texts[2], jp)
        self.assertEqual(got["subject"], "Ésté à la mer café")

    def test_forwarded_message_rfc822(self):
        inner = EmailMessage(policy=CRLF)
        inner["From"] = "x@example.org"
        inner["Subject"] = "inner"
        inner.set_content("the original\n")
        inner.add_attachment(b"\x00\x01" * 500, "application", "octet-stream", filename="x.bin")
        outer = EmailMessage(policy=CRLF)
        outer["From"] = "y@example.org"
        outer["To"] = "z@example.org"
        outer["Subject"] = "Fwd: inner"
        outer.set_content("see below\n")
        outer.add_attachment(inner)
        got = self.compare(outer.as_bytes())
        fwd = got["root"]["parts"][1]
        self.assertEqual(fwd["type"], "message/rfc822")
        self.assertEqual(fwd["parts"][0]["type"], "multipart/mixed")

    def test_text_cut_at_max_text_on_a_character(self):
        text = "ünïcödé " * 5000
        m = EmailMessage(policy=CRLF)
        m["Subject"] = "long"
        m.set_content(text, cte="quoted-printable")
        got = self.send(m.as_bytes(), rcpt="maxtext-1001@example.com")
        root = got["root"]
        self.assertTrue(root["truncated"])
        py = email.message_from_bytes(m.as_bytes(), policy=email.policy.default).get_content()
        self.assertLessEqual(len(root["text"].encode()), 1001)
        self.assertGreater(len(root["text"].encode()), 990)
        self.assertTrue(py.startswith(root["text"]))
        self.assertEqual(root["size"], len(py.encode()))
        got = self.send(m.as_bytes())
        self.assertFalse(got["root"]["truncated"])
        self.assertEqual(got["root"]["text"], py)

    def test_broken_boundaries(self):
        # declared "abc", the parts use "xyz", and no closing delimiter
        data = (b"From: a@example.org\r\nSubject: broken\r\nMIME-Version: 1.0\r\n"
                b"Content-Type: multipart/mixed; boundary=abc\r\n\r\n"
                b"--xyz\r\nContent-Type: text/plain\r\n\r\nlost\r\n--xyz\r\n")
        got = self.send(data)
        self.assertEqual(got["root"]["type"], "multipart/mixed")
        self.assertIn(got["root"]["parts"], ([], {}))  # cjson writes an empty table as {}
        self.assertTrue(got["defects"], got)
        # a multipart without boundary, a part cut short (no closing delimiter)
        data = (b"Subject: cut\r\nContent-Type: multipart/alternative\r\n\r\nno boundary at all\r\n")
        got = self.send(data)
        self.assertIn("multipart without boundary", " ".join(got["defects"]))
        data = (b"Subject: cut\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n"
                b"Content-Type: text/plain\r\n\r\nfirst\r\n--q\r\nContent-Type: image/gif\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\nR0lGODlh")
        got = self.send(data)
        self.assertEqual([p["type"] for p in got["root"]["parts"]], ["text/plain", "image/gif"])
        self.assertEqual(got["root"]["parts"][1]["size"], 6)
        self.assertTrue(got["defects"])

    def test_bad_base64_is_a_defect(self):
        data = (b"Subject: b64\r\nContent-Type: application/pdf; name=x.pdf\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\nJVBE!!Ri0x\xff\xfeLjQK$$\r\nAAAA\r\n")
        got = self.send(data)
        self.assertIn("invalid base64 characters in a application/pdf part", got["defects"])
        # the bytes outside the alphabet skipped, as Python's email does
        py = email.message_from_bytes(data, policy=email.policy.default)
        self.assertEqual(got["root"]["size"], len(py.get_payload(decode=True)))
        self.assertEqual(got["root"]["size"], len(base64.b64decode(b"JVBERi0xLjQKAAAA")))

    def test_deep_nesting_is_cut_with_a_defect(self):
        n = 1000
        head = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(n))
        tail = b"".join(b"\r\n--b%d--" % i for i in reversed(range(n)))
        data = b"Subject: deep\r\n" + head + b"Content-Type: text/plain\r\n\r\nbottom" + tail + b"\r\n"
        got = self.send(data)
        self.assertEqual(depth(got["root"]), 101)
        self.assertIn("nested deeper than 100 levels", " ".join(got["defects"]))
        self.assertEqual(len(got["walked"]), 101)

    def test_header_edits_made_before_are_seen(self):
        data = b"X-Drop: one\r\nSubject: edited\r\nx-drop: two\r\n\r\nbody\r\n"
        got = self.send(data, rcpt="stamp@example.com")
        self.assertEqual([(h["name"], h["value"]) for h in got["headers"]],
                         [("X-Stamp", "yes"), ("Subject", "edited")])
        unedited = self.send(data)
        self.assertEqual([h["name"] for h in unedited["headers"]], ["X-Drop", "Subject", "x-drop"])

    def test_huge_headers_are_bounded(self):
        fields = b"".join(b"X-Filler-%05d: %s\r\n" % (i, b"v" * 150) for i in range(10000))
        long = b"X-Long: " + b"\r\n ".join(b"w" * 70 for _ in range(3000)) + b"\r\n"
        data = b"Subject: big\r\n" + long + fields + b"\r\nbody\r\n"
        got = self.send(data)
        self.assertEqual(got["headers"][0]["name"], "Subject")
        self.assertEqual(got["headers"][1]["name"], "X-Long")
        self.assertEqual(len(got["headers"][1]["value"]), 70 * 3000 + 3000 - 1)
        self.assertLess(len(got["headers"]), 10002)
        self.assertGreater(len(got["headers"]), 4000)
        self.assertIn("header fields past 1048576 bytes left out", got["defects"])
        self.assertEqual(got["root"]["text"], "body\r\n")

    def test_ten_mib_attachment_with_memory_bounded(self):
        blob = os.urandom(10 * 1024 * 1024)
        m = EmailMessage(policy=CRLF)
        m["From"] = "big@example.org"
        m["Subject"] = "big"
        m.set_content("attached\n")
        m.add_attachment(blob, "application", "octet-stream", filename="big.bin")
        data = m.as_bytes()
        got = self.send(data)
        self.assertEqual([p.get("size") for p in got["root"]["parts"]], [len("attached\r\n"), len(blob)])
        self.assertEqual(got["bytes"], len(data))
        if not sanitized():
            # the message is 13.6 MiB on the wire: a copy of it would show
            self.assertLess(got["growth"] * 1024, 4 * 1024 * 1024, got["growth"])


class ReadmeExample(E2ETest):
    """The README's smtp.mime policy runs as shown."""

    def test_readme_policy(self):
        with open(os.path.join(ROOT, "README.md")) as f:
            src = re.search(r"### Reading the message: smtp.mime\n.*?```lua\n(.*?)```", f.read(), re.S).group(1)
        m = EmailMessage(policy=CRLF)
        m["From"] = "Jörg <j@example.de>"
        m["Subject"] = "Grüße"
        m.set_content("hello\n")
        with Server(src) as srv, smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as s:
            s.ehlo()
            s.mail("a@example.org")
            s.rcpt("b@example.org")
            code, resp = s.data(m.as_bytes())
            self.assertEqual((code, resp), (250, b"2.6.0 OK: 0 defects"))
            m.add_attachment(b"MZ" * 100, "application", "octet-stream", filename="setup.EXE")
            s.mail("a@example.org")
            s.rcpt("b@example.org")
            code, resp = s.data(m.as_bytes())
            self.assertEqual((code, resp[:5]), (550, b"5.7.1"))
            logged = [l for l in srv.log().splitlines() if ' subject="Grüße"' in l]
            self.assertEqual(len(logged), 1, srv.log())
            self.assertIn(" from=j@example.de", logged[0])


class Misuse(E2ETest):
    """Options are checked (unknown keys and wrong types raise, naming the
    key); a string parses in place; a spent sink refuses a second parse."""

    def test_misuse_raises(self):
        src = r'''
local mime = require "smtp.mime"
local function raises(pattern, f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok and tostring(err):find(pattern), "expected " .. pattern .. ", got " .. tostring(err))
end
raises("unknown option maxtext", mime.parse, "Subject: x\r\n\r\n", { maxtext = 1 })
raises("maxText must be a number", mime.parse, "Subject: x\r\n\r\n", { maxText = "1" })
raises("maxText must be >= 0", mime.parse, "Subject: x\r\n\r\n", { maxText = -1 })
raises("source must be a string or the onData stream", mime.parse, 42)
local tmp = assert(io.tmpfile())
tmp:write("Subject: in a file\r\n\r\nbody\r\n")
assert(mime.parse(tmp):header("Subject") == "in a file" and tmp:seek() == 28)
tmp:close()
raises("closed file", mime.parse, tmp)
local msg = assert(mime.parse("Subject: =?UTF-8?Q?caf=C3=A9?=\r\n\r\nhi\r\n", { maxText = 1 }))
assert(msg:header("subject") == "café" and msg.root.text == "h" and msg.root.truncated == true)
assert(#msg.defects == 0 and msg:header("To") == nil and #msg:headers("To") == 0)
local core, spool = require "smtp.core.mime", require "smtp.core.spool"
local sp = spool.new()
assert(sp:write("Subject: y\r\n\r\n"))
assert(core.parse_spool(sp).root.text == "")
assert(sp:close())
raises("closed spool", core.parse_spool, sp)
raises("spool expected", core.parse_spool, "Subject: y\r\n\r\n")
return {}
'''
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
            f.write(src)
        try:
            out = self.run_cmd([binary(), "-t", f.name])
        finally:
            os.unlink(f.name)
        self.assertEqual(out.returncode, 0, out)


class StoredFile(E2ETest):
    """Store, then read: the message delivered into the Maildir is parsed
    from its file (GMime reads it in place), the handle's position kept."""

    POLICY = r'''
local maildir = require "smtp.maildir"
local mime = require "smtp.mime"
local box = assert(maildir.open(os.getenv("LUASMTPD_MAILDIR")))
return {
  authOptional = true,
  onData = function(stream, session)
    local path = assert(box:deliver(stream, session, "mx.test"))
    local f = assert(io.open(path, "rb"))
    f:read(5)
    local msg = assert(mime.parse(f))
    local rest = f:read("*a")
    f:close()
    local names = {}
    for part in msg:walk() do names[#names + 1] = part.filename or "-" end
    local closed = pcall(mime.parse, f)
    return string.format("parsed %d %s %s %s", #rest, msg:headers()[1].name, table.concat(names, ","),
      tostring(closed))
  end,
}
'''

    def test_parse_the_stored_file(self):
        m = EmailMessage(policy=CRLF)
        m["Subject"] = "stored"
        m.set_content("see attached\n")
        m.add_attachment(os.urandom(300000), "application", "pdf", filename="Résumé.pdf")
        with Server(self.POLICY) as srv, smtplib.SMTP("127.0.0.1", srv.port, timeout=30) as s:
            s.ehlo()
            s.mail("a@example.org")
            s.rcpt("b@example.org")
            code, resp = s.data(m.as_bytes())
            files = srv.maildir_new()
            self.assertEqual(len(files), 1)
            with open(files[0], "rb") as f:
                stored = f.read()
        self.assertEqual(code, 250, resp)
        self.assertEqual(resp.decode(), "2.6.0 parsed %d Received -,-,Résumé.pdf false" % (len(stored) - 5))
        py = email.message_from_bytes(stored, policy=email.policy.default)
        self.assertEqual([p.get_filename() or "-" for p in py.walk()], ["-", "-", "Résumé.pdf"])
