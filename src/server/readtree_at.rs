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

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fd;
use crate::lock::DirLock;
use crate::mount;

/// Opens `subtree` (leading slashes ignored; empty or `/` is the tree
/// itself) inside `tree`, resolved with the tree as its root. The result is
/// an `O_PATH` descriptor of a directory or a file.
pub fn open_subtree(tree: &Path, subtree: &str) -> Result<OwnedFd> {
    let root = fd::open(tree, libc::O_PATH | libc::O_DIRECTORY)
        .map_err(|e| Error::path("cannot open tree", tree, e))?;
    open_subtree_in(root.as_fd(), tree, subtree)
}

/// Like [`open_subtree`], inside the tree open at `root` (`tree` is its
/// path, for messages).
pub fn open_subtree_in(root: BorrowedFd<'_>, tree: &Path, subtree: &str) -> Result<OwnedFd> {
    let relative = subtree.trim_start_matches('/');
    let relative = if relative.is_empty() { "." } else { relative };
    let c_relative =
        CString::new(relative).map_err(|_| Error::invalid("subtree contains a NUL character"))?;
    // SAFETY: an all-zero open_how is valid (libc marks it non-exhaustive).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `c_relative` is a valid C string and `how` a valid open_how of
    // the size passed; both outlive the call.
    let raw = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c_relative.as_ptr(),
            &how as *const libc::open_how,
            size_of::<libc::open_how>(),
        )
    };
    if raw < 0 {
        return Err(Error::io(
            format_args!("cannot open subtree {subtree:?} of {}", tree.display()),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: openat2 returned a new descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(raw as libc::c_int) })
}

/// A detached, recursively read-only and private mount of `source` (from
/// [`open_subtree`]), for a client to attach where it likes.
pub fn detached_view(source: &OwnedFd) -> Result<OwnedFd> {
    mount::detached_readonly(source.as_fd())
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
    /// Keeps the mounted object from garbage collection until unmounted.
    _pin: DirLock,
}

impl Mounts {
    /// Mounts `source` (from [`open_subtree`]) read-only at `target` (an
    /// existing directory for a directory, an existing file for a file) and
    /// records the mount.
    pub fn attach(&mut self, source: &OwnedFd, target: &Path, pin: DirLock) -> Result<()> {
        let root = mount::bind_readonly_fd(source.as_fd(), target)?;
        self.attached.push(Attached {
            root,
            target: target.to_path_buf(),
            _pin: pin,
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
    use nix::mount::{MntFlags, umount2};
    let by_fd = PathBuf::from(format!("/proc/self/fd/{}", mount.root.as_raw_fd()));
    match umount2(&by_fd, MntFlags::MNT_DETACH) {
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
