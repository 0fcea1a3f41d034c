#!/usr/bin/env bash
# Checks the man pages built into MAN_BUILD: the CLI's generated pages are
# exactly osstore.1 plus one per command of CLI_COMMANDS (man/man.mk), every
# page renders without a warning, and osstore(3) shows every function the
# header declares. Prints "man: N passed, M failed".
# Usage: check-man.sh MAN_BUILD CLI_DOCS HEADER "CLI_COMMANDS"
set -u
man_build=$1 cli_docs=$2 header=$3 commands=$4
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }

pages=$(cd "$cli_docs" && ls osstore*.1 | sort)
want=$(printf '%s\n' osstore.1 $(printf 'osstore-%s.1 ' $commands) | sort)
[ "$pages" = "$want" ] && ok || bad "CLI_COMMANDS in man/man.mk does not match the CLI's pages: $pages"
for page in "$man_build"/*.[13]; do
  out=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)
  [ -z "$out" ] && ok || bad "$page: $out"
done
text=$(LC_ALL=C.UTF-8 MANWIDTH=200 man -l "$man_build/osstore.3" 2>/dev/null)
for fn in $(grep -o '\bos_[a-z_0-9]*(' "$header" | tr -d '(' | sort -u); do
  grep -q "\b$fn(" <<< "$text" && ok || bad "osstore(3) lacks $fn"
done
echo "man: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
