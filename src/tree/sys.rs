//! Thin wrappers over what nix does not cover: `statx`, extended attributes,
//! the inode-flag and clone ioctls, and reading a directory's names.

use std::ffi::{CStr, CString};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use nix::dir::Type;
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::Mode;

/// `FS_IMMUTABLE_FL` from `linux/fs.h` (`chattr +i`).
pub(crate) const FS_IMMUTABLE_FL: libc::c_int = 0x10;
/// `FS_APPEND_FL` from `linux/fs.h` (`chattr +a`).
pub(crate) const FS_APPEND_FL: libc::c_int = 0x20;

/// A timestamp as statx reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Time {
    pub(crate) sec: i64,
    pub(crate) nsec: u32,
}

/// What statx reported about an inode (the fields the engines use).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stat {
    /// Type and permission bits.
    pub(crate) mode: u32,
    /// Owner.
    pub(crate) uid: u32,
    /// Group.
    pub(crate) gid: u32,
    /// Number of hard links.
    pub(crate) nlink: u32,
    /// Size in bytes.
    pub(crate) size: u64,
    /// Allocated 512-byte blocks.
    pub(crate) blocks: u64,
    /// Inode number.
    pub(crate) ino: u64,
    /// Device the inode is on.
    pub(crate) dev: u64,
    /// Device a device node stands for.
    pub(crate) rdev: u64,
    /// Last access.
    pub(crate) atime: Time,
    /// Last modification.
    pub(crate) mtime: Time,
    /// The mount id, when the kernel reports it.
    pub(crate) mnt_id: Option<u64>,
    /// The inode is the root of a mount (when the kernel can tell).
    pub(crate) mount_root: bool,
}

impl Stat {
    /// The `S_IFMT` part of the mode.
    pub(crate) fn kind(&self) -> u32 {
        self.mode & libc::S_IFMT
    }

    /// True for a directory.
    pub(crate) fn is_dir(&self) -> bool {
        self.kind() == libc::S_IFDIR
    }

    /// The key that identifies the inode across the tree.
    pub(crate) fn inode(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }
}

/// `statx(dir, name, flags)` asking for the basic fields plus the mount id.
/// Use `c""` and `AT_EMPTY_PATH` to stat `dir` itself.
pub(crate) fn statx(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> nix::Result<Stat> {
    let mut buf = MaybeUninit::<libc::statx>::zeroed();
    let mask = libc::STATX_BASIC_STATS | libc::STATX_MNT_ID;
    // SAFETY: `name` is NUL-terminated and `buf` points to writable memory
    // the size of a `struct statx`.
    let rc = unsafe {
        libc::statx(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags,
            mask,
            buf.as_mut_ptr(),
        )
    };
    Errno::result(rc)?;
    // SAFETY: the struct was zero-initialised (a valid value for it, made of
    // integers only) and the kernel filled it in on success.
    let s = unsafe { buf.assume_init() };
    let time = |t: libc::statx_timestamp| Time {
        sec: t.tv_sec,
        nsec: t.tv_nsec,
    };
    let root_bit = libc::STATX_ATTR_MOUNT_ROOT as u64;
    Ok(Stat {
        mode: u32::from(s.stx_mode),
        uid: s.stx_uid,
        gid: s.stx_gid,
        nlink: s.stx_nlink,
        size: s.stx_size,
        blocks: s.stx_blocks,
        ino: s.stx_ino,
        dev: libc::makedev(s.stx_dev_major, s.stx_dev_minor),
        rdev: libc::makedev(s.stx_rdev_major, s.stx_rdev_minor),
        atime: time(s.stx_atime),
        mtime: time(s.stx_mtime),
        mnt_id: (s.stx_mask & libc::STATX_MNT_ID != 0).then_some(s.stx_mnt_id),
        mount_root: s.stx_attributes_mask & root_bit != 0 && s.stx_attributes & root_bit != 0,
    })
}

/// `statx` of an open descriptor.
pub(crate) fn fstatx(fd: BorrowedFd<'_>) -> nix::Result<Stat> {
    statx(fd, c"", libc::AT_EMPTY_PATH)
}

/// `statx` of `name` in `dir`, not following a symlink.
pub(crate) fn lstatx(dir: BorrowedFd<'_>, name: &CStr) -> nix::Result<Stat> {
    statx(dir, name, libc::AT_SYMLINK_NOFOLLOW)
}

/// `fstatat` of `name` in `dir`, not following a symlink: [`lstatx`]
/// without the mount id and the mount-root attribute, for a walk that
/// stats every entry and needs neither (the kernel copies less).
pub(crate) fn lstat(dir: BorrowedFd<'_>, name: &CStr) -> nix::Result<Stat> {
    let mut buf = MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `name` is NUL-terminated and `buf` points to writable memory
    // the size of a `struct stat`.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    Errno::result(rc)?;
    // SAFETY: zero-initialised (valid for this plain struct) and filled in
    // by the kernel on success.
    let s = unsafe { buf.assume_init() };
    let time = |sec: i64, nsec: i64| Time {
        sec,
        nsec: u32::try_from(nsec).unwrap_or(0),
    };
    Ok(Stat {
        mode: s.st_mode,
        uid: s.st_uid,
        gid: s.st_gid,
        nlink: u32::try_from(s.st_nlink).unwrap_or(u32::MAX),
        size: u64::try_from(s.st_size).unwrap_or(0),
        blocks: u64::try_from(s.st_blocks).unwrap_or(0),
        ino: s.st_ino,
        dev: s.st_dev,
        rdev: s.st_rdev,
        atime: time(s.st_atime, s.st_atime_nsec),
        mtime: time(s.st_mtime, s.st_mtime_nsec),
        mnt_id: None,
        mount_root: false,
    })
}

/// Flags for opening a directory of a walk by its name: never through a
/// symlink, never as a controlling terminal.
pub(crate) const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_NOCTTY)
    .union(OFlag::O_CLOEXEC);

