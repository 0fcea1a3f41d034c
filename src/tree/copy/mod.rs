//! `copy_tree`: copies a directory's contents with the fidelity of
//! `cp -a src/. dst`, in parallel by directory (see [`crate::tree::pool`]).
//!
//! Every entry costs one `statx` and `*at` calls relative to the open source
//! and destination directories; an entry listed as a regular file is opened
//! first and its `statx` is of the open file (one path lookup less). Metadata is applied in the order that keeps
//! it: owner first (chown clears set-id bits and file capabilities), then
//! xattrs, then the mode, then timestamps (last, since everything before
//! changes them). A directory's metadata is applied once everything below it
//! is written (post-order), and directories are created `0700` until then so
//! that even an unprivileged copy can fill them. A symlink or special file
//! is opened (`O_PATH`) right after its creation and checked to be that
//! fresh inode (its type, one link) before its metadata is set through the
//! descriptor: another inode renamed over the name (a hard link of a file
//! outside the destination) fails the copy with `ESTALE` instead of having
//! its metadata changed. Regular files are created `O_EXCL` and written
//! through their descriptors.
//!
//! What would change nothing is not done (see [`meta::Plain`]): in a directory
//! this copy created, below a destination root that passes nothing on
//! (no set-gid bit, no default ACL, the caller's group), a new inode already
//! has the caller's owner, so an entry owned by the caller is not `chown`ed;
//! and a regular file is created with its final permission bits, so it is
//! not `chmod`ed either when the umask leaves them intact and no xattr was
//! set. On XFS every `chown` and `chmod` is a transaction of its own.
//!
//! The parts: `root` sets a copy up, `walk` walks the trees and copies each
//! entry, `meta` sets each copied inode's metadata.

mod meta;
mod root;
mod walk;

use std::borrow::Cow;
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};

use nix::dir::Type;
use nix::errno::Errno;
use nix::unistd::{getegid, geteuid};

use super::data::Methods;
use super::links::Links;
use super::measure::{Clamp, Measure};
use super::pool::{self, Node};
use super::progress::Hooks;
use super::sys::Stat;
use super::xattr::XattrBufs;
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
    run(src, dst, hooks, None)
}

/// Copies `src` into the empty directory `dst` as [`copy_tree`] does, and
/// returns what [`measure_tree`](super::measure_tree) would find in the
/// copy (with `clamp`, the copy's timestamps clamped as it would clamp
/// them), measured as it goes: each inode is `statx`ed once its contents,
/// xattrs and times are set (a directory once everything below it is).
///
/// Only for a `dst` nothing else writes into until the figures are used:
/// they describe what this copy made.
pub(crate) fn copy_tree_measured(src: &Path, dst: &Path, clamp: Option<Clamp>) -> Result<Measure> {
    let tally = Tally {
        clamp,
        bytes: AtomicU64::new(0),
        entries: AtomicU64::new(0),
    };
    run(src, dst, Hooks::default(), Some(&tally))?;
    Ok(Measure {
        bytes: tally.bytes.into_inner(),
        entries: tally.entries.into_inner(),
    })
}

fn run(src: &Path, dst: &Path, hooks: Hooks, tally: Option<&Tally>) -> Result<()> {
    // Absolute paths, for messages that do not depend on the working
    // directory.
    let src = std::path::absolute(src).map_err(|e| Error::path("resolve", src, e))?;
    let dst = std::path::absolute(dst).map_err(|e| Error::path("resolve", dst, e))?;
    let src_root = root::open_root(&src)?;
    let dst_root = root::open_root(&dst)?;
    let root_stat = root::stat_root(&src_root, &src)?;
    let dst_stat = root::stat_root(&dst_root, &dst)?;
    let dst_key = dst_stat.inode();
    let owner = (geteuid().as_raw(), getegid().as_raw());
    let plain_root = root::passes_nothing_on(dst_root.as_fd(), &dst_stat, owner.1);
    let dst_root_dup = dst_root
        .try_clone()
        .map_err(|e| Error::path("duplicate descriptor of", &dst, e))?;
    let copier = Copier {
        src_path: src,
        dst_path: dst,
        dst_root: dst_root_dup,
        dst_key,
        links: Links::new(),
        methods: Methods::new(),
        privileged: owner.0 == 0,
        noatime: AtomicBool::new(true),
        owner,
        files: AtomicUsize::new(0),
        umask: OnceLock::new(),
        hooks,
        tally,
    };
    let root = DirData {
        st: root_stat,
        plain: plain_root,
        dst_key,
    };
    let roots = DirPair {
        src: src_root,
        dst: dst_root,
    };
    pool::run(&copier, roots, root, pool::default_threads())
}

/// A directory of the walk: the source's metadata, applied to the copy
/// post-order, and whether the copy is [`Plain`](meta::Plain).
struct DirData {
    st: Stat,
    /// The destination directory was created by this copy below a plain
    /// root (or is the plain root): an inode created in it gets the
    /// caller's uid and gid, and the umask (no inherited default ACL).
    plain: bool,
    /// The destination directory's (device, inode).
    dst_key: (u64, u64),
}

/// An open (source, destination) directory pair.
struct DirPair {
    src: OwnedFd,
    dst: OwnedFd,
}

/// A directory of the walk, as the pool holds it.
type DirNode = Node<DirData, DirPair>;

/// The measuring (and clamping) of [`copy_tree_measured`].
struct Tally {
    clamp: Option<Clamp>,
    /// Allocated bytes of the inodes created, each once.
    bytes: AtomicU64,
    /// Entries created (links included), the root included.
    entries: AtomicU64,
}

/// One tree copy in progress, shared by the pool's threads.
struct Copier<'a> {
    src_path: PathBuf,
    dst_path: PathBuf,
    /// The destination root, for making hard links to earlier copies.
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
    /// Regular files copied so far (up to [`root::UMASK_AFTER_FILES`]).
    files: AtomicUsize,
    /// The umask, once looked up (`None` inside: unknown).
    umask: OnceLock<Option<u32>>,
    /// Progress counting, cancellation, owners (see [`super::progress`]).
    hooks: Hooks,
    /// Measuring the copy, for [`copy_tree_measured`].
    tally: Option<&'a Tally>,
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

impl Copier<'_> {
    /// The error for `failure` on the entry `name` of `node` (or on `node`).
    fn error(&self, failure: Failure, node: &DirNode, name: Option<&CStr>) -> Error {
        let root = match failure.side {
            Side::Src => &self.src_path,
            Side::Dst => &self.dst_path,
        };
        let mut path = root.join(node.rel());
        if let Some(name) = name {
            path.push(OsStr::from_bytes(name.to_bytes()));
        }
        Error::sys(
            format_args!("{} {}", failure.what, path.display()),
            failure.errno,
        )
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
