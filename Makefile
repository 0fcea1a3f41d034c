# osstore: build, test, install. See README.md.
#
#   make           the library, the C client and the admin CLI (cargo + cc)
#   make deps      install the Debian packages the tests need (DEB_PACKAGES)
#   make demo      build and run the demo (a C program using the library)
#   make check     every test: lint, Rust, C (valgrind and ASan), packaging
#   make install   PREFIX, LIBDIR, INCLUDEDIR, BINDIR, MANDIR, DESTDIR honoured
#   make deb       Debian packages (dpkg-buildpackage -b) into $(BUILD)/deb
#
# CFLAGS, CPPFLAGS and LDFLAGS are honoured as distributions pass them; the
# project's own C warnings and language level are in C_STRICT.

SHELL      := /bin/bash

PREFIX     ?= /usr/local
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
BINDIR     ?= $(PREFIX)/bin
DATADIR    ?= $(PREFIX)/share
MANDIR     ?= $(DATADIR)/man
DESTDIR    ?=

CFLAGS   ?= -O2 -g
CPPFLAGS ?=
LDFLAGS  ?=
C_STRICT := -std=c99 -pedantic -Wall -Wextra -Werror
CARGO    ?= cargo
BUILD    ?= build
export CARGO_TARGET_DIR ?= $(CURDIR)/target

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
MAJOR   := $(firstword $(subst ., ,$(VERSION)))
SONAME  := libosstore.so.$(MAJOR)
# Native libraries the Rust static archive needs (rustc --print
# native-static-libs), less -lgcc_s: the compiler driver adds the unwinder
# itself (libgcc_s in a dynamic link, libgcc_eh in a -static one, where
# -lgcc_s would fail).
PRIVATE_LIBS := -lutil -lrt -lpthread -lm -ldl -lc

RUST_ARCHIVE := $(CARGO_TARGET_DIR)/release/libosstore.a
GEN_HEADER   := $(CARGO_TARGET_DIR)/release/osstore.h
LIB_DIR      := $(BUILD)/lib
SHARED       := $(LIB_DIR)/libosstore.so.$(VERSION)
STATIC       := $(LIB_DIR)/libosstore.a
CLI          := $(CARGO_TARGET_DIR)/release/osstore
# A .pc file for the build tree, so tests link the way users do.
PC_UNINST    := $(BUILD)/pkgconfig/osstore.pc
PKG          := PKG_CONFIG_PATH=$(CURDIR)/$(BUILD)/pkgconfig pkg-config
# Tests that mount run in a private mount namespace: nothing they mount can
# outlive them on this machine.
PRIVATE_NS   := tests/in-private-ns.sh
VALGRIND     := valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite
LOGS         := $(BUILD)/check-logs
SANITIZE     := -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

# The one recipe that links a C program against this build tree's library,
# the way users do (pkg-config): $(call link_c,EXTRA FLAGS,SOURCES).
link_c = $(CC) $(C_STRICT) $(CFLAGS) $(CPPFLAGS) $(1) -o $@ $(2) $(LDFLAGS) \
  $$($(PKG) --cflags --libs osstore) -Wl,-rpath,$(CURDIR)/$(LIB_DIR)

.PHONY: FORCE all lib rust-lib cli cli-docs header header-check demo check deps install uninstall clean deb \
        lint test-rust test-c test-c-asan test-install test-symbols test-dlopen test-client test-client-server test-load fuzz-smoke check-summary \
        test-man test-abi test-deb abi-baseline test-c-cache \
        bench fuzz loadtest

all: lib client cli

lib: $(SHARED) $(STATIC) $(PC_UNINST)

# --- system packages -------------------------------------------------------
# What the tests need beyond the machine's Rust toolchain and gcc. Installed
# only by `make deps` (as root), which make check and make demo run: it
# calls apt-get only when one is missing.
DEB_PACKAGES := valgrind pkg-config util-linux attr g++ strace xfsprogs btrfs-progs clang libclang-rt-dev \
                abigail-tools debhelper dpkg-dev lintian \
                docker-registry skopeo apache2-utils
