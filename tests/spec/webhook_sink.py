"""The web service webhook_spec.lua posts to: Python's own HTTP/1.1 server
(keepalive on), recording each request, one JSON line per request in
DIR/requests.jsonl: path, Content-Type, the client's port (the same port
twice means a kept-alive connection) and the body as JSON. The answer is
200, or NNN when a recipient is status-NNN@..., after a second's wait when
one is slow@... Usage: webhook_sink.py PORT DIR."""

import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, DIR = int(sys.argv[1]), sys.argv[2]
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        status = 200 if doc is not None else 400
        for rcpt in (doc or {}).get("to", []):
            m = re.match(r"status-(\d{3})@", rcpt)
            if m:
                status = int(m.group(1))
            if rcpt.startswith("slow@"):
                time.sleep(1)
        with LOCK, open(os.path.join(DIR, "requests.jsonl"), "a") as f:
            f.write(json.dumps({"path": self.path, "type": self.headers.get("Content-Type"),
                                "port": self.client_address[1], "json": doc}) + "\n")
        reply = b'{"ok":true}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
