//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test crate uses a different subset

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use osstore::{OpenOptions, Store};

/// Opens a store without durability (tests need no power-cut safety).
pub fn quick(path: &Path) -> Store {
    Store::open_with(
        path,
        OpenOptions {
            durable: false,
            collect_garbage: true,
            read_only: false,
        },
    )
    .expect("open")
}

/// True when running as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Why mount tests cannot run here, or `None` when this process is root in a
/// private mount namespace: its namespace differs from the one it was started
/// from (`OSSTORE_OUTER_MNTNS`, set by tests/in-private-ns.sh), from PID 1's,
/// or, when PID 1's cannot be read, from one of its ancestors'.
pub fn mount_tests_unavailable() -> Option<String> {
    if !is_root() {
        return Some("mount tests need root".into());
    }
    let ns = |pid: &str| {
        fs::metadata(format!("/proc/{pid}/ns/mnt"))
            .ok()
            .map(|m| m.ino())
    };
    let Some(own) = ns("self") else {
        return Some("cannot read /proc/self/ns/mnt".into());
    };
    let outer = std::env::var("OSSTORE_OUTER_MNTNS")
        .ok()
        .and_then(|v| v.parse().ok());
    if let Some(outer) = outer.or_else(|| ns("1")) {
        return (outer == own).then(|| NOT_PRIVATE.into());
    }
    let mut pid = std::process::id();
    while pid > 1 {
        let Some(parent) = parent_pid(pid) else { break };
        pid = parent;
        if ns(&pid.to_string()).is_some_and(|n| n != own) {
            return None;
        }
    }
    Some(NOT_PRIVATE.into())
}

const NOT_PRIVATE: &str = "not in a private mount namespace (run under unshare --mount)";

fn parent_pid(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may contain anything, so parse
    // after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
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
