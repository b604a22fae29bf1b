# birdfeeder: plain Makefile, dependencies through pkg-config.
#
#   make            build build/birdfeederd and build/birdfeeder
#   make deps       install the Debian packages that are missing (apt-get)
#   make deps-ci    the same, and what only CI installs (promtool)
#   make test       unit (Check) and integration tests, fails on any failure
#                   (installs the npm test tools of tests/tools/ first)
#   make test-asan  the same tests against an AddressSanitizer + UBSan build
#   make demo       daemon on its local file sink, sample events, the rows
#   make bench      throughput, loss, CPU per event, peak RSS (not a test)
#   make fleet-sim  30 daemons against one shared rate limit, paced and not
#                   (docs/scale.md; a few minutes; 8 of them run in make test)
#   make install    PREFIX=/usr/local DESTDIR= copy what `make` built (it never
#                   builds): binaries, the C shim (static and shared, headers,
#                   birdfeeder.pc), config, catalog, man pages, units, sysctl
#                   and sysusers drop-ins
#   make uninstall  the same PREFIX and DESTDIR: remove what install put there
#   make deb        build/birdfeeder_VERSION_ARCH.deb, libbirdfeeder1 and
#                   libbirdfeeder-dev (dpkg-buildpackage, debian/)
#   make test-deb   as root: build, lintian, apt-get install, --check-config,
#                   dpkg --purge, nothing left behind (CI runs it)
#   make config-doc regenerate option lists in docs/ from birdfeederd --help
#   make proto-doc  regenerate PROTOCOL.md's tables from proto/*.def
#   make stats-doc  regenerate docs/operations.md's stats table from daemon/stats.def
#   make fuzz       libFuzzer targets (clang, ASan + UBSan) in build-fuzz/fuzz/
#   make fuzz-run   run each fuzz target FUZZ_SECONDS (default 10) seconds

PREFIX  ?= /usr/local
DESTDIR ?=
LIBDIR  ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
BUILD   ?= build
CC      ?= cc
PYTHON  ?= python3

DEB_PKGS = build-essential pkg-config libuv1-dev libcurl4-openssl-dev \
           libjansson-dev check zlib1g-dev libssl-dev libsystemd-dev \
           systemd socat valgrind man-db groff-base libmicrohttpd-dev \
           clang libclang-rt-14-dev strace libisal-dev libdeflate-dev librdkafka-dev kcat
PKGS     = libuv libcurl jansson zlib libisal libcrypto libsystemd libmicrohttpd rdkafka
# CI only (make deps-ci): promtool, from Debian's prometheus (19 MB), checks
# GET /metrics in tests/integration/test_metrics.py, which skips without it.
# Not in DEB_PKGS: the package also installs and enables a Prometheus server.
CI_PKGS  = prometheus

WARN    = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
          -Wformat=2 -Wwrite-strings -Wvla -Werror
OPT     ?= -O2
CFLAGS  ?= $(OPT) -g
# The one version: birdfeederd --version, birdfeeder --version, the
# User-Agent (-DBF_VERSION); the man pages' .TH lines say it too (a test checks).
VERSION = 1.0.0
# CPPFLAGS and LDFLAGS are the builder's (dpkg-buildflags sets hardening
# flags there); CFLAGS replaces OPT -g.
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARN) $(CPPFLAGS) $(CFLAGS) $(SANFLAGS) \
             -DBF_VERSION='"$(VERSION)"' -DBF_DATADIR='"$(PREFIX)/share/birdfeeder"' \
             -Iproto -Idaemon -Iclient-shim/c \
             $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LIBS    = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm
CHECK_CFLAGS = $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS   = $(shell pkg-config --libs check 2>/dev/null)

