"""The reference documents checked against the core and the live server:
README's options table is one table naming every option core/lua/config.c
accepts (and only those: `luasmtpd -t` must know each name), and the
replies docs/replies.md gives for EHLO, BDAT, LMTP and PROXY are the ones
on the wire, text included; its list of the err strings Lua calls return is
core/lua/errors.h."""

import os
import re
import shutil
import tempfile
import time

from harness import ROOT, Client, E2ETest, Lua, Server, SharedServerTest, binary, free_port, script
from tlsutil import client_context, starttls

README = os.path.join(ROOT, "README.md")
REPLIES = os.path.join(ROOT, "docs", "replies.md")
CONFIG_C = os.path.join(ROOT, "core", "lua", "config.c")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def section(text, title):
    """The body of the "## title" section (up to the next "## ")."""
    m = re.search(r"^## %s\n(.*?)(?=^## |\Z)" % re.escape(title), text, re.S | re.M)
    if not m:
        raise AssertionError("no '## %s' section" % title)
    return m.group(1)


def tables(text):
    """Markdown tables in text: lists of contiguous lines starting with "|"."""
    out, cur = [], None
    for line in text.split("\n"):
        if line.startswith("|"):
            if cur is None:
                cur = []
                out.append(cur)
            cur.append(line)
        else:
            cur = None
    return out


def cells(row):
    """A table row's cells; "|" inside `code` does not split."""
    parts, cur, code = [], "", False
    for ch in row.strip()[1:-1]:
        if ch == "`":
            code = not code
        if ch == "|" and not code:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    return parts


def body_rows(table):
    """Rows after the header and its |---| line."""
    return [cells(r) for r in table[2:]]


def option_names(cell):
    """The option names a first cell gives: `name` or `name(...)`."""
    return re.findall(r"`([A-Za-z][A-Za-z0-9]*)(?:\([^`]*\))?`", cell)


def core_options():
    """Every name option_defs[] in core/lua/config.c accepts."""
    src = read(CONFIG_C)
    m = re.search(r"option_defs\[\] = \{(.*?)\n\};", src, re.S)
    names = re.findall(r'(?:OPT|HOOK)\("(\w+)"|\{"(\w+)", OPT_\w+', m.group(1))
    return {a or b for a, b in names}


class ErrorList(E2ETest):
    """README's list of the err strings is core/lua/errors.h, both ways."""

    def test_readme_lists_every_error_string(self):
        defined = set(re.findall(r'#define LUA_ERR_\w+ "([^"]+)"', read(os.path.join(ROOT, "core", "lua", "errors.h"))))
        self.assertGreater(len(defined), 3, "no LUA_ERR_* in core/lua/errors.h")
        [t] = [t for t in tables(section(read(README), "Talking to the world from a hook"))
               if cells(t[0]) == ["`err`", "meaning"]]
        listed = {re.fullmatch(r'`"([^"]+)"`', row[0]).group(1) for row in body_rows(t)}
        self.assertEqual(listed, defined)


class OptionsTable(E2ETest):
    def options_tables(self):
        return tables(section(read(README), "Options"))

    def documented(self):
        """Names in the Options table, the TLS table and the Hooks table."""
        text = read(README)
        names = set()
        for title in ("Options", "TLS", "Hooks"):
            for t in tables(section(text, title)):
                for row in body_rows(t):
                    names.update(option_names(row[0]))
        return names

    def test_options_is_one_table(self):
        ts = self.options_tables()
        self.assertEqual(len(ts), 1, "the Options section has %d tables; the first ends with %r"
                         % (len(ts), ts[0][-1] if ts else None))
        self.assertEqual(cells(ts[0][0]), ["option", "default", "meaning"])

    def test_every_core_option_has_a_row(self):
        core = core_options()
        self.assertGreater(len(core), 50, "option_defs[] not found in core/lua/config.c")
        self.assertEqual(sorted(core - self.documented()), [], "options the core accepts without a README row")

    def test_every_row_names_a_real_option(self):
        names = set()
        for t in self.options_tables() + tables(section(read(README), "TLS")):
            for row in body_rows(t):
                found = option_names(row[0])
                self.assertTrue(found, "a row naming no option: %r" % row)
                names.update(found)
        self.assertEqual(sorted(names - core_options()), [], "README rows the core does not know")
        # The binary agrees: only an unknown name gets "unknown option".
        path = os.path.join(self.tmp(), "probe.lua")
        for name in sorted(names) + ["noSuchOption"]:
            with open(path, "w") as f:
                f.write("return { %s = true }\n" % name)
            r = self.run_cmd([binary(), "-t", path])
            err = r.stderr.decode("utf-8", "replace")
            self.check_sanitizer_text(err, "luasmtpd -t")
            with self.subTest(option=name):
                self.assertEqual("unknown option '%s'" % name in err, name == "noSuchOption", err)

    def tmp(self):
        d = tempfile.mkdtemp(prefix="luasmtpd-docs-")
        self.addCleanup(shutil.rmtree, d, True)
        return d


