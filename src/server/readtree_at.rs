//! `read-tree-at` and `open-tree`: resolving a subtree inside an object's
//! tree, making it a read-only mount, and tracking every mount the server
//! attached so that it can undo them all when it stops.
//!
//! The subtree is resolved with `openat2(RESOLVE_IN_ROOT)` on a descriptor
//! of the tree: `..` stops at the tree's top and symbolic links, absolute or
//! relative, are resolved as if the tree were `/`, so no client-supplied
//! subtree reaches outside the tree. The resolved descriptor is cloned into
//! a detached, recursively read-only, private mount
//! ([`crate::mount::detached_readonly`]), which is then attached to the
//! target: the mount is never visible writable.
//!
//! A server with mount roots (see `ServerOptions::mount_roots`) resolves a
//! target with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` from the
//! root it lies under and mounts onto the resulting descriptor
//! (`move_mount` with `MOVE_MOUNT_T_EMPTY_PATH`): a symlink or `..` planted
//! under a root cannot lead the mount outside it. A directory renamed out of
//! the root between its resolution and the mount would take the mount with
//! it, so the target is resolved again once mounted and must be the new
//! mount's root; if not, the mount is detached and the request refused.
//! These mounts are also `nosuid` and `nodev`.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fd;
use crate::mount;
use crate::object::Object;
use crate::tree::sys::fstatx;

/// Opens `subtree` (leading slashes ignored; empty or `/` is the tree
/// itself) inside `tree`, resolved with the tree as its root. The result is
/// an `O_PATH` descriptor of a directory or a file.
pub fn open_subtree(tree: &Path, subtree: &str) -> Result<OwnedFd> {
    let root = fd::open(tree, libc::O_PATH | libc::O_DIRECTORY)
        .map_err(|e| Error::path("cannot open tree", tree, e))?;
    let relative = match is_whole_tree(subtree) {
        true => ".",
        false => subtree.trim_start_matches('/'),
    };
    let c_relative =
        CString::new(relative).map_err(|_| Error::invalid("subtree contains a NUL character"))?;
    let resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    open_path_at(root.as_fd(), &c_relative, resolve).map_err(|e| {
        Error::io(
            format_args!("cannot open subtree {subtree:?} of {}", tree.display()),
            e,
        )
    })
}

/// `openat2(dir, path, O_PATH | O_CLOEXEC)` with the `resolve` flags.
fn open_path_at(dir: BorrowedFd<'_>, path: &CStr, resolve: u64) -> std::io::Result<OwnedFd> {
    // SAFETY: an all-zero open_how is valid (libc marks it non-exhaustive).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    // SAFETY: `path` is a valid C string and `how` a valid open_how of the
    // size passed; both outlive the call.
    let raw = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            size_of::<libc::open_how>(),
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openat2 returned a new descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(raw as libc::c_int) })
}

/// A confined `read-tree-at` target (from [`open_target`]): open, with the
/// mount root it was resolved from, so that it can be resolved again.
#[derive(Debug)]
pub struct Target {
    /// The target (`O_PATH`).
    fd: OwnedFd,
    /// The mount root it lies below (`O_PATH`), and its path.
    root: OwnedFd,
    root_path: PathBuf,
    /// The target relative to the root.
    below: CString,
}

/// How a confined target is resolved from its mount root.
const BENEATH: u64 = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS;

impl Target {
    /// Resolves the target again from its root, as [`open_target`] did.
    fn resolve(&self) -> std::io::Result<OwnedFd> {
        open_path_at(self.root.as_fd(), &self.below, BENEATH)
    }
}

