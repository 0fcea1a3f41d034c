//! Read-only bind mounts with the new mount API.
//!
//! `open_tree(OPEN_TREE_CLONE)` makes a detached copy of a mount tree,
//! `mount_setattr` makes it read-only (recursively) and private while it is
//! still detached, and `move_mount` attaches it. The tree is therefore never
//! visible writable, unlike the classic `MS_BIND` then `MS_REMOUNT|MS_RDONLY`
//! sequence, which is the fallback for kernels older than 5.12.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fd;
use crate::log;

// From <linux/mount.h>; libc does not define these yet.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x0000_0004;
const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
/// Set-id bits and file capabilities not honoured.
pub const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
/// Device nodes not openable.
pub const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;

/// `struct mount_attr` of <linux/mount.h>.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cstring(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("path {} contains a NUL byte", path.display())))
}

/// Clones the mount tree at `source` (a descriptor of a file or directory,
/// e.g. from `openat2(O_PATH)`) into a detached, recursively read-only and
/// private mount, returned as a descriptor that `move_mount` can attach.
pub fn detached_readonly(source: BorrowedFd<'_>) -> Result<OwnedFd> {
    detached_readonly_with(source, 0)
}

/// [`detached_readonly`] with the `MOUNT_ATTR_*` flags `extra` set as well
/// (recursively).
pub fn detached_readonly_with(source: BorrowedFd<'_>, extra: u64) -> Result<OwnedFd> {
    let empty = c"";
    // SAFETY: plain syscall; `empty` is a valid C string, `source` an open descriptor.
    let raw = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            source.as_raw_fd(),
            empty.as_ptr(),
            OPEN_TREE_CLONE
                | OPEN_TREE_CLOEXEC
                | libc::AT_RECURSIVE as libc::c_uint
                | libc::AT_EMPTY_PATH as libc::c_uint,
        )
    };
    if raw < 0 {
        return Err(Error::io("open_tree", std::io::Error::last_os_error()));
    }
    // SAFETY: open_tree returned a new descriptor that we own.
    let tree = unsafe { OwnedFd::from_raw_fd(raw as libc::c_int) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | extra,
        attr_clr: 0,
        propagation: libc::MS_PRIVATE,
        userns_fd: 0,
    };
    // SAFETY: `attr` is a valid mount_attr of the size passed; `tree` is open.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(Error::io("mount_setattr", std::io::Error::last_os_error()));
    }
    Ok(tree)
}

/// Attaches a detached mount (from [`detached_readonly`]) at `target`.
pub fn attach(mount: BorrowedFd<'_>, target: &Path) -> Result<()> {
    let target_c = cstring(target)?;
    move_mount(mount, libc::AT_FDCWD, &target_c, 0)
        .map_err(|e| Error::path("cannot mount onto", target, e))
}

/// Attaches a detached mount at the directory `target` is open on, with no
/// path resolved again (`MOVE_MOUNT_T_EMPTY_PATH`).
pub fn attach_onto(mount: BorrowedFd<'_>, target: BorrowedFd<'_>) -> std::io::Result<()> {
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    move_mount(mount, target.as_raw_fd(), c"", MOVE_MOUNT_T_EMPTY_PATH)
}

