#!/usr/bin/env bash
# Runs a command in a private mount namespace, so that nothing a test mounts
# can outlive it on this machine. OSSTORE_OUTER_MNTNS tells the tests which
# namespace they must not be in (PID 1's is not always readable, e.g. in a
# container), so that mount tests can check they really are isolated.
set -eu
OSSTORE_OUTER_MNTNS=$(stat -L -c %i /proc/self/ns/mnt)
export OSSTORE_OUTER_MNTNS
exec unshare --mount --propagation private "$@"
