# luasmtpd — see README.md. `make run` and `make test` are the two set-up
# commands; both install missing Debian packages first (root or sudo).

CC      ?= cc
PKGS    := luajit openssl libcares libpcre2-8 zlib gmime-3.0
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Icore -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lev -lm -ldl -lpthread
PYTHON  ?= /usr/bin/python3
PREFIX  ?= /usr/local
DESTDIR ?=
SBINDIR := $(PREFIX)/sbin
DATADIR := $(PREFIX)/share
CFLAGS  += -DLUASMTPD_LUA_DIR='"$(DATADIR)/luasmtpd/lua"'

# Debian packages: the build needs the -dev ones; the tests need the clients.
# Postfix and Dovecot LMTP are next hops the relay tests start themselves
# (tests/e2e/mta.py), never as the system's services: see the install step;
# so are the milters OpenDKIM, OpenDMARC and rspamd (tests/e2e/milterd.py).
APT_PKGS := build-essential pkg-config libluajit-5.1-dev luajit libev-dev libssl-dev libc-ares-dev libpcre2-dev zlib1g-dev openssl \
            lua-busted lua-socket lua-sec lua-cjson swaks curl python3 clang redis-server dnsmasq-base haproxy strace \
            postfix dovecot-core dovecot-lmtpd python3-aiosmtpd python3-milter libgmime-3.0-dev \
            opendkim opendkim-tools opendmarc rspamd
DEPS_STAMP := build/.deps-ok

# One folder per layer (docs/architecture.md); sources include each other
# as "layer/file.h" from core/.
LAYERS    := base proto tls net smtp lua
CORE_SRC  := $(foreach l,$(LAYERS),$(wildcard core/$(l)/*.c))
CORE_HDR  := $(wildcard core/*/*.h)
CORE_OBJ  := $(CORE_SRC:core/%.c=build/obj/%.o)
ASAN_OBJ  := $(CORE_SRC:core/%.c=build/asan/%.o)
UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=build/%)
ASAN_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined

.PHONY: all deps run test unit spec e2e test-asan certs clean tls-audit soak fuzz install uninstall bench bench-compare valgrind
all: build/luasmtpd

# A policy-rc.d exiting 101 (written for the install when the system has
# none) keeps Debian from starting the packages' services: the tests start
# their own redis, Postfix, Dovecot and milters. Should one run anyway (a system that
# ignores policy-rc.d), it is stopped after the install.
$(DEPS_STAMP): Makefile
	@missing=""; \
	pkg-config --exists $(PKGS) 2>/dev/null || missing=1; \
	[ -f /usr/include/ev.h ] || missing=1; \
	for c in cc luajit busted swaks curl openssl strace $(PYTHON) clang redis-server /usr/sbin/dnsmasq /usr/sbin/haproxy \
		/usr/sbin/postfix /usr/sbin/dovecot /usr/lib/dovecot/lmtp \
		/usr/sbin/opendkim /usr/sbin/opendkim-genkey /usr/sbin/opendmarc /usr/bin/rspamd; do command -v $$c >/dev/null 2>&1 || missing=1; done; \
	luajit -e 'require "socket"; require "ssl"; require "cjson"' 2>/dev/null || missing=1; \
	/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || missing=1; \
	/usr/bin/python3 -c 'import Milter' 2>/dev/null || missing=1; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $(APT_PKGS)"; \
		SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		rcd=; [ -e /usr/sbin/policy-rc.d ] || { rcd=1; printf '#!/bin/sh\nexit 101\n' | $$SUDO tee /usr/sbin/policy-rc.d >/dev/null; $$SUDO chmod 755 /usr/sbin/policy-rc.d; }; \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $(APT_PKGS); ok=$$?; \
		[ -z "$$rcd" ] || $$SUDO rm -f /usr/sbin/policy-rc.d; \
		[ $$ok = 0 ] || exit 1; \
		! $$SUDO /usr/sbin/postfix status >/dev/null 2>&1 || $$SUDO /usr/sbin/postfix stop; \
		[ ! -s /run/dovecot/master.pid ] || $$SUDO kill "$$(cat /run/dovecot/master.pid)" 2>/dev/null || true; \
		for p in /run/opendkim/opendkim.pid /run/opendmarc/opendmarc.pid /run/rspamd/rspamd.pid; do \
			[ ! -s $$p ] || $$SUDO kill "$$(cat $$p)" 2>/dev/null || true; done; \
	fi
	@mkdir -p build && touch $@
deps: $(DEPS_STAMP)

# The server is linked with link-time optimization: calls between the
# layers' files are inlined like calls within one (3.7% fewer instructions
# a pipelined message, callgrind). The objects carry machine code as well
# (fat), so the unit tests link them as usual, without it.
LTO := -flto=auto

build/obj/%.o: core/%.c $(CORE_HDR) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LTO) -ffat-lto-objects -c -o $@ $<

