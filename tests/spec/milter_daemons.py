"""The real milter daemons the example scripts' specs talk to, started
with tests/e2e/milterd.py's fixtures (their own configuration, free
ports, a dnsmasq publishing the DKIM key and the DMARC policy):

  milter_daemons.py PORT DIR [signer]

starts OpenDKIM signing and (unless only the signer is asked for)
OpenDKIM verifying, OpenDMARC and rspamd, writes DIR/milters.json
({"signer": socket, "inbound": "socket socket socket",
"authserv": {"dkim": ..., "dmarc": ...}}) and DIR/signed.eml (a message
the signer signed for an authenticated client), then listens on PORT (the
spec's sign that all is up) until SIGTERM, when it stops every daemon."""

import json
import os
import signal
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))

import milterd  # noqa: E402

PORT, DIR = int(sys.argv[1]), sys.argv[2]
SIGNER_ONLY = sys.argv[3:] == ["signer"]
DOMAIN = milterd.DKIM_DOMAIN
MESSAGE = ("From: Alice <alice@%s>\r\nTo: bob@example.org\r\nSubject: signed\r\n"
           "Message-ID: <spec.1@%s>\r\n\r\nHello Bob,\r\nthis body is signed.\r\n" % (DOMAIN, DOMAIN)).encode()


def main():
    running = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        key = milterd.make_dkim_key()
        dns = milterd.start_milter_dns({key.dns_name: key.record,
                                        "_dmarc." + DOMAIN: milterd.dmarc_record("reject")})
        running.append(dns)
        signer = milterd.start_opendkim("s", key)
        running.append(signer)
        inbound = []
        if not SIGNER_ONLY:
            for start in (lambda: milterd.start_opendkim("v", key, dns=dns),
                          lambda: milterd.start_opendmarc(dns), lambda: milterd.start_rspamd(dns)):
                inbound.append(start())
                running.append(inbound[-1])
        signed = milterd.with_header("DKIM-Signature", milterd.probe_sign(signer, MESSAGE), MESSAGE)
        with open(os.path.join(DIR, "signed.eml"), "wb") as f:
            f.write(signed)
        with open(os.path.join(DIR, "milters.json"), "w") as f:
            json.dump({"signer": signer.socket, "inbound": " ".join(m.socket for m in inbound),
                       "authserv": {"dkim": milterd.OPENDKIM_AUTHSERV, "dmarc": milterd.OPENDMARC_AUTHSERV},
                       "domain": DOMAIN}, f)
        ready = socket.socket()
        ready.bind(("127.0.0.1", PORT))
        ready.listen(8)
        while True:
            signal.pause()
    finally:
        for d in reversed(running):
            d.stop()


main()
