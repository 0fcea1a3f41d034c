//! Trees as btrfs subvolumes: on btrfs a tree can be a subvolume, which the
//! kernel snapshots and deletes in constant time, whatever its size.
//!
//! Each function here is a fast path with a plain fallback: an error means
//! "not done, nothing changed", and the caller does what it does on any
//! other filesystem (`mkdir`, the per-file copy, the removal walk).
//!
//! A subvolume's root directory is inode 256 (`BTRFS_FIRST_FREE_OBJECTID`)
//! with a device number of its own; to a tool that does not know btrfs it is
//! an ordinary directory.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, RenameFlags, openat, renameat2};
use nix::sys::stat::{FchmodatFlags, Mode, fchmodat};
use nix::sys::statfs::{BTRFS_SUPER_MAGIC, fstatfs};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::sys::{Stat, fstatx, read_names};
use crate::log;

/// Inode number of every subvolume's root directory.
const SUBVOLUME_ROOT_INO: u64 = 256;
/// `BTRFS_SUBVOL_RDONLY`: the subvolume is a read-only snapshot.
const SUBVOL_RDONLY: u64 = 1 << 1;
/// `BTRFS_IOCTL_MAGIC`.
const IOCTL_MAGIC: u8 = 0x94;

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

/// `struct btrfs_ioctl_vol_args_v2` (the union as its `unused[4]`).
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; 4040],
}

/// `struct btrfs_ioctl_get_subvol_rootref_args`.
#[repr(C)]
struct RootRefArgs {
    min_treeid: u64,
    /// `{ treeid, dirid }` of each subvolume directly below.
    rootref: [[u64; 2]; 255],
    num_items: u8,
    align: [u8; 7],
}

nix::ioctl_write_ptr!(ioc_subvol_create, IOCTL_MAGIC, 14, VolArgs);
nix::ioctl_write_ptr!(ioc_snap_destroy, IOCTL_MAGIC, 15, VolArgs);
nix::ioctl_write_ptr!(ioc_snap_create_v2, IOCTL_MAGIC, 23, VolArgsV2);
nix::ioctl_read!(ioc_subvol_getflags, IOCTL_MAGIC, 25, u64);
nix::ioctl_write_ptr!(ioc_subvol_setflags, IOCTL_MAGIC, 26, u64);
nix::ioctl_readwrite!(ioc_get_subvol_rootref, IOCTL_MAGIC, 61, RootRefArgs);
nix::ioctl_write_ptr!(ioc_snap_destroy_v2, IOCTL_MAGIC, 63, VolArgsV2);

/// Copies `name` into an ioctl's NUL-terminated name field.
fn put_name(field: &mut [u8], name: &CStr) -> nix::Result<()> {
    let bytes = name.to_bytes();
    if bytes.len() >= field.len() {
        return Err(Errno::ENAMETOOLONG);
    }
    field[..bytes.len()].copy_from_slice(bytes);
    Ok(())
}

fn vol_args(name: &CStr) -> nix::Result<VolArgs> {
    let mut args = VolArgs {
        fd: 0,
        name: [0; 4088],
    };
    put_name(&mut args.name, name)?;
    Ok(args)
}

fn vol_args_v2(fd: i64, name: &CStr) -> nix::Result<VolArgsV2> {
    let mut args = VolArgsV2 {
        fd,
        transid: 0,
        flags: 0,
        unused: [0; 4],
        name: [0; 4040],
    };
    put_name(&mut args.name, name)?;
    Ok(args)
}

/// True when the open inode is on btrfs.
pub(crate) fn on_btrfs(fd: BorrowedFd<'_>) -> bool {
    fstatfs(fd).is_ok_and(|s| s.filesystem_type() == BTRFS_SUPER_MAGIC)
}

/// True when the directory open as `fd` is the root of a subvolume.
fn is_subvolume_root(fd: BorrowedFd<'_>) -> bool {
    fstatx(fd).is_ok_and(|st| st.ino == SUBVOLUME_ROOT_INO) && on_btrfs(fd)
}

