//! `copy_tree`: copies a directory's contents with the fidelity of
//! `cp -a src/. dst`, in parallel by directory (see [`super::pool`]).
//!
//! Every entry costs one `statx` and `*at` calls relative to the open source
//! and destination directories. Metadata is applied in the order that keeps
//! it: owner first (chown clears set-id bits and file capabilities), then
//! xattrs, then the mode, then timestamps (last, since everything before
//! changes them). A directory's metadata is applied once everything below it
//! is written (post-order), and directories are created `0700` until then so
//! that even an unprivileged copy can fill them.
//!
//! What would change nothing is not done (see [`Plain`]): in a directory
//! this copy created, below a destination root that passes nothing on
//! (no set-gid bit, no default ACL, the caller's group), a new inode already
//! has the caller's owner, so an entry owned by the caller is not `chown`ed;
//! and a regular file is created with its final permission bits, so it is
//! not `chmod`ed either when the umask leaves them intact and no xattr was
//! set. On XFS every `chown` and `chmod` is a transaction of its own.

use std::borrow::Cow;
use std::ffi::{CStr, CString, OsStr};
use std::mem;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nix::dir::Type;
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, futimens, mkdirat, mknodat,
    utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{
    Gid, Uid, UnlinkatFlags, fchown, fchownat, getegid, geteuid, linkat, symlinkat, unlinkat,
};

use super::data::{DataError, Methods};
use super::links::{Claim, Links};
use super::pool::{self, Node, Walker};
use super::progress::Hooks;
use super::sys::{Stat, Time, XattrTarget, fstatx, lstatx, read_names};
use super::xattr::{XattrBufs, copy_xattrs};
use crate::error::{Error, Result};

/// Copies the contents of directory `src` into the existing directory `dst`,
/// with the fidelity of `cp -a src/. dst` (including applying src's own
/// owner/mode/timestamps/xattrs to dst itself).
///
/// Copied: regular files (reflinked where the filesystem can, holes kept),
/// directories, symlinks (not followed), hard links among the copied entries,
/// fifos, sockets, device nodes, owners, modes including set-id and sticky
/// bits, access and modification times (ns) and extended attributes
/// (`security.*` and `trusted.*` where the kernel allows). Existing
/// non-directories in `dst` are replaced, existing directories merged into.
///
/// The first error stops the copy and is returned with its errno and the path
/// concerned; what was copied until then is left in place.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    copy_tree_hooked(src, dst, Hooks::default())
}

/// [`copy_tree`] with the progress and ownership hooks of
/// [`super::progress`].
pub(crate) fn copy_tree_hooked(src: &Path, dst: &Path, hooks: Hooks) -> Result<()> {
    // Absolute paths: the `l*xattr` calls on symlinks and special files take
    // paths, which must not depend on the working directory.
    let src = std::path::absolute(src).map_err(|e| Error::path("resolve", src, e))?;
    let dst = std::path::absolute(dst).map_err(|e| Error::path("resolve", dst, e))?;
    // The roots are followed if they are symlinks, as `cp -a src/. dst` does.
    let root_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let open_root = |path: &Path| {
        openat(AT_FDCWD, path, root_flags, Mode::empty())
            .map_err(|e| Error::sys(format_args!("open directory {}", path.display()), e))
    };
    let src_root = open_root(&src)?;
    let dst_root = open_root(&dst)?;
    let stat_root = |fd: &OwnedFd, path: &Path| {
        fstatx(fd.as_fd()).map_err(|e| Error::sys(format_args!("stat {}", path.display()), e))
    };
    let root_stat = stat_root(&src_root, &src)?;
    let dst_stat = stat_root(&dst_root, &dst)?;
    let dst_key = dst_stat.inode();
    let owner = (geteuid().as_raw(), getegid().as_raw());
    let plain_root = dst_stat.gid == owner.1
        && dst_stat.mode & libc::S_ISGID == 0
        && !has_default_acl(dst_root.as_fd());
    let copier = Copier {
        src_path: src,
        dst_path: dst,
        src_root,
        dst_root,
        dst_key,
        links: Links::new(),
        methods: Methods::new(),
        privileged: owner.0 == 0,
        noatime: AtomicBool::new(true),
        owner,
        files: AtomicUsize::new(0),
        umask: OnceLock::new(),
        hooks,
    };
    let root = DirData {
        st: root_stat,
        plain: plain_root,
    };
    pool::run(&copier, root, pool::default_threads())
}

