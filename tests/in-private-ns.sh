#!/usr/bin/env bash
# Runs a command in a private mount namespace, so that nothing a test mounts
# can outlive it on this machine. OSSTORE_OUTER_MNTNS tells the tests which
# namespace they must not be in (PID 1's is not always readable, e.g. in a
# container), so that mount tests can check they really are isolated.
#
# Where no private namespace can be made (an unprivileged user, a container
# without CAP_SYS_ADMIN), the command runs as it is: the tests that mount
# then find themselves outside a private namespace (or not root) and skip
# with that reason; the others run.
set -eu
# Tests open hundreds of connections at once: as many descriptors as the
# hard limit allows (an unprivileged user's soft limit is often 1024).
ulimit -n "$(ulimit -Hn)"
OSSTORE_OUTER_MNTNS=$(stat -L -c %i /proc/self/ns/mnt)
export OSSTORE_OUTER_MNTNS
if ! unshare --mount --propagation private true 2>/dev/null; then
  echo "SKIP private mount namespace: unshare --mount is not permitted here (uid $(id -u)); tests that mount skip themselves" >&2
  exec "$@"
fi
exec unshare --mount --propagation private "$@"
