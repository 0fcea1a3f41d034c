#!/usr/bin/env bash
# The ABI guard: the library must keep the released 0.1 interface.
#   1. abidiff between the committed baseline (abi/libosstore.so.0-0.1.abi,
#      abidw of the 0.1 library) and LIB reports no incompatible change
#      (exit status without ABIDIFF_ABI_INCOMPATIBLE_CHANGE or an error bit);
#   2. every symbol of the baseline is exported with the same version, as
#      the default one;
#   3. the header's layout (abi/layout.py: struct sizes, member offsets and
#      sizes, constant values) still has every line of abi/layout-0.1.txt,
#      since Rust's debug info does not describe the C types for abidiff;
#   4. debian/libosstore0.symbols is what osstore.map implies.
# Then it checks itself: a library that lost a symbol and a header whose
# struct changed must both be caught.
# Usage: check_abi.sh LIB HEADER; prints "abi: N passed, M failed".
set -u
lib=$1 header=$2
baseline=abi/libosstore.so.0-0.1.abi layout_baseline=abi/layout-0.1.txt
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
work=$(mktemp -d /tmp/osstore-abi-XXXXXX)
trap 'rm -rf "$work"' EXIT

# abidiff's exit status: bit 1 error, 2 usage error, 4 change, 8 incompatible change.
abi_compatible() {
  abidiff "$baseline" "$1" > "$work/abidiff.out" 2>&1
  local rc=$?
  [ $((rc & 11)) -eq 0 ] || { cat "$work/abidiff.out"; return 1; }
}

# "name version" of the default-versioned symbols LIB defines.
exported() {
  objdump -T "$1" | awk '$2 == "g" && $4 != "*UND*" && $4 != "*ABS*" {print $NF, $(NF-1)}'
}
symbols_kept() {
  local have want
  have=$(exported "$1")
  want=$(grep -o "<elf-symbol name='[^']*' version='[^']*' is-default-version='yes'" "$baseline" |
         sed "s/<elf-symbol name='\([^']*\)' version='\([^']*\)'.*/\1 \2/")
  [ -n "$want" ] || { echo "no symbols in $baseline"; return 1; }
  local missing
  missing=$(comm -23 <(sort <<< "$want") <(sort <<< "$have"))
  [ -z "$missing" ] || { echo "gone or re-versioned: $missing"; return 1; }
}

layout_kept() {
  local dir=$work/layout-$RANDOM
  mkdir -p "$dir" && cp "$1" "$dir/osstore.h"
  abi/layout.py "$dir/osstore.h" > "$dir/layout.c" &&
    cc -std=c99 -Wall -Wextra -Werror -pedantic -I"$dir" -o "$dir/layout" "$dir/layout.c" &&
    "$dir/layout" > "$dir/layout.txt" || { echo "cannot build the layout program"; return 1; }
  local lost
  lost=$(comm -23 <(sort "$layout_baseline") <(sort "$dir/layout.txt"))
  [ -z "$lost" ] || { echo "layout changed: $lost"; return 1; }
}

abi_compatible "$lib" && ok || bad "abidiff: incompatible with the 0.1 baseline"
symbols_kept "$lib" && ok || bad "symbols of 0.1 are missing or re-versioned"
layout_kept "$header" && ok || bad "the header's layout differs from 0.1"
diff -u debian/libosstore0.symbols <(abi/symbols-from-map.sh osstore.map) && ok ||
  bad "debian/libosstore0.symbols differs from osstore.map: run abi/symbols-from-map.sh > debian/libosstore0.symbols"

# The guard catches breakage: a library without os_store_gc, and a header
# whose options struct lost a member.
grep -v 'os_store_gc;' osstore.map > "$work/broken.map"
cc -shared -o "$work/libbroken.so" -Wl,--whole-archive "$(dirname "$lib")/libosstore.a" -Wl,--no-whole-archive \
  -Wl,--version-script="$work/broken.map" -Wl,-soname,libosstore.so.0 -lutil -lrt -lpthread -lm -ldl -lc
abi_compatible "$work/libbroken.so" > /dev/null && bad "abidiff missed a removed function" || ok
symbols_kept "$work/libbroken.so" > /dev/null && bad "the symbol check missed a removed function" || ok
sed 's/^  unsigned int socket_mode;$/  unsigned short socket_mode;/' "$header" > "$work/broken.h"
cmp -s "$header" "$work/broken.h" && bad "could not make a broken header" || ok
layout_kept "$work/broken.h" > /dev/null && bad "the layout check missed a changed member" || ok

echo "abi: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
