# birdfeeder: plain Makefile, dependencies through pkg-config.
#
#   make            build build/birdfeederd and build/birdfeeder
#   make deps       install the Debian packages that are missing (apt-get)
#   make test       unit (Check) and integration tests, fails on any failure
#   make test-asan  the same tests against an AddressSanitizer + UBSan build
#   make demo       daemon on its local file sink, sample events, the rows
#   make bench      throughput, loss, CPU per event, peak RSS (not a test)
#   make install    PREFIX=/usr/local DESTDIR= binaries, config, catalog,
#                   man pages, systemd units, sysctl drop-in (install-ops)
#   make config-doc regenerate option lists in docs/ from birdfeederd --help
#   make proto-doc  regenerate PROTOCOL.md's tables from proto/*.def
#   make stats-doc  regenerate docs/operations.md's stats table from daemon/stats.def

PREFIX  ?= /usr/local
DESTDIR ?=
BUILD   ?= build
CC      ?= cc
PYTHON  ?= python3

DEB_PKGS = build-essential pkg-config libuv1-dev libcurl4-openssl-dev \
           libjansson-dev check zlib1g-dev libssl-dev libsystemd-dev \
           systemd socat valgrind man-db groff-base
PKGS     = libuv libcurl jansson zlib libcrypto libsystemd

WARN    = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
          -Wformat=2 -Wwrite-strings -Wvla -Werror
OPT     ?= -O2
CFLAGS  ?= $(OPT) -g
# The one version: birdfeederd --version, birdfeeder --version, the
# User-Agent (-DBF_VERSION); the man pages' .TH lines say it too (a test checks).
VERSION = 1.0.0
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) $(SANFLAGS) \
             -DBF_VERSION='"$(VERSION)"' -DBF_DATADIR='"$(PREFIX)/share/birdfeeder"' \
             -Iproto -Idaemon -Iclient-shim/c \
             $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LIBS    = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm
CHECK_CFLAGS = $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS   = $(shell pkg-config --libs check 2>/dev/null)

# libc only (the C shim holds them), then what needs jansson.
PROTO_LIBC = proto/bf_proto.c proto/bf_addr.c
PROTO_SRC  = $(PROTO_LIBC) proto/bf_json.c proto/bf_decoder.c
DAEMON_SRC = $(filter-out daemon/main.c,$(wildcard daemon/*.c)) $(GEN_SRC)
# Generated at build time: the default catalog compiled into the daemon.
GEN_SRC    = $(BUILD)/gen/catalog_builtin.c
SHIM_SRC   = client-shim/c/bf_client.c
CLI_SRC    = $(wildcard cli/*.c)
UNIT_SRC   = tests/unit/main.c $(wildcard tests/unit/test_*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

DAEMON_BIN = $(BUILD)/birdfeederd
CLI_BIN    = $(BUILD)/birdfeeder
UNIT_BIN   = $(BUILD)/unit-tests
SHIM_LIB   = $(BUILD)/libbirdfeeder.a

.PHONY: all deps test test-asan demo bench install clean valgrind \
        proto-doc stats-doc install-ops config-doc
all: $(DAEMON_BIN) $(CLI_BIN) $(SHIM_LIB)

# Rebuild everything when the flags change (as redis does).
$(BUILD)/.flags: FORCE
	@mkdir -p $(BUILD)
	@echo '$(CC) $(ALL_CFLAGS)' | cmp -s - $@ || echo '$(CC) $(ALL_CFLAGS)' > $@
FORCE:

$(BUILD)/obj/%.o: %.c $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(CHECK_CFLAGS) -MMD -MP -c $< -o $@

# daemon/catalog.json as a C array (od is in coreutils: nothing to install).
# A --catalog file, or the one `make install` puts in $(PREFIX)/share,
# replaces it at run time.
$(BUILD)/gen/catalog_builtin.c: daemon/catalog.json
	@mkdir -p $(dir $@)
	{ echo '/* generated from daemon/catalog.json by the Makefile; do not edit */'; \
	  echo '#include "catalog.h"'; \
	  echo 'const char catalog_builtin[] = {'; \
	  od -An -v -tx1 $< | sed 's/ *\([0-9a-f][0-9a-f]\)/0x\1,/g'; \
	  echo '0x00};'; \
	  echo 'const size_t catalog_builtin_len = sizeof(catalog_builtin) - 1;'; \
	} > $@.tmp && mv $@.tmp $@

$(DAEMON_BIN): $(call obj,daemon/main.c $(DAEMON_SRC) $(PROTO_SRC))
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LIBS)

$(SHIM_LIB): $(call obj,$(SHIM_SRC) $(PROTO_LIBC))
	rm -f $@ && ar rcs $@ $^

# The CLI needs jansson only; services linking libbirdfeeder.a need libc.
$(CLI_BIN): $(call obj,$(CLI_SRC) $(PROTO_SRC)) $(SHIM_LIB)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(shell pkg-config --libs jansson 2>/dev/null)

BENCH_SENDER = $(BUILD)/bench-sender
$(BENCH_SENDER): $(call obj,tests/bench/sender.c) $(SHIM_LIB)
	$(CC) $(ALL_CFLAGS) -o $@ $^