# ---------------------------------------------------------------- replies.md

def replies_rows():
    [t] = tables(read(REPLIES))
    return body_rows(t)


def documented_replies(situation):
    """The backticked replies (three digits first) of the replies.md row
    whose situation cell starts with `situation`."""
    rows = [r for r in replies_rows() if r[0].startswith(situation)]
    if len(rows) != 1:
        raise AssertionError("docs/replies.md: %d rows start with %r" % (len(rows), situation))
    return [s for s in re.findall(r"`([^`]*)`", rows[0][1]) if re.match(r"\d{3}[ -]", s)]


def documented_ehlo_keywords():
    """The EHLO row's keywords, in order: the backticked words that start
    with a capital (conditions such as `hideDSN = false` do not)."""
    [row] = [r for r in replies_rows() if r[0] == "EHLO h"]
    words = re.findall(r"`([^`]*)`", row[1])
    return words[0], [w for w in words[1:] if re.match(r"[A-Z0-9][A-Z0-9-]*( |$)", w)]


def wire(reply):
    return str(reply)


EHLO_OPTS = dict(name="mx.test", hideDSN=False, hideREQUIRETLS=False, size=1000, allowInsecureAuth=True,
                 authMethods=["PLAIN", "LOGIN"], useXClient=True, useXForward=True)


class EhloKeywords(SharedServerTest):
    SCRIPT = script(**EHLO_OPTS)

    def expected(self, secure):
        first, kws = documented_ehlo_keywords()
        first = first.replace("<name>", "mx.test").replace("<clientHostname>", "[127.0.0.1]")
        out = []
        for k in kws:
            if k == ("STARTTLS" if secure else "REQUIRETLS"):
                continue  # STARTTLS is offered before TLS, REQUIRETLS after it
            out.append(k.replace("<methods>", "PLAIN LOGIN").replace("<n>", "1000"))
        return [first[4:]] + out

    def test_every_keyword_in_the_documented_order(self):
        with self.client() as c:
            r = c.ehlo()
            self.assertEqual(r.lines, self.expected(secure=False), wire(r))
            starttls(c, client_context(ca=False))
            r = c.ehlo()
            self.assertEqual(r.lines, self.expected(secure=True), wire(r))

    def test_the_documented_list_has_every_extension(self):
        _, kws = documented_ehlo_keywords()
        for k in ("STARTTLS", "DSN", "CHUNKING", "BINARYMIME", "REQUIRETLS"):
            self.assertIn(k, kws)


BDAT_HOOKS = {"onData": Lua(r'''function(stream, session) readall(stream) end''')}


