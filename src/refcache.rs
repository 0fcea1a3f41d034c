//! A cache of whether `refs/<id>` resolves, kept exact with inotify.
//!
//! Every look-up of a committed object (`contains`, `get`, the server's
//! `read-tree`) has to check that `refs/<id>` and the object it names exist:
//! a path walk that follows the link and costs more than everything else in
//! the look-up. The cache remembers the answer per id and forgets everything
//! as soon as anything changes in `refs/` or `objects/`: both are watched
//! with inotify, and the watch is drained (one non-blocking `read`) before
//! every answer from the cache. The kernel queues an event before the call
//! that changed the directory returns, so a change made (by any process)
//! before the look-up started is always seen: answers are the ones a fresh
//! `stat` would give.
//!
//! Only answers that the watches cover are cached: a ref that is a link to
//! `../objects/<name>` with `<name>` a directory (the name is remembered
//! too), or a ref that does not exist at all. A generation number counts the
//! times the cache was emptied: equal generations mean nothing changed in
//! between (see `cache::pins`). The watches are set up by the first
//! look-up, not at open: a handle that only commits costs the kernel no
//! events. Without inotify (e.g. the per-user limit of instances is
//! reached) every look-up goes to the filesystem. Not covered, as no inotify
//! event reports them: mounting over `refs/`, `objects/` or an object, and
//! moving the store or changing the permissions of the directories above it
//! while it is open.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Result;

/// Most ids remembered; the cache is emptied when it is full.
const MAX_ENTRIES: usize = 4096;

/// Changes of the entries of `refs/` or `objects/` that may change an
/// answer. No `IN_ATTRIB` here: a directory watch with it reports its
/// children's attribute changes too, for which the kernel flags every cached
/// child when the watch is added and removed (time in proportion to the
/// store's size, at every open and close), and no child's attributes change
/// an answer.
const WATCHED: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;

/// Changes of the attributes of `refs/` and `objects/` themselves (their
/// permissions decide whether a ref resolves), watched on the store's root:
/// a handful of children.
const WATCHED_ROOT: u32 = libc::IN_ATTRIB | libc::IN_ONLYDIR;

/// Events after which the watches no longer cover the store's paths.
const LOST: u32 = libc::IN_IGNORED | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF;

/// Whether refs resolve, remembered while nothing changes.
#[derive(Debug)]
pub struct RefCache {
    /// The inotify instance watching `refs/` and `objects/`; `None` when the
    /// cache is off or not started.
    inotify: Option<OwnedFd>,
    /// Whether the watches were set up (or tried).
    started: bool,
    refs: PathBuf,
    objects: PathBuf,
    /// Per id: the object `refs/<id>` names, `None` when there is no ref.
    entries: HashMap<String, Option<Arc<str>>>,
    /// How many times the entries were forgotten.
    generation: u64,
    /// Where events are read to (room for many; a name is at most 255 bytes).
    events: Vec<u8>,
}

impl RefCache {
    /// A cache for the store with these `refs/` and `objects/`, which
    /// starts watching them at its first use; off when inotify is not
    /// available.
    pub fn new(refs: &Path, objects: &Path) -> RefCache {
        RefCache {
            inotify: None,
            started: false,
            refs: refs.to_path_buf(),
            objects: objects.to_path_buf(),
            entries: HashMap::new(),
            generation: 0,
            events: vec![0; 4096],
        }
    }

    /// Whether `refs/<id>` resolves (`id` valid), from the cache when
    /// nothing changed since it was last asked, else from `look_up`; with
    /// the name of the object it names when the answer is cached, and the
    /// generation the answer belongs to (`None` when the cache is off).
    pub fn resolves(
        &mut self,
        id: &str,
        look_up: impl FnOnce() -> Result<bool>,
    ) -> Result<(bool, Option<Arc<str>>, Option<u64>)> {
        if !self.drain() {
            return Ok((look_up()?, None, None));
        }
        let generation = Some(self.generation);
        if let Some(name) = self.entries.get(id) {
            return Ok((name.is_some(), name.clone(), generation));
        }
        let answer = look_up()?;
        if let Some(name) = self.covered(id, answer) {
            if self.entries.len() >= MAX_ENTRIES {
                self.forget();
            }
            self.entries.insert(id.to_owned(), name.clone());
            return Ok((answer, name, Some(self.generation)));
        }
        Ok((answer, None, generation))
    }