/// Whether the directory has a default ACL (which new entries inherit,
/// instead of the umask applying). Errors count as "has one": the safe side.
fn has_default_acl(dir: BorrowedFd<'_>) -> bool {
    !matches!(
        super::sys::get_xattr(
            super::sys::XattrTarget::Fd(dir),
            c"system.posix_acl_default",
            &mut []
        ),
        Err(Errno::ENODATA | Errno::EOPNOTSUPP)
    )
}

/// The process's umask, read from `/proc/self/status` (reading it with
/// `umask(2)` means setting it, which would race with other threads).
fn read_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

/// Regular files copied before the umask is looked up: a small tree never
/// pays for reading it.
const UMASK_AFTER_FILES: usize = 32;

/// A directory of the walk: the source's metadata, applied to the copy
/// post-order, and whether the copy is [`Plain`].
struct DirData {
    st: Stat,
    /// The destination directory was created by this copy below a plain
    /// root (or is the plain root): an inode created in it gets the
    /// caller's uid and gid, and the umask (no inherited default ACL).
    plain: bool,
}

/// What [`Copier::apply_metadata`] may leave out, because the destination
/// inode already has it from its creation.
#[derive(Clone, Copy)]
struct Plain {
    /// The inode was created with the caller's uid and gid, as wanted.
    owner: bool,
    /// The permission bits the file was created with (before the umask).
    created_mode: Option<u32>,
}

/// Flags for opening a directory below the roots.
const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// One tree copy in progress, shared by the pool's threads.
struct Copier {
    src_path: PathBuf,
    dst_path: PathBuf,
    src_root: OwnedFd,
    dst_root: OwnedFd,
    /// The destination root, so that copying a tree into itself is refused.
    dst_key: (u64, u64),
    links: Links,
    methods: Methods,
    /// Running as root: failing to set an owner is an error, not a fallback.
    privileged: bool,
    /// Still trying `O_NOATIME` (the source's atimes stay as they were).
    noatime: AtomicBool,
    /// The caller's effective uid and gid.
    owner: (u32, u32),
    /// Regular files copied so far (up to [`UMASK_AFTER_FILES`]).
    files: AtomicUsize,
    /// The umask, once looked up (`None` inside: unknown).
    umask: OnceLock<Option<u32>>,
    /// Progress counting, cancellation, owners (see [`super::progress`]).
    hooks: Hooks,
}

/// Per-thread buffers.
struct Scratch {
    names: Vec<(CString, Option<Type>)>,
    dirents: Vec<u8>,
    xattr: XattrBufs,
    data: Vec<u8>,
}

/// Which tree a failure is about.
#[derive(Clone, Copy)]
enum Side {
    Src,
    Dst,
}

/// A failed operation on one entry; turned into an [`Error`] naming the path
/// by [`Copier::error`].
struct Failure {
    what: Cow<'static, str>,
    side: Side,
    errno: Errno,
}

/// `map_err` adapter for a failure on the source side.
fn on_src(what: &'static str) -> impl FnOnce(Errno) -> Failure {
    move |errno| Failure {
        what: Cow::Borrowed(what),
        side: Side::Src,
        errno,
    }
}

/// `map_err` adapter for a failure on the destination side.
fn on_dst(what: &'static str) -> impl FnOnce(Errno) -> Failure {
    move |errno| Failure {
        what: Cow::Borrowed(what),
        side: Side::Dst,
        errno,
    }
}

/// The inode metadata is applied to: an open descriptor, or a name in a
/// directory for what is never opened (symlinks and special files).
#[derive(Clone, Copy)]
enum Dest<'a> {
    Fd(BorrowedFd<'a>),
    At(BorrowedFd<'a>, &'a CStr),
}

