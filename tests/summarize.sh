#!/usr/bin/env bash
# Adds up the totals of every suite that make check ran (cargo test's
# "test result:" lines and the "[suite:] N passed, M failed" lines of the
# others) and prints them as the last line.
set -u
logs=$1
passed=0 failed=0 skipped=0
while read -r p f s; do
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
done < <(
  cat "$logs"/*.log 2>/dev/null |
  sed -E -n -e 's/^test result: [a-zA-Z]+\. ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored.*/\1 \2 \3/p' \
            -e 's/^([A-Za-z0-9_-]+: )?([0-9]+) passed, ([0-9]+) failed$/\2 \3 0/p'
)
skips=$(cat "$logs"/*.log 2>/dev/null | grep -c '^SKIP' || true)
echo "SKIP lines (tests or parts that could not run here): $skips"
echo "total: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
