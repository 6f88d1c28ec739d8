#!/usr/bin/python3
"""aiosmtpd anchor for compare.py: accept everything, discard the body, STARTTLS.
usage: aiosmtpd_sink.py PORT CERT KEY"""
import signal, ssl, sys
from aiosmtpd.controller import Controller

class Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"

port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
tls.load_cert_chain(cert, key)
ctl = Controller(Sink(), hostname="127.0.0.1", port=port, tls_context=tls, require_starttls=False)
ctl.start()
signal.signal(signal.SIGTERM, lambda *_: (ctl.stop(), sys.exit(0)))
signal.pause()