/// What [`open_dir_checked`] fails with when the directory is not the one
/// expected: it was replaced since it was listed.
pub(crate) const REPLACED: Errno = Errno::ESTALE;

/// Opens the directory `name` (one component, or `..`) of `dir` without
/// following a symlink and checks that it is the inode `key` (device,
/// inode) seen before, as `rm` and `fts` do; fails with [`REPLACED`] when it
/// is another one. Returns the descriptor and its `statx`.
pub(crate) fn open_dir_checked(
    dir: BorrowedFd<'_>,
    name: &CStr,
    key: (u64, u64),
) -> nix::Result<(OwnedFd, Stat)> {
    let fd = openat(dir, name, DIR_FLAGS, Mode::empty())?;
    let st = fstatx(std::os::fd::AsFd::as_fd(&fd))?;
    if st.inode() != key {
        return Err(REPLACED);
    }
    Ok((fd, st))
}

/// Opens the directory `rel` (relative) below `root` without leaving it:
/// `openat2` refusing symlinks, mounts and `..` above `root`, in steps
/// shorter than `PATH_MAX` so that any depth is reached. An empty `rel` is
/// `root` itself. The descriptor is `O_PATH`: good for the `*at` calls.
pub(crate) fn open_beneath(root: BorrowedFd<'_>, rel: &std::path::Path) -> nix::Result<OwnedFd> {
    /// Bytes of path per `openat2` call, well below `PATH_MAX`.
    const STEP: usize = 3072;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    let mut dir = openat2(root, c".", how)?;
    let mut step = std::path::PathBuf::new();
    let mut components = rel.components().peekable();
    while let Some(c) = components.next() {
        step.push(c);
        let full = components
            .peek()
            .is_none_or(|next| step.as_os_str().len() + next.as_os_str().len() + 1 > STEP);
        if full {
            dir = openat2(&dir, &step, how)?;
            step.clear();
        }
    }
    Ok(dir)
}

