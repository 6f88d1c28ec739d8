"""The core's layers hold (docs/architecture.md), read from the objects the
binary under test was linked from, not from the sources: every undefined
symbol of an object is mapped to the object that defines it (its layer)
or to the library it comes from, and

- a layer uses only the layers it may see (LAYER_MAY_USE);
- only core/lua/ and main.c reference LuaJIT;
- core/proto/ references no libev, OpenSSL, c-ares, socket or file call.

The same rules are read from the sources too, where `nm` sees nothing (a
header's struct or inline function): every `#include "layer/..."` of a
core/<layer>/ file names a layer it may use, and only core/lua/ includes
the LuaJIT headers.

KNOWN and KNOWN_INCLUDES list the uses that break these rules today, while
the core is being taken apart: the test fails on any use not in them, and
on any entry that no longer happens, so the lists can only shrink."""

import os
import re
import subprocess
import unittest

from harness import ROOT, E2ETest, sanitized

LAYERS = ("base", "proto", "tls", "net", "smtp", "lua")
LAYER_MAY_USE = {
    "base": set(),
    "proto": {"base"},
    "tls": {"base"},
    "net": {"base", "proto", "tls"},
    "smtp": {"base", "proto", "tls", "net"},
    "lua": set(LAYERS),
    "main": set(LAYERS),
}

# Libraries, by symbol prefix or name.
LIBRARIES = [
    ("luajit", re.compile(r"^(lua_|luaL_|luaJIT_|luaopen_)")),
    ("libev", re.compile(r"^ev_")),
    ("openssl", re.compile(r"^(SSL_|SSL$|TLS_|EVP_|X509|BIO_|ERR_|OPENSSL_|PEM_|CRYPTO_|RAND_|ASN1_|OBJ_|"
                           r"i2d_|d2i_|PKCS12_|OCSP_|HMAC|SHA\d|MD5|GENERAL_NAME|sk_|OPENSSL_sk_|DH_|EC_|RSA_)")),
    ("c-ares", re.compile(r"^ares_")),
    # GMime and the GLib under it: proto/mime_tree.c reads messages with
    # them, lua/api_mime.c hands them to Lua; no other layer needs them.
    ("gmime", re.compile(r"^(g_|internet_address_|_g_mime)")),
    ("io", re.compile(r"^(socket|connect|bind|listen|accept4?|read|write|readv|writev|send|sendto|sendmsg|recv|"
                      r"recvfrom|recvmsg|open|open64|openat|openat64|close|fopen|fopen64|fdopen|fclose|fread|"
                      r"fwrite|fsync|fdatasync|rename|unlink|mkdir|stat|fstat|lstat|__xstat|__fxstat|"
                      r"getsockname|getpeername|setsockopt|getsockopt|shutdown|poll|epoll_\w+|select)$")),
]
NOT_IN_PROTO = {"libev", "openssl", "c-ares", "io"}

# "object -> what it may not use": to be emptied by the steps of issue 16.
KNOWN = set("""
""".split("\n")) - {""}


def objects_dir():
    return os.path.join(ROOT, "build", "asan" if sanitized() else "obj")


def nm(path, *flags):
    out = subprocess.run(["nm", "-P"] + list(flags) + [path], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, check=True).stdout.decode()
    return [line.split()[:2] for line in out.splitlines() if line.strip()]


def layer_of(obj):
    rel = os.path.relpath(obj, objects_dir())
    return "main" if rel == "main.o" else rel.split(os.sep)[0]


def library_of(symbol):
    for name, rx in LIBRARIES:
        if rx.match(symbol):
            return name
    return None


def uses():
    """{(object, used layer or library)} over every object of the build."""
    # Only the objects of today's sources: a build tree may still hold
    # objects of files since moved or renamed, which the binary no longer links.
    objs = [os.path.join(objects_dir(), "main.o")]
    for layer in LAYERS:
        for dirpath, _, files in os.walk(os.path.join(objects_dir(), layer)):
            rel = os.path.relpath(dirpath, objects_dir())
            objs += [os.path.join(dirpath, f) for f in files
                     if f.endswith(".o") and os.path.exists(os.path.join(ROOT, "core", rel, f[:-2] + ".c"))]
    defined = {}
    for o in objs:
        for sym, kind in nm(o, "--defined-only"):
            if kind.upper() in "TDBRVWCG" and kind.isupper():
                defined[sym] = o
    found = set()
    for o in objs:
        for sym, _ in nm(o, "--undefined-only"):
            where = defined.get(sym)
            used = layer_of(where) if where else library_of(sym)
            if used and used != layer_of(o):
                found.add((os.path.relpath(o, objects_dir()), used))
    return objs, found


def breaks(obj, used):
    layer = obj.split(os.sep)[0] if os.sep in obj else "main"
    if used == "luajit":
        return layer not in ("lua", "main")
    if used == "gmime":
        return layer not in ("proto", "lua")
    if used in LAYER_MAY_USE:
        return used not in LAYER_MAY_USE[layer]
    return layer == "proto" and used in NOT_IN_PROTO