/// `move_mount(2)` of the detached mount `mount` to `to` in `to_dir`.
fn move_mount(
    mount: BorrowedFd<'_>,
    to_dir: libc::c_int,
    to: &CStr,
    flags: libc::c_uint,
) -> std::io::Result<()> {
    let empty = c"";
    // SAFETY: both strings are valid C strings; `mount` is an open
    // descriptor, `to_dir` one or AT_FDCWD.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            empty.as_ptr(),
            to_dir,
            to.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | flags,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Detaches (lazily) the mount whose root `mount` is open on, through its
/// descriptor: no path is resolved again.
pub fn detach_by_fd(mount: BorrowedFd<'_>) -> nix::Result<()> {
    let by_fd = PathBuf::from(format!("/proc/self/fd/{}", mount.as_raw_fd()));
    nix::mount::umount2(&by_fd, nix::mount::MntFlags::MNT_DETACH)
}

/// Makes `source` (a directory or file) appear read-only at `target`, as a
/// recursive private bind mount.
pub fn bind_readonly(source: &Path, target: &Path) -> Result<()> {
    let src = fd::open(source, libc::O_PATH).map_err(|e| Error::path("cannot open", source, e))?;
    bind_readonly_fd(src.as_fd(), target)
        .map(drop)
        .map_err(|e| e.context(format!("cannot bind {}", source.display())))
}

/// Makes what `source` is open on (an `O_PATH` descriptor of a directory or
/// file) appear read-only at `target`, as a recursive private bind mount,
/// and returns a descriptor of the new mount's root, which names exactly
/// that mount even if the target path changes or something is mounted on
/// top. With the new mount API the tree is never visible writable; kernels
/// without it (before 5.12) get the classic bind, then remount.
pub fn bind_readonly_fd(source: BorrowedFd<'_>, target: &Path) -> Result<OwnedFd> {
    match detached_readonly(source) {
        Ok(tree) => {
            attach(tree.as_fd(), target)?;
            // The detached mount's descriptor now names the attached mount.
            Ok(tree)
        }
        Err(e) if e.errno() == libc::ENOSYS => {
            log::debug(format_args!("no new mount API: classic bind-remount"));
            let proc_path = PathBuf::from(format!("/proc/self/fd/{}", source.as_raw_fd()));
            bind_readonly_classic(&proc_path, target)?;
            // The new mount is the topmost at `target`; without a descriptor
            // of it, it could not be tracked, so it goes.
            fd::open(target, libc::O_PATH).map_err(|e| {
                let _ = unmount(target);
                Error::path("cannot open", target, e)
            })
        }
        Err(e) => Err(e),
    }
}

/// Bind then remount read-only, for kernels without the new mount API.
fn bind_readonly_classic(source: &Path, target: &Path) -> Result<()> {
    use nix::mount::{MsFlags, mount};
    // The kernel ignores the type of a bind mount; naming one keeps memory
    // checkers, which expect a string there, quiet.
    let none = Some("none");
    mount(
        Some(source),
        target,
        none,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| {
        Error::sys(
            format!("cannot bind {} onto {}", source.display(), target.display()),
            e,
        )
    })?;
    let readonly = mount(
        None::<&str>,
        target,
        none,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .and_then(|()| {
        mount(
            None::<&str>,
            target,
            none,
            MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            None::<&str>,
        )
    });
    if let Err(e) = readonly {
        let _ = unmount(target);
        return Err(Error::sys(
            format!("cannot make {} read-only", target.display()),
            e,
        ));
    }
    Ok(())
}

/// Unmounts `target` and everything mounted below it. The mount is detached
/// lazily (`MNT_DETACH`) so that a process still using it cannot make the
/// clean-up fail; the kernel frees it when the last user is gone.
pub fn unmount(target: &Path) -> Result<()> {
    nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| Error::sys(format!("cannot unmount {}", target.display()), e))
}

/// Detaches every mount at or below the directory open at `dir`
/// (innermost first), found in this process's mount table.
///
/// A mount point is taken to be at or below `dir` when walking up from it
/// (`..`, which crosses mounts upwards) reaches the same directory (device
/// and inode): the path by which the store was opened (a symlink, a
/// relative path, a bind mount) or by which the mount was made does not
/// matter. Path strings only rule out points that cannot be below it
/// (see [`own_name`]), so that a removal costs one read of the table
/// rather than a walk up from every mount point.
pub(crate) fn detach_mounts_below(dir: BorrowedFd<'_>) -> Result<()> {
    let here = nix::sys::stat::fstat(dir).map_err(|e| Error::sys("cannot stat a directory", e))?;
    // Read with room for a large table at once (the file's size is 0, so
    // `fs::read` would read it in small, growing pieces).
    let mut table = Vec::with_capacity(64 * 1024);
    std::fs::File::open("/proc/self/mountinfo")
        .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut table))
        .map_err(|e| Error::io("cannot read /proc/self/mountinfo", e))?;
    let field = |line: &[u8], n: usize| {
        let f = line.split(|b| *b == b' ').nth(n)?;
        Some(PathBuf::from(OsStr::from_bytes(&unescape_mountinfo(f))))
    };
    // (root in its filesystem, mount point) of every mount.
    let mounts: Vec<(PathBuf, PathBuf)> = table
        .split(|b| *b == b'\n')
        .filter_map(|line| Some((field(line, 3)?, field(line, 4)?)))
        .collect();
    let mut points: Vec<PathBuf> = match own_name(dir) {
        // Only points with the directory's own name as a component can be
        // at or below it (the table's paths are spelled from the dentries
        // on the way up, through the directory's), or points below another
        // view of it: a bind mount whose root has that name (an alias).
        // The others are not opened.
        Some(name) => {
            let named = |p: &Path| p.components().any(|c| c.as_os_str() == name);
            let aliases: Vec<&PathBuf> = mounts
                .iter()
                .filter(|(root, _)| named(root))
                .map(|(_, at)| at)
                .collect();
            mounts
                .iter()
                .map(|(_, at)| at)
                .filter(|at| named(at) || aliases.iter().any(|alias| at.starts_with(alias)))
                .cloned()
                .collect()
        }
        None => mounts.into_iter().map(|(_, at)| at).collect(),
    };
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for point in points {
        // Opened, checked and detached through one descriptor: a path
        // changed in between (a rename, a symlink planted by a process still
        // running in the tree) cannot redirect the unmount.
        let Some(mount) = open_if_at_or_below(&point, (here.st_dev, here.st_ino)) else {
            continue;
        };
        match detach_by_fd(mount.as_fd()) {
            // Gone with a mount detached before it.
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => {
                return Err(Error::sys(format!("cannot unmount {}", point.display()), e));
            }
        }
    }
    Ok(())
}

