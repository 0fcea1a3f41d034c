#!/usr/bin/env bash
# Installs into a scratch DESTDIR with a custom layout, then builds a small
# program against the installed tree with pkg-config, shared and static, and
# runs both. Prints "install: N passed, M failed".
set -u
make=$1
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
check() { if "$@" >/dev/null 2>&1; then ok; else bad "$*"; fi; }

dest=$(mktemp -d /tmp/osstore-install-XXXXXX)
trap 'rm -rf "$dest"' EXIT
prefix=/opt/osstore-test
$make --no-print-directory install DESTDIR="$dest" PREFIX=$prefix LIBDIR=$prefix/lib64 >/dev/null || bad "make install"
root=$dest$prefix
ver=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)

check test -f "$root/lib64/libosstore.so.$ver"
check test "$(readlink "$root/lib64/libosstore.so.0")" = "libosstore.so.$ver"
check test "$(readlink "$root/lib64/libosstore.so")" = "libosstore.so.0"
check test -f "$root/lib64/libosstore.a"
check test -f "$root/include/osstore.h"
check test -f "$root/lib64/pkgconfig/osstore.pc"
check test -x "$root/bin/osstore-client"
check test -x "$root/bin/osstore"
check test -f "$root/lib64/libosstore_client.a"
check test -f "$root/include/osstore_client.h"
for page in man1/osstore.1 man1/osstore-gc.1 man1/osstore-client.1 man3/osstore.3; do
  check test -f "$root/share/man/$page"
done
check test -f "$root/share/bash-completion/completions/osstore"
check test -f "$root/share/zsh/vendor-completions/_osstore"
check test "$(stat -c %a "$root/lib64/libosstore.so.$ver")" = 644

# pkg-config from the installed tree (relocated with --define-prefix-like sysroot).
export PKG_CONFIG_PATH="$root/lib64/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$dest"
cflags=$(pkg-config --cflags osstore) && ok || bad "pkg-config --cflags"
libs=$(pkg-config --libs osstore) && ok || bad "pkg-config --libs"
static_libs=$(pkg-config --libs --static osstore) && ok || bad "pkg-config --libs --static"
grep -q -- "-lpthread" <<< "$static_libs" && ok || bad "--static lacks the private libraries: $static_libs"
grep -q -- "-lgcc_s" <<< "$static_libs" && bad "--static names -lgcc_s, which -static links cannot find" || ok

cat > "$dest/use.c" <<'C'
#include <osstore.h>
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv)
{
    os_store_t *store = NULL;
    os_object_t *obj = NULL;
    (void)argc;
    if (os_store_open(argv[1], &store) != 0) { fprintf(stderr, "%s\n", os_last_error()); return 1; }
    if (os_store_new(store, "installed", &obj) != 0) return 1;
    if (os_store_commit(store, obj, "installed", NULL) != 0) return 1;
    int found = os_store_contains(store, "installed");
    os_store_free(store);
    printf("%s %d\n", os_version(), found);
    return found == 1 ? 0 : 1;
}
C
cc -std=c99 -Wall -Wextra -Werror -pedantic $cflags -o "$dest/use-shared" "$dest/use.c" $libs -Wl,-rpath,"$root/lib64" && ok || bad "build against the shared library"
check "$dest/use-shared" "$dest/store1"
# The README's two static links: the archive into a dynamic program
# (-l:libosstore.a), and a fully static program (-static).
cc -std=c99 -Wall -Wextra -Werror -pedantic $cflags -o "$dest/use-static" "$dest/use.c" $(pkg-config --static --libs osstore | sed 's/-losstore/-l:libosstore.a/') && ok || bad "build with libosstore.a"
check "$dest/use-static" "$dest/store2"
if [ -x "$dest/use-static" ]; then
  ldd "$dest/use-static" | grep -q libosstore && bad "static build links libosstore.so" || ok
fi
if [ -f "$(cc -print-file-name=libc.a)" ] && [ "$(cc -print-file-name=libc.a)" != libc.a ]; then
  cc -static -std=c99 -Wall -Wextra -Werror -pedantic -o "$dest/use-fully-static" "$dest/use.c" $(pkg-config --static --cflags --libs osstore) 2>"$dest/static.err" && ok || { bad "cc -static"; cat "$dest/static.err"; }
  check "$dest/use-fully-static" "$dest/store3"
  file "$dest/use-fully-static" | grep -q 'statically linked' && ok || bad "-static did not link statically"
else
  echo "SKIP install: fully static link: no libc.a"
fi
# A build stage links the libc-only client library.
printf '#include <osstore_client.h>\n#include <stdio.h>\nint main(void) { puts(osc_default_socket()); return 0; }\n' > "$dest/client.c"
cc -std=c99 -Wall -Wextra -Werror -pedantic $cflags -o "$dest/client" "$dest/client.c" -L"$root/lib64" -losstore_client && ok || bad "build with libosstore_client.a"
[ "$(OSSTORE_SOCKET= "$dest/client")" = /run/osbuild/api/store ] && ok || bad "osc_default_socket()"

# The README's example compiles against the installed tree as it stands.
sed -n '/^## Using it from C/,/^## /p' README.md | sed -n '/^```c$/,/^```$/p' | sed '1d;$d' > "$dest/readme.c"
[ -s "$dest/readme.c" ] && ok || bad "no C example found in README.md"
cc -std=c99 -Wall -Wextra -Werror -pedantic $cflags -o "$dest/readme" "$dest/readme.c" $libs && ok || bad "the README's example does not compile"

$make --no-print-directory uninstall DESTDIR="$dest" PREFIX=$prefix LIBDIR=$prefix/lib64 >/dev/null || bad "make uninstall"
left=$(find "$root" -type f -o -type l)
[ -z "$left" ] && ok || bad "uninstall left: $left"
echo "install: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