impl Dest<'_> {
    fn chown(self, uid: u32, gid: u32) -> nix::Result<()> {
        let (uid, gid) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        match self {
            Dest::Fd(fd) => fchown(fd, uid, gid),
            Dest::At(dir, name) => fchownat(dir, name, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW),
        }
    }

    /// Never called for a symlink (their mode cannot be set on Linux).
    fn chmod(self, mode: u32) -> nix::Result<()> {
        let mode = Mode::from_bits_truncate(mode as libc::mode_t);
        match self {
            Dest::Fd(fd) => fchmod(fd, mode),
            Dest::At(dir, name) => fchmodat(dir, name, mode, FchmodatFlags::FollowSymlink),
        }
    }

    fn set_times(self, atime: Time, mtime: Time) -> nix::Result<()> {
        let ts = |t: Time| TimeSpec::new(t.sec, i64::from(t.nsec));
        let (atime, mtime) = (ts(atime), ts(mtime));
        match self {
            Dest::Fd(fd) => futimens(fd, &atime, &mtime),
            Dest::At(dir, name) => {
                utimensat(dir, name, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
            }
        }
    }
}

impl Walker for Copier {
    /// The source directory's metadata, applied to its copy post-order.
    type Data = DirData;
    type Scratch = Scratch;

    fn scratch(&self) -> Scratch {
        Scratch {
            names: Vec::new(),
            dirents: Vec::new(),
            xattr: XattrBufs::new(),
            data: Vec::new(),
        }
    }

    fn visit(
        &self,
        scratch: &mut Scratch,
        node: &Node<DirData>,
        children: &mut Vec<(PathBuf, DirData)>,
    ) -> Result<()> {
        let fail = |f: Failure| self.error(f, &node.rel, None);
        let held = self.open_dirs(node).map_err(fail)?;
        let dirs = self.dir_pair(&held);
        let mut names = mem::take(&mut scratch.names);
        read_names(dirs.0, &mut names, &mut scratch.dirents)
            .map_err(|e| fail(on_src("read directory")(e)))?;
        let copied = names.iter().try_for_each(|(name, _)| {
            self.copy_entry(scratch, dirs, node, name, children)
                .map_err(|f| self.error(f, &node.rel, Some(name)))
        });
        scratch.names = names;
        copied?;
        if children.is_empty() {
            self.finish_dir(scratch, dirs, node).map_err(fail)?;
        }
        Ok(())
    }

    fn leave(&self, scratch: &mut Scratch, node: &Node<DirData>) -> Result<()> {
        let fail = |f: Failure| self.error(f, &node.rel, None);
        let held = self.open_dirs(node).map_err(fail)?;
        self.finish_dir(scratch, self.dir_pair(&held), node)
            .map_err(fail)
    }
}

/// An open (source, destination) directory pair.
type DirPair<'a> = (BorrowedFd<'a>, BorrowedFd<'a>);

impl Copier {
    /// Opens the source and destination directories of `node`; `None` for
    /// the root, whose descriptors the copier holds already (the root is
    /// visited once, so reading its entries from that descriptor is fine).
    fn open_dirs(
        &self,
        node: &Node<DirData>,
    ) -> std::result::Result<Option<(OwnedFd, OwnedFd)>, Failure> {
        if node.is_root() {
            return Ok(None);
        }
        let open = |root: &OwnedFd| openat(root.as_fd(), &node.rel, DIR_FLAGS, Mode::empty());
        let src = open(&self.src_root).map_err(on_src("open directory"))?;
        let dst = open(&self.dst_root).map_err(on_dst("open directory"))?;
        Ok(Some((src, dst)))
    }

    /// The directory pair [`Copier::open_dirs`] gave.
    fn dir_pair<'a>(&'a self, held: &'a Option<(OwnedFd, OwnedFd)>) -> DirPair<'a> {
        match held {
            Some((src, dst)) => (src.as_fd(), dst.as_fd()),
            None => (self.src_root.as_fd(), self.dst_root.as_fd()),
        }
    }

