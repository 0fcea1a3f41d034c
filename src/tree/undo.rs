//! What a copy's destination held before the copy ([`Snapshot`]), so that a
//! cancelled copy can remove what it added.
//!
//! Only the directories the copy can merge into are recorded: the root and,
//! below it, each directory that exists on both sides (the copy creates
//! everything else). For each: its entry names, owner, mode, times and
//! xattrs. A fresh, empty destination costs a `statx`, a `getdents64` and
//! an `flistxattr`.
//!
//! Restoring removes every entry that is not in the record (whole trees for
//! directories the copy created) and puts the recorded xattrs, owner, mode
//! and times back, deepest directories first. A non-directory the copy
//! replaced keeps the copied contents.

use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::Type;
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, openat};
use nix::sys::stat::{Mode, fchmod, futimens};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, unlinkat};

use super::remove::remove_entry_at;
use super::sys::{
    Stat, XattrTarget, fstatx, lstatx, open_dir_checked, read_names, set_xattr, walk_what,
};
use super::xattr::{XattrBufs, read_all};
use crate::error::{Error, Result};

/// Flags for opening a directory below the roots: never through a symlink.
const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// The directories of a destination a copy may merge into, as they were.
pub(crate) struct Snapshot {
    /// Parents before their children.
    dirs: Vec<DirState>,
}

struct DirState {
    /// Relative to the destination; empty for the root (for messages).
    rel: PathBuf,
    /// The index of the parent's state and the directory's name in it;
    /// `None` for the root.
    parent: Option<(usize, CString)>,
    names: HashSet<CString>,
    st: Stat,
    xattrs: Vec<(CString, Vec<u8>)>,
}

/// Scratch buffers of a directory listing.
#[derive(Default)]
struct Listing {
    names: Vec<(CString, Option<Type>)>,
    buf: Vec<u8>,
}

impl Listing {
    fn read(&mut self, dir: BorrowedFd<'_>, path: &Path) -> Result<()> {
        read_names(dir, &mut self.names, &mut self.buf)
            .map_err(|e| Error::sys(format_args!("read directory {}", path.display()), e))
    }
}

impl Snapshot {
    /// Records the directories of `dst` that a copy of `src` into it may
    /// merge into.
    pub(crate) fn take(src: &Path, dst: &Path) -> Result<Snapshot> {
        let mut dirs = Vec::new();
        let mut listing = Listing::default();
        let mut stack = vec![(PathBuf::new(), None, open_root(src)?, open_root(dst)?)];
        while let Some((rel, parent, src_dir, dst_dir)) = stack.pop() {
            let index = dirs.len();
            let path = dst.join(&rel);
            let st = fstatx(dst_dir.as_fd())
                .map_err(|e| Error::sys(format_args!("stat {}", path.display()), e))?;
            listing.read(dst_dir.as_fd(), &path)?;
            let mut names = HashSet::with_capacity(listing.names.len());
            for (name, _) in listing.names.drain(..) {
                let both_dirs = [&src_dir, &dst_dir]
                    .iter()
                    .all(|d| lstatx(d.as_fd(), &name).is_ok_and(|st| st.is_dir()));
                if both_dirs {
                    let open =
                        |d: &OwnedFd| openat(d.as_fd(), name.as_c_str(), DIR_FLAGS, Mode::empty());
                    let opened = open(&src_dir).and_then(|s| Ok((s, open(&dst_dir)?)));
                    let (s, d) = opened.map_err(|e| {
                        Error::sys(format_args!("open directory in {}", path.display()), e)
                    })?;
                    let child = rel.join(OsStr::from_bytes(name.to_bytes()));
                    stack.push((child, Some((index, name.clone())), s, d));
                }
                names.insert(name);
            }
            let xattrs = read_xattrs(dst_dir.as_fd())
                .map_err(|e| Error::sys(format_args!("read xattrs of {}", path.display()), e))?;
            dirs.push(DirState {
                rel,
                parent,
                names,
                st,
                xattrs,
            });
        }
        Ok(Snapshot { dirs })
    }

