//! `remove_tree`: removes a directory tree whatever a build left in it,
//! in parallel by directory (see [`super::pool`]).
//!
//! Entries are unlinked relative to their open directory; a directory is
//! removed once everything below it is (post-order). Directories are opened
//! by name in their open parent and checked against what its listing said
//! (see [`super::pool`]), so a directory swapped for a symlink mid-walk
//! stops the removal there instead of leading it outside the tree, and any
//! depth can be removed. Obstacles are dealt with
//! when they show up, so a plain tree costs nothing extra: on `EPERM`/`EACCES`
//! the immutable and append-only flags of the entry and its directory are
//! cleared and the directory made `u+rwx`, then the call is retried once.
//! Mounts are never crossed: a directory on another mount is refused with
//! `EBUSY` (the kernel already refuses to unlink a mount point itself).
//!
//! A btrfs subvolume (a tree of a store on btrfs, or one a build made) is
//! deleted with one ioctl where the kernel allows it; one it refuses (it
//! holds subvolumes, the caller may not delete subvolumes) is walked like
//! any directory.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use nix::dir::Type;
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, openat};
use nix::sys::stat::{FchmodatFlags, Mode, fchmod, fchmodat};
use nix::unistd::{UnlinkatFlags, geteuid, unlinkat};

use super::btrfs;
use super::pool::{self, Node, Walker};
use super::sys::{
    FS_APPEND_FL, FS_IMMUTABLE_FL, Stat, fstatx, inode_flags, lstatx, open_dir_checked, read_names,
    set_inode_flags, walk_what,
};
use crate::error::{Error, Result};
use crate::log;

/// Removes `path` and everything below it, whatever a build left there:
/// directories without write/search permission, files and directories with
/// the immutable or append-only flag. Mount points are not crossed: a mount
/// below `path` (or at it) makes the removal fail with `EBUSY` rather than
/// delete inside another filesystem. A missing `path` is `Ok(())`. Symlinks
/// are removed, never followed, and a directory replaced by another one or
/// by a symlink while the removal runs makes it fail (`ESTALE`) rather than
/// remove anything outside the tree. Any depth is removed.
///
/// The first error stops the removal; what was not removed yet stays.
pub fn remove_tree(path: &Path) -> Result<()> {
    let Some(name) = path.file_name() else {
        return Err(Error::invalid(format!(
            "remove {}: not a removable path",
            path.display()
        )));
    };
    let name = CString::new(name.as_bytes())
        .map_err(|_| Error::invalid(format!("remove {}: NUL byte in path", path.display())))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent_fd = match openat(AT_FDCWD, parent, ROOT_FLAGS, Mode::empty()) {
        Err(Errno::ENOENT) => return Ok(()),
        other => other.map_err(|e| {
            Error::sys(
                format_args!("open parent directory of {}", path.display()),
                e,
            )
        })?,
    };
    remove_entry_at(parent_fd.as_fd(), &name, path)
}

/// [`remove_tree`] of the entry `name` of the open directory `parent_fd`,
/// which is never looked up by path: `path` only names it in messages.
pub(crate) fn remove_entry_at(parent_fd: BorrowedFd<'_>, name: &CStr, path: &Path) -> Result<()> {
    let fail =
        |what: &str, errno: Errno| Error::sys(format_args!("{what} {}", path.display()), errno);
    let st = match lstatx(parent_fd, name) {
        Err(Errno::ENOENT) => return Ok(()),
        other => other.map_err(|e| fail("stat", e))?,
    };
    // The parent is not ours: only the entry itself is unlocked.
    if !st.is_dir() {
        return retry_unlocked(
            || unlinkat(parent_fd, name, UnlinkatFlags::NoRemoveDir),
            || unlock_entry(parent_fd, name),
        )
        .map_err(|e| fail("remove", e));
    }
    let parent_stat = fstatx(parent_fd).map_err(|e| fail("stat parent of", e))?;
    if is_other_mount(&parent_stat, &st) {
        return Err(fail("refusing to remove mount point", Errno::EBUSY));
    }
    // A subvolume goes at once; if it cannot, the walk empties it.
    if btrfs::may_be_subvolume(&st, &parent_stat) && delete_subvolume(parent_fd, name) {
        return Ok(());
    }
    let (root, _) = retry_unlocked(
        || open_dir_checked(parent_fd, name, st.inode()),
        || make_accessible(parent_fd, name),
    )
    .map_err(|e| fail(walk_what("open directory", e), e))?;
    let remover = Remover {
        path,
        parent: parent_fd,
        name,
        root_stat: st,
        privileged: geteuid().is_root(),
    };
    pool::run(&remover, root, st.inode(), pool::default_threads())
}

/// Flags for opening the parent of the tree, by the caller's path.
const ROOT_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_CLOEXEC);

