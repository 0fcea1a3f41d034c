//! A cache of `read-tree` look-ups of committed objects, kept exact with
//! inotify.
//!
//! Answering `read-tree` for a committed object means checking that
//! `refs/<id>` and the object it names exist: a `stat` that walks the whole
//! path and follows the link, which costs about as much as the rest of the
//! request put together. The cache remembers the answer per id and forgets
//! everything as soon as anything changes in `refs/` or `objects/`: both are
//! watched with inotify, and the watch is drained (one non-blocking `read`)
//! before every answer from the cache. The kernel queues an event before
//! the call that changed the directory returns, so a change that happened
//! before the client sent its request is always seen: answers are the ones
//! a fresh `stat` would give.
//!
//! Only answers that the watches cover are cached: a ref that is a link to
//! `../objects/<name>` with `<name>` a directory, or a ref that does not
//! exist at all. Floating objects are looked up first, as the store does,
//! and never cached. Without inotify (e.g. the per-user limit of instances
//! is reached) every look-up goes to the store. Not covered, as no inotify
//! event reports them: mounting over `refs/`, `objects/` or an object,
//! and moving the store or changing the permissions of the directories
//! above it while the server runs.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::store::Store;

/// Most ids remembered; the cache is emptied when it is full.
const MAX_ENTRIES: usize = 4096;

/// Changes of `refs/` or `objects/` that may change an answer.
const WATCHED: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;

/// Events after which the watches no longer cover the store's paths.
const LOST: u32 = libc::IN_IGNORED | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF;

/// `read-tree` look-ups of committed objects, remembered while nothing
/// changes.
pub struct RefCache {
    /// The inotify instance watching `refs/` and `objects/`; `None` when the
    /// cache is off.
    inotify: Option<OwnedFd>,
    refs: PathBuf,
    objects: PathBuf,
    /// Per id: `refs/<id>` when it resolves, `None` when it does not exist.
    entries: HashMap<String, Option<PathBuf>>,
    /// Where events are read to (room for many; a name is at most 255 bytes).
    events: Vec<u8>,
}

impl RefCache {
    /// A cache for `store`; off when inotify is not available.
    pub fn new(store: &Store) -> RefCache {
        let refs = store.path().join("refs");
        let objects = store.path().join("objects");
        RefCache {
            inotify: watch(&[&refs, &objects]),
            refs,
            objects,
            entries: HashMap::new(),
            events: vec![0; 4096],
        }
    }

    /// What [`Store::lookup_tree`] gives for `id` (a valid id).
    pub fn lookup(&mut self, store: &Store, id: &str) -> Result<Option<PathBuf>> {
        if let Some(tree) = store.floating_tree(id) {
            return Ok(Some(tree));
        }
        if !self.drain() {
            return store.lookup_tree(id);
        }
        if let Some(answer) = self.entries.get(id) {
            return Ok(answer.clone());
        }
        let answer = store.lookup_tree(id)?;
        if self.covered(id, answer.as_deref()) {
            if self.entries.len() >= MAX_ENTRIES {
                self.entries.clear();
            }
            self.entries.insert(id.to_owned(), answer.clone());
        }
        Ok(answer)
    }

    /// Reads the pending events, forgetting every answer if there are any.
    /// `false` when the cache is off (or just turned off because a watch
    /// was lost).
    fn drain(&mut self) -> bool {
        let Some(inotify) = &self.inotify else {
            return false;
        };
        loop {
            let buf = &mut self.events;
            // SAFETY: `buf` is writable for its length; `inotify` is open.
            let n = unsafe { libc::read(inotify.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                match std::io::Error::last_os_error().raw_os_error() {
                    Some(libc::EAGAIN) => return true,
                    Some(libc::EINTR) => continue,
                    _ => return self.turn_off(),
                }
            }
            self.entries.clear();
            if n == 0 || event_masks(&self.events[..n as usize]).any(|mask| mask & LOST != 0) {
                return self.turn_off();
            }
        }
    }

    fn turn_off(&mut self) -> bool {
        self.inotify = None;
        self.entries.clear();
        false
    }

    /// Whether the watches see every change that could alter `answer`.
    fn covered(&self, id: &str, answer: Option<&Path>) -> bool {
        let link = self.refs.join(id);
        match answer {
            None => {
                matches!(std::fs::symlink_metadata(&link), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
            }
            // A floating tree that appeared meanwhile is not cached.
            Some(tree) if tree != link => false,
            Some(_) => {
                let Ok(target) = std::fs::read_link(&link) else {
                    return false;
                };
                let Ok(name) = target.strip_prefix("../objects") else {
                    return false;
                };
                let mut components = name.components();
                let single = matches!(
                    (components.next(), components.next()),
                    (Some(std::path::Component::Normal(_)), None)
                );
                single
                    && std::fs::symlink_metadata(self.objects.join(name)).is_ok_and(|m| m.is_dir())
            }
        }
    }
}

/// An inotify instance watching `dirs`, or `None` if that is not possible.
fn watch(dirs: &[&Path]) -> Option<OwnedFd> {
    // SAFETY: plain syscall.
    let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if raw < 0 {
        return None;
    }
    // SAFETY: a new descriptor that we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    for dir in dirs {
        let c = CString::new(OsStr::as_bytes(dir.as_os_str())).ok()?;
        // SAFETY: `c` is a valid C string; `fd` an inotify instance.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), WATCHED) } < 0 {
            return None;
        }
    }
    Some(fd)
}

