//! `measure_tree`: the size of a tree as the cache counts it, and the
//! clamping of its timestamps to a source epoch, in one parallel walk (see
//! [`super::pool`]).
//!
//! Size = allocated bytes (`st_blocks * 512`) of every entry, the root
//! included, each inode with several links inside the tree once. Every
//! directory is opened relative to its parent's descriptor with
//! `O_NOFOLLOW | O_DIRECTORY` and checked to be the inode that was listed,
//! so the walk never leaves the tree; mounts below the root are not entered
//! (the mount point's own directory is counted).

use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, openat};
use nix::sys::stat::Mode;

use super::pool::{self, Node, Walker};
use super::sys::{
    FS_IMMUTABLE_FL, Stat, each_name, fstatx, inode_flags, lstat, open_dir_checked, walk_what,
};
use crate::error::{Error, Result};

/// What [`measure_tree`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Measure {
    /// Allocated bytes of every inode of the tree, once each.
    pub bytes: u64,
    /// Entries of the tree, the root included.
    pub entries: u64,
}

/// Setting atime and mtime of every entry whose mtime is at or after
/// `since` (Unix seconds) to `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clamp {
    /// The source epoch.
    pub epoch: i64,
    /// The object's creation second.
    pub since: i64,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Measures the tree at `path` (a directory, not followed if a symlink)
/// and, with `clamp`, clamps its timestamps on the way.
pub fn measure_tree(path: &Path, clamp: Option<Clamp>) -> Result<Measure> {
    let root = openat(AT_FDCWD, path, DIR_FLAGS, Mode::empty())
        .map_err(|e| Error::sys(format_args!("open {}", path.display()), e))?;
    measure_open_tree(root.as_fd(), path, clamp)
}

/// [`measure_tree`] of the directory open as `root`; `path` names it in
/// messages.
pub(crate) fn measure_open_tree(
    root: BorrowedFd<'_>,
    path: &Path,
    clamp: Option<Clamp>,
) -> Result<Measure> {
    #[cfg(test)]
    WALKS.with(|w| w.set(w.get() + 1));
    let fail = |what: &str, e: Errno| Error::sys(format_args!("{what} {}", path.display()), e);
    let st = fstatx(root).map_err(|e| fail("stat", e))?;
    let walker = Measurer {
        path,
        dev: st.dev,
        clamp,
        bytes: AtomicU64::new(st.blocks * 512),
        entries: AtomicU64::new(1),
        linked: Mutex::new(HashSet::new()),
    };
    if let Some(c) = clamp {
        if st.mtime.sec >= c.since {
            set_times(root, c"", libc::AT_EMPTY_PATH, c.epoch, &st)
                .map_err(|e| fail("set times of", e))?;
        }
    }
    pool::run(
        &walker,
        Dir::Root(root),
        st.inode(),
        pool::default_threads(),
    )?;
    Ok(Measure {
        bytes: walker.bytes.load(Ordering::Relaxed),
        entries: walker.entries.load(Ordering::Relaxed),
    })
}

#[cfg(test)]
thread_local! {
    /// Walks [`measure_open_tree`] started on this thread, for tests that
    /// check what walks a tree.
    pub(crate) static WALKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A directory of the walk: the root, the caller's, or one the walk opened.
enum Dir<'a> {
    Root(BorrowedFd<'a>),
    Opened(OwnedFd),
}

impl AsFd for Dir<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Dir::Root(fd) => *fd,
            Dir::Opened(fd) => fd.as_fd(),
        }
    }
}

struct Measurer<'a> {
    path: &'a Path,
    dev: u64,
    clamp: Option<Clamp>,
    bytes: AtomicU64,
    entries: AtomicU64,
    /// Inodes with several links seen so far.
    linked: Mutex<HashSet<(u64, u64)>>,
}

impl<'a> Walker for Measurer<'a> {
    /// The directory's (device, inode), as its parent's listing saw it.
    type Data = (u64, u64);
    type Dir = Dir<'a>;
    /// The `getdents` buffer.
    type Scratch = Vec<u8>;

    fn scratch(&self) -> Self::Scratch {
        Vec::new()
    }

