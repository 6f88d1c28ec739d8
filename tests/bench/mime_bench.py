#!/usr/bin/python3
"""MIME parsing benchmark (not a test): CPU to parse a 1 MiB and a 10 MiB
message with attachments (multipart/mixed: a multipart/alternative text
and HTML body in UTF-8, quoted-printable and base64, an inline image and
three base64 attachments) by

  smtp.mime      luasmtpd's module (GMime), in `luasmtpd -t` on a script
                 that parses the bytes as a string and walks the parts
                 (every body decoded and counted, texts kept as UTF-8);
  python email   email.message_from_bytes(policy=default), every leaf
                 decoded (get_payload(decode=True)), texts get_content();
  node mailparser  simpleParser (npm; installed at run time under
                 build/bench-npm), which decodes every attachment and text.

Same bytes, same run; each tool parses in its own process and measures its
own CPU (user+sys) around each parse, so start-up is not counted. Rounds
are interleaved; min/median/max per parse, and how many times cheaper
smtp.mime's median is (the goal, issue 19: at least 5x both).

usage: mime_bench.py [-r ROUNDS]   (default 7; about 30 s)
"""

import argparse
import os
import random
import shutil
import subprocess
import sys
from email.message import EmailMessage
import email.policy

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WORK = os.path.join(ROOT, "build", "bench-mime")
NPM = os.path.join(ROOT, "build", "bench-npm")

LUA = r'''
local mime = require "smtp.mime"
local f = assert(io.open(os.getenv("BENCH_FILE"), "rb"))
local data = f:read("*a")
f:close()
local times, bytes = {}, 0
for i = 1, tonumber(os.getenv("BENCH_ROUNDS")) do
  collectgarbage()
  local t0 = os.clock()
  local msg = mime.parse(data)
  for part in msg:walk() do bytes = bytes + (part.size or 0) + #(part.text or "") end
  times[i] = os.clock() - t0
end
local out = assert(io.open(os.getenv("BENCH_OUT"), "w"))
out:write(table.concat(times, " "), "\n", bytes, "\n")
out:close()
return {}
'''

PY = r'''
import email, email.policy, sys, time
data = open(sys.argv[1], "rb").read()
times, total = [], 0
for _ in range(int(sys.argv[2])):
    t0 = time.process_time()
    msg = email.message_from_bytes(data, policy=email.policy.default)
    for part in msg.walk():
        if not part.is_multipart():
            total += len(part.get_payload(decode=True))
            if part.get_content_maintype() == "text":
                total += len(part.get_content())
    times.append(time.process_time() - t0)
print(" ".join(map(str, times)))
print(total)
'''

NODE = r'''
const fs = require("fs");
const { simpleParser } = require(process.argv[2] + "/node_modules/mailparser");
(async () => {
  const data = fs.readFileSync(process.argv[3]);
  const times = [];
  let total = 0;
  for (let i = 0; i < +process.argv[4]; i++) {
    const t0 = process.cpuUsage();
    const m = await simpleParser(data);
    for (const a of m.attachments) total += a.size;
    total += (m.text || "").length + (m.html || "").length;
    const d = process.cpuUsage(t0);
    times.push((d.user + d.system) / 1e6);
  }
  console.log(times.join(" "));
  console.log(total);
})();
'''


def message(size, seed):
    """A message of about size bytes on the wire, mostly attachments."""
    rnd = random.Random(seed)
    words = ["Grüße", "résumé", "naïve", "Straße", "über", "café", "mail", "report", "the", "and", "quarterly"]
    text = "\n".join(" ".join(rnd.choice(words) for _ in range(12)) for _ in range(400)) + "\n"
    m = EmailMessage(policy=email.policy.SMTP)
    m["From"] = "Jörg Müller <joerg@example.de>"
    m["To"] = "Ana <ana@example.org>, bob@example.org"
    m["Subject"] = "Quarterly report — résumé and figures"
    m.set_content(text, cte="quoted-printable")
    m.add_alternative("<html><body><p>" + text.replace("\n", "</p><p>") + "</p></body></html>\n",
                      subtype="html", cte="base64")
    m.get_payload()[1].add_related(rnd.randbytes(20000), "image", "png", cid="<logo>", filename="logo.png")
    left = int((size - len(m.as_bytes())) * 3 / 4)
    for i, (name, share) in enumerate((("Résumé.pdf", 0.5), ("figures.xlsx", 0.3), ("photo.jpg", 0.2))):
        m.add_attachment(rnd.randbytes(int(left * share)), "application", "octet-stream", filename=name)
    return m.as_bytes()