build/asan/%.o: core/%.c $(CORE_HDR) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(ASAN_FLAGS) -c -o $@ $<

build/luasmtpd: build/obj/main.o $(CORE_OBJ) | lua/smtp/replies.lua
	$(CC) $(CFLAGS) $(LTO) -o $@ $^ $(LDLIBS)

# The reply catalogue is core/proto/replies.c; the testing kit outside the
# server reads it as lua/smtp/replies.lua, written from the C table (and
# committed, so the kit works from a checkout without a build).
build/replies_lua: core/tools/replies_lua.c build/obj/proto/replies.o
	$(CC) $(CFLAGS) -o $@ $^

lua/smtp/replies.lua: build/replies_lua
	build/replies_lua > $@.tmp && mv $@.tmp $@

build/luasmtpd-asan: build/asan/main.o $(ASAN_OBJ)
	$(CC) $(CFLAGS) $(ASAN_FLAGS) -o $@ $^ $(LDLIBS)

build/test_%: tests/unit/test_%.c $(CORE_OBJ)
	$(CC) $(CFLAGS) -Icore -o $@ $^ $(LDLIBS)

# log.c without SSE2 (the byte loop of other CPUs) against the same cases.
UNIT_BIN += build/test_log_scalar
build/test_log_scalar: tests/unit/test_log.c tests/unit/unit.h core/base/log.c $(CORE_HDR) | $(DEPS_STAMP)
	$(CC) $(CFLAGS) -U__SSE2__ -o $@ tests/unit/test_log.c core/base/log.c -lev -lpthread

# The session with no Lua: core/smtp/ and the layers below it only, so the
# test shows that the state machine runs on the null and scripted policies.
NOLUA_OBJ := $(filter-out build/obj/lua/%,$(CORE_OBJ))
NOLUA_LIBS := $(filter-out -lluajit%,$(LDLIBS))
build/test_session: tests/unit/test_session.c tests/unit/session_fake.h $(NOLUA_OBJ)
	$(CC) $(CFLAGS) -Icore -o $@ $(filter-out %.h,$^) $(NOLUA_LIBS)

certs: $(DEPS_STAMP)
	@sh certs/mkcert.sh

run: build/luasmtpd certs
	build/luasmtpd scripts/default.lua

unit: $(UNIT_BIN)
spec: build/luasmtpd certs
	busted -o TAP
e2e: build/luasmtpd certs
test-asan: build/luasmtpd-asan certs