    fn open(&self, parent: &Dir<'a>, node: &Node<(u64, u64), Dir<'a>>) -> Result<Dir<'a>> {
        open_dir_checked(parent.as_fd(), &node.name, node.data)
            .map(|(fd, _)| Dir::Opened(fd))
            .map_err(|e| self.error(walk_what("open directory", e), &node.rel(), e))
    }

    fn open_parent(&self, child: &Dir<'a>, parent: &Node<(u64, u64), Dir<'a>>) -> Result<Dir<'a>> {
        open_dir_checked(child.as_fd(), c"..", parent.data)
            .map(|(fd, _)| Dir::Opened(fd))
            .map_err(|e| self.error(walk_what("open directory", e), &parent.rel(), e))
    }

    fn visit(
        &self,
        scratch: &mut Self::Scratch,
        node: &Node<(u64, u64), Dir<'a>>,
        dir: &Dir<'a>,
        children: &mut Vec<(CString, (u64, u64))>,
    ) -> Result<()> {
        let dir = dir.as_fd();
        let (mut bytes, mut entries) = (0, 0);
        let mut count = |name: &CStr| -> Result<()> {
            let rel = || node.rel().join(OsStr::from_bytes(name.to_bytes()));
            let st = lstat(dir, name).map_err(|e| self.error("stat", &rel(), e))?;
            entries += 1;
            if st.is_dir() || st.nlink < 2 || self.first_link(&st) {
                bytes += st.blocks * 512;
            }
            if let Some(c) = self.clamp {
                if st.mtime.sec >= c.since {
                    set_times(dir, name, libc::AT_SYMLINK_NOFOLLOW, c.epoch, &st)
                        .map_err(|e| self.error("set times of", &rel(), e))?;
                }
            }
            // Mounts below the root are not entered.
            if st.is_dir() && st.dev == self.dev {
                children.push((name.to_owned(), st.inode()));
            }
            Ok(())
        };
        // The first failure to count an entry stops the listing.
        let read_error = |e| self.error("read directory", &node.rel(), e);
        each_name(dir, scratch, read_error, |name, _| count(name))?;
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.entries.fetch_add(entries, Ordering::Relaxed);
        Ok(())
    }

    fn leave(
        &self,
        _: &mut Self::Scratch,
        _: &Node<(u64, u64), Dir<'a>>,
        _: Arc<Dir<'a>>,
        _: Option<&Dir<'a>>,
    ) -> Result<()> {
        Ok(())
    }
}

impl Measurer<'_> {
    /// Whether this is the first link of a multiply linked inode seen.
    fn first_link(&self, st: &Stat) -> bool {
        let mut linked = self.linked.lock().unwrap_or_else(|p| p.into_inner());
        linked.insert(st.inode())
    }

    fn error(&self, what: &str, rel: &Path, e: Errno) -> Error {
        Error::sys(format_args!("{what} {}", self.path.join(rel).display()), e)
    }
}

/// Sets atime and mtime of `name` in `dir` to `epoch`; an immutable entry
/// is left as it is.
fn set_times(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    epoch: i64,
    st: &Stat,
) -> nix::Result<()> {
    let t = libc::timespec {
        tv_sec: epoch,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: `name` is NUL-terminated, `times` holds two timespecs.
    let r = unsafe { libc::utimensat(dir.as_raw_fd(), name.as_ptr(), times.as_ptr(), flags) };
    match Errno::result(r) {
        Err(Errno::EPERM) if is_immutable(dir, name, flags, st) => Ok(()),
        other => other.map(drop),
    }
}

/// Whether the file or directory `name` in `dir` has the immutable flag.
fn is_immutable(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int, st: &Stat) -> bool {
    if !matches!(st.kind(), libc::S_IFREG | libc::S_IFDIR) {
        return false;
    }
    let opened;
    let fd = if flags & libc::AT_EMPTY_PATH != 0 {
        dir
    } else {
        let oflags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        match openat(dir, name, oflags, Mode::empty()) {
            Ok(fd) => {
                opened = fd;
                opened.as_fd()
            }
            Err(_) => return false,
        }
    };
    inode_flags(fd).is_ok_and(|f| f & FS_IMMUTABLE_FL != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn blocks(p: &Path) -> u64 {
        std::fs::symlink_metadata(p).unwrap().blocks() * 512
    }

    #[test]
    fn counts_every_entry_and_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t");
        std::fs::create_dir_all(t.join("a/b")).unwrap();
        std::fs::write(t.join("a/f"), vec![1u8; 10000]).unwrap();
        std::fs::hard_link(t.join("a/f"), t.join("a/b/g")).unwrap();
        std::os::unix::fs::symlink("a/f", t.join("l")).unwrap();
        let m = measure_tree(&t, None).unwrap();
        assert_eq!(m.entries, 6);
        let expected = blocks(&t)
            + blocks(&t.join("a"))
            + blocks(&t.join("a/b"))
            + blocks(&t.join("a/f"))
            + blocks(&t.join("l"));
        assert_eq!(m.bytes, expected);
    }

    #[test]
    fn clamps_only_entries_at_or_after_the_creation_second() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t");
        std::fs::create_dir_all(t.join("d")).unwrap();
        std::fs::write(t.join("d/new"), "").unwrap();
        std::fs::write(t.join("old"), "").unwrap();
        std::os::unix::fs::symlink("missing", t.join("link")).unwrap();
        let old = std::fs::File::options()
            .write(true)
            .open(t.join("old"))
            .unwrap();
        old.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1000))
            .unwrap();
        let now = std::fs::metadata(&t).unwrap().mtime();
        measure_tree(
            &t,
            Some(Clamp {
                epoch: 5000,
                since: now - 1,
            }),
        )
        .unwrap();
        for p in ["", "d", "d/new"] {
            assert_eq!(std::fs::metadata(t.join(p)).unwrap().mtime(), 5000, "{p}");
        }
        assert_eq!(
            std::fs::symlink_metadata(t.join("link")).unwrap().mtime(),
            5000
        );
        assert_eq!(std::fs::metadata(t.join("old")).unwrap().mtime(), 1000);
    }
}
