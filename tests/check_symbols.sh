#!/usr/bin/env bash
# Checks the shared library's exports: only os_* symbols, each tagged with the
# version node of osstore.map that lists it by name, and the SONAME.
# Prints "symbols: N passed, M failed".
set -u
lib=$1 soname=$2 map=${3:-osstore.map}
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }

# "name node" for every name the version script lists.
listed=$(awk '/^OSSTORE_[0-9.]+ *\{/ {node=$1} /^ *os_[a-z0-9_]+;/ {gsub(/[ ;]/, ""); print $0, node}' "$map")
exports=$(objdump -T "$lib" | awk '$2 == "g" && $4 != "*UND*" && $4 != "*ABS*" {print $(NF-1), $NF}')
[ -n "$exports" ] && ok || bad "no exported symbols"
while read -r version name; do
  case "$name" in os_*) ok ;; *) bad "exported symbol $name is not os_*" ;; esac
  want=$(awk -v n="$name" '$1 == n {print $2}' <<< "$listed")
  [ -n "$want" ] && [ "$version" = "$want" ] && ok || bad "$name has version '$version', want '${want:-a node in $map}'"
done <<< "$exports"
readelf -d "$lib" | grep -q "Library soname: \[$soname\]" && ok || bad "SONAME is not $soname"
# Every function the header declares is exported.
for fn in $(grep -o '\bos_[a-z_0-9]*(' include/osstore.h | tr -d '(' | sort -u); do
  grep -qw "$fn" <<< "$exports" && ok || bad "$fn is declared but not exported"
done
echo "symbols: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