class Layers(E2ETest):
    def test_objects_use_only_the_layers_below(self):
        objs, found = uses()
        self.assertGreater(len(objs), 30, "no objects under %s: build first" % objects_dir())
        for layer in LAYERS:
            self.assertTrue(os.path.isdir(os.path.join(objects_dir(), layer)), layer)
        now = set("%s -> %s" % u for u in found if breaks(*u))
        new = sorted(now - KNOWN)
        gone = sorted(KNOWN - now)
        self.assertEqual(new, [], "uses a layer may not make (fix them, do not list them)")
        self.assertEqual(gone, [], "no longer happen: take them out of KNOWN")

    def test_a_forbidden_use_is_seen(self):
        """The check itself: net/conn.o calling into smtp/ is caught."""
        self.assertTrue(breaks("net/conn.o", "smtp"))
        self.assertTrue(breaks("proto/smtp_sasl.o", "openssl"))
        self.assertTrue(breaks("tls/tls_context.o", "luajit"))
        self.assertTrue(breaks("smtp/session.o", "gmime"))
        self.assertFalse(breaks("proto/mime_tree.o", "gmime"))
        self.assertFalse(breaks("smtp/smtp_session.o", "net"))
        self.assertFalse(breaks("lua/lua_hook.o", "luajit"))


# "file -> header it may not include": to be emptied by the steps of issue 16.
KNOWN_INCLUDES = set("""
""".split("\n")) - {""}

LAYER_INCLUDE = re.compile(r'^\s*#\s*include\s+"(\w+)/[^"]+"')
LUAJIT_INCLUDE = re.compile(r"^\s*#\s*include\s+<(lua|lauxlib|lualib|luajit)\.h>")
INCLUDED = re.compile(r'^\s*#\s*include\s+["<]([^">]+)[">]')


def includes():
    """{(file, included header, its layer or "luajit")} over core/<layer>/."""
    found = set()
    for layer in LAYERS:
        folder = os.path.join(ROOT, "core", layer)
        for f in sorted(os.listdir(folder)):
            if not f.endswith((".c", ".h")):
                continue
            with open(os.path.join(folder, f)) as fh:
                for line in fh:
                    m = LAYER_INCLUDE.match(line)
                    used = m.group(1) if m else "luajit" if LUAJIT_INCLUDE.match(line) else None
                    if used:
                        found.add((layer + "/" + f, INCLUDED.match(line).group(1), used))
    return found


def include_breaks(path, used):
    layer = path.split("/")[0]
    if used == "luajit":
        return layer != "lua"
    return used in LAYER_MAY_USE and used != layer and used not in LAYER_MAY_USE[layer]


class Includes(E2ETest):
    """The layer rules in the sources: a header's types and inline code are
    a use the objects do not show."""

    def test_files_include_only_the_layers_below(self):
        found = includes()
        self.assertGreater(len(found), 100, "no includes read under core/")
        now = set("%s -> %s" % (path, header) for path, header, used in found if include_breaks(path, used))
        self.assertEqual(sorted(now - KNOWN_INCLUDES), [], "includes a layer may not make (fix them, do not list them)")
        self.assertEqual(sorted(KNOWN_INCLUDES - now), [], "no longer happen: take them out of KNOWN_INCLUDES")

    def test_a_forbidden_include_is_seen(self):
        self.assertTrue(include_breaks("net/conn.h", "lua"))
        self.assertTrue(include_breaks("base/buf.h", "proto"))
        self.assertTrue(include_breaks("smtp/session.c", "luajit"))
        self.assertFalse(include_breaks("smtp/session.h", "net"))
        self.assertFalse(include_breaks("lua/api_tcp.c", "luajit"))
        self.assertFalse(include_breaks("net/conn.c", "net"))


# Files still over the limit, to be split by issue 16 (the same rule as
# KNOWN: the test fails when one of them shrinks under it and stays listed).
OVERSIZED = set("""
""".split("\n")) - {""}
MAX_LINES = 900


class Sizes(E2ETest):
    """No C file of the core and no Lua file of lua/ over 900 lines."""

    def test_no_file_over_900_lines(self):
        over = set()
        for top, ext in (("core", (".c", ".h")), ("lua", (".lua",))):
            for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
                for f in files:
                    if f.endswith(ext):
                        path = os.path.join(dirpath, f)
                        with open(path, "rb") as fh:
                            if sum(1 for _ in fh) > MAX_LINES:
                                over.add(os.path.relpath(path, ROOT))
        self.assertEqual(sorted(over - OVERSIZED), [], "over %d lines" % MAX_LINES)
        self.assertEqual(sorted(OVERSIZED - over), [], "no longer over: take them out of OVERSIZED")


if __name__ == "__main__":
    unittest.main()
