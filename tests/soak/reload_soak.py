#!/usr/bin/python3
"""Reload soak test for luasmtpd (not part of `make test`; `make soak`).

Client threads (half plain, half STARTTLS, smtplib) send messages without a
pause while the server is reloaded again and again: each reload swaps the
script file (v1 <-> v2, rename over) and the certificate files (two
generated P-256 pairs, rename over), then sends HUP and waits for the
server's "reloaded" log line. The script stores every message in a Maildir
(smtp.maildir). Checked, once single-process and once with --workers 2:

  - every message that got a 250 is stored exactly once (a unique
    X-Soak-Marker / Message-ID per message), nothing else is stored, tmp/
    is empty;
  - no client sees a reset, a timeout, a 4xx or a 5xx, and each session is
    answered by one script version only (the one of its greeting);
  - every HUP is applied; STARTTLS clients only ever see the two pairs;
  - no error line in the server log;
  - after the clients stop, the open fds (/proc/PID/fd, summed over the
    master and its workers) are exactly those after the warm-up, and RSS
    (VmRSS, summed) is within +20% or +5 MiB of it (not checked for the
    ASan build);
  - TERM stops everything with exit 0 and no worker left.

usage: reload_soak.py [--reloads N] [--quick] [--mode single|workers|both]
                      [--clients N] [--interval SECONDS]

The server binary is $LUASMTPD_BIN (default build/luasmtpd). Prints
"sent N, stored N, lost 0" per run and ends with "N passed, M failed"
(checks); exit status 1 when anything failed.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import reloadkit  # noqa: E402
from harness import binary  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reloads", type=int, default=None, help="reloads per run (default 50; --quick: 10)")
    ap.add_argument("--quick", action="store_true", help="10 reloads per run, shorter warm-up")
    ap.add_argument("--mode", choices=["single", "workers", "both"], default="both")
    ap.add_argument("--clients", type=int, default=4, help="client threads (odd ones use STARTTLS)")
    ap.add_argument("--interval", type=float, default=0.25, help="seconds between reloads")
    ap.add_argument("--workers", type=int, default=2, help="worker processes in the workers run")
    a = ap.parse_args()
    reloads = a.reloads if a.reloads is not None else (10 if a.quick else 50)
    if reloads < 0 or a.clients < 1 or a.interval < 0 or a.workers < 2:
        ap.error("bad numbers")
    warmup = 1.5 if a.quick else 3.0

    runs = []
    if a.mode in ("single", "both"):
        runs.append(("single", 1))
    if a.mode in ("workers", "both"):
        runs.append(("workers=%d" % a.workers, a.workers))

    print("luasmtpd reload soak: binary %s, %d reloads per run, %d clients, interval %.2fs"
          % (binary(), reloads, a.clients, a.interval), flush=True)
    passed = failed = 0
    t0 = time.monotonic()
    for name, workers in runs:
        print("==== %s" % name, flush=True)
        t = time.monotonic()

        def log(msg, name=name):
            print("[%s] %s" % (name, msg), flush=True)

        try:
            res = reloadkit.run_soak(reloads=reloads, workers=workers, clients=a.clients, interval=a.interval,
                                     warmup=warmup, log=log)
        except Exception as e:  # noqa: BLE001 - the server did not start, openssl failed, ...
            import traceback
            traceback.print_exc()
            print("[%s] FAIL the run could not be carried out: %s" % (name, e), flush=True)
            failed += 1
            continue
        passed += res["passed"]
        failed += res["failed"]
        print("[%s] sent %d, stored %d, lost %d  (%.1fs, %d passed, %d failed)"
              % (name, res["sent"], res["stored"], res["lost"], time.monotonic() - t, res["passed"], res["failed"]),
              flush=True)
        if res["failed"]:
            srv = res.get("server")
            print("[%s] files kept in %s and %s" % (name, res["tmp"], srv.tmp if srv else "?"))
            if srv is not None:
                print("--- server log tail ---")
                print(srv.log_tail(30))
    print("time %.1fs" % (time.monotonic() - t0))
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