/// One removal in progress, shared by the pool's threads.
struct Remover<'a> {
    path: &'a Path,
    /// The directory holding the tree, and the tree's name in it.
    parent: BorrowedFd<'a>,
    name: &'a CStr,
    root_stat: Stat,
    /// Running as root: permission bits never get in the way.
    privileged: bool,
}

impl Walker for Remover<'_> {
    /// The directory's (device, inode), as its parent's listing saw it.
    type Data = (u64, u64);
    type Dir = OwnedFd;
    /// Names and the `getdents64` buffer.
    type Scratch = (Vec<(CString, Option<Type>)>, Vec<u8>);

    fn scratch(&self) -> Self::Scratch {
        (Vec::new(), Vec::new())
    }

    fn open(&self, parent: &OwnedFd, node: &Node<(u64, u64), OwnedFd>) -> Result<OwnedFd> {
        let (fd, st) = retry_unlocked(
            || open_dir_checked(parent.as_fd(), &node.name, node.data),
            || make_accessible(parent.as_fd(), &node.name),
        )
        .map_err(|e| self.error(walk_what("open directory", e), node, None, e))?;
        if is_other_mount(&self.root_stat, &st) {
            let e = Errno::EBUSY;
            return Err(self.error("refusing to remove inside mount point", node, None, e));
        }
        Ok(fd)
    }

    fn open_parent(&self, child: &OwnedFd, parent: &Node<(u64, u64), OwnedFd>) -> Result<OwnedFd> {
        open_dir_checked(child.as_fd(), c"..", parent.data)
            .map(|(fd, _)| fd)
            .map_err(|e| self.error(walk_what("open directory", e), parent, None, e))
    }

    fn visit(
        &self,
        scratch: &mut Self::Scratch,
        node: &Node<(u64, u64), OwnedFd>,
        dir: &OwnedFd,
        children: &mut Vec<(CString, (u64, u64))>,
    ) -> Result<()> {
        let dir = dir.as_fd();
        let fail = |what: &str, errno: Errno| self.error(what, node, None, errno);
        if !self.privileged {
            // Search and write permission are needed below; granting them
            // here, once, spares a failed call per entry.
            let st = fstatx(dir).map_err(|e| fail("stat", e))?;
            if st.mode & 0o700 != 0o700 {
                fchmod(dir, Mode::S_IRWXU).map_err(|e| fail("make writable", e))?;
            }
        }
        let (names, dirents) = scratch;
        read_names(dir, names, dirents).map_err(|e| fail("read directory", e))?;
        for (name, kind) in names.drain(..) {
            let fail = |what: &str, errno: Errno| self.error(what, node, Some(&name), errno);
            let st = match kind {
                Some(Type::Directory) | None => {
                    Some(lstatx(dir, &name).map_err(|e| fail("stat", e))?)
                }
                Some(_) => None,
            };
            match st {
                Some(st) if st.is_dir() => {
                    if is_other_mount(&self.root_stat, &st) {
                        return Err(fail("refusing to remove inside mount point", Errno::EBUSY));
                    }
                    if btrfs::may_be_subvolume(&st, &self.root_stat) && delete_subvolume(dir, &name)
                    {
                        continue;
                    }
                    children.push((name, st.inode()));
                }
                _ => retry_unlocked(
                    || unlinkat(dir, name.as_c_str(), UnlinkatFlags::NoRemoveDir),
                    || {
                        clear_flags(dir);
                        unlock_entry(dir, &name);
                    },
                )
                .map_err(|e| fail("remove", e))?,
            }
        }
        Ok(())
    }

    fn leave(
        &self,
        _: &mut Self::Scratch,
        node: &Node<(u64, u64), OwnedFd>,
        dir: Arc<OwnedFd>,
        parent: Option<&OwnedFd>,
    ) -> Result<()> {
        let (parent, name) = match parent {
            Some(p) => (p.as_fd(), node.name.as_c_str()),
            None => (self.parent, self.name),
        };
        // Closed first: a directory removed while open costs ext4 a trip
        // through its orphan list when it is closed.
        drop(dir);
        retry_unlocked(
            || unlinkat(parent, name, UnlinkatFlags::RemoveDir),
            || {
                if let Ok((dir, _)) = open_dir_checked(parent, name, node.data) {
                    clear_flags(dir.as_fd());
                }
                // The tree's own parent is not ours to unlock.
                if !node.is_root() {
                    clear_flags(parent);
                    let _ = fchmod(parent, Mode::S_IRWXU);
                }
            },
        )
        .map_err(|e| self.error("remove directory", node, None, e))
    }
}

