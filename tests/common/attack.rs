//! Helpers of the hostile-tree tests: an attacker that swaps a directory for
//! a symlink the moment a walk starts working in it, snapshots of the
//! directory it points to, and trees deeper than `PATH_MAX`, built and
//! checked with `*at` calls only.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use nix::fcntl::{AT_FDCWD, OFlag, RenameFlags, openat, renameat2};
use nix::sys::stat::{Mode, mkdirat};

/// A temporary directory on tmpfs where there is one (`/dev/shm`): creating
/// thousands of files and nested directories is slow on the journalled
/// disk of a busy machine.
pub fn fast_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let tmp = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    };
    tmp.expect("tempdir")
}

/// Which events in the watched directory trigger the swap.
#[derive(Clone, Copy)]
pub enum Trigger {
    /// The first entry deleted in it.
    Delete,
    /// The first entry created in it.
    Create,
}

/// An attacker armed on `watched`: at its first [`Trigger`] event it
/// exchanges `a` and `b` (`renameat2(RENAME_EXCHANGE)`).
pub struct Attacker {
    thread: JoinHandle<bool>,
}

impl Attacker {
    /// Watches `watched` (before returning, so no event is missed) and swaps
    /// `a` and `b` at the first `trigger` event, giving up after a few
    /// seconds without one.
    pub fn arm(watched: &Path, trigger: Trigger, a: &Path, b: &Path) -> Attacker {
        // SAFETY: plain syscall without pointers.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        assert!(
            fd >= 0,
            "inotify_init1: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let fd: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
        let mask = match trigger {
            Trigger::Delete => libc::IN_DELETE,
            Trigger::Create => libc::IN_CREATE,
        };
        let path = CString::new(watched.as_os_str().as_bytes()).expect("path");
        // SAFETY: `path` is NUL-terminated; `fd` is an inotify descriptor.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) };
        assert!(
            wd >= 0,
            "inotify_add_watch: {}",
            std::io::Error::last_os_error()
        );
        let (a, b) = (a.to_path_buf(), b.to_path_buf());
        let thread = std::thread::spawn(move || {
            // Real-time priority where allowed: the attacker must wake while
            // the walk is still in the directory, even on a loaded machine.
            let param = libc::sched_param { sched_priority: 10 };
            // SAFETY: `param` is valid; 0 is the calling thread.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
            let mut pfd = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut pfd, 1, 5000) } != 1 {
                return false;
            }
            let r = renameat2(AT_FDCWD, &a, AT_FDCWD, &b, RenameFlags::RENAME_EXCHANGE);
            r.is_ok()
        });
        Attacker { thread }
    }

    /// Waits for the attacker; true when it made its swap.
    pub fn swapped(self) -> bool {
        self.thread.join().expect("attacker thread")
    }
}

/// Files below `dir`: path to (inode, size, mtime in ns).
pub type Snapshot = BTreeMap<PathBuf, (u64, u64, i64)>;

/// Snapshots every file below `dir` (not following symlinks).
pub fn snapshot(dir: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            let m = fs::symlink_metadata(&p).expect("stat");
            if m.is_dir() {
                stack.push(p.clone());
            }
            let mtime = m.mtime() * 1_000_000_000 + m.mtime_nsec();
            out.insert(p, (m.ino(), m.size(), mtime));
        }
    }
    out
}

/// How many entries differ between two snapshots: removed, added or changed.
pub fn touched(before: &Snapshot, after: &Snapshot) -> usize {
    let changed = before.iter().filter(|(p, v)| after.get(*p) != Some(v));
    let added = after.keys().filter(|p| !before.contains_key(*p));
    changed.count() + added.count()
}

/// Fills `dir` with `files` small files `f<i>` and `dirs` subdirectories
/// `s<i>`, each holding `files` files.
pub fn fill(dir: &Path, files: usize, dirs: usize) {
    fs::create_dir_all(dir).expect("mkdir");
    for i in 0..files {
        fs::write(dir.join(format!("f{i}")), b"data").expect("write");
    }
    for d in 0..dirs {
        let sub = dir.join(format!("s{d}"));
        fs::create_dir(&sub).expect("mkdir");
        for i in 0..files {
            fs::write(sub.join(format!("f{i}")), b"data").expect("write");
        }
    }
}

/// Opens a directory for `*at` calls (not through a symlink).
fn open_dir(dir: impl AsFd, name: &Path) -> OwnedFd {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .expect("open directory")
}

/// Opens the root of a deep tree (which may be reached through a ref).
fn open_root(root: &Path) -> OwnedFd {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    openat(AT_FDCWD, root, flags, Mode::empty()).expect("open root")
}

/// The name of every level of a deep tree.
fn level_name(name_len: usize) -> PathBuf {
    PathBuf::from("d".repeat(name_len))
}

/// Builds a chain of `depth` directories named with `name_len` bytes below
/// `root`, each holding a file `f` whose content is its level (the last also
/// a hard link `h` to it), without ever using a path longer than one
/// component.
pub fn make_deep(root: &Path, name_len: usize, depth: usize) {
    let name = level_name(name_len);
    let mut dir = open_root(root);
    for level in 0..depth {
        mkdirat(&dir, &name, Mode::from_bits_truncate(0o755)).expect("mkdirat");
        dir = open_dir(&dir, &name);
        let f = openat(
            &dir,
            "f",
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .expect("create");
        nix::unistd::write(&f, level.to_string().as_bytes()).expect("write");
    }
    // A hard link at the bottom: a copy links it to its first copy by a
    // path from the copy's root, longer than PATH_MAX.
    nix::unistd::linkat(&dir, "f", &dir, "h", nix::fcntl::AtFlags::empty()).expect("link");
}

/// Checks that `root` holds the chain [`make_deep`] built: every level, each
/// file's content, nothing more below the last.
pub fn check_deep(root: &Path, name_len: usize, depth: usize) {
    let name = level_name(name_len);
    let mut dir = open_root(root);
    for level in 0..depth {
        dir = open_dir(&dir, &name);
        let f = openat(&dir, "f", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
            .unwrap_or_else(|e| panic!("level {level}: open f: {e}"));
        let mut buf = [0u8; 16];
        let n = nix::unistd::read(&f, &mut buf).expect("read");
        assert_eq!(&buf[..n], level.to_string().as_bytes(), "level {level}");
    }
    let last = openat(&dir, &name, OFlag::O_RDONLY, Mode::empty());
    assert!(last.is_err(), "deeper than {depth} levels");
    let ino = |name: &str| {
        nix::sys::stat::fstatat(&dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            .map(|st| st.st_ino)
            .unwrap_or_else(|e| panic!("bottom: stat {name}: {e}"))
    };
    assert_eq!(ino("f"), ino("h"), "bottom hard link not kept");
}

/// Lowers the soft limit of open descriptors to `limit` (if higher) for the
/// life of the returned guard, so that a walk holding one per level fails.
pub struct FdLimit(libc::rlimit);

impl FdLimit {
    pub fn lower_to(limit: u64) -> FdLimit {
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `old` is a valid rlimit to write to.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);
        let new = libc::rlimit {
            rlim_cur: old.rlim_cur.min(limit),
            rlim_max: old.rlim_max,
        };
        // SAFETY: `new` is a valid rlimit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) }, 0);
        FdLimit(old)
    }
}

impl Drop for FdLimit {
    fn drop(&mut self) {
        // SAFETY: the saved rlimit is valid.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.0) };
    }
}
