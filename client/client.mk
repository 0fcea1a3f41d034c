# client.mk: the libc-only C client for the store socket protocol
# (client/osstore_client.[ch], installed as libosstore_client.a), the
# osstore-client command, its tests and its fuzzer.  Included by the
# top-level Makefile, which sets BUILD, VERSION, CFLAGS, CPPFLAGS and LDFLAGS.
#
#   client             $(BUILD)/osstore-client and $(BUILD)/lib/libosstore_client.a
#   check-client       parser/encoder unit tests under valgrind, then under
#                      ASan+UBSan; then the compatibility test against a fake
#                      reference (Python) server
#   fuzz-client-smoke  libFuzzer on the reply parser for FUZZ_SECONDS
#   fuzz-client        the same for FUZZ_LONG_SECONDS

BUILD ?= build
CFLAGS ?= -O2 -g
C_STRICT ?= -std=c99 -pedantic -Wall -Wextra -Werror
CLANG ?= clang
VALGRIND ?= valgrind
FUZZ_SECONDS ?= 20
FUZZ_LONG_SECONDS ?= 600

# Sources are found relative to this file, whatever directory make runs in.
CLIENT_MK := $(lastword $(MAKEFILE_LIST))
CLIENT_ROOT := $(abspath $(dir $(CLIENT_MK))..)
CLIENT_SRC := $(CLIENT_ROOT)/client
CLIENT_BUILD := $(BUILD)/client
CLIENT_CPPFLAGS := -D_GNU_SOURCE -I$(CLIENT_SRC) $(CPPFLAGS)
CLIENT_LIB := $(CLIENT_SRC)/osstore_client.c
CLIENT_HEADER := $(CLIENT_SRC)/osstore_client.h
CLIENT_DEPS := $(CLIENT_LIB) $(CLIENT_HEADER) $(CLIENT_MK)
# The client library as installed: a static archive of osstore_client.c.
CLIENT_ARCHIVE := $(BUILD)/lib/libosstore_client.a

CLIENT_TEST_SRC := $(CLIENT_ROOT)/tests/c/client_parser_test.c
CLIENT_TEST := $(CLIENT_BUILD)/client_parser_test
CLIENT_TEST_SAN := $(CLIENT_BUILD)/client_parser_test-asan
# Valgrind 3.19 cannot read the DWARF 5 that clang 14 emits by default.
CLIENT_VALGRIND_CFLAGS := -gdwarf-4
CLIENT_SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all \
                    -fno-omit-frame-pointer

CLIENT_FUZZER := $(CLIENT_BUILD)/client_reply_fuzz
CLIENT_FUZZ_CFLAGS := -g -O1 -Wall -Wextra -Werror -std=c99 -pedantic \
                      -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
CLIENT_FUZZ_SEEDS := $(CLIENT_ROOT)/fuzz/c/corpus/client_reply
CLIENT_FUZZ_CORPUS := $(CLIENT_BUILD)/fuzz-corpus
# libFuzzer's exit status tells the outcome; crashes land in fuzz-artifacts/.
CLIENT_FUZZ_RUN = mkdir -p $(CLIENT_FUZZ_CORPUS) $(CLIENT_BUILD)/fuzz-artifacts && \
    cp $(CLIENT_FUZZ_SEEDS)/* $(CLIENT_FUZZ_CORPUS)/ && \
    $(CLIENT_FUZZER) -max_total_time=$(1) -max_len=8192 -timeout=10 \
        -print_final_stats=1 -artifact_prefix=$(CLIENT_BUILD)/fuzz-artifacts/ \
        $(CLIENT_FUZZ_CORPUS)

.PHONY: client check-client fuzz-client-smoke fuzz-client

client: $(BUILD)/osstore-client $(CLIENT_ARCHIVE)

$(CLIENT_BUILD)/osstore_client.o: $(CLIENT_DEPS)
	@mkdir -p $(@D)
	$(CC) $(C_STRICT) $(CFLAGS) $(CLIENT_CPPFLAGS) -c -o $@ $(CLIENT_LIB)

$(CLIENT_ARCHIVE): $(CLIENT_BUILD)/osstore_client.o
	@mkdir -p $(@D)
	rm -f $@
	$(AR) rcs $@ $<

$(BUILD)/osstore-client: $(CLIENT_SRC)/osstore-client.c $(CLIENT_ARCHIVE)
	@mkdir -p $(@D)
	$(CC) $(C_STRICT) $(CFLAGS) $(CLIENT_CPPFLAGS) -DOSC_VERSION='"$(VERSION)"' -o $@ $< $(LDFLAGS) $(CLIENT_ARCHIVE)

$(CLIENT_TEST): $(CLIENT_TEST_SRC) $(CLIENT_DEPS)
	@mkdir -p $(@D)
	$(CC) $(C_STRICT) $(CFLAGS) $(CLIENT_VALGRIND_CFLAGS) $(CLIENT_CPPFLAGS) -o $@ $(CLIENT_TEST_SRC) $(CLIENT_LIB)

$(CLIENT_TEST_SAN): $(CLIENT_TEST_SRC) $(CLIENT_DEPS)
	@mkdir -p $(@D)
	$(CC) $(C_STRICT) $(CFLAGS) $(CLIENT_SAN_FLAGS) $(CLIENT_CPPFLAGS) -o $@ $(CLIENT_TEST_SRC) $(CLIENT_LIB)

check-client: $(BUILD)/osstore-client $(CLIENT_TEST) $(CLIENT_TEST_SAN)
	$(VALGRIND) -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
	    $(CLIENT_TEST)
	ASAN_OPTIONS=detect_leaks=1 $(CLIENT_TEST_SAN)
	$(CLIENT_ROOT)/tests/c/client_compat_test.sh $(BUILD)/osstore-client

# clang and libclang-rt-dev (libFuzzer) come from `make deps`.
$(CLIENT_FUZZER): $(CLIENT_ROOT)/fuzz/c/client_reply_fuzz.c $(CLIENT_DEPS)
	@mkdir -p $(@D)
	$(CLANG) $(CLIENT_FUZZ_CFLAGS) $(CLIENT_CPPFLAGS) -o $@ $< $(CLIENT_LIB)

fuzz-client-smoke: $(CLIENT_FUZZER)
	$(call CLIENT_FUZZ_RUN,$(FUZZ_SECONDS))

fuzz-client: $(CLIENT_FUZZER)
	$(call CLIENT_FUZZ_RUN,$(FUZZ_LONG_SECONDS))