    /// Copies the entry `name` of the directory `node`. A subdirectory is
    /// only created, and pushed to `children` to be walked.
    fn copy_entry(
        &self,
        scratch: &mut Scratch,
        dirs: DirPair<'_>,
        node: &Node<DirData>,
        name: &CStr,
        children: &mut Vec<(PathBuf, DirData)>,
    ) -> std::result::Result<(), Failure> {
        self.hooks.entry().map_err(on_dst("copy stopped before"))?;
        let st = lstatx(dirs.0, name).map_err(on_src("stat"))?;
        let rel = || node.rel.join(OsStr::from_bytes(name.to_bytes()));
        if st.is_dir() {
            if st.inode() == self.dst_key {
                return Err(on_src("cannot copy a directory into itself:")(
                    Errno::EINVAL,
                ));
            }
            let created = make_dir(dirs.1, name)?;
            let plain = created && node.data.plain;
            children.push((rel(), DirData { st, plain }));
            return Ok(());
        }
        if st.nlink < 2 {
            return self.copy_inode(scratch, dirs, node, name, &st);
        }
        match self.links.claim(st.inode(), st.nlink) {
            Claim::First(first) => {
                self.copy_inode(scratch, dirs, node, name, &st)?;
                first.done(rel());
                Ok(())
            }
            Claim::LinkTo(target) => replacing(dirs.1, name, || {
                linkat(
                    self.dst_root.as_fd(),
                    &target,
                    dirs.1,
                    name,
                    AtFlags::empty(),
                )
            })
            .map_err(on_dst("create hard link")),
            // The first copy failed and the whole copy with it; whoever
            // failed reports why. Copying on gives this thread's own error,
            // if any, rather than a made-up one.
            Claim::Failed => self.copy_inode(scratch, dirs, node, name, &st),
        }
    }

    /// Copies a non-directory.
    fn copy_inode(
        &self,
        scratch: &mut Scratch,
        dirs: DirPair<'_>,
        node: &Node<DirData>,
        name: &CStr,
        st: &Stat,
    ) -> std::result::Result<(), Failure> {
        let dst_dir = dirs.1;
        match st.kind() {
            libc::S_IFREG => return self.copy_file(scratch, dirs, node, name, st),
            libc::S_IFLNK => {
                let target = readlinkat(dirs.0, name).map_err(on_src("read symlink"))?;
                replacing(dst_dir, name, || {
                    symlinkat(target.as_os_str(), dst_dir, name)
                })
                .map_err(on_dst("create symlink"))?;
            }
            kind @ (libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO | libc::S_IFSOCK) => {
                let kind = SFlag::from_bits_truncate(kind);
                let perm = Mode::from_bits_truncate(0o600);
                replacing(dst_dir, name, || {
                    mknodat(dst_dir, name, kind, perm, st.rdev)
                })
                .map_err(on_dst("create"))?;
            }
            _ => return Err(on_src("unknown file type of")(Errno::EINVAL)),
        }
        let src_path = self.full_path(&self.src_path, node, name)?;
        let dst_path = self.full_path(&self.dst_path, node, name)?;
        let plain = Plain {
            owner: self.owned_as_created(node, st),
            created_mode: None,
        };
        self.apply_metadata(
            scratch,
            XattrTarget::Path(&src_path),
            Dest::At(dst_dir, name),
            XattrTarget::Path(&dst_path),
            st,
            plain,
        )
    }

    /// Copies a regular file: contents, then metadata.
    fn copy_file(
        &self,
        scratch: &mut Scratch,
        dirs: DirPair<'_>,
        node: &Node<DirData>,
        name: &CStr,
        st: &Stat,
    ) -> std::result::Result<(), Failure> {
        let src = self.open_source(dirs.0, name)?;
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        // Created with its final permission bits when nobody else can get
        // at it meanwhile: it is the caller's, as it is to be. Otherwise
        // 0600 until owner and mode are set.
        let owner = self.owned_as_created(node, st);
        let mode = st.mode & 0o7777;
        let created_mode = (owner && mode & 0o7000 == 0).then_some(mode);
        let create_mode = Mode::from_bits_truncate(created_mode.unwrap_or(0o600) as libc::mode_t);
        let dst = replacing(dirs.1, name, || openat(dirs.1, name, flags, create_mode))
            .map_err(on_dst("create"))?;
        // Only files that really exist count (a hard link is no new file).
        if self.files.load(Ordering::Relaxed) < UMASK_AFTER_FILES {
            self.files.fetch_add(1, Ordering::Relaxed);
        }
        self.methods
            .copy(src.as_fd(), dst.as_fd(), st, &mut scratch.data)
            .map_err(|e| match e {
                DataError::Read(e) => on_src("read")(e),
                DataError::Write(e) => on_dst("write")(e),
            })?;
        self.hooks.bytes(st.size);
        let (src, dst) = (src.as_fd(), dst.as_fd());
        self.apply_metadata(
            scratch,
            XattrTarget::Fd(src),
            Dest::Fd(dst),
            XattrTarget::Fd(dst),
            st,
            Plain {
                owner,
                created_mode,
            },
        )
    }

