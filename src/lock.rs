//! Ownership locks on store entries.
//!
//! Whoever creates a work dir, a temp dir or holds an object open keeps a
//! shared `flock(2)` on that directory for as long as it lives. The garbage
//! collector takes an exclusive lock without waiting: when it gets one, no
//! live handle in any process owns the entry, so it may be removed. `flock`
//! locks belong to an open file description and are dropped by the kernel
//! when a process dies, which is exactly the ownership we want.
//!
//! Creating and committing take no store-wide lock, so a collector never
//! makes a build wait:
//! - A creator locks its new directory right after `mkdir`. A collector may
//!   take the entry in between (nobody holds it yet) and remove it, so the
//!   creator checks, once locked, that the directory is still linked, and
//!   tries another name if not ([`DirLock::is_unlinked`]).
//! - A commit locks the tree before it leaves the (locked) work dir and
//!   holds it until its ref names it, and makes a replacement ref inside the
//!   work dir. A collector that holds an unnamed object reads the refs again
//!   before removing it, so a commit that ended meanwhile is seen.
//!
//! The collector holds a store-wide lock on `tmp/` exclusively while it
//! sweeps, so that sweeps do not overlap. Nothing else takes that lock, so a
//! sweep, however long, keeps no look-up waiting:
//! - Pinning the object a ref names (a look-up: `get`, the server's
//!   `read-tree`, `read-tree-at` and `open-tree`) counts a pin on the pin
//!   board and checks that the ref still names the object (see
//!   [`crate::cache::pinboard`]), or, where it cannot use the board (see
//!   [`crate::cache::pins`]), opens `objects/<name>` that the ref names and
//!   takes a shared lock,
//!   waiting while an eviction or collection holds it, then checks that the
//!   directory is still linked, and reads the ref again if not. A collector
//!   holds an object that a ref names only while it reads the refs again,
//!   and lets go of it before removing anything, so that wait ends within
//!   that reading. An object the ref names once locked is safe: ref targets
//!   are fresh names, never reused, so no collector found it unnamed after
//!   having locked it.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use crate::error::{Error, Result};
use crate::fd;

const DIR_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;

/// A held `flock` on a directory; released when dropped.
#[derive(Debug)]
pub struct DirLock {
    fd: OwnedFd,
}

impl DirLock {
    /// Opens the directory `name` in `dir` (not following a final symlink)
    /// and takes a shared lock on it; `path` names it in errors.
    pub(crate) fn shared_at(dir: BorrowedFd<'_>, name: &CStr, path: &Path) -> Result<DirLock> {
        let fd = open_at(dir, name, DIR_FLAGS, path)?;
        flock(&fd, libc::LOCK_SH).map_err(|e| Error::path("cannot lock", path, e))?;
        Ok(DirLock { fd })
    }

    /// Whether the locked directory has been removed (a collector took it
    /// before the lock was granted).
    pub(crate) fn is_unlinked(&self, path: &Path) -> Result<bool> {
        let st = nix::sys::stat::fstat(&self.fd)
            .map_err(|e| Error::sys(format_args!("cannot stat {}", path.display()), e))?;
        Ok(st.st_nlink == 0)
    }

    /// Tries to take an exclusive lock on `path` without waiting; `None`
    /// when somebody else holds a lock on it.
    pub fn try_exclusive(path: &Path) -> Result<Option<DirLock>> {
        let fd = open_dir(path)?;
        match flock(&fd, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => Ok(Some(DirLock { fd })),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
            Err(e) => Err(Error::path("cannot lock", path, e)),
        }
    }

    /// Takes a shared lock on the directory `path` (a final symlink not
    /// followed), waiting for it.
    pub(crate) fn shared(path: &Path) -> Result<DirLock> {
        let fd = open_dir(path)?;
        flock(&fd, libc::LOCK_SH).map_err(|e| Error::path("cannot lock", path, e))?;
        Ok(DirLock { fd })
    }

    /// Takes an exclusive lock, waiting for it.
    pub fn exclusive(path: &Path) -> Result<DirLock> {
        let fd = open_dir(path)?;
        flock(&fd, libc::LOCK_EX).map_err(|e| Error::path("cannot lock", path, e))?;
        Ok(DirLock { fd })
    }

    /// The descriptor of the locked directory.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }
}

fn open_dir(path: &Path) -> Result<OwnedFd> {
    fd::open(path, DIR_FLAGS).map_err(|e| Error::path("cannot open", path, e))
}

fn open_at(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int, path: &Path) -> Result<OwnedFd> {
    fd::open_at(dir, name, flags).map_err(|e| Error::path("cannot open", path, e))
}

/// `flock(2)` on `fd`, retried when a signal interrupts it.
pub(crate) fn flock(fd: &OwnedFd, op: libc::c_int) -> std::io::Result<()> {
    loop {
        // SAFETY: `fd` is an open descriptor owned by the caller.
        let r = unsafe { libc::flock(fd.as_raw_fd(), op) };
        if r == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_lock_blocks_exclusive_try() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::shared(dir.path()).unwrap();
        assert!(DirLock::try_exclusive(dir.path()).unwrap().is_none());
        drop(held);
        assert!(DirLock::try_exclusive(dir.path()).unwrap().is_some());
    }
}
