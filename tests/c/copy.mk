# The C test of copies with progress and cancellation and of the logging
# hook (tests/c/test_copy.c), run by make test-c under valgrind.
$(BUILD)/tests/test_copy: tests/c/test_copy.c tests/c/check.h $(SHARED) $(PC_UNINST)
	@mkdir -p $(dir $@)
	$(call link_c,-D_GNU_SOURCE,$< -lpthread)

.PHONY: test-c-copy
test-c-copy: $(BUILD)/tests/test_copy
	@mkdir -p $(LOGS)
	$(PRIVATE_NS) $(VALGRIND) $(BUILD)/tests/test_copy 2>&1 | tee $(LOGS)/c-copy.log; exit $${PIPESTATUS[0]}

test-c: test-c-copy
