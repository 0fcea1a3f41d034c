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
#   test-man   man/check-man.sh: each page renders without warnings, the
#              osstore-COMMAND pages are exactly those of CLI_COMMANDS, and
#              osstore(3) shows every function of the header

MAN_DIR      := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
CLI_COMMANDS := info ls du config config-get config-set gc evict fsck meta export push pull serve
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
	$(MAN_DIR)/check-man.sh $(BUILD)/man $(CLI_DOCS) $(GEN_HEADER) "$(CLI_COMMANDS)" 2>&1 | tee $(LOGS)/man.log; exit $${PIPESTATUS[0]}