/// The message for an errno of a walk: [`REPLACED`] gets its own.
pub(crate) fn walk_what(what: &'static str, errno: Errno) -> &'static str {
    if errno == REPLACED {
        "directory replaced during the walk:"
    } else {
        what
    }
}

/// `/proc/self/fd/<dir>/<name>`: the entry `name` of the open directory
/// `dir` as a path, for the `l*xattr` calls on what is never opened. Only
/// its last component is looked up by name, in the directory already open.
/// An empty `name` gives `/proc/self/fd/<dir>`, the descriptor's own inode
/// to calls that follow it.
pub(crate) fn fd_path(dir: BorrowedFd<'_>, name: &CStr) -> CString {
    let mut path = format!("/proc/self/fd/{}", dir.as_raw_fd()).into_bytes();
    if !name.is_empty() {
        path.push(b'/');
        path.extend_from_slice(name.to_bytes());
    }
    // Neither part holds a NUL byte.
    CString::new(path).unwrap_or_default()
}

/// Where to read or write extended attributes: an open descriptor, or a path
/// for the inodes that are never opened (symlinks, devices, fifos, sockets;
/// the `l*xattr` calls do not follow a final symlink), or a path whose final
/// symlink is followed (`/proc/self/fd/N` of an `O_PATH` descriptor).
#[derive(Clone, Copy)]
pub(crate) enum XattrTarget<'a> {
    Fd(BorrowedFd<'a>),
    Path(&'a CStr),
    Follow(&'a CStr),
}

/// `flistxattr`/`llistxattr`. An empty `buf` asks for the size needed.
pub(crate) fn list_xattrs(t: XattrTarget<'_>, buf: &mut [u8]) -> nix::Result<usize> {
    let ptr = buf.as_mut_ptr().cast::<libc::c_char>();
    let rc = match t {
        // SAFETY: `ptr` is valid for `buf.len()` writable bytes.
        XattrTarget::Fd(fd) => unsafe { libc::flistxattr(fd.as_raw_fd(), ptr, buf.len()) },
        // SAFETY: `p` is NUL-terminated; `ptr` is valid for `buf.len()` bytes.
        XattrTarget::Path(p) => unsafe { libc::llistxattr(p.as_ptr(), ptr, buf.len()) },
        // SAFETY: as above.
        XattrTarget::Follow(p) => unsafe { libc::listxattr(p.as_ptr(), ptr, buf.len()) },
    };
    Errno::result(rc).map(|n| n as usize)
}

/// `fgetxattr`/`lgetxattr`. An empty `buf` asks for the size needed.
pub(crate) fn get_xattr(t: XattrTarget<'_>, name: &CStr, buf: &mut [u8]) -> nix::Result<usize> {
    let ptr = buf.as_mut_ptr().cast::<libc::c_void>();
    let rc = match t {
        // SAFETY: `name` is NUL-terminated; `ptr` is valid for `buf.len()` bytes.
        XattrTarget::Fd(fd) => unsafe {
            libc::fgetxattr(fd.as_raw_fd(), name.as_ptr(), ptr, buf.len())
        },
        // SAFETY: `p` and `name` are NUL-terminated; `ptr` is valid for
        // `buf.len()` bytes.
        XattrTarget::Path(p) => unsafe {
            libc::lgetxattr(p.as_ptr(), name.as_ptr(), ptr, buf.len())
        },
        // SAFETY: as above.
        XattrTarget::Follow(p) => unsafe {
            libc::getxattr(p.as_ptr(), name.as_ptr(), ptr, buf.len())
        },
    };
    Errno::result(rc).map(|n| n as usize)
}

/// `fsetxattr`/`lsetxattr` (create or replace).
pub(crate) fn set_xattr(t: XattrTarget<'_>, name: &CStr, value: &[u8]) -> nix::Result<()> {
    let ptr = value.as_ptr().cast::<libc::c_void>();
    let rc = match t {
        // SAFETY: `name` is NUL-terminated; `ptr` is valid for `value.len()`
        // readable bytes.
        XattrTarget::Fd(fd) => unsafe {
            libc::fsetxattr(fd.as_raw_fd(), name.as_ptr(), ptr, value.len(), 0)
        },
        // SAFETY: `p` and `name` are NUL-terminated; `ptr` is valid for
        // `value.len()` readable bytes.
        XattrTarget::Path(p) => unsafe {
            libc::lsetxattr(p.as_ptr(), name.as_ptr(), ptr, value.len(), 0)
        },
        // SAFETY: as above.
        XattrTarget::Follow(p) => unsafe {
            libc::setxattr(p.as_ptr(), name.as_ptr(), ptr, value.len(), 0)
        },
    };
    Errno::result(rc).map(drop)
}

/// The inode flags (`FS_IOC_GETFLAGS`, what `lsattr` shows).
pub(crate) fn inode_flags(fd: BorrowedFd<'_>) -> nix::Result<libc::c_int> {
    let mut flags: libc::c_int = 0;
    // SAFETY: the kernel writes one int (despite the ioctl's declared long
    // size, as chattr(1) relies on) to the pointer, which is valid.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) };
    Errno::result(rc).map(|_| flags)
}

/// Sets the inode flags (`FS_IOC_SETFLAGS`, what `chattr` does).
pub(crate) fn set_inode_flags(fd: BorrowedFd<'_>, flags: libc::c_int) -> nix::Result<()> {
    // SAFETY: the kernel reads one int from the pointer, which is valid.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) };
    Errno::result(rc).map(drop)
}

/// `FICLONE`: makes `dst` share all of `src`'s extents (a reflink).
pub(crate) fn ficlone(dst: BorrowedFd<'_>, src: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: FICLONE takes the source descriptor as its integer argument;
    // both descriptors are open for the duration of the call.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    Errno::result(rc).map(drop)
}

/// `copy_file_range` between explicit offsets of `src` and `dst`, which it
/// advances by the number of bytes copied (returned).
pub(crate) fn copy_file_range(
    src: BorrowedFd<'_>,
    src_off: &mut i64,
    dst: BorrowedFd<'_>,
    dst_off: &mut i64,
    len: usize,
) -> nix::Result<usize> {
    // SAFETY: both offsets point to valid, writable 64-bit integers and both
    // descriptors are open for the duration of the call.
    let rc = unsafe {
        libc::copy_file_range(src.as_raw_fd(), src_off, dst.as_raw_fd(), dst_off, len, 0)
    };
    Errno::result(rc).map(|n| n as usize)
}

/// `sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)`: starts the
/// writeback of all of `fd`'s dirty pages, without waiting for it.
pub(crate) fn start_writeback(fd: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: a plain system call on a descriptor open for its duration.
    let rc = unsafe { libc::sync_file_range(fd.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    Errno::result(rc).map(drop)
}

/// The kernel's dirty background threshold in bytes (from `/proc/vmstat`):
/// past it, its flusher threads write dirty pages back. `None` when
/// `/proc` does not tell.
pub(crate) fn dirty_background_threshold() -> Option<u64> {
    let vmstat = std::fs::read_to_string("/proc/vmstat").ok()?;
    let pages: u64 = vmstat
        .lines()
        .find_map(|line| line.strip_prefix("nr_dirty_background_threshold "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page)
        .ok()
        .map(|page| pages.saturating_mul(page))
}

/// Size of the `getdents64` buffer of [`read_names`].
const DIRENT_BUF: usize = 32 * 1024;

/// Reads all names of the freshly opened directory `dir` (without `.` and
/// `..`) into `out`, replacing its contents, with the type the directory
/// entry gives when it gives one. `buf` is scratch space.
pub(crate) fn read_names(
    dir: BorrowedFd<'_>,
    out: &mut Vec<(CString, Option<Type>)>,
    buf: &mut Vec<u8>,
) -> nix::Result<()> {
    out.clear();
    each_name(
        dir,
        buf,
        |e| e,
        |name, kind| {
            out.push((name.to_owned(), kind));
            Ok(())
        },
    )
}

/// Calls `f` with every name of the freshly opened directory `dir`
/// (without `.` and `..`) and the type the directory entry gives when it
/// gives one, as read into `buf` (scratch space): no copy of the names.
/// Stops at the first error of `f`, or of reading (given as `read_error`
/// makes it).
///
/// Straight `getdents64` on the descriptor: `fdopendir`/`readdir` would add
/// an `fstat`, two `fcntl`s and an `lseek` per directory.
pub(crate) fn each_name<E>(
    dir: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    read_error: impl Fn(Errno) -> E,
    mut f: impl FnMut(&CStr, Option<Type>) -> Result<(), E>,
) -> Result<(), E> {
    if buf.len() < DIRENT_BUF {
        buf.resize(DIRENT_BUF, 0);
    }
    loop {
        // SAFETY: `buf` is valid for `buf.len()` writable bytes and the
        // descriptor is open for the duration of the call.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        let n = Errno::result(n)
            .and_then(|n| usize::try_from(n).map_err(|_| Errno::EIO))
            .map_err(&read_error)?;
        if n == 0 {
            return Ok(());
        }
        // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen;
        // u8 d_type; char d_name[]; }, records back to back, each name
        // NUL-terminated.
        let mut records = &buf[..n.min(buf.len())];
        while records.len() >= 19 {
            let reclen = usize::from(u16::from_ne_bytes([records[16], records[17]]));
            if reclen < 19 || reclen > records.len() {
                return Err(read_error(Errno::EIO));
            }
            let d_type = records[18];
            let name = CStr::from_bytes_until_nul(&records[19..reclen])
                .map_err(|_| read_error(Errno::EIO))?;
            records = &records[reclen..];
            if matches!(name.to_bytes(), b"." | b"..") {
                continue;
            }
            let kind = match d_type {
                libc::DT_DIR => Some(Type::Directory),
                libc::DT_REG => Some(Type::File),
                libc::DT_LNK => Some(Type::Symlink),
                libc::DT_FIFO => Some(Type::Fifo),
                libc::DT_CHR => Some(Type::CharacterDevice),
                libc::DT_BLK => Some(Type::BlockDevice),
                libc::DT_SOCK => Some(Type::Socket),
                _ => None,
            };
            f(name, kind)?;
        }
    }
}
