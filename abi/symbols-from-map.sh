#!/usr/bin/env bash
# Prints debian/libosstore0.symbols as osstore.map implies it: every version
# node and every symbol it lists, each with the release that added it
# (OSSTORE_X.Y -> X.Y.0). tests/check_abi.sh compares the committed file
# with this, so the two cannot drift; `abi/symbols-from-map.sh >
# debian/libosstore0.symbols` updates it after adding to osstore.map.
set -eu
map=${1:-osstore.map}
echo "libosstore.so.0 libosstore0 #MINVER#"
echo "* Build-Depends-Package: libosstore-dev"
awk '/^OSSTORE_[0-9.]+ *\{/ { node = $1; ver = substr(node, 9) ".0"; print " " node "@" node " " ver }
     /^ *os_[a-z0-9_]+;/   { gsub(/[ ;]/, ""); print " " $0 "@" node " " ver }' "$map" | LC_ALL=C sort
