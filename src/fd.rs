//! Opening paths as descriptors: the one place the crate calls `open(2)` on
//! a path it will work relative to (`*at` calls, locks, mounts).

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, Result};

/// `openat(dir, name, flags | O_CLOEXEC)`.
pub(crate) fn open_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
) -> std::io::Result<OwnedFd> {
    open_at_mode(dir, name, flags, 0)
}

/// `openat(dir, name, flags | O_CLOEXEC, mode)`: `mode` for a file that
/// `O_CREAT` makes.
pub(crate) fn open_at_mode(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> std::io::Result<OwnedFd> {
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let raw = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            libc::c_uint::from(mode),
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor we just opened and own exclusively.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `open(path, flags | O_CLOEXEC)`; a path with a NUL byte is `EINVAL`.
pub(crate) fn open(path: &Path, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    open_at(nix::fcntl::AT_FDCWD, &c, flags)
}

/// The directory `path` as an `O_PATH` descriptor (following symlinks), for
/// `*at` calls relative to it; errors name the path.
pub(crate) fn open_dir_path(path: &Path) -> Result<OwnedFd> {
    open(path, libc::O_PATH | libc::O_DIRECTORY).map_err(|e| Error::path("cannot open", path, e))
}