    /// True when an inode created in `node`'s copy already has the owner
    /// `st` asks for (see [`DirData::plain`]).
    fn owned_as_created(&self, node: &Node<DirData>, st: &Stat) -> bool {
        node.data.plain && (self.hooks.caller_owns || (st.uid, st.gid) == self.owner)
    }

    /// The umask, when it is worth knowing (see [`UMASK_AFTER_FILES`]).
    fn umask(&self) -> Option<u32> {
        if self.files.load(Ordering::Relaxed) < UMASK_AFTER_FILES {
            return None;
        }
        *self.umask.get_or_init(read_umask)
    }

    /// Opens a source file for reading, without touching its atime when the
    /// kernel lets us (`O_NOATIME` needs ownership or `CAP_FOWNER`).
    fn open_source(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
    ) -> std::result::Result<OwnedFd, Failure> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
        if self.noatime.load(Ordering::Relaxed) {
            match openat(dir, name, flags | OFlag::O_NOATIME, Mode::empty()) {
                Err(Errno::EPERM) => self.noatime.store(false, Ordering::Relaxed),
                other => return other.map_err(on_src("open")),
            }
        }
        openat(dir, name, flags, Mode::empty()).map_err(on_src("open"))
    }

    /// Applies the source directory's metadata to its copy.
    fn finish_dir(
        &self,
        scratch: &mut Scratch,
        dirs: DirPair<'_>,
        node: &Node<DirData>,
    ) -> std::result::Result<(), Failure> {
        let st = &node.data.st;
        // The root was not created by this copy: its owner is always set.
        let plain = Plain {
            owner: !node.is_root() && self.owned_as_created(node, st),
            created_mode: None,
        };
        self.apply_metadata(
            scratch,
            XattrTarget::Fd(dirs.0),
            Dest::Fd(dirs.1),
            XattrTarget::Fd(dirs.1),
            st,
            plain,
        )
    }

    /// Owner, xattrs, mode, times, in that order (see the module doc),
    /// leaving out what `plain` says the inode has already.
    fn apply_metadata(
        &self,
        scratch: &mut Scratch,
        src: XattrTarget<'_>,
        dst: Dest<'_>,
        dst_xattrs: XattrTarget<'_>,
        st: &Stat,
        plain: Plain,
    ) -> std::result::Result<(), Failure> {
        let mut mode = st.mode & 0o7777;
        let chown = if plain.owner || self.hooks.caller_owns {
            Ok(())
        } else {
            dst.chown(st.uid, st.gid)
        };
        if self.hooks.caller_owns && (st.uid, st.gid) != self.owner {
            // The copy is the caller's: no set-id rights of another owner.
            mode &= !(libc::S_ISUID | libc::S_ISGID);
        }
        if let Err(e) = chown {
            if self.privileged || !matches!(e, Errno::EPERM | Errno::EINVAL) {
                return Err(on_dst("set owner of")(e));
            }
            // Like cp: an unprivileged copy keeps the caller as owner, and
            // must not grant set-id rights in the caller's name.
            mode &= !(libc::S_ISUID | libc::S_ISGID);
        }
        let xattrs_set = copy_xattrs(src, dst_xattrs, &mut scratch.xattr).map_err(|e| Failure {
            what: Cow::Owned(e.what),
            side: if e.source { Side::Src } else { Side::Dst },
            errno: e.errno,
        })?;
        // The mode is right already when the file was created with it, the
        // umask took nothing away and no xattr (an ACL) changed it since.
        let mode_as_created = plain.created_mode == Some(mode)
            && !xattrs_set
            && self.umask().is_some_and(|umask| mode & umask == 0);
        if st.kind() != libc::S_IFLNK && !mode_as_created {
            dst.chmod(mode).map_err(on_dst("set mode of"))?;
        }
        dst.set_times(st.atime, st.mtime)
            .map_err(on_dst("set times of"))
    }

    /// `root/rel/name` as a C string, for the path-based xattr calls.
    fn full_path(
        &self,
        root: &Path,
        node: &Node<DirData>,
        name: &CStr,
    ) -> std::result::Result<CString, Failure> {
        let path = root
            .join(&node.rel)
            .join(OsStr::from_bytes(name.to_bytes()));
        CString::new(path.into_os_string().into_vec())
            .map_err(|_| on_src("path with a NUL byte:")(Errno::EINVAL))
    }

    /// The error for `failure` on `rel/name`.
    fn error(&self, failure: Failure, rel: &Path, name: Option<&CStr>) -> Error {
        let root = match failure.side {
            Side::Src => &self.src_path,
            Side::Dst => &self.dst_path,
        };
        let mut path = root.join(rel);
        if let Some(name) = name {
            path.push(OsStr::from_bytes(name.to_bytes()));
        }
        Error::sys(
            format_args!("{} {}", failure.what, path.display()),
            failure.errno,
        )
    }
}

