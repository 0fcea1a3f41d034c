# bench/bench.mk: `make bench`, included by the top-level Makefile (which
# sets BUILD, CC, CFLAGS, SHARED, PC_UNINST, PKG, PRIVATE_NS, CARGO).
#
#   make bench                 release library, bench/bench.c linked against
#                              libosstore.so via pkg-config, the fidelity
#                              checker (bench/compare), then every row; writes
#                              bench/results.md (about 3 minutes)
#   make bench BENCH_QUICK=1   each row briefly (smoke test, under a minute);
#                              writes $(BUILD)/bench/results-quick.md instead
#   make bench-scale           every row plus the 200,000-file tree's rows and the
#                              cold-cache rows (an ext4 on a loop file in
#                              $(BUILD)/bench, on the disk; about 25 minutes,
#                              needs ~12 GiB of RAM for the tmpfs); writes
#                              bench/results.md
#
# Runs as root in a private mount namespace: it mounts a tmpfs and loop
# ext4/XFS images, which vanish with it. `make deps` installs xfsprogs
# (mkfs.xfs) and pkg-config when missing; without mkfs.xfs the XFS rows say
# they skip.

BENCH_MK_DIR  := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
BENCH_BUILD   := $(BUILD)/bench
BENCH_BIN     := $(BENCH_BUILD)/osstore-bench
BENCH_COMPARE := $(CARGO_TARGET_DIR)/release/osstore-bench-compare
BENCH_RESULTS := $(if $(filter-out 0,$(BENCH_QUICK)),$(BENCH_BUILD)/results-quick.md,$(BENCH_MK_DIR)/results.md)
BENCH_FLAGS   := $(if $(filter-out 0,$(BENCH_QUICK)),--quick) \
                 $(if $(filter-out 0,$(BENCH_SCALE)),--scale --disk $(CURDIR)/$(BENCH_BUILD))

.PHONY: bench bench-scale bench-compare

bench: deps $(BENCH_BIN) bench-compare
	$(PRIVATE_NS) $(BENCH_BIN) $(BENCH_FLAGS) --compare $(BENCH_COMPARE) \
	  --results $(BENCH_RESULTS) --notes $(BENCH_MK_DIR)/notes.md
	$(PRIVATE_NS) $(CARGO_TARGET_DIR)/release/registry-bench --gen $(BENCH_BIN) \
	  --append $(BENCH_RESULTS) $(BENCH_FLAGS)

bench-scale:
	$(MAKE) --no-print-directory bench BENCH_SCALE=1

# The program is compiled against the header generated with the library it
# links ($(GEN_HEADER), first on the include path), so a committed
# include/osstore.h that lags behind cannot break it; otherwise it is built
# the way users build: pkg-config --cflags --libs osstore.
# The fidelity checker: a tiny separate Cargo package, so the main crate's
# manifest stays as it is.
bench-compare:
	cd $(BENCH_MK_DIR)/compare && $(CARGO) build --release --locked

$(BENCH_BIN): $(BENCH_MK_DIR)/bench.c $(BENCH_MK_DIR)/scale.c $(CLIENT_LIB) $(CLIENT_HEADER) $(SHARED) $(PC_UNINST)
	@mkdir -p $(@D)
	$(call link_c,-D_GNU_SOURCE -I$(CLIENT_SRC) -I$(dir $(GEN_HEADER)),$< $(CLIENT_LIB) -lm)
