//! Setting up a copy: opening its two roots, whether the destination root
//! passes anything on to new entries (set-gid bit, default ACL, group), and
//! the umask, looked up once the copy is big enough to gain from it.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::Ordering;

use nix::errno::Errno;

use super::Copier;
use crate::error::{Error, Result};
use crate::fd;
use crate::tree::sys::{Stat, XattrTarget, fstatx, get_xattr};

/// Opens the root directory `path` of a copy. It is followed if it is a
/// symlink, as `cp -a src/. dst` does.
pub(super) fn open_root(path: &Path) -> Result<OwnedFd> {
    fd::open(path, libc::O_RDONLY | libc::O_DIRECTORY)
        .map_err(|e| Error::path("open directory", path, e))
}

/// The metadata of the root directory `fd`, opened from `path`.
pub(super) fn stat_root(fd: &OwnedFd, path: &Path) -> Result<Stat> {
    fstatx(fd.as_fd()).map_err(|e| Error::sys(format_args!("stat {}", path.display()), e))
}

/// Whether the destination root passes nothing on to the inodes created in
/// it: no set-gid bit, no default ACL, and the caller's group `gid`.
pub(super) fn passes_nothing_on(dir: BorrowedFd<'_>, st: &Stat, gid: u32) -> bool {
    st.gid == gid && st.mode & libc::S_ISGID == 0 && !has_default_acl(dir)
}

/// Whether the directory has a default ACL (which new entries inherit,
/// instead of the umask applying). Errors count as "has one": the safe side.
fn has_default_acl(dir: BorrowedFd<'_>) -> bool {
    !matches!(
        get_xattr(XattrTarget::Fd(dir), c"system.posix_acl_default", &mut []),
        Err(Errno::ENODATA | Errno::EOPNOTSUPP)
    )
}

/// Regular files copied before the umask is looked up: a small tree never
/// pays for reading it.
pub(super) const UMASK_AFTER_FILES: usize = 32;

impl Copier<'_> {
    /// Counts a regular file created by the copy, towards
    /// [`UMASK_AFTER_FILES`].
    pub(super) fn count_file(&self) {
        if self.files.load(Ordering::Relaxed) < UMASK_AFTER_FILES {
            self.files.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The umask, when it is worth knowing (see [`UMASK_AFTER_FILES`]).
    pub(super) fn umask(&self) -> Option<u32> {
        if self.files.load(Ordering::Relaxed) < UMASK_AFTER_FILES {
            return None;
        }
        *self.umask.get_or_init(crate::process::umask)
    }
}