/// Creates the directory `name` in `dir`, or accepts an existing one (the
/// copy merges into it, as cp does). True when it was created.
fn make_dir(dir: BorrowedFd<'_>, name: &CStr) -> std::result::Result<bool, Failure> {
    match mkdirat(dir, name, Mode::from_bits_truncate(0o700)) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) if lstatx(dir, name).is_ok_and(|st| st.is_dir()) => Ok(false),
        Err(e) => Err(on_dst("create directory")(e)),
    }
}

/// Runs `make`, which creates the non-directory `name` in `dir`; if `name`
/// exists and is not a directory, removes it and runs `make` again.
fn replacing<T>(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mut make: impl FnMut() -> nix::Result<T>,
) -> nix::Result<T> {
    match make() {
        Err(Errno::EEXIST) => {
            if lstatx(dir, name).is_ok_and(|st| st.is_dir()) {
                return Err(Errno::EEXIST);
            }
            unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?;
            make()
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_copy_error_names_the_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let missing = tmp.path().join("nope");
        let err = copy_tree(&missing, tmp.path()).expect_err("must fail");
        assert_eq!(err.errno(), libc::ENOENT);
        assert!(err.message().contains("nope"), "{err}");
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        let err = copy_tree(tmp.path(), &file).expect_err("must fail");
        assert_eq!(err.errno(), libc::ENOTDIR);
    }

    #[test]
    fn tree_copy_refuses_copy_into_itself() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let inner = tmp.path().join("a/b");
        std::fs::create_dir_all(&inner).expect("mkdir");
        let err = copy_tree(tmp.path(), &inner).expect_err("must fail");
        assert_eq!(err.errno(), libc::EINVAL);
    }

    /// The chown/chmod shortcut must not trust a root that passes on its
    /// group (set-gid) or entries that already exist.
    #[test]
    fn tree_copy_owner_and_mode_below_setgid_root() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
        if !geteuid().is_root() {
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        std::fs::create_dir_all(src.join("d")).expect("mkdir");
        std::fs::create_dir(&dst).expect("mkdir");
        for i in 0..40 {
            let f = src.join(format!("d/f{i}"));
            std::fs::write(&f, b"x").expect("write");
            let mode = if i % 2 == 0 { 0o640 } else { 0o777 };
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o2775)).expect("chmod");
        chown(&dst, None, Some(4242)).expect("chown");
        copy_tree(&src, &dst).expect("copy");
        for i in 0..40 {
            let (a, b) = (src.join(format!("d/f{i}")), dst.join(format!("d/f{i}")));
            let (a, b) = (
                std::fs::metadata(a).expect("stat"),
                std::fs::metadata(b).expect("stat"),
            );
            assert_eq!(
                (a.uid(), a.gid(), a.mode()),
                (b.uid(), b.gid(), b.mode()),
                "f{i}"
            );
        }
        let (a, b) = (
            std::fs::metadata(src.join("d")),
            std::fs::metadata(dst.join("d")),
        );
        let (a, b) = (a.expect("stat"), b.expect("stat"));
        assert_eq!((a.gid(), a.mode()), (b.gid(), b.mode()));
    }

    #[test]
    fn tree_copy_replaces_and_merges() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        std::fs::create_dir_all(src.join("d")).expect("mkdir");
        std::fs::create_dir_all(dst.join("d")).expect("mkdir");
        std::fs::write(src.join("d/f"), b"new").expect("write");
        std::fs::write(dst.join("d/f"), b"old contents").expect("write");
        std::fs::write(dst.join("d/keep"), b"k").expect("write");
        copy_tree(&src, &dst).expect("copy");
        assert_eq!(std::fs::read(dst.join("d/f")).expect("read"), b"new");
        assert!(dst.join("d/keep").exists());
    }
}