/// The name of the directory open at `dir` in its parent, as the kernel
/// spells its path; `None` when that is not known for sure (a directory
/// removed, a path the kernel cannot spell): then every point is checked.
fn own_name(dir: BorrowedFd<'_>) -> Option<std::ffi::OsString> {
    let path = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd())).ok()?;
    let bytes = path.as_os_str().as_bytes();
    if !bytes.starts_with(b"/") || bytes.ends_with(b" (deleted)") {
        return None;
    }
    path.file_name().map(ToOwned::to_owned)
}

/// The topmost mount at `point`, opened, when walking up from it meets the
/// directory with device and inode `dir`; `None` otherwise. A point that
/// cannot be opened (outside this process's view) is below nothing here.
fn open_if_at_or_below(point: &Path, dir: (libc::dev_t, libc::ino_t)) -> Option<OwnedFd> {
    let top = fd::open(point, libc::O_PATH | libc::O_NOFOLLOW).ok()?;
    let mut current = if is_dir(&top) {
        top.try_clone().ok()?
    } else {
        // A file mount point: walk up from its directory.
        fd::open(point.parent()?, libc::O_PATH | libc::O_DIRECTORY).ok()?
    };
    loop {
        let st = nix::sys::stat::fstat(&current).ok()?;
        if (st.st_dev, st.st_ino) == dir {
            return Some(top);
        }
        let parent = fd::open_at(current.as_fd(), c"..", libc::O_PATH | libc::O_DIRECTORY).ok()?;
        let up = nix::sys::stat::fstat(&parent).ok()?;
        if (up.st_dev, up.st_ino) == (st.st_dev, st.st_ino) {
            // `..` of the root is the root.
            return None;
        }
        current = parent;
    }
}

fn is_dir(fd: &OwnedFd) -> bool {
    nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// Undoes the octal escapes (`\040` for a space, ...) of `/proc/*/mountinfo`.
fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && i + 3 < field.len()
            && field[i + 1..i + 4]
                .iter()
                .all(|c| (b'0'..=b'7').contains(c))
        {
            out.push(
                (field[i + 1] - b'0') * 64 + (field[i + 2] - b'0') * 8 + (field[i + 3] - b'0'),
            );
            i += 4;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    out
}