deps_missing = for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done
deps:
	@missing=$$($(deps_missing)); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages:" $$missing "(run 'make deps' as root)"; exit 1; fi; \
	echo "installing:" $$missing; \
	apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null

# --- the library -----------------------------------------------------------
rust-lib: $(RUST_ARCHIVE)

# cargo decides what to rebuild, so its recipe always runs; as a real recipe
# of the archive (not an empty rule on a phony target) it makes make read
# the archive's time again afterwards, so what is linked from it is relinked
# exactly when cargo changed it.
$(RUST_ARCHIVE) $(GEN_HEADER) &: FORCE
	$(CARGO) build --release --lib --locked

FORCE:

# The shared library is linked from the static archive so that the version
# script tags every exported symbol with OSSTORE_0.1 and hides the rest
# (rustc's own cdylib version script would leave them unversioned).
$(SHARED): $(RUST_ARCHIVE) osstore.map
	@mkdir -p $(LIB_DIR)
	$(CC) -shared -o $@ $(LDFLAGS) -Wl,--whole-archive $(RUST_ARCHIVE) -Wl,--no-whole-archive \
	  -Wl,--version-script=osstore.map -Wl,-soname,$(SONAME) -Wl,--gc-sections \
	  -Wl,-z,relro -Wl,-z,now -Wl,-z,noexecstack $(PRIVATE_LIBS)
	ln -sf libosstore.so.$(VERSION) $(LIB_DIR)/$(SONAME)
	ln -sf $(SONAME) $(LIB_DIR)/libosstore.so

$(STATIC): $(RUST_ARCHIVE)
	@mkdir -p $(LIB_DIR)
	cp $(RUST_ARCHIVE) $@

define make_pc
	@mkdir -p $(dir $(2))
	sed -e 's|@PREFIX@|$(3)|' -e 's|@LIBDIR@|$(4)|' -e 's|@INCLUDEDIR@|$(5)|' \
	    -e 's|@VERSION@|$(VERSION)|' -e 's|@PRIVATE_LIBS@|$(PRIVATE_LIBS)|' $(1) > $(2)
endef

$(PC_UNINST): osstore.pc.in Cargo.toml
	$(call make_pc,$<,$@,$(CURDIR),$(CURDIR)/$(LIB_DIR),$(CURDIR)/include)

# The committed header must be what cbindgen generates from the sources
# (checked by make check only: building and installing use the generated one).
header-check: $(GEN_HEADER)
	@cmp -s $(GEN_HEADER) include/osstore.h || { \
	  echo "include/osstore.h is stale: run 'make header' and commit it"; \
	  diff -u include/osstore.h $(GEN_HEADER) | head -40; exit 1; }

header: rust-lib
	cp $(GEN_HEADER) include/osstore.h

# --- the admin CLI (a cargo workspace member: cli/) --------------------------
cli: $(CLI)

$(CLI): FORCE
	$(CARGO) build --release --locked -p osstore-cli --bin osstore

# Its man pages and shell completions, generated from its clap definition.
CLI_DOCS := $(BUILD)/cli-docs
cli-docs: $(CLI_DOCS)/osstore.1
$(CLI_DOCS)/osstore.1: cli/src/args.rs cli/examples/gen-docs.rs
	$(CARGO) run --release --locked -q -p osstore-cli --example gen-docs -- $(CLI_DOCS)

# --- the C client, the demo and the man pages --------------------------------
include client/client.mk
include fuzz/fuzz.mk
include bench/bench.mk
include tests/c/copy.mk
include man/man.mk

DEMO := $(BUILD)/osstore-demo
$(DEMO): examples-c/demo.c $(CLIENT_ARCHIVE) $(CLIENT_HEADER) $(SHARED) $(PC_UNINST)
	$(call link_c,-I$(CLIENT_SRC),$< $(CLIENT_ARCHIVE))

demo: deps $(DEMO)
	$(PRIVATE_NS) $(DEMO)

