#!/usr/bin/env bash
# osstore-client against this library's server, every method and exit code:
# the C client and the Rust server must agree on the protocol. Runs as root
# in a private mount namespace (read-tree-at mounts).
#
#   client_server_test.sh SERVE_STORE OSSTORE_CLIENT
set -u
serve=$1 client=$2
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
# expect STATUS STDOUT -- ARGS...: runs the client, compares status and output.
expect() {
  local want_status=$1 want_out=$2; shift 3
  local out status
  out=$("$client" --socket "$sock" "$@" 2>"$dir/stderr"); status=$?
  if [ "$status" = "$want_status" ] && [ "$out" = "$want_out" ]; then ok; else
    bad "osstore-client $* -> status $status, output '$out' ($(cat "$dir/stderr")); want $want_status, '$want_out'"; fi
}

dir=$(mktemp -d /tmp/osstore-client-server-XXXXXX)
store=$dir/store sock=$dir/sock
coproc SERVER { "$serve" "$store" "$sock"; }
read -r line <&"${SERVER[0]}"
[ "$line" = ready ] && ok || { bad "server did not start"; echo "client_server: $passed passed, $failed failed"; exit 1; }

# The object itself, objects/<name>, that refs/committed names (cache.md).
expect 0 "$store/objects/$(basename "$(readlink "$store/refs/committed")")" -- read-tree committed
floating=$("$client" --socket "$sock" read-tree floating)
case "$floating" in "$store"/tmp/object-floatin-*-workdir/object) ok ;; *) bad "floating read-tree gave '$floating'" ;; esac
expect 2 "" -- read-tree absent
expect 1 "" -- read-tree ../escape
expect 0 "$store/sources/org.osbuild.files" -- source org.osbuild.files
expect 1 "" -- source ../../etc

tmp=$("$client" --socket "$sock" mkdtemp --prefix pre- --suffix -suf)
case "$tmp" in "$store"/tmp/store-server-*/pre-*-suf) [ -d "$tmp" ] && ok || bad "mkdtemp made no directory" ;; *) bad "mkdtemp gave '$tmp'" ;; esac
tmp=$("$client" --socket "$sock" mkdtemp)
case "$(basename "$tmp")" in tmp*) ok ;; *) bad "mkdtemp without prefix gave '$tmp'" ;; esac
expect 1 "" -- mkdtemp --prefix a/b

if [ "$(id -u)" = 0 ]; then
  mkdir "$dir/whole" "$dir/etc"; touch "$dir/tool"
  expect 0 "$dir/whole" -- read-tree-at committed "$dir/whole"
  [ "$(cat "$dir/whole/etc/hostname" 2>/dev/null)" = served ] && ok || bad "whole tree not mounted"
  touch "$dir/whole/new" 2>/dev/null && bad "mount is writable" || ok
  expect 0 "$dir/etc" -- read-tree-at committed "$dir/etc" /etc
  [ -f "$dir/etc/hostname" ] && ok || bad "subtree not mounted"
  expect 0 "$dir/tool" -- read-tree-at committed "$dir/tool" usr/tool
  [ "$(head -c 9 "$dir/tool")" = '#!/bin/sh' ] && ok || bad "file not mounted onto file"
  expect 1 "" -- read-tree-at committed "$dir/etc" /no/such/subtree
  expect 2 "" -- read-tree-at absent "$dir/etc"
else
  echo "SKIP read-tree-at: needs root"
fi

exec {SERVER[1]}>&-
wait "$SERVER_PID" && ok || bad "server did not stop cleanly"
grep -q "$dir" /proc/self/mountinfo && bad "mounts left behind" || ok
[ -e "$sock" ] && bad "socket left behind" || ok
rm -rf "$dir"
echo "client_server: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