def run(argv, env=None):
    p = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    if p.returncode != 0:
        raise RuntimeError("%s failed: %s" % (argv[0], p.stderr.decode(errors="replace")[-500:]))
    return p.stdout.decode()


def times_of(text):
    lines = text.strip().splitlines()
    return [float(x) for x in lines[-2].split()], int(lines[-1])


def smtp_mime(path, rounds):
    script = os.path.join(WORK, "bench.lua")
    out = os.path.join(WORK, "lua.out")
    env = dict(os.environ, BENCH_FILE=path, BENCH_ROUNDS=str(rounds), BENCH_OUT=out)
    run([os.environ.get("LUASMTPD_BIN", os.path.join(ROOT, "build", "luasmtpd")), "-t", script], env)
    with open(out) as f:
        return times_of(f.read())


def python_email(path, rounds):
    return times_of(run([sys.executable, "-c", PY, path, str(rounds)]))


def node_mailparser(path, rounds):
    return times_of(run(["node", os.path.join(WORK, "bench.js"), NPM, path, str(rounds)]))


def install_mailparser():
    if os.path.isdir(os.path.join(NPM, "node_modules", "mailparser")):
        return True
    if not shutil.which("npm"):
        print("no npm: node mailparser left out", flush=True)
        return False
    print("installing mailparser with npm under build/bench-npm", flush=True)
    p = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", NPM, "mailparser"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    if p.returncode != 0:
        print("npm install mailparser failed: node mailparser left out\n" + p.stdout.decode()[-500:], flush=True)
    return p.returncode == 0


def stats(xs):
    s = sorted(xs)
    return s[0], s[len(s) // 2], s[-1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-r", "--rounds", type=int, default=7)
    args = ap.parse_args()
    os.makedirs(WORK, exist_ok=True)
    with open(os.path.join(WORK, "bench.lua"), "w") as f:
        f.write(LUA)
    with open(os.path.join(WORK, "bench.js"), "w") as f:
        f.write(NODE)
    tools = [("smtp.mime", smtp_mime), ("python email", python_email)]
    if install_mailparser():
        tools.append(("node mailparser", node_mailparser))
    print("MIME parse: CPU per parse (ms), min / median / max over %d parses each" % args.rounds)
    print("%-8s %-16s %10s %10s %10s %12s" % ("message", "parser", "min", "median", "max", "vs smtp.mime"))
    for label, size in (("1 MiB", 1 << 20), ("10 MiB", 10 << 20)):
        data = message(size, seed=size)
        path = os.path.join(WORK, "msg-%d.eml" % size)
        with open(path, "wb") as f:
            f.write(data)
        got = {name: [] for name, _ in tools}
        # interleaved: each tool in turn, a few parses at a time
        per = max(1, args.rounds // 3)
        done = 0
        while done < args.rounds:
            n = min(per, args.rounds - done)
            for name, fn in tools:
                got[name] += fn(path, n)[0]
            done += n
        ours = stats(got["smtp.mime"])[1]
        for name, _ in tools:
            lo, med, hi = stats(got[name])
            ratio = "" if name == "smtp.mime" else "%.1fx" % (med / ours)
            print("%-8s %-16s %10.2f %10.2f %10.2f %12s" % (label if name == "smtp.mime" else "", name,
                  lo * 1e3, med * 1e3, hi * 1e3, ratio), flush=True)
        print("         (%d bytes on the wire)" % len(data))


if __name__ == "__main__":
    main()
