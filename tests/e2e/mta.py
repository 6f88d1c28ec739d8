"""Real next hops for the relay tests: Debian's Postfix and Dovecot LMTP,
each started by a test on a free 127.0.0.1 port with its own configuration
and data in a temporary directory (svcutil's conventions: a Service in the
foreground, stopped by PID, killed at exit if a test forgot it).

start_postfix()  Postfix's master with a generated main.cf/master.cf: an
                 smtpd on a free port (STARTTLS with a given certificate),
                 virtual(8) delivering the listed mailboxes of POSTFIX_DOMAIN
                 into Maildirs, no DNS, log lines on the Service's log.
start_dovecot_lmtp()
                 dovecot -F with an LMTP listener on a free port, a
                 passwd-file of users (one with a tiny quota), Maildir
                 delivery saved with CRLF line ends.
strip_trace()    a delivered message without the trace headers the next
                 hop prepended (Return-Path, X-Original-To,
                 Delivered-To, Received).

Postfix stores messages with LF line ends (it has no option to keep CRLF),
so a Postfix mailbox equals the sent bytes with CRLF turned into LF; Dovecot
saves CRLF (mail_save_crlf), byte for byte. Both need root here: Postfix's
master always does, and the fixtures give mail files to an unprivileged
user the way a real installation does. A missing package or a non-root run
is a test failure with a clear message, never a skip: `make test` installs
the packages and runs as root.
"""

import os
import pwd
import signal
import subprocess
import tempfile
import time

from harness import maildir_new
from svcutil import SERVICE_STOP_TIMEOUT, Service, StopsOnExit, free_port, require_binary

POSTFIX_DOMAIN = "postfix.test"
LMTP_DOMAIN = "lmtp.test"
DELIVERY_TIMEOUT = 30.0  # a queued message is in the mailbox by then (a 20 MiB one too)
MAIL_USER = "nobody"     # owner of delivered mail files (virtual(8) and Dovecot refuse root)

POSTFIX_CANDIDATES = ["/usr/sbin/postfix"]
POSTFIX_MASTER = "/usr/lib/postfix/sbin/master"
DOVECOT_CANDIDATES = ["/usr/sbin/dovecot"]
DOVECOT_LMTP = "/usr/lib/dovecot/lmtp"
TRACE_HEADERS = (b"return-path:", b"x-original-to:", b"delivered-to:", b"received:")


def _need_root(what):
    if os.geteuid() != 0:
        raise AssertionError("%s must be started as root (its master process switches users); "
                             "run the tests as root as `make test` does" % what)


def _mail_ids():
    pw = pwd.getpwnam(MAIL_USER)
    return pw.pw_uid, pw.pw_gid


def _mail_dir(path, uid, gid):
    """A directory owned by the mail user, where the next hop delivers."""
    os.makedirs(path)
    os.chown(path, uid, gid)


def _write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    # dated a minute back: Postfix waits up to 2s for a main.cf written
    # within the last second to settle
    past = time.time() - 60
    os.utime(path, (past, past))


