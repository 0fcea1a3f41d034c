//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test crate uses a different subset

use std::os::unix::fs::MetadataExt;

/// Why mount tests cannot run here, or `None` when this process is in a
/// private mount namespace as root (tests/in-private-ns.sh sets
/// `OSSTORE_OUTER_MNTNS` to the namespace it started from).
pub fn mount_tests_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("mount tests need root".into());
    }
    let own = match std::fs::metadata("/proc/self/ns/mnt") {
        Ok(m) => m.ino(),
        Err(e) => return Some(format!("cannot read /proc/self/ns/mnt: {e}")),
    };
    let outer = std::env::var("OSSTORE_OUTER_MNTNS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .or_else(|| std::fs::metadata("/proc/1/ns/mnt").ok().map(|m| m.ino()));
    match outer {
        Some(outer) if outer != own => None,
        Some(_) => Some("not in a private mount namespace (run under tests/in-private-ns.sh, as make check does)".into()),
        None => Some("cannot tell whether this is a private mount namespace (set by tests/in-private-ns.sh)".into()),
    }
}

/// Prints a SKIP line and returns true when mount tests cannot run.
pub fn skip_without_private_mounts(test: &str) -> bool {
    match mount_tests_unavailable() {
        Some(why) => {
            println!("SKIP {test}: {why}");
            true
        }
        None => false,
    }
}
