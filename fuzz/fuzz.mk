# Coverage-guided fuzzing of the Rust core with libFuzzer, on the STABLE
# toolchain: the libfuzzer-sys crate builds libFuzzer from its C++ source
# (needs g++ or clang++), and rustc instruments the code with
# sanitizer-coverage flags. Included by the top-level Makefile.
#
#   fuzz-rust-build   builds the targets (fuzz/fuzz_targets/) into fuzz/target
#   fuzz-rust-smoke   runs each target for FUZZ_SECONDS (20); fails on a crash
#   fuzz-rust         runs each target for FUZZ_LONG_SECONDS (600)
#
# Seeds: fuzz/corpus/<target> (committed); what the fuzzer adds goes to
# fuzz/target/corpus/<target>; crashes to fuzz/target/artifacts/<target>/.
# Every crash found becomes a regression test.

FUZZ_RUST_MK := $(lastword $(MAKEFILE_LIST))
FUZZ_RUST_DIR := $(abspath $(dir $(FUZZ_RUST_MK)))
CARGO ?= cargo
FUZZ_SECONDS ?= 20
FUZZ_LONG_SECONDS ?= 600
FUZZ_RUST_TARGETS := ids_paths protocol
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros.
FUZZ_RUST_TRIPLE := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
FUZZ_RUST_BIN := $(FUZZ_RUST_DIR)/target/$(FUZZ_RUST_TRIPLE)/release
FUZZ_RUST_FLAGS := -Cpasses=sancov-module \
  -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
  -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares \
  --cfg fuzzing -Cdebug-assertions -Coverflow-checks

.PHONY: fuzz-rust-build fuzz-rust-smoke fuzz-rust

# Not --locked: osstore is a path dependency, so a dependency added to the
# main crate must be resolvable here without a hand-edited fuzz/Cargo.lock.
fuzz-rust-build:
	cd $(FUZZ_RUST_DIR) && env -u CARGO_TARGET_DIR -u CARGO_ENCODED_RUSTFLAGS RUSTFLAGS='$(FUZZ_RUST_FLAGS)' \
	  $(CARGO) build --release --bins --target $(FUZZ_RUST_TRIPLE) --target-dir $(FUZZ_RUST_DIR)/target

fuzz-rust-smoke: fuzz-rust-build
	$(FUZZ_RUST_DIR)/run.sh $(FUZZ_SECONDS) $(FUZZ_RUST_BIN) $(FUZZ_RUST_TARGETS)

fuzz-rust: fuzz-rust-build
	$(FUZZ_RUST_DIR)/run.sh $(FUZZ_LONG_SECONDS) $(FUZZ_RUST_BIN) $(FUZZ_RUST_TARGETS)