# The demo again, built with AddressSanitizer/UBSan (leak detection on), for
# make check.
DEMO_ASAN := $(BUILD)/osstore-demo-asan
$(DEMO_ASAN): examples-c/demo.c $(CLIENT_LIB) $(CLIENT_HEADER) $(SHARED) $(PC_UNINST)
	$(call link_c,$(SANITIZE) -I$(CLIENT_SRC),$< $(CLIENT_LIB))

# --- tests -----------------------------------------------------------------
check: deps lint header-check lib client cli $(DEMO) $(DEMO_ASAN)
	@rm -rf $(LOGS) && mkdir -p $(LOGS)
	$(MAKE) --no-print-directory test-rust test-c test-c-asan test-symbols test-dlopen test-install test-client test-client-server test-load fuzz-smoke \
	  test-man test-abi test-deb
	$(PRIVATE_NS) env ASAN_OPTIONS=detect_leaks=1 $(DEMO_ASAN) > $(LOGS)/demo.log 2>&1 || { cat $(LOGS)/demo.log; exit 1; }
	@echo "demo (under ASan/UBSan): ok ($(LOGS)/demo.log)"
	@$(MAKE) --no-print-directory check-summary

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets --locked --workspace -- -D warnings

test-rust:
	$(PRIVATE_NS) $(CARGO) test --release --locked --workspace -- --nocapture 2>&1 | tee $(LOGS)/rust.log; exit $${PIPESTATUS[0]}

$(BUILD)/tests/test_api: tests/c/test_api.c tests/c/check.h $(SHARED) $(PC_UNINST)
	@mkdir -p $(dir $@)
	$(call link_c,-D_GNU_SOURCE,$<)

$(BUILD)/tests/test_api_asan: tests/c/test_api.c tests/c/check.h $(SHARED) $(PC_UNINST)
	@mkdir -p $(dir $@)
	$(call link_c,$(SANITIZE) -D_GNU_SOURCE,$<)

# The header must compile as C99 and as C++, pedantically.
$(BUILD)/tests/header_c99.o $(BUILD)/tests/header_cxx.o: include/osstore.h
	@mkdir -p $(BUILD)/tests
	printf '#include <osstore.h>\nint main(void) { return os_version() == 0; }\n' > $(BUILD)/tests/header.c
	$(CC) $(C_STRICT) -Iinclude -c -o $(BUILD)/tests/header_c99.o $(BUILD)/tests/header.c
	$(CXX) -x c++ -std=c++11 -Wall -Wextra -Werror -pedantic -Iinclude -c -o $(BUILD)/tests/header_cxx.o $(BUILD)/tests/header.c

test-c: $(BUILD)/tests/test_api $(BUILD)/tests/header_c99.o
	$(PRIVATE_NS) $(VALGRIND) $(BUILD)/tests/test_api 2>&1 | tee $(LOGS)/c-valgrind.log; exit $${PIPESTATUS[0]}

test-c-asan: $(BUILD)/tests/test_api_asan
	$(PRIVATE_NS) env ASAN_OPTIONS=detect_leaks=1 $(BUILD)/tests/test_api_asan 2>&1 | tee $(LOGS)/c-asan.log; exit $${PIPESTATUS[0]}

# The cache (docs/cache.md) through the header only; part of test-c.
test-c: test-c-cache
$(BUILD)/tests/test_cache: tests/c/test_cache.c tests/c/check.h $(SHARED) $(PC_UNINST)
	@mkdir -p $(dir $@)
	$(call link_c,-D_GNU_SOURCE,$<)
test-c-cache: $(BUILD)/tests/test_cache
	@mkdir -p $(LOGS)
	$(PRIVATE_NS) $(BUILD)/tests/test_cache 2>&1 | tee $(LOGS)/c-cache.log; exit $${PIPESTATUS[0]}

# Only os_* symbols may be exported, each tagged OSSTORE_0.1, and the SONAME set;
# the header declares only prefixed names and documents every function.
test-symbols: $(SHARED)
	tests/check_symbols.sh $(SHARED) $(SONAME) 2>&1 | tee $(LOGS)/symbols.log; exit $${PIPESTATUS[0]}
	tests/check_header.py include/osstore.h 2>&1 | tee $(LOGS)/header.log; exit $${PIPESTATUS[0]}