def group_alive(pgid):
    """PIDs of the live (not zombie) processes in process group pgid."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(name))
    return pids


def _stop_group(service):
    """Ends a daemon's master by its PID (SIGTERM; it passes the signal on to
    its children) and waits, bounded, until no process of its process group
    is alive, so the temporary directory is removed under nobody's feet.
    (Orphaned children's zombies are the container's init's to reap.)"""
    pgid = service.proc.pid  # the Service started it in a session of its own
    if service.alive():
        service.proc.send_signal(signal.SIGTERM)
        try:
            service.proc.wait(SERVICE_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
    deadline = time.monotonic() + SERVICE_STOP_TIMEOUT
    while True:
        left = group_alive(pgid)
        if not left:
            break
        if time.monotonic() > deadline:
            for pid in left:
                os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    service.stop()


def strip_trace(data):
    """The message without the trace header fields at its top (TRACE_HEADERS,
    each with its continuation lines), for LF or
    CRLF line ends. Fails if there is none: a next hop always adds some."""
    pos = 0
    stripped = 0
    while data[pos:pos + 16].lower().startswith(TRACE_HEADERS):
        while True:
            i = data.find(b"\n", pos)
            if i < 0:
                raise AssertionError("trace header not ended: %r" % data[:500])
            pos = i + 1
            if data[pos:pos + 1] not in (b" ", b"\t"):
                break
        stripped += 1
    if not stripped:
        raise AssertionError("delivered message has no trace header: %r" % data[:300])
    return data[pos:]


def as_postfix_stores(sent):
    """The bytes Postfix's Maildir file holds for a message sent as `sent`
    (CRLF line ends, not dot-stuffed): the same lines ended by LF."""
    return sent.replace(b"\r\n", b"\n")


class Daemon(StopsOnExit):
    """A daemon with children a test started (its Service: .port, log);
    stop() ends it and its process group by its PID."""

    def __init__(self, service):
        self.service = service
        self.port = service.port

    def diagnostics(self):
        return "--- %s log ---\n%s" % (self.service.name, self.service.log()[-4000:])

    def alive(self):
        return self.service.alive()

    def stop(self):
        _stop_group(self.service)


class NextHop(Daemon):
    """A running next hop: its Service (.port, log) and the Maildirs it
    delivers into under `base`, one per mailbox name; stop() ends it by its
    PID. Subclasses say where a mailbox's Maildir is."""

    def __init__(self, service, base):
        super().__init__(service)
        self.base = base

    def maildir(self, box):
        raise NotImplementedError

    def files(self, box):
        """Paths of the messages in box's Maildir, oldest first."""
        return maildir_new(self.maildir(box))

    def messages(self, box):
        out = []
        for p in self.files(box):
            with open(p, "rb") as f:
                out.append(f.read())
        return out

    def wait_message(self, box, count=1, timeout=DELIVERY_TIMEOUT):
        """Polls (bounded) until `box` holds `count` messages; returns the
        newest one's bytes."""
        deadline = time.monotonic() + timeout
        while True:
            files = self.files(box)
            if len(files) >= count:
                with open(files[-1], "rb") as f:
                    return f.read()
            if time.monotonic() > deadline:
                raise AssertionError("%s: %d message(s) in %s after %.0fs, expected %d\n%s"
                                     % (self.service.name, len(files), box, timeout, count,
                                        self.diagnostics()))
            time.sleep(0.05)


# ------------------------------------------------------------------- Postfix

POSTFIX_MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
virtual   unix  - n n - - virtual
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


class Postfix(NextHop):
    """A running Postfix (see start_postfix); .mailboxes: name -> address."""

    def __init__(self, service, base, mailboxes):
        super().__init__(service, base)
        self.mailboxes = mailboxes

    def maildir(self, box):
        return os.path.join(self.base, box)


def _postfix_main_cf(tmp, cert, key, boxes_map, uid, gid):
    mail = os.path.join(tmp, "mail")
    return "\n".join([
        "compatibility_level = 3.6",
        "config_directory = " + os.path.join(tmp, "conf"),
        "queue_directory = " + os.path.join(tmp, "queue"),
        "data_directory = " + os.path.join(tmp, "data"),
        "maillog_file = /dev/stdout",
        "myhostname = mx.postfix.test",
        "mydomain = postfix.test",
        "myorigin = $myhostname",
        "mydestination =",
        "inet_interfaces = 127.0.0.1",
        "inet_protocols = ipv4",
        "mynetworks = 127.0.0.0/8",
        # no DNS anywhere: the container has no resolver worth asking
        "smtp_dns_support_level = disabled",
        "smtp_host_lookup = native",
        "lmtp_host_lookup = native",
        "smtpd_peername_lookup = no",
        "relayhost =",
        "alias_maps =",
        "alias_database =",
        "biff = no",
        # the message as the client sent it: no headers added or rewritten
        "local_header_rewrite_clients =",
        "always_add_missing_headers = no",
        "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination",
        "smtpd_reject_unlisted_recipient = yes",
        "smtputf8_enable = yes",
        "message_size_limit = 62914560",
        "virtual_mailbox_limit = 0",
        "virtual_mailbox_domains = " + POSTFIX_DOMAIN,
        "virtual_mailbox_base = " + mail,
        "virtual_mailbox_maps = texthash:" + boxes_map,
        "virtual_uid_maps = static:%d" % uid,
        "virtual_gid_maps = static:%d" % gid,
        "virtual_minimum_uid = 1",
        "smtpd_tls_security_level = may",
        "smtpd_tls_cert_file = " + cert,
        "smtpd_tls_key_file = " + key,
        "smtpd_tls_loglevel = 1",
        # a test's bad input is answered at once, not after tarpit sleeps
        "smtpd_error_sleep_time = 0",
        "smtpd_soft_error_limit = 100",
        "smtpd_hard_error_limit = 200",
        "smtpd_client_connection_count_limit = 0",
        "smtpd_client_connection_rate_limit = 0",
        "queue_run_delay = 1s",
        "minimal_backoff_time = 1s",
        "maximal_backoff_time = 2s",
        "",
    ])


POSTFIX_MAILBOXES = {"alice": "alice", "bob": "bob", "utf8": "jösé"}  # mailbox: local part


def start_postfix(cert, key, mailboxes=POSTFIX_MAILBOXES):
    """Postfix on a free 127.0.0.1 port, STARTTLS with cert/key (PEM paths),
    delivering <local part>@postfix.test into the Maildir of its mailbox for
    each entry of `mailboxes` (by default one with a UTF-8 address, for
    SMTPUTF8); other recipients are refused at RCPT with 550 5.1.1.
    Returns a Postfix; stop() ends the master by its PID."""
    _need_root("Postfix")
    postfix = require_binary("postfix", POSTFIX_CANDIDATES, "postfix")
    uid, gid = _mail_ids()
    tmp = tempfile.mkdtemp(prefix="luasmtpd-postfix-")
    os.chmod(tmp, 0o755)  # virtual(8) delivers as the mail user
    conf = os.path.join(tmp, "conf")
    os.makedirs(conf)
    os.makedirs(os.path.join(tmp, "queue"))  # its subdirectories and data/ are postfix check's
    boxes = {name: "%s@%s" % (local, POSTFIX_DOMAIN) for name, local in mailboxes.items()}
    _mail_dir(os.path.join(tmp, "mail"), uid, gid)
    boxes_map = os.path.join(conf, "mailboxes")
    # the trailing slash makes each mailbox a Maildir
    _write(boxes_map, "".join("%s %s/\n" % (addr, name) for name, addr in boxes.items()))
    port = free_port()
    _write(os.path.join(conf, "main.cf"), _postfix_main_cf(tmp, cert, key, boxes_map, uid, gid))
    _write(os.path.join(conf, "master.cf"), POSTFIX_MASTER_CF.format(listen="127.0.0.1:%d" % port))
    # `postfix check` creates the queue's subdirectories with Postfix's own
    # owners and modes (post-install create-missing) and vets the config
    r = subprocess.run([postfix, "-c", conf, "check"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    if r.returncode != 0:
        raise AssertionError("postfix -c %s check failed:\n%s" % (conf, r.stdout.decode("utf-8", "replace")))
    svc = Service("postfix", [POSTFIX_MASTER, "-c", conf, "-s"], port, tmp)
    return Postfix(svc, os.path.join(tmp, "mail"), boxes)


# -------------------------------------------------------------- Dovecot LMTP

DOVECOT_CONF = """\
# generated by tests/e2e/mta.py: an LMTP-only Dovecot for one test class
base_dir = {tmp}/run
state_dir = {tmp}/state
instance_name = {instance}
hostname = lmtp.dovecot.test
log_path = /dev/stderr
protocols = lmtp
listen = 127.0.0.1
ssl = no
first_valid_uid = {uid}
last_valid_uid = {uid}
mail_location = maildir:~/Maildir
# saved as received, CRLF and all: a delivered file compares byte for byte
mail_save_crlf = yes
mail_plugins = quota
passdb {{
  driver = passwd-file
  args = {users}
}}
userdb {{
  driver = passwd-file
  args = {users}
}}
plugin {{
  quota = count:User quota
  quota_vsizes = yes
  quota_rule = *:storage=100M
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
}}
"""


class DovecotLmtp(NextHop):
    """A running Dovecot LMTP server (see start_dovecot_lmtp); .users:
    name -> address."""

    def __init__(self, service, base, users):
        super().__init__(service, base)
        self.users = users

    def maildir(self, user):
        return os.path.join(self.base, user, "Maildir")


def start_dovecot_lmtp(users=("alice", "bob"), over_quota=("full",)):
    """Dovecot (dovecot -F) with an LMTP listener on a free 127.0.0.1 port
    and the users <name>@lmtp.test for each name in users and over_quota,
    each delivered into its own Maildir. The over_quota users have a quota
    of 1 byte, so any message for them is refused after DATA with Dovecot's
    552 5.2.2; an address not listed is refused at RCPT with 550 5.1.1.
    Returns a DovecotLmtp; stop() ends the master by its PID."""
    _need_root("Dovecot")
    exe = require_binary("dovecot", DOVECOT_CANDIDATES, "dovecot-core")
    if not os.access(DOVECOT_LMTP, os.X_OK):
        raise AssertionError("%s not found: install the Debian package dovecot-lmtpd" % DOVECOT_LMTP)
    uid, gid = _mail_ids()
    tmp = tempfile.mkdtemp(prefix="luasmtpd-dovecot-")
    os.chmod(tmp, 0o755)  # Dovecot's unprivileged processes reach run/ and mail/
    base = os.path.join(tmp, "mail")
    _mail_dir(base, uid, gid)
    addrs = {}
    lines = []
    for name in list(users) + list(over_quota):
        addrs[name] = "%s@%s" % (name, LMTP_DOMAIN)
        home = os.path.join(base, name)
        extra = "userdb_quota_rule=*:storage=1B" if name in over_quota else ""
        # user:password:uid:gid:gecos:home:shell:extra fields
        lines.append("%s:{PLAIN}unused:%d:%d::%s::%s\n" % (addrs[name], uid, gid, home, extra))
    users_file = os.path.join(tmp, "users")
    _write(users_file, "".join(lines))
    port = free_port()
    conf = os.path.join(tmp, "dovecot.conf")
    _write(conf, DOVECOT_CONF.format(tmp=tmp, instance=os.path.basename(tmp), uid=uid, users=users_file,
                                     port=port))
    svc = Service("dovecot", [exe, "-F", "-c", conf], port, tmp)
    return DovecotLmtp(svc, base, addrs)
