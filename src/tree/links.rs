//! The hard-link map of a copy: which source inodes with several links have
//! been copied, and where to.
//!
//! Several threads may meet links of the same inode at once. The first one
//! claims the inode and copies it; the others wait for it to finish and then
//! link to its copy. Entries are dropped once every link has been seen, so the
//! map only holds inodes whose links are still to come.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};

enum Slot {
    /// Being copied by the thread that claimed it.
    Copying { remaining: u32 },
    /// Copied to this path, relative to the destination root.
    Done { path: PathBuf, remaining: u32 },
    /// The first copy failed (the copy as a whole is failing).
    Failed,
}

/// Source inode (device, inode number) to the state of its copy.
pub(crate) struct Links {
    map: Mutex<HashMap<(u64, u64), Slot>>,
    changed: Condvar,
}

/// The outcome of [`Links::claim`].
pub(crate) enum Claim<'a> {
    /// This is the first link met: copy the inode, then call
    /// [`FirstCopy::done`].
    First(FirstCopy<'a>),
    /// Make a hard link to this already-copied path (relative to the
    /// destination root).
    LinkTo(PathBuf),
    /// The first copy of the inode failed.
    Failed,
}

/// The claim on copying an inode first. Dropped without [`FirstCopy::done`],
/// it marks the inode failed, so that waiters do not wait forever.
pub(crate) struct FirstCopy<'a> {
    links: &'a Links,
    key: (u64, u64),
    finished: bool,
}

impl Links {
    /// An empty map.
    pub(crate) fn new() -> Self {
        Links {
            map: Mutex::new(HashMap::new()),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(u64, u64), Slot>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers one link (of `nlink`) to the inode `key`.
    pub(crate) fn claim(&self, key: (u64, u64), nlink: u32) -> Claim<'_> {
        let mut map = self.lock();
        loop {
            match map.entry(key) {
                Entry::Vacant(v) => {
                    v.insert(Slot::Copying {
                        remaining: nlink.saturating_sub(1),
                    });
                    return Claim::First(FirstCopy {
                        links: self,
                        key,
                        finished: false,
                    });
                }
                Entry::Occupied(mut o) => match o.get_mut() {
                    Slot::Copying { .. } => {}
                    Slot::Failed => return Claim::Failed,
                    Slot::Done { path, remaining } => {
                        *remaining = remaining.saturating_sub(1);
                        if *remaining == 0 {
                            if let Slot::Done { path, .. } = o.remove() {
                                return Claim::LinkTo(path);
                            }
                            return Claim::Failed;
                        }
                        return Claim::LinkTo(path.clone());
                    }
                },
            }
            map = self.changed.wait(map).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl FirstCopy<'_> {
    /// The inode has been copied to `path` (relative to the destination root).
    pub(crate) fn done(mut self, path: PathBuf) {
        self.finished = true;
        let mut map = self.links.lock();
        if let Some(slot) = map.get_mut(&self.key) {
            let remaining = match slot {
                Slot::Copying { remaining } => *remaining,
                _ => 0,
            };
            if remaining == 0 {
                map.remove(&self.key);
            } else {
                *slot = Slot::Done { path, remaining };
            }
        }
        drop(map);
        self.links.changed.notify_all();
    }
}

impl Drop for FirstCopy<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.links.lock().insert(self.key, Slot::Failed);
            self.links.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_links_first_then_link_then_forget() {
        let links = Links::new();
        let Claim::First(first) = links.claim((1, 2), 3) else {
            panic!("expected first");
        };
        first.done(PathBuf::from("a/x"));
        for _ in 0..2 {
            match links.claim((1, 2), 3) {
                Claim::LinkTo(p) => assert_eq!(p, PathBuf::from("a/x")),
                _ => panic!("expected link"),
            }
        }
        assert!(links.lock().is_empty(), "entry kept after its last link");
    }

    #[test]
    fn tree_links_failed_first_copy_releases_waiters() {
        let links = Links::new();
        let Claim::First(first) = links.claim((1, 2), 2) else {
            panic!("expected first");
        };
        std::thread::scope(|s| {
            let waiter = s.spawn(|| matches!(links.claim((1, 2), 2), Claim::Failed));
            std::thread::sleep(std::time::Duration::from_millis(20));
            drop(first);
            assert!(waiter.join().unwrap_or(false));
        });
    }
}