class BdatReplies(SharedServerTest):
    SCRIPT = script(hooks=BDAT_HOOKS)

    def test_chunk_before_mail_then_bad_syntax(self):
        need_mail = documented_replies("BDAT before EHLO")[1]
        need_rcpt = documented_replies("BDAT before EHLO")[2]
        [syntax] = documented_replies("BDAT with a size")
        with self.client() as c:
            c.ehlo()
            c.send(b"BDAT 5\r\nhello")
            self.assertEqual(wire(c.read_reply()), need_mail)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
            c.send(b"BDAT 3 LAST\r\nabc")
            self.assertEqual(wire(c.read_reply()), need_rcpt)
            self.assertReply(c.cmd("NOOP"), 250)
            c.send(b"BDAT ten\r\n")
            self.assertEqual(wire(c.read_reply()), syntax)
            self.assertEqual(c.expect_close(), b"")

    def test_before_ehlo_and_binarymime_by_data(self):
        [before_ehlo, _, _] = documented_replies("BDAT before EHLO")
        [needs_bdat] = documented_replies("DATA after MAIL with BODY=BINARYMIME")
        with self.client() as c:
            c.send(b"BDAT 2\r\nhi")
            self.assertEqual(wire(c.read_reply()), before_ehlo)
            c.ehlo()
            self.assertReply(c.cmd("MAIL FROM:<a@example.com> BODY=BINARYMIME"), 250)
            self.assertReply(c.cmd("RCPT TO:<b@example.com>"), 250)
            self.assertEqual(wire(c.cmd("DATA")), needs_bdat)

    def test_chunk_then_data(self):
        [received] = documented_replies("`BDAT <n>`")
        data_after = documented_replies("RCPT or DATA after BDAT")
        with self.client() as c:
            c.ehlo()
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
            self.assertReply(c.cmd("RCPT TO:<b@example.com>"), 250)
            c.send(b"BDAT 7\r\nSubject")
            self.assertEqual(wire(c.read_reply()), received.replace("<total>", "7"))
            c.send(b"BDAT 4\r\n: x\r")
            self.assertEqual(wire(c.read_reply()), received.replace("<total>", "11"))
            self.assertEqual(wire(c.cmd("RCPT TO:<c@example.com>")), data_after[0])
            self.assertEqual(wire(c.cmd("DATA")), data_after[1])
            c.send(b"BDAT 0 LAST\r\n")
            self.assertReply(c.read_reply(), 250, "2.6.0")


class BdatWithoutAuth(SharedServerTest):
    SCRIPT = script(hooks=BDAT_HOOKS, authOptional=False, allowInsecureAuth=True)

    def test_auth_required(self):
        [required] = documented_replies("BDAT without AUTH when AUTH is required")
        with self.client() as c:
            c.ehlo()
            c.send(b"BDAT 2 LAST\r\nhi")
            self.assertEqual(wire(c.read_reply()), required)


LMTP_HOOKS = {"onData": Lua(r'''function(stream, session)
    readall(stream)
    return {true, false, smtp.reject(452, "4.2.2 Mailbox full")}
  end''')}


class LmtpReplies(SharedServerTest):
    SCRIPT = script(hooks=LMTP_HOOKS, lmtp=True)

    def test_one_reply_per_recipient(self):
        [greeting] = documented_replies("greeting with `lmtp = true`")
        refused = documented_replies("EHLO or HELO with `lmtp = true`")[0]
        accepted, not_accepted = documented_replies("LMTP: after the final dot")
        self.assertEqual(wire(self.client().greeting), greeting.replace("<name>", "mx.test"))
        with self.client() as c:
            self.assertEqual(wire(c.ehlo()), refused)
            self.assertReply(c.cmd("LHLO client.example"), 250)
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
            for r in ("x@example.com", "y@example.com", "z@example.com"):
                self.assertReply(c.cmd("RCPT TO:<%s>" % r), 250)
            self.assertReply(c.cmd("DATA"), 354)
            c.send(b"Subject: lmtp\r\n\r\nhi\r\n.\r\n")
            rs = [wire(r) for r in c.read_replies(3)]
            self.assertEqual(rs, [accepted, not_accepted, "452 4.2.2 Mailbox full"])
            c.no_reply(0.2)


# Writes require "smtp.replies" to stderr as sorted "key = value" lines.
DUMP_REPLIES = r'''
local function dump(v, prefix, out)
  if type(v) ~= "table" then out[#out + 1] = prefix .. " = " .. tostring(v) return end
  for k, x in pairs(v) do dump(x, prefix .. "." .. tostring(k), out) end
end
local out = {}
dump(require "smtp.replies", "replies", out)
table.sort(out)
io.stderr:write(table.concat(out, "\n"), "\n")
'''


# Placeholders of the replies docs/replies.md gives as templates.
TEMPLATE = re.compile(r"<(name|clientHostname|banner|total)>")
DOC_REPLY = re.compile(r"^(\d{3}) (?:([245]\.\d{1,3}\.\d{1,3})(?: |$))?(.*)$")


def documented_full_replies():
    """(code, enhanced or "", text) of every backticked reply in
    docs/replies.md that gives a text ("250 2.1.0 Accepted")."""
    out = set()
    for row in replies_rows():
        for s in re.findall(r"`([^`]*)`", " ".join(row)):
            m = DOC_REPLY.match(s)
            if m and m.group(3):
                out.add((int(m.group(1)), m.group(2) or "", m.group(3)))
    return out