# The ABI guard (abidiff against the 0.1 baseline in abi/, symbol versions,
# the header's layout, the Debian symbols file): tests/check_abi.sh.
test-abi: $(SHARED) $(STATIC)
	tests/check_abi.sh $(SHARED) include/osstore.h 2>&1 | tee $(LOGS)/abi.log; exit $${PIPESTATUS[0]}

# A new baseline, for a release that may change the ABI (a new SONAME).
abi-baseline: $(SHARED)
	abidw --no-corpus-path --no-comp-dir-path $(SHARED) > abi/libosstore.so.$(MAJOR)-$(VERSION).abi

$(BUILD)/tests/test_dlopen: tests/c/test_dlopen.c tests/c/check.h
	@mkdir -p $(dir $@)
	$(CC) $(C_STRICT) $(CFLAGS) $(CPPFLAGS) -D_GNU_SOURCE -Iinclude -o $@ $< $(LDFLAGS) -ldl

test-dlopen: $(BUILD)/tests/test_dlopen $(SHARED)
	$(PRIVATE_NS) env LD_LIBRARY_PATH=$(CURDIR)/$(LIB_DIR) $(VALGRIND) $(BUILD)/tests/test_dlopen 2>&1 | tee $(LOGS)/dlopen.log; exit $${PIPESTATUS[0]}

# Install into a scratch DESTDIR and build a program against the installed
# tree with pkg-config, shared and static.
test-install: lib client cli
	tests/check_install.sh "$(MAKE)" 2>&1 | tee $(LOGS)/install.log; exit $${PIPESTATUS[0]}

test-client:
	$(MAKE) --no-print-directory check-client 2>&1 | tee $(LOGS)/client.log; exit $${PIPESTATUS[0]}

# Bounded coverage-guided fuzzing; `make fuzz` runs the long version.
fuzz-smoke:
	$(MAKE) --no-print-directory fuzz-client-smoke 2>&1 | tee $(LOGS)/fuzz-client.log; exit $${PIPESTATUS[0]}
	$(MAKE) --no-print-directory fuzz-rust-smoke 2>&1 | tee $(LOGS)/fuzz-rust.log; exit $${PIPESTATUS[0]}

fuzz:
	$(MAKE) --no-print-directory fuzz-client
	$(MAKE) --no-print-directory fuzz-rust

check-summary:
	@tests/summarize.sh $(LOGS)

# --- install ---------------------------------------------------------------
# The header installed is the one generated with the library being installed.
INSTALLED := $(LIBDIR)/libosstore.so.$(VERSION) $(LIBDIR)/$(SONAME) $(LIBDIR)/libosstore.so \
  $(LIBDIR)/libosstore.a $(LIBDIR)/libosstore_client.a $(LIBDIR)/pkgconfig/osstore.pc \
  $(INCLUDEDIR)/osstore.h $(INCLUDEDIR)/osstore_client.h $(BINDIR)/osstore-client $(BINDIR)/osstore \
  $(DATADIR)/bash-completion/completions/osstore $(DATADIR)/zsh/vendor-completions/_osstore \
  $(addprefix $(MANDIR)/,$(MAN_PAGES))