/// The masks of the events in `buf`, as read from an inotify descriptor.
fn event_masks(buf: &[u8]) -> impl Iterator<Item = u32> + '_ {
    const HEADER: usize = size_of::<libc::inotify_event>();
    let mut offset = 0;
    std::iter::from_fn(move || {
        let header = buf.get(offset..offset + HEADER)?;
        // struct inotify_event: wd, mask, cookie, len (native endian).
        let field =
            |i: usize| u32::from_ne_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let (mask, len) = (field(4), field(12));
        offset += HEADER + len as usize;
        Some(mask)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::OpenOptions;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let options = OpenOptions {
            durable: false,
            collect_garbage: false,
        };
        let store = Store::open_with(dir.path(), options).unwrap();
        (dir, store)
    }

    #[test]
    fn answers_follow_every_change() {
        let (dir, store) = store();
        let mut cache = RefCache::new(&store);
        assert!(cache.inotify.is_some(), "inotify available in tests");
        let refs = dir.path().join("refs");
        assert_eq!(cache.lookup(&store, "a").unwrap(), None);
        assert_eq!(cache.entries.len(), 1, "a missing ref is cached");

        let mut obj = store.new_object("a").unwrap();
        let name = store.commit(&mut obj, "a").unwrap();
        assert_eq!(cache.lookup(&store, "a").unwrap(), Some(refs.join("a")));
        assert_eq!(cache.lookup(&store, "a").unwrap(), Some(refs.join("a")));
        assert_eq!(cache.entries.len(), 1, "a committed ref is cached");

        // The object disappears behind the ref's back.
        drop(obj);
        std::fs::rename(
            dir.path().join("objects").join(&name),
            dir.path().join("moved"),
        )
        .unwrap();
        assert_eq!(cache.lookup(&store, "a").unwrap(), None);
        std::fs::rename(
            dir.path().join("moved"),
            dir.path().join("objects").join(&name),
        )
        .unwrap();
        assert_eq!(cache.lookup(&store, "a").unwrap(), Some(refs.join("a")));

        // The ref goes away.
        std::fs::remove_file(refs.join("a")).unwrap();
        assert_eq!(cache.lookup(&store, "a").unwrap(), None);

        // A floating object comes first and is not cached.
        let mut floating = store.new_object("a").unwrap();
        floating.finalize();
        assert_eq!(
            cache.lookup(&store, "a").unwrap().as_deref(),
            Some(floating.tree())
        );
        drop(floating);
        assert_eq!(cache.lookup(&store, "a").unwrap(), None);
    }

    #[test]
    fn refs_outside_objects_are_not_cached() {
        let (dir, store) = store();
        let mut cache = RefCache::new(&store);
        std::os::unix::fs::symlink(dir.path(), dir.path().join("refs/out")).unwrap();
        assert_eq!(
            cache.lookup(&store, "out").unwrap(),
            Some(dir.path().join("refs/out"))
        );
        assert!(cache.entries.is_empty());
    }

    #[test]
    fn masks_are_parsed() {
        let mut buf = Vec::new();
        for (mask, name) in [
            (libc::IN_CREATE, &b"abc\0\0\0\0\0"[..]),
            (libc::IN_IGNORED, b""),
        ] {
            buf.extend_from_slice(&1i32.to_ne_bytes());
            buf.extend_from_slice(&mask.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&(name.len() as u32).to_ne_bytes());
            buf.extend_from_slice(name);
        }
        assert_eq!(
            event_masks(&buf).collect::<Vec<_>>(),
            [libc::IN_CREATE, libc::IN_IGNORED]
        );
    }
}