# libFuzzer targets on the pure parsers (clang). `make fuzz` runs each for
# FUZZ_TIME seconds; `make test` replays the seed corpus as regression tests.
FUZZ_TIME ?= 60
FUZZ_TARGETS := command data sasl proxy session smtp_client message mime milter
FUZZ_BIN := $(FUZZ_TARGETS:%=build/fuzz_%)
# proto/mime_tree.c is GMime's: only fuzz_mime links it (and GMime).
MIME_SRC := core/proto/mime_tree.c
FUZZ_SRC := $(filter-out $(MIME_SRC),$(wildcard core/proto/*.c))

build/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_SRC) $(CORE_HDR) | $(DEPS_STAMP)
	clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Icore -o $@ $< $(FUZZ_SRC) -lcrypto

# The session's target runs the state machine and the layers below it (no
# Lua): its own link line.
NOLUA_SRC := $(filter-out core/lua/% $(MIME_SRC),$(CORE_SRC))
build/fuzz_session: tests/fuzz/fuzz_session.c tests/unit/session_fake.h $(NOLUA_SRC) $(CORE_HDR) | $(DEPS_STAMP)
	clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Icore -o $@ $< $(NOLUA_SRC) \
		$(NOLUA_LIBS)

# The header block and its edits: smtp/message.c and the buffer it uses.
MESSAGE_SRC := core/smtp/message.c core/base/buf.c core/base/freelist.c
build/fuzz_message: tests/fuzz/fuzz_message.c $(MESSAGE_SRC) $(CORE_HDR) | $(DEPS_STAMP)
	clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Icore -o $@ $< $(MESSAGE_SRC)

build/fuzz_mime: tests/fuzz/fuzz_mime.c $(MIME_SRC) $(CORE_HDR) | $(DEPS_STAMP)
	clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Icore $(shell pkg-config --cflags gmime-3.0) \
		-o $@ $< $(MIME_SRC) $(shell pkg-config --libs gmime-3.0)

fuzz: $(FUZZ_BIN)
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p build/corpus/$$t; \
		echo "== fuzz_$$t for $(FUZZ_TIME)s"; \
		build/fuzz_$$t -max_total_time=$(FUZZ_TIME) -print_final_stats=1 -max_len=4096 \
			build/corpus/$$t tests/fuzz/corpus/$$t 2>&1 | grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss|==[0-9]+==ERROR|SUMMARY)' || true; \
		[ -z "$$(ls crash-* leak-* timeout-* 2>/dev/null)" ] || { echo "fuzz_$$t found a crash: see crash-*"; exit 1; }; \
	done

test: build/luasmtpd build/luasmtpd-asan $(UNIT_BIN) $(FUZZ_BIN) certs
	@sh tests/run.sh

# testssl.sh against a live server; not part of `make test` (it takes minutes).
tls-audit: build/luasmtpd certs
	@command -v testssl >/dev/null || { SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; $$SUDO apt-get install -y -q testssl.sh; }
	@sh tests/tls-audit.sh

# Benchmarks (figures, not pass/fail): the cost of Lua hooks per message,
# of relaying, of parsing MIME (smtp.mime against Python's email and Node's
# mailparser, npm-installed under build/bench-npm), of a milter round trip
# to a local OpenDKIM (tests/bench/milter_bench.py), then luasmtpd against
# a minimal C responder and the anchors, driven by our load generator
# (tests/bench/compare.py, about 9 minutes).
build/bench_floor: tests/bench/floor.c | $(DEPS_STAMP)
	$(CC) -O2 -Wall -Wextra -o $@ $< -lssl -lcrypto

build/bench_load: tests/bench/loadgen.c | $(DEPS_STAMP)
	$(CC) -O2 -Wall -Wextra -Werror -o $@ $< -lssl -lcrypto

bench: build/luasmtpd build/bench_floor build/bench_load certs
	$(PYTHON) tests/bench/hook_overhead.py
	$(PYTHON) tests/bench/relay_bench.py
	$(PYTHON) tests/bench/mime_bench.py
	$(PYTHON) tests/bench/milter_bench.py
	$(PYTHON) tests/bench/compare.py

# This tree's luasmtpd against one built from commit BASE (in a temporary
# git worktree, kept in build/base/), same scenarios interleaved in one run,
# plus callgrind instructions per message (about 4 minutes; BENCH_ARGS=--quick
# about 1).
BASE ?=
BENCH_ARGS ?=
bench-compare: build/luasmtpd build/bench_load certs
	@[ -n "$(BASE)" ] || { echo "usage: make bench-compare BASE=<commit> [BENCH_ARGS=--quick]"; exit 2; }
	sh tests/bench/build_base.sh $(BASE) build/base
	$(PYTHON) tests/bench/base_compare.py --binary build/luasmtpd --base-binary build/base/bin/luasmtpd $(BENCH_ARGS)

# Long-running checks, not part of `make test`.
soak: build/luasmtpd certs
	$(PYTHON) tests/soak/reload_soak.py
	$(PYTHON) tests/soak/mixed_soak.py

valgrind: build/luasmtpd certs
	$(PYTHON) tests/soak/valgrind_session.py

# Installs the binary, the Lua modules (the testing kit too, with the
# certs/mkca.sh its testing.pki runs), the example policies, the man page
# and the systemd unit (the binary finds its Lua module relative to itself,
# so a DESTDIR staging tree works as installed).
install: build/luasmtpd
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(DATADIR)/luasmtpd/lua/smtp/testing \
		$(DESTDIR)$(DATADIR)/luasmtpd/lua/smtp/ngx $(DESTDIR)$(DATADIR)/luasmtpd/lua/resty \
		$(DESTDIR)$(DATADIR)/luasmtpd/scripts $(DESTDIR)$(DATADIR)/luasmtpd/certs $(DESTDIR)$(DATADIR)/man/man8 \
		$(DESTDIR)$(PREFIX)/lib/systemd/system
	install -m 755 build/luasmtpd $(DESTDIR)$(SBINDIR)/luasmtpd
	install -m 644 lua/smtp/*.lua $(DESTDIR)$(DATADIR)/luasmtpd/lua/smtp/
	install -m 644 lua/smtp/testing/*.lua lua/smtp/testing/nexthop.py $(DESTDIR)$(DATADIR)/luasmtpd/lua/smtp/testing/
	install -m 644 lua/smtp/ngx/*.lua $(DESTDIR)$(DATADIR)/luasmtpd/lua/smtp/ngx/
	install -m 644 lua/resty/*.lua $(DESTDIR)$(DATADIR)/luasmtpd/lua/resty/
	install -m 644 scripts/*.lua $(DESTDIR)$(DATADIR)/luasmtpd/scripts/
	install -m 755 certs/mkca.sh $(DESTDIR)$(DATADIR)/luasmtpd/certs/
	sed 's|@DATADIR@|$(DATADIR)|g' scripts/man/luasmtpd.8 > $(DESTDIR)$(DATADIR)/man/man8/luasmtpd.8
	sed 's|@SBINDIR@|$(SBINDIR)|g' scripts/systemd/luasmtpd.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/luasmtpd.service

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/luasmtpd $(DESTDIR)$(DATADIR)/man/man8/luasmtpd.8 \
		$(DESTDIR)$(PREFIX)/lib/systemd/system/luasmtpd.service
	rm -rf $(DESTDIR)$(DATADIR)/luasmtpd

clean:
	rm -rf build var