    /// The cached object name of `refs/<id>` and its generation, without
    /// reading pending events: possibly stale, to be confirmed by an
    /// unchanged [`RefCache::generation`] afterwards.
    pub fn peek(&self, id: &str) -> Option<(Arc<str>, u64)> {
        self.inotify.as_ref()?;
        let name = self.entries.get(id)?.clone()?;
        Some((name, self.generation))
    }

    /// The current generation once pending events are read; `None` when the
    /// cache is off.
    pub fn generation(&mut self) -> Option<u64> {
        self.drain().then_some(self.generation)
    }

    fn forget(&mut self) {
        self.entries.clear();
        self.generation += 1;
    }

    /// Reads the pending events, forgetting every answer if there are any.
    /// `false` when the cache is off (or just turned off because a watch
    /// was lost).
    fn drain(&mut self) -> bool {
        if !self.started {
            // Nothing is cached yet: every answer from now on is covered.
            self.started = true;
            self.inotify = watch(&[
                (&self.refs, WATCHED),
                (&self.objects, WATCHED),
                (self.refs.parent().unwrap_or(&self.refs), WATCHED_ROOT),
            ]);
            return self.inotify.is_some();
        }
        let Some(raw) = self.inotify.as_ref().map(|fd| fd.as_raw_fd()) else {
            return false;
        };
        // Asking how many bytes are queued is cheaper for the kernel than a
        // read that finds nothing (no wait-queue set-up), and nothing queued
        // is by far the common case.
        let mut queued: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int to `queued`; `raw` is the open inotify
        // descriptor, owned by `self`.
        if unsafe { libc::ioctl(raw, libc::FIONREAD, &mut queued) } == 0 && queued == 0 {
            return true;
        }
        loop {
            let buf = &mut self.events;
            // SAFETY: `buf` is writable for its length; `raw` is open (as above).
            let n = unsafe { libc::read(raw, buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                match std::io::Error::last_os_error().raw_os_error() {
                    Some(libc::EAGAIN) => return true,
                    Some(libc::EINTR) => continue,
                    _ => return self.turn_off(),
                }
            }
            self.forget();
            if n == 0 || event_masks(&self.events[..n as usize]).any(|mask| mask & LOST != 0) {
                return self.turn_off();
            }
        }
    }

    fn turn_off(&mut self) -> bool {
        self.inotify = None;
        self.forget();
        false
    }

    /// When the watches see every change that could alter the answer: the
    /// entry to cache (the object's name, or `None` for no ref).
    #[allow(clippy::option_option)]
    fn covered(&self, id: &str, resolves: bool) -> Option<Option<Arc<str>>> {
        let link = self.refs.join(id);
        if !resolves {
            let absent = matches!(std::fs::symlink_metadata(&link), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
            return absent.then_some(None);
        }
        let target = std::fs::read_link(&link).ok()?;
        let name = target.strip_prefix("../objects").ok()?;
        let mut components = name.components();
        let single = matches!(
            (components.next(), components.next()),
            (Some(std::path::Component::Normal(_)), None)
        );
        let is_dir = std::fs::symlink_metadata(self.objects.join(name)).is_ok_and(|m| m.is_dir());
        (single && is_dir).then(|| name.to_str().map(Arc::from))
    }
}

/// An inotify instance watching `dirs` for their masks, or `None` if that
/// is not possible.
fn watch(dirs: &[(&Path, u32)]) -> Option<OwnedFd> {
    // SAFETY: plain syscall.
    let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if raw < 0 {
        return None;
    }
    // SAFETY: a new descriptor that we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    for (dir, mask) in dirs {
        let c = CString::new(OsStr::as_bytes(dir.as_os_str())).ok()?;
        // SAFETY: `c` is a valid C string; `fd` an inotify instance.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), *mask) } < 0 {
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

    /// A cache over a scratch `refs/` and `objects/`, and a look-up that
    /// counts how often it asks the filesystem.
    struct Fixture {
        dir: tempfile::TempDir,
        cache: RefCache,
        asked: std::cell::Cell<usize>,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("refs")).unwrap();
            std::fs::create_dir(dir.path().join("objects")).unwrap();
            let mut cache = RefCache::new(&dir.path().join("refs"), &dir.path().join("objects"));
            assert!(cache.inotify.is_none(), "no watch before the first use");
            assert!(cache.generation().is_some(), "inotify available in tests");
            Fixture {
                dir,
                cache,
                asked: std::cell::Cell::new(0),
            }
        }

        fn resolves(&mut self, id: &str) -> bool {
            let path = self.dir.path().join("refs").join(id);
            let asked = &self.asked;
            self.cache
                .resolves(id, || {
                    asked.set(asked.get() + 1);
                    Ok(path.exists())
                })
                .unwrap()
                .0
        }
    }