/// Opens the `read-tree-at` target `target` (`O_PATH`), which must lie
/// strictly below one of `roots`: resolved from that root without following
/// any symlink and without leaving it. Fails with `EPERM` for a target below
/// none of them, `ELOOP` or `EXDEV` for one that a symlink or `..` would
/// lead elsewhere.
pub fn open_target(roots: &[PathBuf], target: &Path) -> Result<Target> {
    let refused = || {
        Error::new(
            libc::EPERM,
            format!(
                "read-tree-at target {} is not below a directory this server mounts in",
                target.display()
            ),
        )
    };
    if !target.is_absolute() {
        return Err(refused());
    }
    let (root, below) = roots
        .iter()
        .find_map(|root| {
            let below = target.strip_prefix(root).ok()?;
            (!below.as_os_str().is_empty()).then_some((root, below))
        })
        .ok_or_else(refused)?;
    let root_fd = fd::open(root, libc::O_PATH | libc::O_DIRECTORY)
        .map_err(|e| Error::path("cannot open mount root", root, e))?;
    let below_c = CString::new(below.as_os_str().as_bytes())
        .map_err(|_| Error::invalid("target contains a NUL character"))?;
    let fd = open_path_at(root_fd.as_fd(), &below_c, BENEATH).map_err(|e| {
        Error::io(
            format_args!(
                "read-tree-at target {} (resolved below {} without symlinks)",
                target.display(),
                root.display()
            ),
            e,
        )
    })?;
    Ok(Target {
        fd,
        root: root_fd,
        root_path: root.clone(),
        below: below_c,
    })
}

/// Mounts `source` read-only, `nosuid` and `nodev` onto the open target
/// `target` (from [`open_target`]; `path` is its path, for messages),
/// checks that the target, resolved again from its root, is the new mount
/// (else detaches it and fails with `EPERM`: the target was moved out of
/// its root meanwhile), and returns the descriptor naming the new mount.
/// Needs the new mount API (Linux 5.12): the classic bind takes a path,
/// which a confined target must not be resolved by again.
fn attach_confined(source: &OwnedFd, target: &Target, path: &Path) -> Result<OwnedFd> {
    let extra = mount::MOUNT_ATTR_NOSUID | mount::MOUNT_ATTR_NODEV;
    let view = mount::detached_readonly_with(source.as_fd(), extra).map_err(|e| {
        e.context(format!(
            "cannot mount onto {} (confined targets need open_tree, Linux 5.12)",
            path.display()
        ))
    })?;
    mount::attach_onto(view.as_fd(), target.fd.as_fd())
        .map_err(|e| Error::path("cannot mount onto", path, e))?;
    // The detached mount's descriptor now names the attached mount.
    if !is_mounted_at(&view, target) {
        let _ = mount::detach_by_fd(view.as_fd());
        return Err(Error::new(
            libc::EPERM,
            format!(
                "read-tree-at target {} was moved out of {} during the request; not mounted",
                path.display(),
                target.root_path.display()
            ),
        ));
    }
    Ok(view)
}

/// Whether `target`, resolved again from its root, is the root of the
/// mount `view` (same mount id, or same inode as a mount root where the
/// kernel reports no mount ids).
fn is_mounted_at(view: &OwnedFd, target: &Target) -> bool {
    let Ok(again) = target.resolve() else {
        return false;
    };
    match (fstatx(view.as_fd()), fstatx(again.as_fd())) {
        (Ok(m), Ok(t)) => match (m.mnt_id, t.mnt_id) {
            (Some(a), Some(b)) => a == b,
            _ => t.mount_root && m.inode() == t.inode(),
        },
        _ => false,
    }
}

/// A detached, recursively read-only and private mount of `source` (from
/// [`open_subtree`]), for a client to attach where it likes.
pub fn detached_view(source: &OwnedFd) -> Result<OwnedFd> {
    mount::detached_readonly(source.as_fd())
}

/// Whether `subtree` names the whole tree for [`open_subtree`].
pub fn is_whole_tree(subtree: &str) -> bool {
    subtree.trim_start_matches('/').is_empty()
}

