# man/man.mk: the man pages, included by the top-level Makefile.
#
#   osstore(1), osstore-COMMAND(1)  generated from the CLI's clap definition
#                                   (cli/examples/gen-docs.rs, $(CLI_DOCS))
#   osstore-client(1)               man/osstore-client.1
#   osstore(3)                      generated from the header installed with
#                                   the library (man/gen-osstore3.py), so it
#                                   cannot drift from it
#
#   man        all of them into $(BUILD)/man
#   test-man   each page renders without warnings, and the generated
#              osstore-COMMAND pages are exactly those of CLI_COMMANDS

MAN_DIR      := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
CLI_COMMANDS := ls du gc export serve
MAN_PAGES    := man1/osstore.1 $(patsubst %,man1/osstore-%.1,$(CLI_COMMANDS)) \
                man1/osstore-client.1 man3/osstore.3

.PHONY: man test-man

man: $(addprefix $(BUILD)/man/,$(notdir $(MAN_PAGES)))

$(BUILD)/man/osstore.3: $(MAN_DIR)/gen-osstore3.py $(MAN_DIR)/osstore.3.intro $(GEN_HEADER)
	@mkdir -p $(@D)
	$(MAN_DIR)/gen-osstore3.py $(GEN_HEADER) $(VERSION) $(MAN_DIR)/osstore.3.intro > $@.tmp && mv $@.tmp $@

$(BUILD)/man/osstore-client.1: $(MAN_DIR)/osstore-client.1
	@mkdir -p $(@D)
	cp $< $@

CLI_MAN := $(patsubst %,$(BUILD)/man/%,osstore.1 $(patsubst %,osstore-%.1,$(CLI_COMMANDS)))
$(CLI_MAN): $(BUILD)/man/%: $(CLI_DOCS)/osstore.1
	@mkdir -p $(@D)
	cp $(CLI_DOCS)/$* $@

test-man: man
	@pages=$$(cd $(CLI_DOCS) && ls osstore*.1 | sort); \
	want=$$(printf '%s\n' osstore.1 $(patsubst %,osstore-%.1,$(CLI_COMMANDS)) | sort); \
	[ "$$pages" = "$$want" ] || { echo "FAIL: CLI_COMMANDS in man/man.mk does not match the CLI's pages: $$pages"; exit 1; }
	@for page in $(BUILD)/man/*.[13]; do \
	  out=$$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$$page" 2>&1 >/dev/null); \
	  [ -z "$$out" ] || { echo "FAIL: $$page: $$out"; exit 1; }; \
	done; echo "man: $(words $(MAN_PAGES)) passed, 0 failed"
