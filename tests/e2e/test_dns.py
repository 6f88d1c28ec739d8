"""smtp.dns (c-ares on libev) against a real dnsmasq serving a local zone
on a loopback port: A, AAAA, MX, TXT, PTR, not found, timeouts, refused;
smtp.tcp connecting by name; resolveClientHostname (forward-confirmed
reverse DNS for session.clientHostname); and the example DNSBL policy
scripts/dnsbl.lua, listed and not listed."""

import os
import re
import socket
import time

import svcutil
from harness import ROOT, E2ETest, binary, Lua, Server, script, split_received, wait_for
from svcutil import CASES_PRELUDE, case_hook, run_case

ZONE = [
    "local=/test.example/",
    "local=/in-addr.arpa/",
    "local=/ip6.arpa/",
    "address=/a.test.example/192.0.2.10",
    "ptr-record=10.2.0.192.in-addr.arpa,a.test.example",
    "host-record=dual.test.example,192.0.2.20,2001:db8::20",
    "mx-host=test.example,mx1.test.example,10",
    "mx-host=test.example,mx2.test.example,20",
    'txt-record=txt.test.example,"v=spf1 ip4:192.0.2.0/24 -all"',
    'txt-record=joined.test.example,"first part ","second part"',
    'txt-record=two.test.example,"one"',
    'txt-record=two.test.example,"two"',
    "address=/redis.test.example/127.0.0.1",
    # reverse DNS of loopback clients (the client picks its source address):
    # 127.0.0.1 forward-confirmed, 127.0.0.2 a PTR whose name points
    # elsewhere, 127.0.0.3 no PTR, 127.0.0.5 a PTR to a name that does not
    # exist
    "ptr-record=1.0.0.127.in-addr.arpa,good.test.example",
    "address=/good.test.example/127.0.0.1",
    "ptr-record=2.0.0.127.in-addr.arpa,liar.test.example",
    "address=/liar.test.example/192.0.2.99",
    "ptr-record=5.0.0.127.in-addr.arpa,ghost.test.example",
]

DNS_CASES = r'''
local P = PORTS
local q = smtp.dns.query
CASES.a = function() return R(q("a.test.example", "A")) end
CASES.a_default = function() return R(q("a.test.example")) end
CASES.a_upper = function() return R(q("A.Test.Example", "a")) end
CASES.a_dual = function() return R(q("dual.test.example", "A")) end
CASES.aaaa = function() return R(q("dual.test.example", "AAAA")) end
CASES.aaaa_none = function() return R(q("a.test.example", "AAAA")) end
CASES.mx = function() return R(q("test.example", "MX")) end
CASES.txt = function() return R(q("txt.test.example", "TXT")) end
CASES.txt_joined = function() return R(q("joined.test.example", "TXT")) end
CASES.txt_two = function() return R(q("two.test.example", "TXT")) end
CASES.ptr_ip = function() return R(q("192.0.2.10", "PTR")) end
CASES.ptr_name = function() return R(q("10.2.0.192.in-addr.arpa", "PTR")) end
CASES.ptr_ipv6 = function() return R(q("2001:db8::20", "PTR")) end
CASES.nxdomain = function() return R(q("nosuch.test.example", "A")) end
CASES.nxdomain_mx = function() return R(q("nosuch.test.example", "MX")) end
CASES.bad_type = function() return R(q("a.test.example", "SRV")) end
CASES.sequence = function()
  -- several lookups in one hook, each a suspension
  local out = {}
  for i, n in ipairs({"a.test.example", "dual.test.example", "nosuch.test.example", "good.test.example"}) do
    local r, err = q(n, "A")
    out[i] = r and r[1] or err
  end
  return {v = out}
end
CASES.connect_by_name = function()
  local sock = smtp.tcp()
  sock:settimeout(3)
  local r = {connect = R(sock:connect("redis.test.example", P.redis))}
  if r.connect.v then
    r.send = R(sock:send("PING\r\n"))
    r.line = R(sock:receive("*l"))
  end
  sock:close()
  return r
end
CASES.connect_unknown_name = function()
  local sock = smtp.tcp()
  sock:settimeout(3)
  return R(sock:connect("nosuch.test.example", P.redis))
end
'''