# libc only (the C shim holds them), then what needs jansson.
PROTO_LIBC = proto/bf_proto.c proto/bf_addr.c
PROTO_SRC  = $(PROTO_LIBC) proto/bf_json.c proto/bf_jsonscan.c proto/bf_decoder.c
DAEMON_SRC = $(filter-out daemon/main.c,$(wildcard daemon/*.c)) $(GEN_SRC)
# Generated at build time: the default catalog compiled into the daemon.
GEN_SRC    = $(BUILD)/gen/catalog_builtin.c
SHIM_SRC   = client-shim/c/bf_client.c
CLI_SRC    = $(wildcard cli/*.c)
UNIT_SRC   = tests/unit/main.c $(wildcard tests/unit/test_*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
pic = $(patsubst %.c,$(BUILD)/pic/%.o,$(1))

DAEMON_BIN = $(BUILD)/birdfeederd
CLI_BIN    = $(BUILD)/birdfeeder
UNIT_BIN   = $(BUILD)/unit-tests
SHIM_LIB   = $(BUILD)/libbirdfeeder.a
# The shim as a shared library. Its soname changes only when a change breaks
# programs linked against it (the Debian package libbirdfeeder1 follows it);
# the version script exports the API of bf_client.h and bf_proto.h, nothing else.
SO_MAJOR   = 1
SHIM_SO    = $(BUILD)/libbirdfeeder.so.$(SO_MAJOR)
SHIM_MAP   = client-shim/c/libbirdfeeder.map
SHIM_PC    = $(BUILD)/birdfeeder.pc

.PHONY: all deps deps-deb deps-ci test test-asan demo bench fleet-sim install uninstall install-check \
        deb test-deb clean valgrind proto-doc stats-doc install-ops config-doc \
        fuzz fuzz-targets fuzz-run fuzz-replay
all: $(DAEMON_BIN) $(CLI_BIN) $(SHIM_LIB) $(SHIM_SO) $(SHIM_PC) $(BUILD)/paths

# Rebuild everything when the flags change (as redis does).
FLAGS_LINE = $(CC) $(ALL_CFLAGS) $(LDFLAGS)
$(BUILD)/.flags: FORCE
	@mkdir -p $(BUILD)
	@echo '$(FLAGS_LINE)' | cmp -s - $@ || echo '$(FLAGS_LINE)' > $@
FORCE:

# The install paths built in (BF_DATADIR, birdfeeder.pc): install checks them.
PATHS_LINE = PREFIX=$(PREFIX) LIBDIR=$(LIBDIR) INCLUDEDIR=$(INCLUDEDIR)
$(BUILD)/paths: FORCE
	@mkdir -p $(BUILD)
	@echo '$(PATHS_LINE)' | cmp -s - $@ || echo '$(PATHS_LINE)' > $@

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

# The shared library's objects: the same sources, position-independent.
$(BUILD)/pic/%.o: %.c $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -fPIC -MMD -MP -c $< -o $@

$(DAEMON_BIN): $(call obj,daemon/main.c $(DAEMON_SRC) $(PROTO_SRC))
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS)

# What a service links: libc only, in both forms.
SHIM_OBJ_SRC = $(SHIM_SRC) $(PROTO_LIBC)

$(SHIM_LIB): $(call obj,$(SHIM_OBJ_SRC))
	rm -f $@ && ar rcs $@ $^

$(SHIM_SO): $(call pic,$(SHIM_OBJ_SRC)) $(SHIM_MAP)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -shared -Wl,-soname,$(notdir $@) \
	  -Wl,--version-script=$(SHIM_MAP) -Wl,--no-undefined -o $@ $(filter %.o,$^)

# PREFIX and LIBDIR are written in at build time, as in the binaries.
$(SHIM_PC): client-shim/c/birdfeeder.pc.in $(BUILD)/paths
	sed -e 's#@PREFIX@#$(PREFIX)#' -e 's#@LIBDIR@#$(LIBDIR)#' \
	  -e 's#@INCLUDEDIR@#$(INCLUDEDIR)#' -e 's#@VERSION@#$(VERSION)#' $< > $@

# The CLI needs jansson, and libcurl for dead-letter replay, which reads the
# daemon's configuration as the daemon does (config.c, paths.c, log.c);
# services linking libbirdfeeder.a need libc only.
CLI_DAEMON = daemon/config.c daemon/file_check.c daemon/secret.c daemon/paths.c daemon/log.c daemon/stats_prom.c
$(CLI_BIN): $(call obj,$(CLI_SRC) $(CLI_DAEMON) $(PROTO_SRC)) $(SHIM_LIB)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(shell pkg-config --libs jansson libcurl 2>/dev/null)

BENCH_SENDER = $(BUILD)/bench-sender
$(BENCH_SENDER): $(call obj,tests/bench/sender.c) $(SHIM_LIB)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^

# make bench's own programs: the payload file, the sendmmsg load generator,
# the bare recvmmsg receiver and the C shim's cost (tests/bench/).
BENCH_TOOLS = $(BUILD)/bench-payload $(BUILD)/bench-loadgen $(BUILD)/bench-receiver \
              $(BUILD)/bench-shim $(BUILD)/bench-gzip $(BUILD)/bench-stages
# The compression lever: zlib, libdeflate and igzip side by side.
$(BUILD)/bench-gzip: $(BUILD)/obj/tests/bench/gzip.o
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(shell pkg-config --libs libisal libdeflate zlib 2>/dev/null)
# The per-event stages without sockets, for callgrind (tests/bench/stages.c).
$(BUILD)/bench-stages: $(call obj,tests/bench/stages.c $(DAEMON_SRC) $(PROTO_SRC))
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS)
.PRECIOUS: $(BUILD)/obj/tests/bench/%.o
$(BUILD)/bench-%: $(BUILD)/obj/tests/bench/%.o $(SHIM_LIB)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^
# A Kafka cluster for the tests: librdkafka's mock brokers (tests/kafka/).
KAFKA_MOCK = $(BUILD)/kafka-mock
$(KAFKA_MOCK): $(call obj,tests/kafka/kafka_mock.c $(DAEMON_SRC) $(PROTO_SRC))
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS)

$(UNIT_BIN): $(call obj,$(UNIT_SRC) $(DAEMON_SRC) $(PROTO_SRC) $(SHIM_SRC))
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(CHECK_LIBS) $(LIBS)

-include $(shell find $(BUILD)/obj $(BUILD)/pic -name '*.d' 2>/dev/null)

# apt-get install what is missing of $(1); root or sudo. The lock timeout
# waits for another apt (make deps elsewhere on the machine) to finish.
define apt_install
	@missing=""; for p in $(1); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "make $@: installing$$missing"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    -o DPkg::Lock::Timeout=300 $$missing; \
	else echo "make $@: all packages present"; fi
endef

deps:
	$(call apt_install,$(DEB_PKGS))

deps-ci:
	$(call apt_install,$(DEB_PKGS) $(CI_PKGS))

# The npm test tools (Tinybird's datafile parser, TypeScript) go to a cache
# directory once per tests/tools/package-lock.json; without the registry the
# tests that need them are skipped, saying so.
test: deps
	$(MAKE) all $(UNIT_BIN) $(BENCH_SENDER) $(BENCH_TOOLS) $(KAFKA_MOCK) fuzz-replay
	$(PYTHON) tests/tools/npm_tools.py
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
	$(MAKE) all $(BENCH_SENDER) $(BENCH_TOOLS)
	$(PYTHON) tests/bench/bench.py --build $(BUILD)
	node tests/bench/node_bench.mjs --build $(BUILD)
	@echo "bench: a fleet against one shared rate limit is make fleet-sim (docs/scale.md)"

fleet-sim: deps
	$(MAKE) all $(BENCH_SENDER)
	BIRDFEEDER_BUILD_DIR=$(BUILD) $(PYTHON) tests/bench/fleet.py

proto-doc:
	$(PYTHON) proto/gen_doc.py --write

stats-doc:
	$(PYTHON) docs/gen_stats_doc.py --write

# The build directory (BUILD) and the sanitizer build of test-asan.
clean:
	rm -rf $(BUILD) build-asan build-fuzz

# --- make install / uninstall (issues 4, 12) ---------------------------------
#   PREFIX=/usr       units, sysctl and sysusers drop-ins under $(PREFIX)/lib
#                     (as a distribution package ships them)
#   PREFIX=/usr/local (or any other) the same under /etc, where systemd reads
#                     the units and drop-ins an administrator adds
#   DESTDIR           staging root (packages); LIBDIR, INCLUDEDIR, MAN_DIR and
#                     the *_DIR below can be set one by one.
# PREFIX is written into the unit's ExecStart, the man page's and the default
# config's catalog path, and (at build time) birdfeeder.pc.
# install only copies: it runs as root, so it must never build into build/
# as root behind the user's back. Build first with `make`.
MAN_DIR ?= $(PREFIX)/share/man
ifeq ($(PREFIX),/usr)
SYSTEMD_UNIT_DIR ?= $(PREFIX)/lib/systemd/system
SYSCTL_DIR       ?= $(PREFIX)/lib/sysctl.d
SYSUSERS_DIR     ?= $(PREFIX)/lib/sysusers.d
else
SYSTEMD_UNIT_DIR ?= /etc/systemd/system
SYSCTL_DIR       ?= /etc/sysctl.d
SYSUSERS_DIR     ?= /etc/sysusers.d
endif
CONF_DIR  = /etc/birdfeeder
SHARE_DIR = $(PREFIX)/share/birdfeeder
D         = $(DESTDIR)
INSTALL_BUILT = $(DAEMON_BIN) $(CLI_BIN) $(SHIM_LIB) $(SHIM_SO) $(SHIM_PC) $(BUILD)/paths
SHIM_HEADERS  = client-shim/c/bf_client.h proto/bf_proto.h proto/fields.def \
                proto/reasons.def
# Text files name paths as `make install` with the default PREFIX puts them;
# installed, they name the paths of this install.
AT_PREFIX = sed -e 's\#/usr/local/share/birdfeeder/\#$(SHARE_DIR)/\#g' \
                -e 's\#/usr/local/sbin/birdfeederd\#$(PREFIX)/sbin/birdfeederd\#g' \
                -e 's\#/etc/systemd/system/\#$(SYSTEMD_UNIT_DIR)/\#g' \
                -e 's\#/etc/sysctl\.d/\#$(SYSCTL_DIR)/\#g' \
                -e 's\#/etc/sysusers\.d/\#$(SYSUSERS_DIR)/\#g'

install-check:
	@for f in $(INSTALL_BUILT); do [ -f $$f ] || { \
	  echo "make install: $$f is missing: run 'make' first (as yourself, not root)," \
	       "then 'make install'; install only copies what was built" >&2; exit 1; }; done
	@echo '$(PATHS_LINE)' | cmp -s - $(BUILD)/paths || { \
	  echo "make install: $(BUILD)/ was built for $$(cat $(BUILD)/paths 2>/dev/null)," \
	       "not $(PATHS_LINE): run 'make' again with these (as yourself), then" \
	       "'make install' with the same" >&2; exit 1; }

install: install-check
	install -d $(D)$(PREFIX)/bin $(D)$(PREFIX)/sbin $(D)$(SHARE_DIR) $(D)$(CONF_DIR) \
	  $(D)$(INCLUDEDIR)/birdfeeder $(D)$(LIBDIR)/pkgconfig
	install -m 0755 $(DAEMON_BIN) $(D)$(PREFIX)/sbin/birdfeederd
	install -m 0755 $(CLI_BIN) $(D)$(PREFIX)/bin/birdfeeder
	install -m 0644 $(SHIM_LIB) $(D)$(LIBDIR)/libbirdfeeder.a
	install -m 0644 $(SHIM_SO) $(D)$(LIBDIR)/$(notdir $(SHIM_SO))
	ln -sf $(notdir $(SHIM_SO)) $(D)$(LIBDIR)/libbirdfeeder.so
	install -m 0644 $(SHIM_PC) $(D)$(LIBDIR)/pkgconfig/birdfeeder.pc
	install -m 0644 $(SHIM_HEADERS) $(D)$(INCLUDEDIR)/birdfeeder/
	install -m 0644 daemon/catalog.json $(D)$(SHARE_DIR)/catalog.json
	[ -e $(D)$(CONF_DIR)/birdfeeder.json ] || { \
	  $(AT_PREFIX) daemon/birdfeeder.json > $(D)$(CONF_DIR)/birdfeeder.json && \
	  chmod 0644 $(D)$(CONF_DIR)/birdfeeder.json; }
	$(MAKE) --no-print-directory install-ops

# Man pages, units, sysctl and sysusers drop-ins: text files only.
install-ops:
	install -d $(D)$(MAN_DIR)/man1 $(D)$(MAN_DIR)/man7 $(D)$(MAN_DIR)/man8 \
	  $(D)$(SYSTEMD_UNIT_DIR) $(D)$(SYSCTL_DIR) $(D)$(SYSUSERS_DIR)
	install -m 0644 docs/man/birdfeeder.1 $(D)$(MAN_DIR)/man1/birdfeeder.1
	install -m 0644 docs/man/birdfeeder-protocol.7 $(D)$(MAN_DIR)/man7/birdfeeder-protocol.7
	$(AT_PREFIX) docs/man/birdfeederd.8 > $(D)$(MAN_DIR)/man8/birdfeederd.8
	$(AT_PREFIX) systemd/birdfeeder.service > $(D)$(SYSTEMD_UNIT_DIR)/birdfeeder.service
	chmod 0644 $(D)$(MAN_DIR)/man8/birdfeederd.8 $(D)$(SYSTEMD_UNIT_DIR)/birdfeeder.service
	install -m 0644 systemd/birdfeeder.socket $(D)$(SYSTEMD_UNIT_DIR)/birdfeeder.socket
	install -m 0644 systemd/99-birdfeeder.conf $(D)$(SYSCTL_DIR)/99-birdfeeder.conf
	install -m 0644 systemd/birdfeeder-sysusers.conf $(D)$(SYSUSERS_DIR)/birdfeeder.conf

# The config file stays when it differs from the one install writes (it was
# edited: as dpkg keeps a changed conffile on remove).
uninstall:
	rm -f $(D)$(PREFIX)/sbin/birdfeederd $(D)$(PREFIX)/bin/birdfeeder \
	  $(D)$(LIBDIR)/libbirdfeeder.a $(D)$(LIBDIR)/$(notdir $(SHIM_SO)) \
	  $(D)$(LIBDIR)/libbirdfeeder.so $(D)$(LIBDIR)/pkgconfig/birdfeeder.pc \
	  $(addprefix $(D)$(INCLUDEDIR)/birdfeeder/,$(notdir $(SHIM_HEADERS))) \
	  $(D)$(SHARE_DIR)/catalog.json \
	  $(D)$(MAN_DIR)/man1/birdfeeder.1 $(D)$(MAN_DIR)/man7/birdfeeder-protocol.7 \
	  $(D)$(MAN_DIR)/man8/birdfeederd.8 \
	  $(D)$(SYSTEMD_UNIT_DIR)/birdfeeder.service $(D)$(SYSTEMD_UNIT_DIR)/birdfeeder.socket \
	  $(D)$(SYSCTL_DIR)/99-birdfeeder.conf $(D)$(SYSUSERS_DIR)/birdfeeder.conf
	if [ -f $(D)$(CONF_DIR)/birdfeeder.json ]; then \
	  if $(AT_PREFIX) daemon/birdfeeder.json | cmp -s - $(D)$(CONF_DIR)/birdfeeder.json; then \
	    rm -f $(D)$(CONF_DIR)/birdfeeder.json; \
	  else echo "make uninstall: keeping $(D)$(CONF_DIR)/birdfeeder.json (changed)"; fi; fi
	rmdir $(D)$(INCLUDEDIR)/birdfeeder $(D)$(SHARE_DIR) $(D)$(CONF_DIR) 2>/dev/null || true

# --- Debian packages (issue 12) ----------------------------------------------
# debian/ with debhelper, not dpkg-deb on a staged tree: debhelper writes the
# maintainer scripts Debian itself uses (units through deb-systemd-helper and
# deb-systemd-invoke, systemd-sysusers, conffiles, purge), dpkg-shlibdeps the
# Depends, dh_makeshlibs the library's shlibs. Three packages, as Debian
# policy splits a library: birdfeeder (the daemon, the CLI linked with the
# static shim, units, drop-ins, config), libbirdfeeder1 (the .so, named after
# its soname, so two ABIs can be installed side by side) and libbirdfeeder-dev.
#
# The build runs in a copy of the tree under $(BUILD)/deb: dpkg-buildpackage
# cleans first (make clean) and writes into .., neither of which should hit
# the checkout. debian/changelog's version must be VERSION.
DEB_TOOLS = debhelper dpkg-dev lintian
DEB_ARCH  = $(shell dpkg --print-architecture 2>/dev/null)
DEB_SRC   = $(BUILD)/deb/birdfeeder-$(VERSION)

deps-deb:
	$(call apt_install,$(DEB_PKGS) $(DEB_TOOLS))

deb:
	@v=$$(dpkg-parsechangelog -S Version) && [ "$$v" = "$(VERSION)" ] || { \
	  echo "make deb: debian/changelog is at $$v, the Makefile's VERSION at $(VERSION):" \
	       "add a changelog entry (dch -v $(VERSION))" >&2; exit 1; }
	rm -rf $(BUILD)/deb && mkdir -p $(DEB_SRC)
	tar -c --exclude-vcs --exclude=./build --exclude='./build-*' --exclude=./$(BUILD) \
	  --exclude=node_modules --exclude=__pycache__ . | tar -x -C $(DEB_SRC)
	cd $(DEB_SRC) && dpkg-buildpackage -b -us -uc
	cp $(BUILD)/deb/*_$(VERSION)_$(DEB_ARCH).deb $(BUILD)/
	@ls -l $(BUILD)/*_$(VERSION)_$(DEB_ARCH).deb

test-deb:
	@if [ "$$(id -u)" != 0 ]; then \
	  echo "test-deb: skipped: needs root (installs the packages with apt-get, purges them)"; \
	else $(MAKE) deps-deb && $(MAKE) deb && BUILD=$(BUILD) $(PYTHON) tests/install/test_deb.py; fi

config-doc: $(DAEMON_BIN)
	$(PYTHON) docs/gen_config_doc.py --write --daemon $(DAEMON_BIN)

# --- fuzzing (issue 11) -------------------------------------------------------
#   make fuzz                     build-fuzz/fuzz/fuzz_<target>, built by clang
#                                 with libFuzzer, ASan and UBSan; seed corpora
#                                 and dictionaries in build-fuzz/seeds/
#   make fuzz-run FUZZ_SECONDS=N  each target N seconds, one after the other;
#                                 a crash fails and leaves its input in
#                                 build-fuzz/crashes/. What the runs found is
#                                 kept in build-fuzz/corpus/<target>/.
# libFuzzer's runtime for -fsanitize=fuzzer is in libclang-rt-14-dev (clang
# only recommends it); libfuzzer-14-dev holds the standalone libFuzzer.a.
# Targets: tests/fuzz/fuzz_*.c; see docs/security.md.
FUZZ_BUILD    = build-fuzz
FUZZ_CC       ?= clang
FUZZ_SECONDS  ?= 10
FUZZ_TARGETS  = decode json row spool config catalog
FUZZ_SANFLAGS = -fsanitize=address,undefined,fuzzer-no-link \
                -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_BINS     = $(patsubst %,$(BUILD)/fuzz/fuzz_%,$(FUZZ_TARGETS))
FUZZ_LIB_OBJ  = $(call obj,tests/fuzz/fuzz_util.c $(DAEMON_SRC) $(PROTO_SRC))

# Kept, not deleted as intermediates of the pattern rule below.
.SECONDARY: $(call obj,$(wildcard tests/fuzz/*.c))
$(BUILD)/fuzz/fuzz_%: $(BUILD)/obj/tests/fuzz/fuzz_%.o $(FUZZ_LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -fsanitize=fuzzer -o $@ $^ $(LIBS)

# The same targets with tests/fuzz/replay_main.c instead of libFuzzer, built
# by the project's compiler: `make test` replays the seeds through them.
FUZZ_REPLAY_BINS = $(patsubst %,$(BUILD)/fuzz-replay/fuzz_%,$(FUZZ_TARGETS))
$(BUILD)/fuzz-replay/fuzz_%: $(BUILD)/obj/tests/fuzz/fuzz_%.o \
                             $(call obj,tests/fuzz/replay_main.c) $(FUZZ_LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LIBS)
fuzz-replay: $(FUZZ_REPLAY_BINS)

fuzz-targets: $(FUZZ_BINS)
	rm -rf $(BUILD)/seeds && $(PYTHON) tests/fuzz/gen_seeds.py $(BUILD)/seeds

# BF_SRCDIR: where the targets find tinybird/datasources and the catalog.
fuzz: deps
	$(MAKE) BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) OPT=-O1 \
	  SANFLAGS="$(FUZZ_SANFLAGS) -DBF_SRCDIR='\"$(CURDIR)\"'" fuzz-targets

# -dict: a target's dictionary when there is one. A target's own corpus
# directory comes first: libFuzzer adds what it finds there. The whole
# output of each run is in build-fuzz/logs/<target>.log.
fuzz-run: fuzz
	@set -e; cd $(FUZZ_BUILD); mkdir -p crashes logs; \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t; \
	  dict=; case $$t in json|row) dict=-dict=seeds/json.dict;; \
	    config) dict=-dict=seeds/config.dict;; catalog) dict=-dict=seeds/catalog.dict;; esac; \
	  if ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    ./fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	      -print_final_stats=1 $$dict -artifact_prefix=crashes/$$t- \
	      corpus/$$t seeds/$$t >logs/$$t.log 2>&1; then \
	    echo "fuzz $$t: $(FUZZ_SECONDS)s, $$(sed -n 's/^stat::number_of_executed_units: *//p' \
	      logs/$$t.log) executions, corpus $$(ls corpus/$$t | wc -l) inputs"; \
	  else \
	    tail -n 60 logs/$$t.log; \
	    echo "fuzz $$t: FAILED; the input is in $(FUZZ_BUILD)/crashes/, the log in $(FUZZ_BUILD)/logs/$$t.log"; \
	    exit 1; \
	  fi; \
	done
