#!/bin/bash
# Runs the C osstore-client against fake_reference_server.py (a stand-in for
# osbuild's Python StoreServer) and checks, for every method:
#   - stdout and the exit status (0 path, 2 null path, 1 error),
#   - that the request bytes on the wire are exactly what the Python client
#     sends (json.dumps of the same dict), non-ASCII and surrogate pairs
#     included, and that the client auto-bound its socket,
#   - the transport edge cases (passed fds, truncated control data, garbage,
#     early close, empty packet, a large reply).
# Usage: client_compat_test.sh [PATH/TO/osstore-client]
# Prints "N passed, M failed"; exits non-zero if anything failed.
set -u

CLIENT=$(realpath "${1:-build/osstore-client}")
HERE=$(cd "$(dirname "$0")" && pwd)
TMP=$(mktemp -d)
STORE=$TMP/store
SOCK=$TMP/store.sock
LOG=$TMP/requests.log
PASSED=0
FAILED=0
SERVER_PID=

cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

ok() { PASSED=$((PASSED + 1)); }
# A client that hangs (e.g. waiting for a reply that never comes) fails.
client() { timeout 30 "$CLIENT" "$@"; }
not_ok() { FAILED=$((FAILED + 1)); echo "FAIL: $*"; }

# Arguments as raw bytes (printf escapes), whatever the locale.
E_ACUTE=$(printf '\xc3\xa9')     # U+00E9
GRIN=$(printf '\xf0\x9f\x98\x80') # U+1F600, a surrogate pair in JSON
NASTY=$(printf 'q"b\\s\tt\x01\x7f/%s' "$E_ACUTE")
BAD_UTF8=$(printf 'x\xffy')

mkdir -p "$STORE/refs/abc/sub" "$STORE/refs/${E_ACUTE}${GRIN}" "$TMP/target" \
         "$TMP/target-${E_ACUTE}"
: > "$LOG"
python3 "$HERE/fake_reference_server.py" --socket "$SOCK" --store "$STORE" \
    --log "$LOG" --ready "$TMP/ready" &
SERVER_PID=$!
for _ in $(seq 100); do
    [ -e "$TMP/ready" ] && break
    sleep 0.1
done
[ -e "$TMP/ready" ] || { echo "fake server did not start"; exit 1; }

# run NAME EXIT STDOUT STDERR_SUBSTRING -- ARGS...: runs the client with
# --socket and checks its exit status, exact stdout and part of stderr.
run() {
    local name=$1 want_rc=$2 want_out=$3 want_err=$4
    shift 5
    local out err rc
    out=$(client --socket "$SOCK" "$@" 2>"$TMP/stderr")
    rc=$?
    err=$(cat "$TMP/stderr")
    if [ "$rc" != "$want_rc" ]; then
        not_ok "$name: exit $rc, want $want_rc (stderr: $err)"
    elif [ "$out" != "$want_out" ]; then
        not_ok "$name: stdout '$out', want '$want_out'"
    elif [[ "$err" != *"$want_err"* ]]; then
        not_ok "$name: stderr '$err' lacks '$want_err'"
    else
        ok
    fi
}

# sent NAME PYTHON_DICT: the last logged request must be exactly
# json.dumps(PYTHON_DICT), from an auto-bound (abstract address) peer, and
# it must be the only request logged since the previous check.
LOGGED=0
sent() {
    local name=$1 dict=$2
    if python3 - "$LOG" "$LOGGED" "$dict" <<'EOF'; then ok; else not_ok "$name: request bytes"; fi
import ast, json, sys
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
new = lines[int(sys.argv[2]):]
if len(new) != 1:
    sys.exit(f"expected one new request, got {len(new)}")
entry = json.loads(new[0])
want = json.dumps(ast.literal_eval(sys.argv[3])).encode()
got = bytes.fromhex(entry["data"])
if got != want:
    sys.exit(f"sent {got!r}\n  python sends {want!r}")
peer = bytes.fromhex(entry["peer"])
# Linux auto-binding gives an abstract name: NUL and five hex digits.
if len(peer) != 6 or peer[0] != 0:
    sys.exit(f"client socket was not auto-bound: {peer!r}")
EOF
    LOGGED=$(wc -l < "$LOG")
}

nothing_sent() {
    if [ "$(wc -l < "$LOG")" = "$LOGGED" ]; then ok; else not_ok "$1: a request was sent"; fi
    LOGGED=$(wc -l < "$LOG")
}