/// A descriptor that pins the object whose tree is `tree` for as long as it
/// (or a copy of it, in any process) stays open: the root of a read-only
/// detached view of the whole tree (`whole_view` when the caller has one,
/// else a new one), opened for reading and holding a shared `flock` on the
/// tree's directory (a lock belongs to the open file description, so it
/// goes with the last copy). Reading through it shows nothing a whole-tree
/// `open-tree` would not, and writing is refused.
pub fn pin_descriptor(tree: &Path, whole_view: Option<&OwnedFd>) -> Result<OwnedFd> {
    let made;
    let view = match whole_view {
        Some(view) => view,
        None => {
            made = detached_view(&open_subtree(tree, "/")?)?;
            &made
        }
    };
    let pin = fd::open_at(view.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY)
        .map_err(|e| Error::path("cannot open a pin of", tree, e))?;
    // The caller's look-up pins the object, so an eviction or collection
    // holds an exclusive lock on it at most while it finds that pin (or
    // reads the refs): this waits that long at most.
    crate::lock::flock(&pin, libc::LOCK_SH)
        .map_err(|e| Error::path("cannot lock a pin of", tree, e))?;
    Ok(pin)
}

/// The mounts the server attached, oldest first.
#[derive(Debug, Default)]
pub struct Mounts {
    attached: Vec<Attached>,
}

/// One attached mount: a descriptor of its root, which names exactly this
/// mount even if the target path changes or something is mounted on top.
#[derive(Debug)]
struct Attached {
    root: OwnedFd,
    target: PathBuf,
    /// The look-up of the mounted object, whose pin keeps it from eviction
    /// and collection until unmounted.
    _pinned: Object,
}

impl Mounts {
    /// Mounts `source` (from [`open_subtree`]) read-only at `target` (an
    /// existing directory for a directory, an existing file for a file),
    /// or onto `target_fd` when given (from [`open_target`]; `target` is
    /// then its path for messages), and records the mount with `object`,
    /// the look-up it shows, kept (and so pinned) until unmounted.
    pub fn attach(
        &mut self,
        source: &OwnedFd,
        target: &Path,
        target_fd: Option<&Target>,
        object: Object,
    ) -> Result<()> {
        let root = match target_fd {
            Some(fd) => attach_confined(source, fd, target)?,
            None => mount::bind_readonly_fd(source.as_fd(), target)?,
        };
        self.attached.push(Attached {
            root,
            target: target.to_path_buf(),
            _pinned: object,
        });
        Ok(())
    }

    /// Syncs the filesystems of the mounts, then detaches every mount
    /// (lazily, `MNT_DETACH`), newest first. A mount somebody else removed
    /// already is skipped. Returns the first error after trying them all.
    pub fn unmount_all(&mut self) -> Result<()> {
        self.sync();
        let mut first_error = None;
        while let Some(mount) = self.attached.pop() {
            if let Err(e) = unmount(&mount) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// `syncfs` once for each filesystem that a mount shows (best effort:
    /// the mounts are read-only, this only flushes what writers left).
    fn sync(&self) {
        let mut synced = Vec::new();
        for mount in &self.attached {
            let Ok(stat) = nix::sys::stat::fstat(&mount.root) else {
                continue;
            };
            let kind = stat.st_mode & libc::S_IFMT;
            if synced.contains(&stat.st_dev) || (kind != libc::S_IFDIR && kind != libc::S_IFREG) {
                continue;
            }
            synced.push(stat.st_dev);
            // An O_PATH descriptor cannot be synced: reopen it for reading.
            let reopen = PathBuf::from(format!("/proc/self/fd/{}", mount.root.as_raw_fd()));
            if let Ok(fd) = fd::open(&reopen, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY) {
                // SAFETY: `fd` is an open descriptor.
                unsafe { libc::syncfs(fd.as_raw_fd()) };
            }
        }
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        // Reached with mounts left only if the event loop did not finish
        // normally; errors cannot be reported from here.
        let _ = self.unmount_all();
    }
}

fn unmount(mount: &Attached) -> Result<()> {
    use nix::errno::Errno;
    match mount::detach_by_fd(mount.root.as_fd()) {
        Ok(()) => Ok(()),
        // Not a mount of this namespace any more: somebody unmounted it.
        Err(Errno::EINVAL) => Ok(()),
        // No /proc: fall back to the path.
        Err(Errno::ENOENT) => mount::unmount(&mount.target),
        Err(e) => Err(Error::sys(
            format!("cannot unmount {}", mount.target.display()),
            e,
        )),
    }
}