install: lib client cli man
	install -d $(addprefix $(DESTDIR),$(sort $(dir $(INSTALLED))))
	install -m 0644 $(SHARED) $(DESTDIR)$(LIBDIR)/
	ln -sf libosstore.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libosstore.so
	install -m 0644 $(STATIC) $(CLIENT_ARCHIVE) $(DESTDIR)$(LIBDIR)/
	install -m 0644 $(GEN_HEADER) $(CLIENT_HEADER) $(DESTDIR)$(INCLUDEDIR)/
	$(call make_pc,osstore.pc.in,$(DESTDIR)$(LIBDIR)/pkgconfig/osstore.pc,$(PREFIX),$(LIBDIR),$(INCLUDEDIR))
	install -m 0755 $(BUILD)/osstore-client $(CLI) $(DESTDIR)$(BINDIR)/
	install -m 0644 $(CLI_DOCS)/osstore.bash $(DESTDIR)$(DATADIR)/bash-completion/completions/osstore
	install -m 0644 $(CLI_DOCS)/_osstore $(DESTDIR)$(DATADIR)/zsh/vendor-completions/_osstore
	$(foreach page,$(MAN_PAGES),install -m 0644 $(BUILD)/man/$(notdir $(page)) $(DESTDIR)$(MANDIR)/$(page) &&) true

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))

clean:
	rm -rf $(BUILD)
	$(CARGO) clean

# --- load test -------------------------------------------------------------
LOADTEST := $(BUILD)/tests/loadtest
$(LOADTEST): tests/load/loadtest.c tests/c/check.h $(SHARED) $(PC_UNINST)
	@mkdir -p $(dir $@)
	$(call link_c,-D_GNU_SOURCE,$<)

# 1,000 connections and 1,000,000 requests; make check runs 100,000.
LOAD_CONNECTIONS ?= 1000
LOAD_REQUESTS    ?= 1000000
loadtest: $(LOADTEST)
	$(PRIVATE_NS) $(LOADTEST) $(LOAD_CONNECTIONS) $(LOAD_REQUESTS)

# make check runs it plain (memory figures) and with AddressSanitizer/UBSan.
LOADTEST_ASAN := $(BUILD)/tests/loadtest-asan
$(LOADTEST_ASAN): tests/load/loadtest.c tests/c/check.h $(SHARED) $(PC_UNINST)
	@mkdir -p $(dir $@)
	$(call link_c,$(SANITIZE) -D_GNU_SOURCE,$<)

test-load: $(LOADTEST) $(LOADTEST_ASAN)
	$(PRIVATE_NS) $(LOADTEST) 1000 100000 2>&1 | tee $(LOGS)/load.log; exit $${PIPESTATUS[0]}
	$(PRIVATE_NS) env ASAN_OPTIONS=detect_leaks=1 $(LOADTEST_ASAN) 1000 100000 2>&1 | tee $(LOGS)/load-asan.log; exit $${PIPESTATUS[0]}

# --- the C client against this library's server -----------------------------
SERVE_STORE := $(BUILD)/tests/serve_store
$(SERVE_STORE): tests/c/serve_store.c $(SHARED) $(PC_UNINST)
	@mkdir -p $(dir $@)
	$(call link_c,-D_GNU_SOURCE,$<)

test-client-server: $(SERVE_STORE) $(BUILD)/osstore-client
	$(PRIVATE_NS) tests/c/client_server_test.sh $(SERVE_STORE) $(BUILD)/osstore-client 2>&1 | tee $(LOGS)/client-server.log; exit $${PIPESTATUS[0]}

# --- Debian packages -----------------------------------------------------------
# dpkg-buildpackage -b in a copy of the sources under $(DEB_DIR)/src (it
# writes the .debs next to the source tree), with cargo's output in
# $(DEB_DIR)/cargo: out of the way of the main build's directories.
DEB_DIR := $(BUILD)/deb
DEB_SRC := $(DEB_DIR)/src/osstore-$(VERSION)
test-deb:
	LOGS=$(LOGS) tests/check_deb.sh "$(MAKE)" 2>&1 | tee $(LOGS)/deb.log; exit $${PIPESTATUS[0]}

deb:
	rm -rf $(DEB_DIR)/src && mkdir -p $(DEB_SRC)
	git ls-files -z --cached --others --exclude-standard | tar --null -T - --ignore-failed-read -cf - | tar -xf - -C $(DEB_SRC)
	cd $(DEB_SRC) && CARGO_TARGET_DIR=$(abspath $(DEB_DIR))/cargo dpkg-buildpackage -b -us -uc
	lintian --fail-on error,warning --info $(DEB_DIR)/src/*.changes
