"""A next hop for relay tests, behind testing.nexthop() (nexthop.lua) and
tests/e2e/test_relay_client.py: Python's aiosmtpd (Debian
python3-aiosmtpd), run as its own process with /usr/bin/python3:

    nexthop.py CONFIG.json [PORT]

PORT, when given, is the port instead of CONFIG's. CONFIG: {"port": N, "out": DIR, "tls": {"cert": ..., "key": ...} (STARTTLS
offered), "lmtp": bool, "rcpt": {address: "452 4.2.2 full"}, "mail":
"550 ...", "data": "554 ...", "data_delay": seconds, "drop_data": bool,
"lmtp_rcpt": {address: "552 5.2.2 over quota"}, "auth": {"user": ...,
"password": ...} (AUTH PLAIN and LOGIN without TLS), "implicit": {"cert": ...,
"key": ...} (TLS from the first byte)}. A recipient whose local
part is "slow" makes the reply to the data wait data_delay seconds (3 by
default); one whose local part is "drop" makes the server drop the
connection instead of answering the data. Every message taken is
written to DIR/msg-N.eml (the bytes as received, dots unstuffed) with
DIR/msg-N.json (envelope and parameters); each connection appends its
client port to DIR/connections, so a test sees how many TCP connections
carried its messages. aiosmtpd offers SIZE, 8BITMIME, SMTPUTF8 and
STARTTLS, and neither PIPELINING nor CHUNKING: the BDAT-less path."""

import asyncio
import json
import os
import signal
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP


def main():
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    if len(sys.argv) > 2:
        cfg["port"] = int(sys.argv[2])
    out = cfg["out"]
    os.makedirs(out, exist_ok=True)
    count = [0]

    class Handler:
        async def handle_MAIL(self, server, session, envelope, address, options):
            if cfg.get("mail"):
                return cfg["mail"]
            envelope.mail_from = address
            envelope.mail_options.extend(options)
            return "250 2.1.0 OK"

        async def handle_RCPT(self, server, session, envelope, address, options):
            verdict = cfg.get("rcpt", {}).get(address)
            if verdict:
                return verdict
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.append(options)
            return "250 2.1.5 OK"

        async def handle_DATA(self, server, session, envelope):
            local = {r.split("@")[0] for r in envelope.rcpt_tos}
            if "slow" in local or cfg.get("data_delay"):
                await asyncio.sleep(cfg.get("data_delay", 3))
            if "drop" in local or cfg.get("drop_data"):
                server.transport.abort()
                return "421 dropped"
            if cfg.get("data"):
                return cfg["data"]
            count[0] += 1
            base = os.path.join(out, "msg-%d" % count[0])
            with open(base + ".eml.tmp", "wb") as f:
                f.write(envelope.original_content)
            with open(base + ".json", "w") as f:
                json.dump({"from": envelope.mail_from, "to": envelope.rcpt_tos,
                           "mail_options": envelope.mail_options,
                           "rcpt_options": envelope.rcpt_options,
                           "peer": list(session.peer)[:2],
                           "authenticated": bool(session.authenticated)}, f)
            os.rename(base + ".eml.tmp", base + ".eml")
            if cfg.get("lmtp"):
                verdicts = cfg.get("lmtp_rcpt", {})
                return "\r\n".join(verdicts.get(r, "250 2.0.0 <%s> delivered" % r)
                                   for r in envelope.rcpt_tos)
            return "250 2.0.0 queued as %d" % count[0]

    base_class = LMTP if cfg.get("lmtp") else SMTP

    class Logged(base_class):
        def connection_made(self, transport):
            with open(os.path.join(out, "connections"), "a") as f:
                f.write("%d\n" % transport.get_extra_info("peername")[1])
            super().connection_made(transport)

    tls = None
    if cfg.get("tls"):
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cfg["tls"]["cert"], cfg["tls"]["key"])

    auth = {}
    if cfg.get("auth"):
        def check(mechanism, login, password):
            return (login.decode(), password.decode()) == (cfg["auth"]["user"], cfg["auth"]["password"])
        auth = dict(auth_callback=check, auth_require_tls=False, auth_required=True)

    class Ctl(Controller):
        def factory(self):
            return Logged(self.handler, enable_SMTPUTF8=True, tls_context=tls,
                          data_size_limit=64 * 1024 * 1024, hostname="nexthop.test",
                          timeout=30, **auth)

    implicit = None
    if cfg.get("implicit"):
        implicit = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        implicit.load_cert_chain(cfg["implicit"]["cert"], cfg["implicit"]["key"])
    ctl = Ctl(Handler(), hostname="127.0.0.1", port=cfg["port"], ssl_context=implicit)
    ctl.start()
    # SIGTERM (blocked before the server's thread started) ends the wait
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    ctl.stop()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    main()