# --- read-tree ---
run "read-tree known" 0 "$STORE/refs/abc" "" -- read-tree abc
sent "read-tree known" "{'method': 'read-tree', 'object-id': 'abc'}"
run "read-tree unknown" 2 "" "no such object" -- read-tree nope
sent "read-tree unknown" "{'method': 'read-tree', 'object-id': 'nope'}"
run "read-tree non-ASCII id" 0 "$STORE/refs/${E_ACUTE}${GRIN}" "" -- read-tree "${E_ACUTE}${GRIN}"
sent "read-tree non-ASCII id" "{'method': 'read-tree', 'object-id': '\\u00e9\\U0001F600'}"
run "read-tree escapes" 2 "" "" -- read-tree "$NASTY"
sent "read-tree escapes" "{'method': 'read-tree', 'object-id': 'q\"b\\\\s\\tt\\x01\\x7f/\\u00e9'}"
run "read-tree invalid UTF-8" 1 "" "valid UTF-8" -- read-tree "$BAD_UTF8"
nothing_sent "read-tree invalid UTF-8"

# --- read-tree-at ---
run "read-tree-at whole tree" 0 "$TMP/target" "" -- read-tree-at abc "$TMP/target"
sent "read-tree-at whole tree" \
    "{'method': 'read-tree-at', 'object-id': 'abc', 'target': '$TMP/target', 'subtree': '/'}"
run "read-tree-at subtree" 0 "$TMP/target-${E_ACUTE}" "" -- \
    read-tree-at abc "$TMP/target-${E_ACUTE}" /sub
sent "read-tree-at subtree" "{'method': 'read-tree-at', 'object-id': 'abc', \
'target': '$TMP/target-\\u00e9', 'subtree': '/sub'}"
run "read-tree-at unknown" 2 "" "no such object" -- read-tree-at nope "$TMP/target" /
sent "read-tree-at unknown" \
    "{'method': 'read-tree-at', 'object-id': 'nope', 'target': '$TMP/target', 'subtree': '/'}"
run "read-tree-at error reply" 1 "" \
    "read-tree-at: server error: $TMP/missing-${E_ACUTE}${GRIN} mount failed: mount:" -- \
    read-tree-at abc "$TMP/missing-${E_ACUTE}${GRIN}"
sent "read-tree-at error reply" "{'method': 'read-tree-at', 'object-id': 'abc', \
'target': '$TMP/missing-\\u00e9\\U0001F600', 'subtree': '/'}"