    /// Removes from `dst` what is not in the snapshot and puts the recorded
    /// directories' owners, modes and times back.
    ///
    /// Each recorded directory is reached from the root one component at a
    /// time, each checked to be the directory recorded, and entries are
    /// removed relative to it: a directory replaced since (by a symlink to
    /// elsewhere, say) fails the restore with `ESTALE` instead of leading it
    /// outside the destination.
    pub(crate) fn restore(&self, dst: &Path) -> Result<()> {
        let root = open_root(dst)?;
        let mut listing = Listing::default();
        for (index, dir) in self.dirs.iter().enumerate().rev() {
            let path = dst.join(&dir.rel);
            let fail =
                |what: &str, e: Errno| Error::sys(format_args!("{what} {}", path.display()), e);
            let fd = self
                .open_recorded(root.as_fd(), index)
                .map_err(|e| fail(walk_what("open directory", e), e))?;
            let fd = fd.as_fd();
            listing.read(fd, &path)?;
            for (name, _) in listing.names.drain(..) {
                if dir.names.contains(&name) {
                    continue;
                }
                match lstatx(fd, &name) {
                    Ok(st) if st.is_dir() => {
                        let entry = path.join(OsStr::from_bytes(name.to_bytes()));
                        remove_entry_at(fd, &name, &entry)?
                    }
                    Ok(_) => unlinkat(fd, name.as_c_str(), UnlinkatFlags::NoRemoveDir)
                        .map_err(|e| fail("remove an entry of", e))?,
                    Err(Errno::ENOENT) => {}
                    Err(e) => return Err(fail("stat an entry of", e)),
                }
            }
            restore_xattrs(fd, &dir.xattrs).map_err(|e| fail("restore xattrs of", e))?;
            let st = &dir.st;
            fchown(fd, Some(Uid::from_raw(st.uid)), Some(Gid::from_raw(st.gid)))
                .map_err(|e| fail("set owner of", e))?;
            fchmod(
                fd,
                Mode::from_bits_truncate((st.mode & 0o7777) as libc::mode_t),
            )
            .map_err(|e| fail("set mode of", e))?;
            let ts = |t: super::sys::Time| TimeSpec::new(t.sec, i64::from(t.nsec));
            futimens(fd, &ts(st.atime), &ts(st.mtime)).map_err(|e| fail("set times of", e))?;
        }
        Ok(())
    }
}

impl Snapshot {
    /// Opens the recorded directory `index` from the destination root `root`,
    /// one component at a time, each checked against what was recorded.
    fn open_recorded(&self, root: BorrowedFd<'_>, index: usize) -> nix::Result<OwnedFd> {
        let mut chain = Vec::new();
        let mut at = index;
        while let Some((parent, name)) = &self.dirs[at].parent {
            chain.push((name.as_c_str(), self.dirs[at].st.inode()));
            at = *parent;
        }
        let mut dir = open_dir_checked(root, c".", self.dirs[at].st.inode())?.0;
        for (name, key) in chain.into_iter().rev() {
            dir = open_dir_checked(dir.as_fd(), name, key)?.0;
        }
        Ok(dir)
    }
}

/// Opens a root directory (followed if it is a symlink, as the copy does).
fn open_root(path: &Path) -> Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    openat(AT_FDCWD, path, flags, Mode::empty())
        .map_err(|e| Error::sys(format_args!("open directory {}", path.display()), e))
}

/// The names and values of the extended attributes of `fd`.
fn read_xattrs(fd: BorrowedFd<'_>) -> nix::Result<Vec<(CString, Vec<u8>)>> {
    read_all(XattrTarget::Fd(fd), &mut XattrBufs::new()).map_err(|e| e.errno)
}

/// Makes the extended attributes of `fd` what `want` lists.
fn restore_xattrs(fd: BorrowedFd<'_>, want: &[(CString, Vec<u8>)]) -> nix::Result<()> {
    let now = read_xattrs(fd)?;
    for (name, _) in now
        .iter()
        .filter(|(n, _)| !want.iter().any(|(w, _)| w == n))
    {
        // SAFETY: `name` is NUL-terminated; the descriptor is open.
        Errno::result(unsafe { libc::fremovexattr(fd.as_raw_fd(), name.as_ptr()) })?;
    }
    for (name, value) in want.iter().filter(|w| !now.contains(w)) {
        set_xattr(XattrTarget::Fd(fd), name, value)?;
    }
    Ok(())
}
