#!/usr/bin/python3
"""make valgrind: one session of 1,000 messages (plus a STARTTLS session and
a dropped DATA) against build/luasmtpd under valgrind's memcheck; passes
when valgrind reports "definitely lost: 0 bytes" and no errors."""
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "bench"))
N = int(os.environ.get("MESSAGES", "1000"))

from benchutil import free_port  # noqa: E402


def main():
    work = tempfile.mkdtemp(prefix="luasmtpd-valgrind-")
    port = free_port()
    log = os.path.join(work, "valgrind.log")
    env = dict(os.environ, LUASMTPD_MAILDIR=os.path.join(work, "mail"))
    proc = subprocess.Popen(["valgrind", "--leak-check=full", "--errors-for-leak-kinds=definite",
                             "--log-file=" + log, os.path.join(ROOT, "build/luasmtpd"), "--listen",
                             "127.0.0.1:%d" % port, os.path.join(ROOT, "scripts/default.lua")],
                            cwd=work, env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    s = smtplib.SMTP("127.0.0.1", port, timeout=60)
    for i in range(N):
        s.sendmail("a@example.com", ["b@example.org"], b"Subject: %d\r\n\r\nbody %d\r\n.dot\r\n" % (i, i))
    s.quit()
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    s = smtplib.SMTP("127.0.0.1", port, timeout=60)
    s.starttls(context=ctx)
    s.sendmail("a@example.com", ["b@example.org"], b"Subject: tls\r\n\r\nx\r\n")
    s.quit()
    k = socket.create_connection(("127.0.0.1", port), timeout=30)
    k.recv(1000)
    k.sendall(b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<c@d.e>\r\nDATA\r\npartial\r\n")
    time.sleep(1)
    k.close()
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    text = open(log).read()
    lost = re.search(r"definitely lost: ([\d,]+) bytes", text)
    errors = re.search(r"ERROR SUMMARY: (\d+) errors", text)
    stored = len(os.listdir(os.path.join(work, "mail", "new")))
    print("messages sent %d, stored %d" % (N + 1, stored))
    print(lost.group(0) if lost else "definitely lost: (no leak summary: nothing allocated was lost)")
    print(errors.group(0) if errors else "no error summary")
    ok = stored == N + 1 and (not lost or lost.group(1) == "0") and errors and errors.group(1) == "0"
    print("valgrind: %d passed, %d failed" % (1 if ok else 0, 0 if ok else 1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
