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

use std::borrow::Cow;
use std::ffi::{CStr, CString, OsStr};
use std::mem;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, futimens, mkdirat, mknodat,
    utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{
    Gid, Uid, UnlinkatFlags, fchown, fchownat, geteuid, linkat, symlinkat, unlinkat,
};

use super::data::{DataError, Methods};
use super::links::{Claim, Links};
use super::pool::{self, Node, Walker};
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
    let dst_key = stat_root(&dst_root, &dst)?.inode();
    let copier = Copier {
        src_path: src,
        dst_path: dst,
        src_root,
        dst_root,
        dst_key,
        links: Links::new(),
        methods: Methods::new(),
        privileged: geteuid().is_root(),
        noatime: AtomicBool::new(true),
    };
    pool::run(&copier, root_stat, pool::default_threads())
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
}

/// Per-thread buffers.
struct Scratch {
    names: Vec<(CString, Option<Type>)>,
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
    type Data = Stat;
    type Scratch = Scratch;

    fn scratch(&self) -> Scratch {
        Scratch {
            names: Vec::new(),
            xattr: XattrBufs::new(),
            data: Vec::new(),
        }
    }

    fn visit(
        &self,
        scratch: &mut Scratch,
        node: &Node<Stat>,
        children: &mut Vec<(PathBuf, Stat)>,
    ) -> Result<()> {
        let fail = |f: Failure| self.error(f, &node.rel, None);
        let mut src_dir = Dir::openat(
            self.src_root.as_fd(),
            node.at_path(),
            DIR_FLAGS,
            Mode::empty(),
        )
        .map_err(|e| fail(on_src("open directory")(e)))?;
        let dst_dir = openat(
            self.dst_root.as_fd(),
            node.at_path(),
            DIR_FLAGS,
            Mode::empty(),
        )
        .map_err(|e| fail(on_dst("open directory")(e)))?;
        let mut names = mem::take(&mut scratch.names);
        read_names(&mut src_dir, &mut names).map_err(|e| fail(on_src("read directory")(e)))?;
        let dirs = (src_dir.as_fd(), dst_dir.as_fd());
        let copied = names.iter().try_for_each(|(name, _)| {
            self.copy_entry(scratch, dirs, node, name, children)
                .map_err(|f| self.error(f, &node.rel, Some(name)))
        });
        scratch.names = names;
        copied?;
        if children.is_empty() {
            self.finish_dir(scratch, dirs, &node.data).map_err(fail)?;
        }
        Ok(())
    }

    fn leave(&self, scratch: &mut Scratch, node: &Node<Stat>) -> Result<()> {
        let fail = |f: Failure| self.error(f, &node.rel, None);
        let src_dir = openat(
            self.src_root.as_fd(),
            node.at_path(),
            DIR_FLAGS,
            Mode::empty(),
        )
        .map_err(|e| fail(on_src("open directory")(e)))?;
        let dst_dir = openat(
            self.dst_root.as_fd(),
            node.at_path(),
            DIR_FLAGS,
            Mode::empty(),
        )
        .map_err(|e| fail(on_dst("open directory")(e)))?;
        self.finish_dir(scratch, (src_dir.as_fd(), dst_dir.as_fd()), &node.data)
            .map_err(fail)
    }
}

/// An open (source, destination) directory pair.
type DirPair<'a> = (BorrowedFd<'a>, BorrowedFd<'a>);

