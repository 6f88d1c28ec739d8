"""A milter written with pymilter (Debian's python3-milter: Sendmail's
libmilter speaks the protocol), run by test_milter_actions.py with
/usr/bin/python3 as its own process:

    /usr/bin/python3 pymilter_actions.py PORT

It performs, at the end of the message, the action named by the local
part of a recipient (several recipients: each of their actions), and
refuses at RCPT time the recipients named rcpt-reject@ and rcpt-tempfail@:

    replbody@       replacebody() with bare LF and CRLF line breaks
    bigbody@        replacebody() with BIG_BODY (340 KiB, more than luasmtpd's
                    spool keeps in memory), in calls of 64 KiB
    addrcpt@        addrcpt() of added@, and of added-par@ with ESMTP args
    delrcpt@        delrcpt() of itself
    chgfrom@        chgfrom() to <changed@example.org> with ESMTP args
    chgheader@      chgheader(): Subject changed, X-Drop deleted (empty value)
    quarantine@     quarantine("held by pymilter")
    reply@          setreply("554", "5.7.1", "go away") and REJECT
"""

import sys

import Milter

BODY = b"replaced by pymilter\nsecond line\r\n.a dot line\nlast\n"
BIG_BODY = b"".join(b"replaced line %06d, a body past the memory of the spool\n" % i for i in range(6000))


class Actions(Milter.Base):
    def __init__(self):
        self.rcpts = []

    def envrcpt(self, to, *params):
        local = to.strip("<>").split("@")[0].lower()
        if local == "rcpt-reject":
            self.setreply("550", "5.1.1", "no such user here")
            return Milter.REJECT
        if local == "rcpt-tempfail":
            return Milter.TEMPFAIL
        self.rcpts.append(local)
        return Milter.CONTINUE

    def eom(self):
        want = set(self.rcpts)
        if "replbody" in want:
            self.replacebody(BODY)
        if "bigbody" in want:
            for at in range(0, len(BIG_BODY), 65536):
                self.replacebody(BIG_BODY[at:at + 65536])
        if "addrcpt" in want:
            self.addrcpt("<added@example.net>")
            self.addrcpt("<added-par@example.net>", "NOTIFY=NEVER")
        if "delrcpt" in want:
            self.delrcpt("<delrcpt@example.net>")
        if "chgfrom" in want:
            self.chgfrom("<changed@example.org>", "BODY=8BITMIME")
        if "chgheader" in want:
            self.chgheader("Subject", 1, "changed by pymilter")
            self.chgheader("X-Drop", 1, "")
        if "quarantine" in want:
            self.quarantine("held by pymilter")
        if "reply" in want:
            self.setreply("554", "5.7.1", "go away")
            return Milter.REJECT
        return Milter.ACCEPT


def main():
    Milter.factory = Actions
    where = sys.argv[1]  # a port on 127.0.0.1, or "unix:/path"
    sock = where if where.startswith("unix:") else "inet:%s@127.0.0.1" % where
    Milter.runmilter("pymilter-actions", sock, timeout=30)


if __name__ == "__main__":
    main()