/// True when the directory `st`, found inside a tree whose root is
/// `root`, may be a subvolume of its own: only a subvolume's root has inode
/// 256 and a device number other than the tree's. (Cheap: no syscall; the
/// functions below check the filesystem before acting.)
pub(crate) fn may_be_subvolume(st: &Stat, root: &Stat) -> bool {
    st.ino == SUBVOLUME_ROOT_INO && st.dev != root.dev
}

fn open_dir(dir: BorrowedFd<'_>, name: &CStr) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Creates the directory `name` in `parent` as a subvolume when `parent` is
/// on btrfs (`btrfs`, as [`on_btrfs`] says), else (or if that fails) with
/// `mkdir`; either way its mode is `mode` less the umask, as `mkdir` makes
/// it.
pub(crate) fn make_tree_dir(
    parent: BorrowedFd<'_>,
    btrfs: bool,
    name: &CStr,
    mode: Mode,
) -> nix::Result<()> {
    if btrfs {
        match create_subvolume(parent, name, mode) {
            Ok(()) => return Ok(()),
            Err(e) => log::debug(format_args!(
                "no subvolume for tree {name:?} ({e}): a plain directory"
            )),
        }
    }
    nix::sys::stat::mkdirat(parent, name, mode)
}

fn create_subvolume(parent: BorrowedFd<'_>, name: &CStr, mode: Mode) -> nix::Result<()> {
    // The kernel makes a subvolume's root 0755 whatever the umask.
    let perm = mode.bits() & !crate::process::umask().ok_or(Errno::ENOTSUP)?;
    let args = vol_args(name)?;
    // SAFETY: `args` is a valid `btrfs_ioctl_vol_args` with a NUL-terminated
    // name; the descriptor is open for the duration of the call.
    unsafe { ioc_subvol_create(parent.as_raw_fd(), &args) }?;
    if perm != 0o755 {
        let chmod = fchmodat(
            parent,
            name,
            Mode::from_bits_truncate(perm),
            FchmodatFlags::FollowSymlink,
        );
        if let Err(e) = chmod {
            let _ = destroy(parent, name);
            return Err(e);
        }
    }
    Ok(())
}

/// Replaces the empty directory `name` of `parent` by a snapshot of the
/// subvolume `base`: afterwards `name` is a writable subvolume holding what
/// `base` holds, its root with `base`'s owner, mode, times and xattrs, as
/// the per-file copy makes it. `Ok(false)` when `base` is not on btrfs.
///
/// Refused (nothing changed) when `base` is not a subvolume's root
/// (`ENOTSUP`) or holds subvolumes of its own (`ENOTSUP`: a snapshot would
/// show them as empty directories), when `name` is not empty (`ENOTEMPTY`)
/// or is a mount point (`EBUSY`), or when the kernel refuses (another
/// filesystem, `EPERM`).
pub(crate) fn snapshot_into(base: &Path, parent: BorrowedFd<'_>, name: &CStr) -> nix::Result<bool> {
    let base = openat(
        AT_FDCWD,
        base,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    if !on_btrfs(base.as_fd()) {
        return Ok(false);
    }
    if fstatx(base.as_fd())?.ino != SUBVOLUME_ROOT_INO {
        return Err(Errno::ENOTSUP);
    }
    if has_subvolumes(base.as_fd())? {
        return Err(Errno::ENOTSUP);
    }
    let target = open_dir(parent, name)?;
    let (mut names, mut buf) = (Vec::new(), Vec::new());
    read_names(target.as_fd(), &mut names, &mut buf)?;
    if !names.is_empty() {
        return Err(Errno::ENOTEMPTY);
    }
    drop(target);
    let mut temp = name.to_bytes().to_vec();
    temp.extend_from_slice(b".snapshot");
    let temp = std::ffi::CString::new(temp).map_err(|_| Errno::EINVAL)?;
    let args = vol_args_v2(i64::from(base.as_raw_fd()), &temp)?;
    // SAFETY: `args` is a valid `btrfs_ioctl_vol_args_v2` naming the open
    // source descriptor and a NUL-terminated name; both descriptors are open
    // for the duration of the call.
    unsafe { ioc_snap_create_v2(parent.as_raw_fd(), &args) }?;
    // Atomic: `name` is the empty directory or the snapshot, never missing
    // (and a mount point there makes it fail with EBUSY).
    if let Err(e) = renameat2(parent, &*temp, parent, name, RenameFlags::RENAME_EXCHANGE) {
        let _ = destroy(parent, &temp);
        return Err(e);
    }
    // The empty directory it replaced; if it cannot go now, it goes with
    // the directory it is in.
    if destroy(parent, &temp).is_err() {
        let _ = unlinkat(parent, &*temp, UnlinkatFlags::RemoveDir);
    }
    Ok(true)
}

/// True when the subvolume open as `fd` has subvolumes below it (or when
/// the kernel cannot tell).
fn has_subvolumes(fd: BorrowedFd<'_>) -> nix::Result<bool> {
    let mut args = RootRefArgs {
        min_treeid: 0,
        rootref: [[0; 2]; 255],
        num_items: 0,
        align: [0; 7],
    };
    // SAFETY: `args` is a valid, writable `btrfs_ioctl_get_subvol_rootref_args`;
    // the descriptor is open for the duration of the call.
    match unsafe { ioc_get_subvol_rootref(fd.as_raw_fd(), &mut args) } {
        Ok(_) => Ok(args.num_items != 0),
        Err(Errno::EOVERFLOW) => Ok(true),
        Err(e) => Err(e),
    }
}

/// Deletes the entry `name` of `dir` if it is a subvolume, clearing its
/// read-only property first (so that, should the deletion be refused, the
/// removal walk can empty it). Fails with `ENOTSUP` if it is not a
/// subvolume, `ENOTEMPTY` if it holds subvolumes, `EPERM` if the caller may
/// not delete subvolumes (unprivileged, without `user_subvol_rm_allowed`)
/// or an inode flag forbids it.
pub(crate) fn delete_subvolume(dir: BorrowedFd<'_>, name: &CStr) -> nix::Result<()> {
    let fd = open_dir(dir, name)?;
    if !is_subvolume_root(fd.as_fd()) {
        return Err(Errno::ENOTSUP);
    }
    let mut flags = 0u64;
    // SAFETY: the kernel writes one u64 to the valid pointer; the descriptor
    // is open for the duration of the call.
    if unsafe { ioc_subvol_getflags(fd.as_raw_fd(), &mut flags) }.is_ok()
        && flags & SUBVOL_RDONLY != 0
    {
        let writable = flags & !SUBVOL_RDONLY;
        // SAFETY: the kernel reads one u64 from the valid pointer; the
        // descriptor is open for the duration of the call.
        unsafe { ioc_subvol_setflags(fd.as_raw_fd(), &writable) }?;
    }
    drop(fd);
    destroy(dir, name)
}

/// `BTRFS_IOC_SNAP_DESTROY_V2` by name (5.7), else the first version.
fn destroy(dir: BorrowedFd<'_>, name: &CStr) -> nix::Result<()> {
    let args = vol_args_v2(0, name)?;
    // SAFETY: `args` is a valid `btrfs_ioctl_vol_args_v2` with a
    // NUL-terminated name and no flags (delete by name); the descriptor is
    // open for the duration of the call.
    match unsafe { ioc_snap_destroy_v2(dir.as_raw_fd(), &args) } {
        Err(Errno::ENOTTY) => {}
        other => return other.map(drop),
    }
    let args = vol_args(name)?;
    // SAFETY: as above, with a `btrfs_ioctl_vol_args`.
    unsafe { ioc_snap_destroy(dir.as_raw_fd(), &args) }.map(drop)
}
