"""Real clients against the default script: swaks, curl and Python smtplib.
Each checks the client's exit status / exceptions and the Maildir file."""

import os
import smtplib
import tempfile
from email.message import EmailMessage

from harness import DEFAULT_SCRIPT, E2ETest, Lua, Server, SharedServerTest, default_with, script, split_received, wait_for


def read(path):
    with open(path, "rb") as f:
        return f.read()


class ClientsBase(SharedServerTest):
    SCRIPT = DEFAULT_SCRIPT

    def setUp(self):
        self.before = set(self.srv.maildir_new())

    def delivered(self, n=1):
        got = wait_for(lambda: (set(self.srv.maildir_new()) - self.before)
                       if len(set(self.srv.maildir_new()) - self.before) >= n else None, 5)
        self.assertTrue(got, "expected %d new message(s)" % n)
        self.assertEqual(len(got), n)
        return [split_received(read(p)) for p in sorted(got)]

    def tmpfile(self, data):
        fd, path = tempfile.mkstemp(prefix="e2e-msg-")
        os.write(fd, data)
        os.close(fd)
        self.addCleanup(os.unlink, path)
        return path


class Swaks(ClientsBase):
    def swaks(self, *args):
        return self.run_cmd(["swaks", "--server", "127.0.0.1:%d" % self.srv.port, "--helo", "client.example",
                             "--timeout", "10"] + list(args))

    def test_data_file_with_dots(self):
        # swaks turns LF into CRLF and dot-stuffs; no trailing newline so
        # that swaks adds only the final CRLF
        src = b"Subject: swaks\n\n.leading dot\n..two\n.\nplain"
        path = self.tmpfile(src)
        r = self.swaks("--to", "b@example.com", "--from", "a@example.com", "--data", "@" + path)
        self.assertEqual(r.returncode, 0, r.stdout[-2000:])
        [(hdr, body)] = self.delivered()
        self.assertEqual(body, src.replace(b"\n", b"\r\n") + b"\r\n")
        self.assertIn(b"client.example", hdr)

    def test_pipeline(self):
        r = self.swaks("--to", "b@example.com,c@example.org", "--from", "a@example.com", "--pipeline",
                       "--body", "pipelined body", "--h-Subject", "pipelined")
        self.assertEqual(r.returncode, 0, r.stdout[-2000:])
        self.assertIn(b"PIPELINING", r.stdout)
        [(_, body)] = self.delivered()
        self.assertIn(b"Subject: pipelined\r\n", body)
        self.assertIn(b"pipelined body", body)

    def test_eight_bit_body(self):
        src = "Subject: 8bit\nContent-Type: text/plain; charset=utf-8\n\nGrüße aus Köln ✓".encode()
        path = self.tmpfile(src)
        r = self.swaks("--to", "b@example.com", "--from", "a@example.com", "--data", "@" + path)
        self.assertEqual(r.returncode, 0, r.stdout[-2000:])
        [(_, body)] = self.delivered()
        self.assertEqual(body, src.replace(b"\n", b"\r\n") + b"\r\n")

    def test_rejected_recipient_fails(self):
        r = self.swaks("--to", "user", "--from", "a@example.com")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"501", r.stdout)
        self.assertEqual(set(self.srv.maildir_new()) - self.before, set())

    def test_quit_after_ehlo(self):
        r = self.swaks("--to", "b@example.com", "--quit-after", "EHLO")
        self.assertEqual(r.returncode, 0, r.stdout[-2000:])
        self.assertIn(b"250", r.stdout)


class Curl(ClientsBase):
    def curl(self, *args, input=None):
        return self.run_cmd(["curl", "-sS", "--max-time", "15", "smtp://127.0.0.1:%d/client.example" % self.srv.port]
                            + list(args), input=input)

    def test_upload_crlf_file(self):
        msg = b"From: a@example.com\r\nSubject: curl\r\n\r\n.dot line\r\nbody\r\n"
        r = self.curl("--mail-from", "a@example.com", "--mail-rcpt", "b@example.com", "--upload-file",
                      self.tmpfile(msg))
        self.assertEqual(r.returncode, 0, r.stderr)
        [(hdr, body)] = self.delivered()
        self.assertEqual(body, msg)

    def test_crlf_flag(self):
        src = b"Subject: curl crlf\n\nline one\n.dot\n"
        r = self.curl("--crlf", "--mail-from", "a@example.com", "--mail-rcpt", "b@example.com", "--upload-file",
                      self.tmpfile(src))
        self.assertEqual(r.returncode, 0, r.stderr)
        [(_, body)] = self.delivered()
        self.assertEqual(body, src.replace(b"\n", b"\r\n"))

    def test_several_recipients_binary_ish(self):
        msg = b"Subject: bin\r\n\r\n" + bytes(b for b in range(256) if b not in (10, 13)) + b"\r\n"
        r = self.curl("--mail-from", "a@example.com", "--mail-rcpt", "b@example.com", "--mail-rcpt",
                      "c@example.org", "--upload-file", "-", input=msg)
        self.assertEqual(r.returncode, 0, r.stderr)
        [(_, body)] = self.delivered()
        self.assertEqual(body, msg)

    def test_bad_sender_fails(self):
        r = self.curl("--mail-from", "postmaster", "--mail-rcpt", "b@example.com", "--upload-file", "-",
                      input=b"x\r\n")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"501", r.stderr)
        self.assertEqual(set(self.srv.maildir_new()) - self.before, set())


