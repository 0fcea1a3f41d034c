#!/usr/bin/env bash
# Checks the shared library's exports: only os_* symbols, every one tagged
# with a version node, and the SONAME. Prints "symbols: N passed, M failed".
set -u
lib=$1 soname=$2
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }

exports=$(objdump -T "$lib" | awk '$2 == "g" && $4 != "*UND*" && $4 != "*ABS*" {print $(NF-1), $NF}')
[ -n "$exports" ] && ok || bad "no exported symbols"
while read -r version name; do
  case "$name" in os_*) ok ;; *) bad "exported symbol $name is not os_*" ;; esac
  [ "$version" = "OSSTORE_0.1" ] && ok || bad "$name has version '$version', want OSSTORE_0.1"
done <<< "$exports"
readelf -d "$lib" | grep -q "Library soname: \[$soname\]" && ok || bad "SONAME is not $soname"
# Every function the header declares is exported.
for fn in $(grep -o '\bos_[a-z_]*(' include/osstore.h | tr -d '(' | sort -u); do
  grep -qw "$fn" <<< "$exports" && ok || bad "$fn is declared but not exported"
done
echo "symbols: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
