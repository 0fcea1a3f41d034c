//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test crate uses a different subset

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use osstore::{OpenOptions, Store};

pub mod server;

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

/// Allocated bytes of every entry below and including `root`, hard links
/// once: the size rule of cache.md, measured independently of the library.
pub fn du(root: &Path) -> u64 {
    fn walk(p: &Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
        let m = fs::symlink_metadata(p).unwrap();
        let mut total = if m.nlink() > 1 && !m.is_dir() && !seen.insert((m.dev(), m.ino())) {
            0
        } else {
            m.blocks() * 512
        };
        if m.is_dir() {
            for e in fs::read_dir(p).unwrap() {
                total += walk(&e.unwrap().path(), seen);
            }
        }
        total
    }
    walk(root, &mut HashSet::new())
}

/// Sum of fresh measurements ([`du`]) of every object a ref of the store
/// at `root` names.
pub fn measured_total(root: &Path) -> u64 {
    let mut objects = HashSet::new();
    for e in fs::read_dir(root.join("refs")).unwrap() {
        let target = fs::read_link(e.unwrap().path()).unwrap();
        let object = root.join("objects").join(target.file_name().unwrap());
        if object.is_dir() {
            objects.insert(object);
        }
    }
    objects.iter().map(|o| du(o)).sum()
}

/// Sets the last use of `objects/<name>` (its sidecar's mtime) to `secs`.
pub fn age(root: &Path, name: &str, secs: i64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
    let f = fs::File::options()
        .write(true)
        .open(root.join("meta").join(name).join("info"))
        .unwrap();
    f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
}