def _lua_ports(d):
    return "local PORTS = {" + ", ".join("%s = %d" % kv for kv in d.items()) + "}\n"


def dns_script(dns_port, timeout=2, tries=2, prelude="", hooks=None, **opts):
    """A case-runner script whose smtp.dns asks 127.0.0.1:dns_port."""
    conf = ('smtp.dns.configure{servers = {"127.0.0.1:%d"}, timeout = %s, tries = %d}\n'
            % (dns_port, timeout, tries))
    h = {"onRcptTo": case_hook()}
    h.update(hooks or {})
    opts.setdefault("disableReverseLookup", True)
    opts.setdefault("closeTimeout", 3)  # a failed test's open transaction does not hold up the stop
    return script(hooks=h, prelude=CASES_PRELUDE + conf + prelude, **opts)


class CaseTest(E2ETest):
    def session(self, srv):
        c = srv.client()
        self.assertEqual(c.ehlo().code, 250)
        self.assertEqual(c.cmd("MAIL FROM:<s@example.com>").code, 250)
        return c

    def case(self, srv, name, **kw):
        with self.session(srv) as c:
            return run_case(self, c, name, **kw)


class Lookups(svcutil.Fixtures, CaseTest):
    """Each record type against dnsmasq."""

    @classmethod
    def start_fixtures(cls):
        cls.dns = cls.use(svcutil.Dnsmasq(ZONE))
        prelude = _lua_ports({"redis": svcutil.closed_port()}) + DNS_CASES
        cls.srv = cls.use(Server(dns_script(cls.dns.port, prelude=prelude)))

    def lookup(self, name):
        r = self.case(self.srv, name)
        self.assertLess(r["elapsed"], 2.0, "a local lookup took %.2f s" % r["elapsed"])
        return r

    def test_a(self):
        self.assertEqual(self.lookup("a")["v"], ["192.0.2.10"])
        self.assertEqual(self.lookup("a_default")["v"], ["192.0.2.10"], "type defaults to A")
        self.assertEqual(self.lookup("a_upper")["v"], ["192.0.2.10"], "names and types in any case")

    def test_aaaa(self):
        self.assertEqual(self.lookup("aaaa")["v"], ["2001:db8::20"])
        self.assertEqual(self.lookup("a_dual")["v"], ["192.0.2.20"])

    def test_aaaa_of_an_ipv4_only_name_is_not_found(self):
        r = self.lookup("aaaa_none")
        self.assertIsNone(r.get("v"), r)
        self.assertEqual(r.get("err"), "not found")

    def test_mx(self):
        r = self.lookup("mx")
        got = sorted((m["priority"], m["exchange"]) for m in r["v"])
        self.assertEqual(got, [(10, "mx1.test.example"), (20, "mx2.test.example")])

    def test_txt(self):
        self.assertEqual(self.lookup("txt")["v"], ["v=spf1 ip4:192.0.2.0/24 -all"])
        self.assertEqual(self.lookup("txt_joined")["v"], ["first part second part"],
                         "the character-strings of one record are joined")
        self.assertEqual(sorted(self.lookup("txt_two")["v"]), ["one", "two"], "one string per record")

    def test_ptr(self):
        self.assertEqual(self.lookup("ptr_ip")["v"], ["a.test.example"], "PTR by IPv4 address")
        self.assertEqual(self.lookup("ptr_name")["v"], ["a.test.example"], "PTR by in-addr.arpa name")
        self.assertEqual(self.lookup("ptr_ipv6")["v"], ["dual.test.example"], "PTR by IPv6 address")

    def test_not_found(self):
        for case in ("nxdomain", "nxdomain_mx"):
            r = self.lookup(case)
            self.assertIsNone(r.get("v"), r)
            self.assertEqual(r.get("err"), "not found", r)

    def test_unknown_type_is_a_script_error(self):
        with self.session(self.srv) as c:
            r = c.cmd("RCPT TO:<bad_type@cases.test>")
            self.assertEqual((r.code, r.enh), (451, "4.3.0"), r)
            self.assertEqual(run_case(self, c, "a")["v"], ["192.0.2.10"], "the session goes on")
        self.assertIn("expected A, AAAA, MX, TXT or PTR", self.srv.log())

    def test_several_lookups_in_one_hook(self):
        r = self.lookup("sequence")
        self.assertEqual(r["v"], ["192.0.2.10", "192.0.2.20", "not found", "127.0.0.1"])

    def test_parallel_lookups(self):
        import threading
        errors = []

        def one(i):
            try:
                with self.srv.client() as c:
                    c.ehlo()
                    c.cmd("MAIL FROM:<s@example.com>")
                    for case in ("a", "mx", "txt", "ptr_ip", "nxdomain"):
                        r = c.cmd("RCPT TO:<%s@cases.test>" % case)
                        assert r.code == 250, r
            except Exception as e:  # noqa: BLE001
                errors.append("%d: %r" % (i, e))
        ts = [threading.Thread(target=one, args=(i,)) for i in range(20)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        self.assertEqual(errors, [])
        recs = [e for e in self.srv.events("case") if e["case"] == "mx"]
        self.assertTrue(all(len(e["v"]) == 2 for e in recs))


# Names c-ares refuses before sending anything (EHLO accepts the first two).
BAD_NAMES = {"long_label": "a" * 64 + ".test.example", "long_name": "abcdefghi." * 30 + "example",
             "empty_label": "a..b"}

BAD_NAME_CASES = r'''
CASES.bad_then_connect = function()
  -- each refused name, then a second connect on the same socket
  local out = {}
  for k, name in pairs(BAD) do
    local sock = smtp.tcp()
    sock:settimeout(3)
    local r = {first = R(sock:connect(name, P.redis))}
    r.second = R(sock:connect("redis.test.example", P.redis))
    if r.second.v then
      r.send = R(sock:send("PING\r\n"))
      r.line = R(sock:receive("*l"))
    end
    r.close = R(sock:close())
    out[k] = r
  end
  return out
end
CASES.bad_then_close = function()
  local out = {}
  for k, name in pairs(BAD) do
    local sock = smtp.tcp()
    out[k] = {first = R(sock:connect(name, P.redis)), close = R(sock:close())}
  end
  return out
end
CASES.bad_then_collected = function()
  -- sockets dropped after a refused name: the collector closes them
  for _, name in pairs(BAD) do
    local sock = smtp.tcp()
    sock:connect(name, P.redis)
  end
  collectgarbage()
  collectgarbage()
  return {v = true}
end
CASES.bad_query = function()
  local out = {}
  for k, name in pairs(BAD) do
    out[k] = {a = R(smtp.dns.query(name, "A")), mx = R(smtp.dns.query(name, "MX"))}
  end
  out.after = R(smtp.dns.query("a.test.example", "A"))
  return out
end
'''

# The client's EHLO name goes straight to smtp.tcp, then the same socket
# connects again (the pattern of a policy that checks the client's name).
HELO_CONNECT_HOOKS = {
    "onMailFrom": Lua(r'''function(address, session)
    if address.address ~= "helo@example.com" then return end
    local sock = smtp.tcp()
    sock:settimeout(3)
    local ok, err = sock:connect(session.hostNameAppearsAs, PORTS.redis)
    record("helo_connect", {port = session.remotePort, ok = ok, err = err})
    sock:connect("127.0.0.1", PORTS.redis)
    sock:close()
    if not ok then return nil, smtp.reject(451, "4.4.3 Cannot reach " .. err) end
  end'''),
}


def _lua_strings(d):
    return "local BAD = {" + ", ".join('%s = "%s"' % kv for kv in d.items()) + "}\n"


class ConnectByName(svcutil.Fixtures, CaseTest):
    """smtp.tcp():connect(name, port) resolves the name through smtp.dns:
    redis-server reached as redis.test.example. Names c-ares refuses at
    once (a label over 63 characters, a name over 255, an empty label) give
    nil, err on the next loop turn, and the socket stays safe to connect
    again, close or collect (a resolver call never completes before it
    returns)."""

    @classmethod
    def start_fixtures(cls):
        cls.dns = cls.use(svcutil.Dnsmasq(ZONE))
        cls.redis = cls.use(svcutil.Redis())
        prelude = _lua_ports({"redis": cls.redis.port}) + DNS_CASES + _lua_strings(BAD_NAMES) + BAD_NAME_CASES
        cls.srv = cls.use(Server(dns_script(cls.dns.port, prelude=prelude, hooks=HELO_CONNECT_HOOKS)))

    def test_connect_to_redis_by_name(self):
        r = self.case(self.srv, "connect_by_name")
        self.assertEqual(r["connect"].get("v"), True, r)
        self.assertEqual(r["line"].get("v"), "+PONG", "redis answered through a name from smtp.dns")
        r = self.case(self.srv, "connect_unknown_name")
        self.assertIsNone(r.get("v"), r)
        self.assertEqual(r.get("err"), "not found", r)

    def assertRefused(self, r, what):
        self.assertIsNone(r.get("v"), "%s: %r" % (what, r))
        self.assertEqual(r.get("err"), "bad name", "%s: %r" % (what, r))

    def test_connect_to_a_refused_name_then_connect_again(self):
        r = self.case(self.srv, "bad_then_connect")
        for k in BAD_NAMES:
            self.assertRefused(r[k]["first"], k)
            self.assertEqual(r[k]["second"].get("v"), True, "%s: %r" % (k, r[k]))
            self.assertEqual(r[k]["line"].get("v"), "+PONG", k)
            self.assertEqual(r[k]["close"].get("v"), True, k)
        self.assertTrue(self.srv.alive())

    def test_connect_to_a_refused_name_then_close(self):
        r = self.case(self.srv, "bad_then_close")
        for k in BAD_NAMES:
            self.assertRefused(r[k]["first"], k)
            self.assertEqual(r[k]["close"].get("err"), "closed", "never connected: %r" % r[k])
        self.assertTrue(self.srv.alive())

    def test_socket_collected_after_a_refused_name(self):
        for _ in range(3):
            self.assertEqual(self.case(self.srv, "bad_then_collected").get("v"), True)
        self.assertTrue(self.srv.alive())

    def test_query_for_a_refused_name(self):
        r = self.case(self.srv, "bad_query")
        for k in BAD_NAMES:
            self.assertRefused(r[k]["a"], k + " A")
            self.assertRefused(r[k]["mx"], k + " MX")
        self.assertEqual(r["after"].get("v"), ["192.0.2.10"], "the resolver still answers")

    def test_ehlo_name_the_resolver_refuses_reaches_a_policy_connect(self):
        """One unauthenticated client, EHLO with a 64-character label: the
        policy's connect fails cleanly, its reply reaches the client, and
        the session and the server go on."""
        with self.srv.client() as c:
            for name in (BAD_NAMES["long_label"], "a" * 63 + "." + "b" * 64):
                self.assertReply(c.ehlo(name), 250)
                r = c.cmd("MAIL FROM:<helo@example.com>")
                self.assertReply(r, 451, "4.4.3")
                self.assertIn("bad name", r.text)
                self.assertReply(c.cmd("RSET"), 250)
            self.assertReply(c.ehlo("redis.test.example"), 250)
            self.assertReply(c.cmd("MAIL FROM:<helo@example.com>"), 250, msg="a name that resolves")
        ev = [e for e in self.srv.events("helo_connect") if e["port"] == c.local_port]
        self.assertEqual([e.get("err") for e in ev], ["bad name", "bad name", None])
        self.assertTrue(self.srv.alive())


SLOW_CASES = r'''
CASES.a = function() return R(smtp.dns.query("a.test.example", "A")) end
CASES.slow = function(session)
  record("slow_waiting", {port = session.remotePort})
  return R(smtp.dns.query("a.test.example", "A"))
end
CASES.reconfigure = function(session)
  -- a fresh channel: the queries in flight on the old one end
  smtp.dns.configure{servers = {SERVERS}, timeout = 5, tries = 1}
  record("reconfigured", {port = session.remotePort})
  return {v = true}
end
'''


class Unanswered(CaseTest):
    """A resolver that never answers, or a port where none listens."""

    def test_timeout(self):
        with svcutil.SilentUDP() as silent:
            with Server(dns_script(silent.port, timeout=0.5, tries=1, prelude=SLOW_CASES)) as srv:
                r = self.case(srv, "a")
                self.assertIsNone(r.get("v"), r)
                self.assertEqual(r.get("err"), "timeout", r)
                self.assertGreaterEqual(r["elapsed"], 0.4, r)
                self.assertLess(r["elapsed"], 3.0, r)
                self.assertGreaterEqual(silent.received, 1, "the query never reached the server")

    def test_connection_refused(self):
        port = svcutil.free_port(udp_too=True)  # nothing listens: ICMP port unreachable
        with Server(dns_script(port, timeout=0.5, tries=1, prelude=SLOW_CASES)) as srv:
            r = self.case(srv, "a")
            self.assertIsNone(r.get("v"), r)
            self.assertEqual(r.get("err"), "connection refused", r)
            self.assertLess(r["elapsed"], 3.0, r)

    def test_hook_timeout_cancels_a_lookup(self):
        """hookTimeout (1 s) ends a hook waiting on DNS (timeout 5 s x 2):
        451 4.3.0, and the late end of the query harms nothing."""
        with svcutil.SilentUDP() as silent:
            with Server(dns_script(silent.port, timeout=5, tries=2, prelude=SLOW_CASES, hookTimeout=1)) as srv:
                with self.session(srv) as c:
                    t0 = time.monotonic()
                    r = c.cmd("RCPT TO:<slow@cases.test>")
                    dt = time.monotonic() - t0
                    self.assertEqual((r.code, r.enh), (451, "4.3.0"), r)
                    self.assertGreater(dt, 0.9)
                    self.assertLess(dt, 3.0)
                    self.assertEqual(c.cmd("RSET").code, 250, "the session goes on")
                self.assertRegex(srv.log(), r'msg="hook failed".*error=hookTimeout')

    def test_client_leaves_during_a_lookup(self):
        with svcutil.SilentUDP() as silent:
            with Server(dns_script(silent.port, timeout=1, tries=1, prelude=SLOW_CASES)) as srv:
                clients = []
                for _ in range(10):
                    c = self.session(srv)
                    c.line("RCPT TO:<slow@cases.test>")
                    clients.append(c)
                self.assertTrue(wait_for(lambda: len(srv.events("slow_waiting")) == 10, 5))
                for i, c in enumerate(clients):
                    c.rst() if i % 2 else c.close()
                time.sleep(1.5)  # the queries time out after their sessions are gone
                with self.session(srv) as c:
                    self.assertEqual(c.cmd("NOOP").code, 250)
                self.assertTrue(srv.alive())

    def test_reconfigure_while_another_session_waits(self):
        """smtp.dns.configure from a hook while another session's hook waits
        on a lookup: the waiting hook gets nil, err on a later loop turn
        (not inside the other hook's call), both sessions go on."""
        with svcutil.SilentUDP() as silent:
            prelude = 'local SERVERS = "127.0.0.1:%d"\n' % silent.port + SLOW_CASES
            with Server(dns_script(silent.port, timeout=5, tries=1, prelude=prelude)) as srv:
                with self.session(srv) as waiting, self.session(srv) as other:
                    waiting.line("RCPT TO:<slow@cases.test>")
                    self.assertTrue(wait_for(lambda: srv.events("slow_waiting"), 5))
                    r = run_case(self, other, "reconfigure")
                    self.assertEqual(r.get("v"), True)
                    self.assertReply(waiting.read_reply(), 250)
                    slow = wait_for(lambda: [e for e in srv.events("case") if e["case"] == "slow"], 3)
                    self.assertTrue(slow, "the waiting hook never finished")
                    self.assertIsNone(slow[0].get("v"), slow[0])
                    self.assertTrue(slow[0].get("err"), slow[0])
                    self.assertLess(slow[0]["elapsed"], 4.0, "it waited for its own timeout")
                    self.assertReply(waiting.cmd("NOOP"), 250)
                    self.assertReply(other.cmd("NOOP"), 250)
                self.assertTrue(srv.alive())


# --------------------------------------------------------- client hostname

RDNS_HOOKS = {
    "onConnect": Lua(r'''function(session)
    record("connect", {port = session.remotePort, remote = session.remoteAddress,
                       clientHostname = session.clientHostname})
  end'''),
}


def client_from(srv, source_ip, **kw):
    """A harness Client whose connection comes from source_ip (127.0.0.x)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10)
    s.bind((source_ip, 0))
    s.connect(("127.0.0.1", srv.port))
    c = srv.client(sock=s, **kw)
    return c


class ClientHostname(svcutil.Fixtures, E2ETest):
    """resolveClientHostname = true: the PTR name when it resolves back to
    the client's address, else "[ip]"."""

    @classmethod
    def start_fixtures(cls):
        cls.dns = cls.use(svcutil.Dnsmasq(ZONE))
        conf = 'smtp.dns.configure{servers = {"127.0.0.1:%d"}, timeout = 1, tries = 1}\n' % cls.dns.port
        cls.srv = cls.use(Server(script(hooks=RDNS_HOOKS, prelude=conf, resolveClientHostname=True,
                                        closeTimeout=3, useXClient=True)))

    def hostname(self, source_ip):
        with client_from(self.srv, source_ip) as c:
            self.assertEqual(c.greeting.code, 220)
            r = c.ehlo("helo.example")
            self.assertEqual(r.code, 250)
        ev = [e for e in self.srv.events("connect") if e["port"] == c.local_port]
        self.assertEqual(len(ev), 1)
        self.assertEqual(ev[0]["remote"], source_ip)
        return ev[0]["clientHostname"], r

    def test_forward_confirmed_name(self):
        name, ehlo = self.hostname("127.0.0.1")
        self.assertEqual(name, "good.test.example")
        self.assertIn("good.test.example", ehlo.text, "heloResponse names the client")

    def test_name_that_points_elsewhere_is_not_used(self):
        name, ehlo = self.hostname("127.0.0.2")
        self.assertEqual(name, "[127.0.0.2]")
        self.assertNotIn("liar", ehlo.text)

    def test_no_ptr(self):
        self.assertEqual(self.hostname("127.0.0.3")[0], "[127.0.0.3]")

    def test_ptr_to_a_missing_name(self):
        self.assertEqual(self.hostname("127.0.0.5")[0], "[127.0.0.5]")

    def test_xclient_addr_is_looked_up_before_onconnect(self):
        """issue 15: XCLIENT ADDR= makes a new client: its name is looked
        up, then onConnect runs again for it, before the new greeting."""
        with client_from(self.srv, "127.0.0.3") as c:
            c.ehlo("helo.example")
            self.assertReply(c.cmd("XCLIENT ADDR=127.0.0.1"), 220)
            self.assertIn("good.test.example", c.ehlo("helo.example").text)
        ev = [(e["remote"], e["clientHostname"]) for e in self.srv.events("connect") if e["port"] == c.local_port]
        self.assertEqual(ev, [("127.0.0.3", "[127.0.0.3]"), ("127.0.0.1", "good.test.example")])

    def test_hostname_is_logged(self):
        with client_from(self.srv, "127.0.0.1") as c:
            c.ehlo("helo.example")
        self.assertRegex(self.srv.log(), r"msg=\"client hostname\".*name=good\.test\.example")


class ClientHostnameWithoutDNS(E2ETest):
    def test_unanswered_reverse_lookup_falls_back_to_the_address(self):
        with svcutil.SilentUDP() as silent:
            conf = 'smtp.dns.configure{servers = {"127.0.0.1:%d"}, timeout = 0.5, tries = 1}\n' % silent.port
            with Server(script(hooks=RDNS_HOOKS, prelude=conf, resolveClientHostname=True)) as srv:
                t0 = time.monotonic()
                with srv.client() as c:
                    dt = time.monotonic() - t0
                    self.assertEqual(c.greeting.code, 220)
                    self.assertEqual(c.ehlo().code, 250)
                self.assertLess(dt, 3.0, "the greeting waited %.2f s for reverse DNS" % dt)
                ev = [e for e in srv.events("connect") if e["port"] == c.local_port]
                self.assertEqual(ev[0]["clientHostname"], "[127.0.0.1]")


# ------------------------------------------------------------ scripts/dnsbl.lua

DNSBL_SCRIPT = os.path.join(ROOT, "scripts", "dnsbl.lua")

BL_ZONE = [
    "local=/bl.test/",
    "local=/clean.test/",
    "address=/1.0.0.127.bl.test/127.0.0.2",     # 127.0.0.1 is listed in bl.test
    "address=/2.0.0.127.bl.test/192.0.2.1",     # an answer that is not 127.0.0.x
    "address=/1.0.0.127.weird.test/127.255.255.254",
]


def log_has(log, msg, **fields):
    """Is there a log line with msg and every key=value of fields (in any
    order; a value may be quoted)?"""
    for line in log.splitlines():
        if msg not in line:
            continue
        if all(re.search(r'(^|\s)%s=("?)%s' % (re.escape(k), re.escape(v)), line) for k, v in fields.items()):
            return True
    return False


class DNSBL(svcutil.Fixtures, E2ETest):
    """scripts/dnsbl.lua against dnsmasq zones."""

    @classmethod
    def start_fixtures(cls):
        cls.dns = cls.use(svcutil.Dnsmasq(BL_ZONE))

    def server(self, zones, dns_port=None, timeout="1"):
        env = {"LUASMTPD_DNSBL_ZONES": zones,
               "LUASMTPD_DNS_SERVERS": "127.0.0.1:%d" % (dns_port or self.dns.port),
               "LUASMTPD_DNS_TIMEOUT": timeout, "LUASMTPD_NAME": "mx.test"}
        return Server(DNSBL_SCRIPT, env=env)

    def test_listed_client_is_refused(self):
        with self.server("clean.test, bl.test") as srv:
            c = srv.client(greet=False)
            r = c.read_reply()
            self.assertEqual((r.code, r.enh), (554, "5.7.1"), r)
            self.assertIn("listed in bl.test", r.text)
            c.expect_close()
            self.assertTrue(log_has(srv.log(), "client listed in a DNSBL", zone="bl.test", answer="127.0.0.2"),
                            srv.log())
            self.assertEqual(srv.maildir_new(), [])

    def test_client_not_listed_is_served(self):
        with self.server("clean.test") as srv:
            with srv.client() as c:
                self.assertEqual(c.greeting.code, 220)
                c.ehlo()
                r = c.transaction(b"Subject: not listed\r\n\r\nhello\r\n")
                self.assertEqual(r.code, 250, r)
            files = wait_for(srv.maildir_new, 3)
            self.assertEqual(len(files), 1)
            with open(files[0], "rb") as f:
                self.assertEqual(split_received(f.read())[1], b"Subject: not listed\r\n\r\nhello\r\n")
            self.assertNotIn("DNSBL lookup failed", srv.log())

    def test_other_client_address_not_listed(self):
        """127.0.0.3 has no entry in bl.test (127.0.0.1 has)."""
        with self.server("bl.test") as srv:
            with client_from(srv, "127.0.0.3") as c:
                self.assertEqual(c.greeting.code, 220)
            with client_from(srv, "127.0.0.1", greet=False) as c:
                self.assertEqual(c.read_reply().code, 554)

    def test_unexpected_answers_fail_open(self):
        with self.server("weird.test") as srv:
            with srv.client() as c:
                self.assertEqual(c.greeting.code, 220)
            self.assertTrue(log_has(srv.log(), "DNSBL lookup failed", zone="weird.test",
                                    error="unexpected answer 127.255.255.254"), srv.log())
        with self.server("bl.test") as srv:
            with client_from(srv, "127.0.0.2") as c:
                self.assertEqual(c.greeting.code, 220, "an answer outside 127.0.0.x is not a listing")

    def test_dns_timeout_fails_open(self):
        with svcutil.SilentUDP() as silent:
            with self.server("bl.test", dns_port=silent.port, timeout="0.3") as srv:
                t0 = time.monotonic()
                with srv.client() as c:
                    self.assertEqual(c.greeting.code, 220)
                    self.assertLess(time.monotonic() - t0, 4.0)
                    c.ehlo()
                    self.assertEqual(c.transaction(b"x\r\n").code, 250)
                self.assertTrue(log_has(srv.log(), "DNSBL lookup failed", level="warn", zone="bl.test",
                                        error="timeout"), srv.log())

    def test_script_checks(self):
        env = {"LUASMTPD_DNSBL_ZONES": "bl.test", "LUASMTPD_DNS_SERVERS": "127.0.0.1:%d" % self.dns.port}
        r = self.run_cmd([binary(), "-t", DNSBL_SCRIPT], env=env)
        self.assertEqual(r.returncode, 0, r.stderr.decode("utf-8", "replace"))
        self.check_sanitizer_text(r.stderr.decode("utf-8", "replace"))