    #[test]
    fn answers_follow_every_change() {
        let mut fx = Fixture::new();
        let (refs, objects) = (fx.dir.path().join("refs"), fx.dir.path().join("objects"));
        assert!(!fx.resolves("a"));
        assert!(!fx.resolves("a"));
        assert_eq!(fx.asked.get(), 1, "a missing ref is cached");

        std::fs::create_dir(objects.join("o1")).unwrap();
        std::os::unix::fs::symlink("../objects/o1", refs.join("a")).unwrap();
        assert!(fx.resolves("a"));
        assert!(fx.resolves("a"));
        assert_eq!(fx.asked.get(), 2, "a resolving ref is cached");

        // The object disappears behind the ref's back, and comes back.
        std::fs::rename(objects.join("o1"), fx.dir.path().join("moved")).unwrap();
        assert!(!fx.resolves("a"));
        std::fs::rename(fx.dir.path().join("moved"), objects.join("o1")).unwrap();
        assert!(fx.resolves("a"));

        // The ref is replaced by one to a missing object, then removed.
        std::os::unix::fs::symlink("../objects/gone", fx.dir.path().join("tmp-link")).unwrap();
        std::fs::rename(fx.dir.path().join("tmp-link"), refs.join("a")).unwrap();
        assert!(!fx.resolves("a"));
        std::fs::remove_file(refs.join("a")).unwrap();
        assert!(!fx.resolves("a"));
    }

    #[test]
    fn attribute_changes_of_refs_and_objects_are_seen() {
        use std::os::unix::fs::PermissionsExt;
        let mut fx = Fixture::new();
        let (refs, objects) = (fx.dir.path().join("refs"), fx.dir.path().join("objects"));
        std::fs::create_dir(objects.join("o1")).unwrap();
        std::os::unix::fs::symlink("../objects/o1", refs.join("a")).unwrap();
        assert!(fx.resolves("a"));
        assert!(fx.resolves("a"));
        assert_eq!(fx.asked.get(), 1);
        for dir in [&objects, &refs] {
            let before = fx.asked.get();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
            assert!(fx.resolves("a"));
            assert_eq!(
                fx.asked.get(),
                before + 1,
                "chmod of {} not seen",
                dir.display()
            );
        }
        // A child's attributes change no answer, and are not watched.
        std::fs::set_permissions(objects.join("o1"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        assert!(fx.resolves("a"));
        assert_eq!(fx.asked.get(), 3);
    }

    #[test]
    fn refs_outside_objects_are_not_cached() {
        let mut fx = Fixture::new();
        std::os::unix::fs::symlink(fx.dir.path(), fx.dir.path().join("refs/out")).unwrap();
        assert!(fx.resolves("out"));
        assert!(fx.resolves("out"));
        assert_eq!(fx.asked.get(), 2);
        assert!(fx.cache.entries.is_empty());
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
