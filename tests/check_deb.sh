#!/usr/bin/env bash
# Builds the Debian packages (make deb: dpkg-buildpackage, then lintian
# with no error or warning allowed), installs them with dpkg -i, builds and
# runs a C program with pkg-config --cflags --libs osstore and one with the
# client library, runs both commands and reads the man pages, then purges
# the packages and checks that nothing they installed is left.
# Needs root (dpkg -i); prints "deb: N passed, M failed" or a SKIP line.
set -u
make=$1
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
check() { if "$@" >/dev/null 2>&1; then ok; else bad "$*"; fi; }
packages="libosstore0 libosstore-dev osstore"

if [ "$(id -u)" != 0 ]; then
  echo "SKIP deb: installing packages with dpkg -i needs root"; exit 0
fi
for p in $packages; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    echo "SKIP deb: $p is installed on this machine already; not replacing it"; exit 0
  fi
done

$make --no-print-directory deb > "${LOGS:-/tmp}/deb-build.log" 2>&1 && ok || {
  bad "make deb (see ${LOGS:-/tmp}/deb-build.log)"; tail -30 "${LOGS:-/tmp}/deb-build.log"; }
debs=$(ls build/deb/src/*.deb 2>/dev/null | grep -v dbgsym)
[ "$(wc -w <<< "$debs")" = 3 ] && ok || bad "want 3 packages, got: $debs"
[ "$(ls build/deb/src/*-dbgsym_*.deb 2>/dev/null | wc -l)" = 2 ] && ok || bad "want 2 -dbgsym packages"

work=$(mktemp -d /tmp/osstore-deb-XXXXXX)
trap 'dpkg --purge $packages >/dev/null 2>&1; rm -rf "$work"' EXIT
files=$(for d in $debs; do dpkg-deb --fsys-tarfile "$d" | tar -t | sed 's|^\./|/|'; done | grep -v '/$' | sort -u)
before=$(for f in $files; do [ -e "$f" ] || [ -L "$f" ] && echo "$f"; done)
[ -z "$before" ] && ok || bad "files of the packages exist before installing: $before"

check dpkg -i $debs
cat > "$work/use.c" <<'C'
#include <osstore.h>
#include <stdio.h>
int main(int argc, char **argv)
{
    os_store_t *store = NULL;
    os_object_t *obj = NULL;
    if (argc != 2 || os_store_open(argv[1], &store) != 0) return 1;
    if (os_store_new(store, "from-deb", &obj) != 0) return 1;
    if (os_store_commit(store, obj, "from-deb", NULL) != 0) return 1;
    int found = os_store_contains(store, "from-deb");
    os_store_free(store);
    printf("%s %d\n", os_version(), found);
    return found == 1 ? 0 : 1;
}
C
# shellcheck disable=SC2046
check cc -std=c99 -Wall -Wextra -Werror -o "$work/use" "$work/use.c" $(pkg-config --cflags --libs osstore)
out=$("$work/use" "$work/store" 2>&1) && [[ "$out" == *" 1" ]] && ok || bad "the program built against the package: $out"
ldd "$work/use" | grep -Eq "libosstore.so.0 => (/usr)?/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH)/libosstore.so.0 " && ok || bad "not linked to the packaged libosstore.so.0"
out=$(osstore --store "$work/store" ls 2>&1) && grep -q " from-deb$" <<< "$out" && ok || bad "osstore ls: $out"
check osstore-client --version
cat > "$work/client.c" <<'C'
#include <osstore_client.h>
#include <stdio.h>
int main(void) { puts(osc_default_socket()); return 0; }
C
check cc -std=c99 -Wall -Wextra -Werror -o "$work/client" "$work/client.c" -losstore_client
out=$(OSSTORE_SOCKET=/x/y "$work/client" 2>&1) && [ "$out" = /x/y ] && ok || bad "libosstore_client.a: $out"
for page in man1/osstore.1 man1/osstore-client.1 man1/osstore-gc.1 man3/osstore.3; do
  grep -qx "/usr/share/man/$page.gz" <<< "$files" && ok || bad "no $page in the packages"
done
check man -w 1 osstore

check dpkg --purge $packages
left=$(for f in $files; do [ -e "$f" ] || [ -L "$f" ] && echo "$f"; done)
[ -z "$left" ] && ok || bad "left behind after purge: $left"
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'installed' && bad "$p still known to dpkg" || ok
done
echo "deb: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