class ReplyCatalogue(E2ETest):
    """The catalogue of core/proto/replies.c is one: the server's
    smtp.replies (exported from the C table) and lua/smtp/replies.lua, which
    the testing kit reads under plain luajit, are the same table, and
    docs/replies.md gives each of its replies as it is."""

    def core_dump(self):
        d = tempfile.mkdtemp(prefix="luasmtpd-docs-")
        self.addCleanup(shutil.rmtree, d, True)
        path = os.path.join(d, "dump.lua")
        with open(path, "w") as f:
            f.write(DUMP_REPLIES + "return {}\n")
        r = self.run_cmd([binary(), "-t", path])
        err = r.stderr.decode()
        self.check_sanitizer_text(err, "luasmtpd -t")
        lines = [l for l in err.splitlines() if l.startswith("replies.")]
        self.assertGreater(len(lines), 40, err)
        return lines

    def catalogue(self):
        """{name: (code, enhanced, text)} of the server's smtp.replies."""
        fields = {}
        for line in self.core_dump():
            m = re.match(r"^replies\.(\w+)\.([123]) = (.*)$", line)
            if m and m.group(1) not in ("enhanced", "rejectCode"):
                fields.setdefault(m.group(1), {})[int(m.group(2))] = m.group(3)
        return {k: (int(v[1]), v[2], v[3]) for k, v in fields.items()}

    def test_the_kit_reads_the_cores_catalogue(self):
        core = self.core_dump()
        plain = self.run_cmd(["luajit", "-e", 'package.path = "lua/?.lua;" .. package.path', "-e", DUMP_REPLIES])
        self.assertEqual(plain.returncode, 0, plain.stderr)
        self.assertEqual(plain.stderr.decode().splitlines(), core,
                         "lua/smtp/replies.lua is not the C table: make lua/smtp/replies.lua and commit it")

    def test_docs_give_every_catalogue_reply(self):
        documented = documented_full_replies()
        missing = sorted("%s: %d %s %s" % (k, *v) for k, v in self.catalogue().items() if v not in documented)
        self.assertEqual(missing, [], "catalogue replies docs/replies.md does not give with this code, "
                                      "enhanced code and text")

    def test_every_documented_text_is_the_catalogues(self):
        replies = set(self.catalogue().values())
        self.assertGreater(len(replies), 40)
        stray = sorted("%d %s %s" % r for r in documented_full_replies()
                       if r not in replies and not TEMPLATE.search(r[2]))
        self.assertEqual(stray, [], "docs/replies.md gives texts the catalogue (core/proto/replies.c) does not have")


class ProxyReplies(E2ETest):
    """Every PROXY row says the connection is closed without a reply; the
    wire shows no byte, not even a greeting."""

    def test_closed_without_a_reply(self):
        rows = [r for r in replies_rows() if r[0].startswith("`useProxy`:")]
        self.assertEqual(len(rows), 3, rows)
        for r in rows:
            self.assertIn("closed without a reply", r[1])
        trusted, untrusted = free_port(), free_port()
        src = ("return {\n  {listen = \"127.0.0.1:%d\", useProxy = true, socketTimeout = 1, authOptional = true},\n"
               "  {listen = \"127.0.0.1:%d\", useProxy = {\"192.0.2.0/24\"}, authOptional = true},\n}\n"
               % (trusted, untrusted))
        with Server(src, listen=False, ports=[trusted, untrusted]):
            cases = [("a peer not in the trusted list", untrusted, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 3),
                     ("a malformed PROXY header", trusted, b"EHLO client.example\r\n", 3),
                     ("no complete header within", trusted, b"", 8)]
            for situation, port, send, limit in cases:
                [row] = [r for r in rows if situation in r[0]]
                with self.subTest(situation=situation):
                    c = Client(port, greet=False)
                    with c:
                        t0 = time.monotonic()
                        if send:
                            c.send(send)
                        else:
                            c.no_reply(0.5)  # the listener waits silently
                        self.assertEqual(c.expect_close(limit), b"", row)
                        if not send:
                            self.assertGreater(time.monotonic() - t0, 0.8, "closed before socketTimeout")