impl Copier {
    /// Copies the entry `name` of the directory `node`. A subdirectory is
    /// only created, and pushed to `children` to be walked.
    fn copy_entry(
        &self,
        scratch: &mut Scratch,
        dirs: DirPair<'_>,
        node: &Node<Stat>,
        name: &CStr,
        children: &mut Vec<(PathBuf, Stat)>,
    ) -> std::result::Result<(), Failure> {
        let st = lstatx(dirs.0, name).map_err(on_src("stat"))?;
        let rel = || node.rel.join(OsStr::from_bytes(name.to_bytes()));
        if st.is_dir() {
            if st.inode() == self.dst_key {
                return Err(on_src("cannot copy a directory into itself:")(
                    Errno::EINVAL,
                ));
            }
            make_dir(dirs.1, name)?;
            children.push((rel(), st));
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
        node: &Node<Stat>,
        name: &CStr,
        st: &Stat,
    ) -> std::result::Result<(), Failure> {
        let dst_dir = dirs.1;
        match st.kind() {
            libc::S_IFREG => return self.copy_file(scratch, dirs, name, st),
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
        self.apply_metadata(
            scratch,
            XattrTarget::Path(&src_path),
            Dest::At(dst_dir, name),
            XattrTarget::Path(&dst_path),
            st,
        )
    }

    /// Copies a regular file: contents, then metadata.
    fn copy_file(
        &self,
        scratch: &mut Scratch,
        dirs: DirPair<'_>,
        name: &CStr,
        st: &Stat,
    ) -> std::result::Result<(), Failure> {
        let src = self.open_source(dirs.0, name)?;
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let dst = replacing(dirs.1, name, || {
            openat(dirs.1, name, flags, Mode::from_bits_truncate(0o600))
        })
        .map_err(on_dst("create"))?;
        self.methods
            .copy(src.as_fd(), dst.as_fd(), st, &mut scratch.data)
            .map_err(|e| match e {
                DataError::Read(e) => on_src("read")(e),
                DataError::Write(e) => on_dst("write")(e),
            })?;
        let (src, dst) = (src.as_fd(), dst.as_fd());
        self.apply_metadata(
            scratch,
            XattrTarget::Fd(src),
            Dest::Fd(dst),
            XattrTarget::Fd(dst),
            st,
        )
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
        st: &Stat,
    ) -> std::result::Result<(), Failure> {
        self.apply_metadata(
            scratch,
            XattrTarget::Fd(dirs.0),
            Dest::Fd(dirs.1),
            XattrTarget::Fd(dirs.1),
            st,
        )
    }

    /// Owner, xattrs, mode, times, in that order (see the module doc).
    fn apply_metadata(
        &self,
        scratch: &mut Scratch,
        src: XattrTarget<'_>,
        dst: Dest<'_>,
        dst_xattrs: XattrTarget<'_>,
        st: &Stat,
    ) -> std::result::Result<(), Failure> {
        let mut mode = st.mode & 0o7777;
        if let Err(e) = dst.chown(st.uid, st.gid) {
            if self.privileged || !matches!(e, Errno::EPERM | Errno::EINVAL) {
                return Err(on_dst("set owner of")(e));
            }
            // Like cp: an unprivileged copy keeps the caller as owner, and
            // must not grant set-id rights in the caller's name.
            mode &= !(libc::S_ISUID | libc::S_ISGID);
        }
        copy_xattrs(src, dst_xattrs, &mut scratch.xattr).map_err(|e| Failure {
            what: Cow::Owned(e.what),
            side: if e.source { Side::Src } else { Side::Dst },
            errno: e.errno,
        })?;
        if st.kind() != libc::S_IFLNK {
            dst.chmod(mode).map_err(on_dst("set mode of"))?;
        }
        dst.set_times(st.atime, st.mtime)
            .map_err(on_dst("set times of"))
    }

    /// `root/rel/name` as a C string, for the path-based xattr calls.
    fn full_path(
        &self,
        root: &Path,
        node: &Node<Stat>,
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
/// copy merges into it, as cp does).
fn make_dir(dir: BorrowedFd<'_>, name: &CStr) -> std::result::Result<(), Failure> {
    match mkdirat(dir, name, Mode::from_bits_truncate(0o700)) {
        Err(Errno::EEXIST) if lstatx(dir, name).is_ok_and(|st| st.is_dir()) => Ok(()),
        other => other.map_err(on_dst("create directory")),
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
