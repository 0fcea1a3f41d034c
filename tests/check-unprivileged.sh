#!/usr/bin/env bash
# Runs `make check` (or the make targets given) the way a build daemon
# does: as an unprivileged user (OSSTORE_CHECK_USER, default nobody), in a
# copy of this worktree, offline (CARGO_NET_OFFLINE), with the Debian
# packages already installed (make deps). Run as root: root prepares the
# copy and lends the user this machine's Rust toolchain and crate cache
# read-only, through a bind mount in a mount namespace of its own.
# The copy stays in /tmp/osstore-unprivileged-* (printed) for its logs;
# OSSTORE_CHECK_DIR=that directory runs again in it with the current sources
# and what it compiled before (the first build compiles everything: cargo's
# fingerprints include the crate cache's path).
set -eu
user=${OSSTORE_CHECK_USER:-nobody}
targets=("${@:-check}")
[ "$(id -u)" = 0 ] || { echo "run as root: it sets up the copy for $user"; exit 1; }
sysroot=$(rustc --print sysroot)
cargo_home=${CARGO_HOME:-$HOME/.cargo}

work=${OSSTORE_CHECK_DIR:-}
if [ -z "$work" ]; then
  work=$(mktemp -d /tmp/osstore-unprivileged-XXXXXX)
  chmod 755 "$work"
  mkdir -p "$work/src" "$work/toolchain" "$work/cargo-home" "$work/home"
  cp -a "$cargo_home/registry" "$work/cargo-home/"
fi
git ls-files -z --cached --others --exclude-standard | tar --null -T - --ignore-failed-read -cf - | tar -xf - -C "$work/src"
chown -R "$user" "$work/src" "$work/cargo-home" "$work/home"
echo "unprivileged check in $work/src as $user: make ${targets[*]}"

work_src="$work/src" work_home="$work/home" toolchain_bin="$work/toolchain/bin" \
cargo_home_copy="$work/cargo-home" user="$user" \
  unshare --mount --propagation private bash -c '
  set -eu
  mount --bind -o ro "$1" "$2/toolchain"
  mount -o remount,bind,ro "$2/toolchain"
  shift 3
  cd "$work_src"
  exec runuser -u "$user" -- env -i HOME="$work_home" PATH="$toolchain_bin:/usr/local/bin:/usr/bin:/bin" \
    CARGO_HOME="$cargo_home_copy" CARGO_NET_OFFLINE=true TERM=dumb LANG=C.UTF-8 make "$@"
' _ "$sysroot" "$work" _ "${targets[@]}"