# --- mkdtemp ---
check_tempdir() { # NAME PATH PREFIX SUFFIX: a fresh directory in the server's root
    local base
    base=$(basename "$2")
    if [ -d "$2" ] && [[ "$2" == "$STORE"/tmp/store-server-*/* ]] &&
       [[ "$base" == "$3"*"$4" ]] && [ "$base" != "$3$4" ]; then
        ok
    else
        not_ok "$1: '$2' is not a new directory named $3...$4"
    fi
}
path=$(client --socket "$SOCK" mkdtemp); rc=$?
[ "$rc" = 0 ] && ok || not_ok "mkdtemp: exit $rc"
check_tempdir "mkdtemp" "$path" tmp ""
sent "mkdtemp" "{'method': 'mkdtemp', 'suffix': None, 'prefix': None}"
path=$(client --socket "$SOCK" mkdtemp --suffix "-s${E_ACUTE}" --prefix p-); rc=$?
[ "$rc" = 0 ] && ok || not_ok "mkdtemp prefix suffix: exit $rc"
check_tempdir "mkdtemp prefix suffix" "$path" p- "-s${E_ACUTE}"
sent "mkdtemp prefix suffix" "{'method': 'mkdtemp', 'suffix': '-s\\u00e9', 'prefix': 'p-'}"
path=$(client --socket "$SOCK" mkdtemp --prefix ""); rc=$?
[ "$rc" = 0 ] && ok || not_ok "mkdtemp empty prefix: exit $rc"
sent "mkdtemp empty prefix" "{'method': 'mkdtemp', 'suffix': None, 'prefix': ''}"

# --- source ---
run "source" 0 "$STORE/sources/org.osbuild.files" "" -- source org.osbuild.files
sent "source" "{'method': 'source', 'name': 'org.osbuild.files'}"
run "source non-ASCII" 0 "$STORE/sources/${GRIN}" "" -- source "$GRIN"
sent "source non-ASCII" "{'method': 'source', 'name': '\\U0001F600'}"

# --- transport edge cases (test hooks of the fake server) ---
run "reply with fds" 0 "/with-fds" "" -- read-tree test:fds
LOGGED=$(wc -l < "$LOG")
if command -v valgrind >/dev/null; then
    # Every received descriptor must be closed: at exit only descriptors
    # inherited from this shell may remain open.  Valgrind runs a copy
    # without debug info, as 3.19 cannot read the DWARF 5 of clang 14.
    objcopy --strip-debug "$CLIENT" "$TMP/client-nodebug"
    timeout 60 valgrind --track-fds=yes "$TMP/client-nodebug" --socket "$SOCK" \
        read-tree test:fds >/dev/null 2>"$TMP/vg"
    leaked=$(awk '/Open (file descriptor|AF_UNIX socket)/ { fd = $0; getline;
                  if ($0 !~ /inherited from parent/) print fd }' "$TMP/vg")
    if grep -q "FILE DESCRIPTORS:" "$TMP/vg" && [ -z "$leaked" ]; then ok; else
        not_ok "descriptors leaked: $leaked"; fi
    LOGGED=$(wc -l < "$LOG")
fi
# With a low descriptor limit the kernel truncates the control data.
out=$(ulimit -n 10; client --socket "$SOCK" read-tree test:many-fds 2>&1); rc=$?
if [ "$rc" = 1 ] && [[ "$out" == *"truncated control data"* ]]; then ok; else
    not_ok "MSG_CTRUNC: exit $rc, output '$out'"; fi
run "many fds within the limit" 0 "/with-fds" "" -- read-tree test:many-fds
run "trailing garbage" 1 "" "malformed reply: trailing data" -- read-tree test:garbage
run "server closes" 1 "" "closed the connection" -- read-tree test:close
run "empty packet" 1 "" "closed the connection" -- read-tree test:empty
out=$(client --socket "$SOCK" read-tree test:big); rc=$?
if [ "$rc" = 0 ] && [ "${#out}" = 150000 ]; then ok; else
    not_ok "large reply: exit $rc, ${#out} bytes"; fi
LOGGED=$(wc -l < "$LOG")

# --- command line ---
run "no command" 2 "" "missing command" --
run "unknown command" 2 "" "unknown command" -- frobnicate
run "too many arguments" 2 "" "wrong number of arguments" -- read-tree a b
run "read-tree-at needs a target" 2 "" "wrong number of arguments" -- read-tree-at a
run "mkdtemp bad option" 2 "" "unexpected argument" -- mkdtemp --frob
run "mkdtemp option twice" 2 "" "given twice" -- mkdtemp --prefix a --prefix b
run "mkdtemp option value" 2 "" "needs a value" -- mkdtemp --suffix
nothing_sent "command line errors"
out=$(client --help); rc=$?
if [ "$rc" = 0 ] && [[ "$out" == Usage:* ]]; then ok; else not_ok "--help: exit $rc"; fi
out=$(client --version); rc=$?
if [ "$rc" = 0 ] && [[ "$out" =~ ^osstore-client\ [0-9]+\.[0-9]+\.[0-9]+$ ]]; then ok; else not_ok "--version: exit $rc, '$out'"; fi
out=$(client --frob 2>&1); rc=$?
if [ "$rc" = 2 ] && [[ "$out" == *"unknown option"* ]]; then ok; else not_ok "unknown option: exit $rc, '$out'"; fi
out=$(OSSTORE_SOCKET="$TMP/from-env.sock" client read-tree abc 2>&1); rc=$?
if [ "$rc" = 1 ] && [[ "$out" == *"cannot connect to $TMP/from-env.sock"* ]]; then ok; else
    not_ok "OSSTORE_SOCKET: exit $rc, '$out'"; fi
out=$(OSSTORE_SOCKET= client read-tree abc 2>&1); rc=$?
if [ "$rc" = 1 ] && [[ "$out" == *"cannot connect to /run/osbuild/api/store"* ]]; then ok; else
    not_ok "default socket: exit $rc, '$out'"; fi
out=$(client --socket "$TMP/absent.sock" read-tree abc 2>&1); rc=$?
if [ "$rc" = 1 ] && [[ "$out" == *"cannot connect to $TMP/absent.sock"* ]]; then ok; else
    not_ok "missing socket: exit $rc, '$out'"; fi

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