impl Remover<'_> {
    /// The error for `what` failing on the entry `name` of `node` (or on
    /// `node` itself).
    fn error(
        &self,
        what: &str,
        node: &Node<(u64, u64), OwnedFd>,
        name: Option<&CStr>,
        errno: Errno,
    ) -> Error {
        let mut path = self.path.join(node.rel());
        if let Some(name) = name {
            path.push(OsStr::from_bytes(name.to_bytes()));
        }
        Error::sys(format_args!("{what} {}", path.display()), errno)
    }
}

/// Makes the directory `name` of `dir` openable (`u+rwx`), not following a
/// symlink.
fn make_accessible(dir: BorrowedFd<'_>, name: &CStr) {
    let _ = fchmodat(dir, name, Mode::S_IRWXU, FchmodatFlags::NoFollowSymlink);
}

/// Runs `call`; if it fails with `EPERM` or `EACCES`, runs `unlock` and
/// `call` once more.
fn retry_unlocked<T>(
    mut call: impl FnMut() -> nix::Result<T>,
    unlock: impl FnOnce(),
) -> nix::Result<T> {
    match call() {
        Err(Errno::EPERM | Errno::EACCES) => {
            unlock();
            call()
        }
        other => other,
    }
}

/// Deletes the entry `name` of `dir` if it is a btrfs subvolume, unlocking
/// it as other entries are if that is refused; `false` if it is still there.
fn delete_subvolume(dir: BorrowedFd<'_>, name: &CStr) -> bool {
    match retry_unlocked(
        || btrfs::delete_subvolume(dir, name),
        || unlock_entry(dir, name),
    ) {
        Ok(()) => true,
        Err(Errno::ENOTSUP) => false,
        Err(e) => {
            log::debug(format_args!(
                "subvolume {name:?} not deleted at once ({e}): removing it entry by entry"
            ));
            false
        }
    }
}

/// Clears the immutable and append-only flags of the entry `name` of `dir`
/// if it is a regular file or a directory (the only inodes that have them:
/// other types cannot even be opened safely for the ioctl), and makes a
/// directory `u+rwx`.
fn unlock_entry(dir: BorrowedFd<'_>, name: &CStr) {
    let Ok(st) = lstatx(dir, name) else { return };
    if !matches!(st.kind(), libc::S_IFREG | libc::S_IFDIR) {
        return;
    }
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    if let Ok(fd) = openat(dir, name, flags, Mode::empty()) {
        clear_flags(fd.as_fd());
        if st.is_dir() {
            let _ = fchmod(fd.as_fd(), Mode::S_IRWXU);
        }
    }
}

/// Clears the immutable and append-only flags of an open inode, and makes it
/// `u+rwx` if it is a directory. Best effort: the retried call reports what
/// still fails.
fn clear_flags(fd: BorrowedFd<'_>) {
    if let Ok(flags) = inode_flags(fd) {
        let locked = FS_IMMUTABLE_FL | FS_APPEND_FL;
        if flags & locked != 0 {
            let _ = set_inode_flags(fd, flags & !locked);
        }
    }
}

/// True when `st` is on another mount than `base`, or is a mount's root.
/// The device number is only the fallback for kernels without mount ids
/// (before 5.8): btrfs subvolumes have their own device numbers on one mount.
fn is_other_mount(base: &Stat, st: &Stat) -> bool {
    st.mount_root
        || match (base.mnt_id, st.mnt_id) {
            (Some(a), Some(b)) => a != b,
            _ => st.dev != base.dev,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_remove_missing_is_ok() {
        let tmp = tempfile::tempdir().expect("tempdir");
        remove_tree(&tmp.path().join("missing")).expect("missing path");
        remove_tree(&tmp.path().join("missing/below")).expect("missing parent");
    }

    #[test]
    fn tree_remove_refuses_pathless() {
        assert_eq!(
            remove_tree(Path::new("/")).map_err(|e| e.errno()),
            Err(libc::EINVAL)
        );
        assert_eq!(
            remove_tree(Path::new("a/..")).map_err(|e| e.errno()),
            Err(libc::EINVAL)
        );
    }

    #[test]
    fn tree_remove_plain_tree_and_symlink_not_followed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let keep = tmp.path().join("keep");
        std::fs::create_dir(&keep).expect("mkdir");
        std::fs::write(keep.join("f"), b"x").expect("write");
        let victim = tmp.path().join("victim");
        std::fs::create_dir_all(victim.join("a/b/c")).expect("mkdir");
        std::fs::write(victim.join("a/b/c/f"), b"x").expect("write");
        std::os::unix::fs::symlink(&keep, victim.join("a/link")).expect("symlink");
        remove_tree(&victim).expect("remove");
        assert!(!victim.exists());
        assert!(keep.join("f").exists(), "symlink was followed");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&keep, &link).expect("symlink");
        remove_tree(&link).expect("remove link");
        assert!(keep.join("f").exists());
    }
}
