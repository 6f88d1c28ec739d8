"""The README's example policy runs as shown: a user who reads only the
README must succeed."""
import os
import re
import smtplib

from harness import E2ETest, Server

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def readme_policy():
    text = open(os.path.join(ROOT, "README.md")).read()
    return re.search(r"## A policy in 15 lines\n\n```lua\n(.*?)```", text, re.S).group(1)


class ReadmeExample(E2ETest):
    def test_example_policy_serves(self):
        src = readme_policy()
        self.assertLessEqual(len(src.strip().splitlines()), 20)
        # The one change: the Maildir goes to the test's own directory.
        self.assertIn('maildir.open("var/mail")', src)
        src = src.replace('maildir.open("var/mail")', 'maildir.open(os.getenv("LUASMTPD_MAILDIR"))')
        with Server(src) as srv:
            s = smtplib.SMTP("127.0.0.1", srv.port, timeout=10)
            try:
                s.ehlo()
                code, _ = s.mail("sender@example.com")
                self.assertEqual(code, 250)
                code, msg = s.rcpt("nobody@example.org")
                self.assertEqual((code, msg[:5]), (550, b"5.1.1"))
                self.assertEqual(s.rcpt("alice@example.org")[0], 250)
                code, _ = s.data(b"Subject: hi\r\n\r\nhello\r\n")
                self.assertEqual(code, 250)
            finally:
                s.quit()
            new = os.path.join(srv.maildir, "new")
            files = os.listdir(new)
            self.assertEqual(len(files), 1)
            self.assertTrue(open(os.path.join(new, files[0]), "rb").read().endswith(b"Subject: hi\r\n\r\nhello\r\n"))