class Smtplib(ClientsBase):
    def smtp(self):
        return smtplib.SMTP("127.0.0.1", self.srv.port, local_hostname="client.example", timeout=10)

    def test_send_message(self):
        m = EmailMessage()
        m["From"] = "a@example.com"
        m["To"] = "b@example.com, c@example.org"
        m["Subject"] = "smtplib"
        m.set_content("Hello.\n.\n..\nBye.\n")
        with self.smtp() as s:
            self.assertEqual(s.send_message(m), {})
        [(_, body)] = self.delivered()
        self.assertIn(b"\r\n.\r\n..\r\nBye.\r\n", body)
        self.assertTrue(body.endswith(b"Bye.\r\n"))

    def test_esmtp_features(self):
        with self.smtp() as s:
            code, _ = s.ehlo()
            self.assertEqual(code, 250)
            for ext in ["pipelining", "8bitmime", "smtputf8", "enhancedstatuscodes", "size"]:
                self.assertTrue(s.has_extn(ext), ext)

    def test_smtputf8_message(self):
        msg = "Subject: utf8\r\n\r\nΓειά σου κόσμε\r\n".encode()
        with self.smtp() as s:
            refused = s.sendmail("tëst@example.com", ["δοκιμή@παράδειγμα.δοκιμή"], msg,
                                 mail_options=["SMTPUTF8", "BODY=8BITMIME"])
            self.assertEqual(refused, {})
        [(hdr, body)] = self.delivered()
        self.assertEqual(body, msg)

    def test_partly_refused_recipients(self):
        with self.smtp() as s:
            refused = s.sendmail("a@example.com", ["b@example.com", "nodomain"], b"Subject: p\r\n\r\nx\r\n")
            self.assertEqual(list(refused), ["nodomain"])
            self.assertEqual(refused["nodomain"][0], 501)
        self.delivered()

    def test_many_messages_one_connection(self):
        with self.smtp() as s:
            for i in range(10):
                self.assertEqual(s.sendmail("a@example.com", ["b@example.com"], b"Subject: %d\r\n\r\n%d\r\n" % (i, i)),
                                 {})
            self.assertEqual(s.noop()[0], 250)
            self.assertEqual(s.rset()[0], 250)
        bodies = sorted(b for _, b in self.delivered(10))
        self.assertEqual(bodies, sorted(b"Subject: %d\r\n\r\n%d\r\n" % (i, i) for i in range(10)))

    def test_vrfy_help(self):
        with self.smtp() as s:
            self.assertEqual(s.verify("someone")[0], 252)
            self.assertEqual(s.docmd("HELP")[0], 214)


class SmtplibSize(E2ETest):
    def test_size_refused_up_front(self):
        with Server(default_with(size=1000)) as srv:
            with smtplib.SMTP("127.0.0.1", srv.port, local_hostname="client.example", timeout=10) as s:
                with self.assertRaises(smtplib.SMTPSenderRefused) as cm:
                    s.sendmail("a@example.com", ["b@example.com"], b"x" * 5000 + b"\r\n")
                self.assertEqual(cm.exception.smtp_code, 552)
            self.assertEqual(srv.maildir_new(), [])


class SmtplibHooks(E2ETest):
    def test_rejections_seen_by_client(self):
        hooks = {
            "onRcptTo": Lua('''function(address)
                if address.address:match("^nobody@") then return nil, "no such user" end
                if address.address:match("^full@") then return nil, smtp.reject(452, "mailbox full") end
              end'''),
            "onData": Lua('''function(stream, session)
                local body = readall(stream)
                if body:match("SPAM") then return nil, smtp.reject(554, "5.7.1 looks like spam") end
                return "stored " .. stream.byteLength
              end'''),
        }
        with Server(script(hooks=hooks)) as srv:
            with smtplib.SMTP("127.0.0.1", srv.port, local_hostname="client.example", timeout=10) as s:
                refused = s.sendmail("a@example.com", ["nobody@example.com", "full@example.com", "ok@example.com"],
                                     b"hello\r\n")
                self.assertEqual(refused["nobody@example.com"][0], 550)
                self.assertEqual(refused["full@example.com"][0], 452)
                self.assertNotIn("ok@example.com", refused)
                with self.assertRaises(smtplib.SMTPDataError) as cm:
                    s.sendmail("a@example.com", ["ok@example.com"], b"SPAM SPAM\r\n")
                self.assertEqual(cm.exception.smtp_code, 554)
                self.assertTrue(cm.exception.smtp_error.startswith(b"5.7.1"))
                with self.assertRaises(smtplib.SMTPRecipientsRefused):
                    s.sendmail("a@example.com", ["nobody@example.com"], b"x\r\n")
                code, msg = s.docmd("NOOP")
                self.assertEqual(code, 250)