$(UNIT_BIN): $(call obj,$(UNIT_SRC) $(DAEMON_SRC) $(PROTO_SRC) $(SHIM_SRC))
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(CHECK_LIBS) $(LIBS)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "make deps: all packages present"; fi

test: deps
	$(MAKE) all $(UNIT_BIN) $(BENCH_SENDER)
	BUILD=$(BUILD) $(PYTHON) tests/run_tests.py

# Separate build directory so the sanitizer flags never mix with a normal build.
test-asan: deps
	$(MAKE) BUILD=build-asan OPT=-O1 \
	  SANFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
	  test

valgrind: all $(UNIT_BIN)
	CK_FORK=no valgrind --leak-check=full --error-exitcode=1 $(UNIT_BIN)

demo: deps
	$(MAKE) all
	sh tests/demo.sh $(BUILD)

bench: deps
	$(MAKE) all $(BENCH_SENDER)
	$(PYTHON) tests/bench/bench.py --build $(BUILD)
	node tests/bench/node_bench.mjs --build $(BUILD)

proto-doc:
	$(PYTHON) proto/gen_doc.py --write

stats-doc:
	$(PYTHON) docs/gen_stats_doc.py --write

install: all install-ops
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/sbin \
	  $(DESTDIR)/etc/birdfeeder $(DESTDIR)$(PREFIX)/share/birdfeeder \
	  $(DESTDIR)$(PREFIX)/include/birdfeeder $(DESTDIR)$(PREFIX)/lib
	install -m 0755 $(DAEMON_BIN) $(DESTDIR)$(PREFIX)/sbin/birdfeederd
	install -m 0755 $(CLI_BIN) $(DESTDIR)$(PREFIX)/bin/birdfeeder
	install -m 0644 $(SHIM_LIB) $(DESTDIR)$(PREFIX)/lib/
	install -m 0644 client-shim/c/bf_client.h proto/bf_proto.h proto/fields.def \
	  proto/reasons.def $(DESTDIR)$(PREFIX)/include/birdfeeder/
	install -m 0644 daemon/catalog.json $(DESTDIR)$(PREFIX)/share/birdfeeder/catalog.json
	[ -e $(DESTDIR)/etc/birdfeeder/birdfeeder.json ] || { \
	  sed 's#"/usr/local/share/birdfeeder/#"$(PREFIX)/share/birdfeeder/#' daemon/birdfeeder.json \
	    > $(DESTDIR)/etc/birdfeeder/birdfeeder.json && \
	  chmod 0644 $(DESTDIR)/etc/birdfeeder/birdfeeder.json; }

# The build directory (BUILD) and the sanitizer build of test-asan.
clean:
	rm -rf $(BUILD) build-asan

# --- ops files: man pages, systemd units, sysctl drop-in (issue 4) ---------
#   make install-ops   PREFIX, DESTDIR as for install; PREFIX is written into
#                      the unit's ExecStart and the man page's catalog path.
#                      `install` depends on it.
#   make config-doc    regenerate the option lists in docs/ and
#                      daemon/birdfeeder.json from `birdfeederd --help`
MAN_DIR          ?= $(PREFIX)/share/man
SYSTEMD_UNIT_DIR ?= /etc/systemd/system
SYSCTL_DIR       ?= /etc/sysctl.d

install-ops:
	install -d $(DESTDIR)$(MAN_DIR)/man1 $(DESTDIR)$(MAN_DIR)/man7 \
	  $(DESTDIR)$(MAN_DIR)/man8 $(DESTDIR)$(SYSTEMD_UNIT_DIR) $(DESTDIR)$(SYSCTL_DIR)
	install -m 0644 docs/man/birdfeeder.1 $(DESTDIR)$(MAN_DIR)/man1/birdfeeder.1
	install -m 0644 docs/man/birdfeeder-protocol.7 \
	  $(DESTDIR)$(MAN_DIR)/man7/birdfeeder-protocol.7
	sed 's#/usr/local/share/birdfeeder/#$(PREFIX)/share/birdfeeder/#g' docs/man/birdfeederd.8 \
	  > $(DESTDIR)$(MAN_DIR)/man8/birdfeederd.8
	chmod 0644 $(DESTDIR)$(MAN_DIR)/man8/birdfeederd.8
	sed 's#/usr/local/sbin/birdfeederd#$(PREFIX)/sbin/birdfeederd#' \
	  systemd/birdfeeder.service > $(DESTDIR)$(SYSTEMD_UNIT_DIR)/birdfeeder.service
	chmod 0644 $(DESTDIR)$(SYSTEMD_UNIT_DIR)/birdfeeder.service
	install -m 0644 systemd/birdfeeder.socket $(DESTDIR)$(SYSTEMD_UNIT_DIR)/birdfeeder.socket
	install -m 0644 systemd/99-birdfeeder.conf $(DESTDIR)$(SYSCTL_DIR)/99-birdfeeder.conf

config-doc: $(DAEMON_BIN)
	$(PYTHON) docs/gen_config_doc.py --write --daemon $(DAEMON_BIN)
