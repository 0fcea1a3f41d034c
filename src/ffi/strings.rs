//! Strings and paths across the boundary.

use std::ffi::{CStr, CString, OsStr, c_char};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, Result};

/// The bytes of a C string argument; NULL is an `EINVAL` naming `what`.
///
/// # Safety
///
/// `ptr` must be NULL or point to a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn bytes<'a>(ptr: *const c_char, what: &str) -> Result<&'a [u8]> {
    if ptr.is_null() {
        return Err(Error::invalid(format!("{what} is NULL")));
    }
    // SAFETY: not NULL, and the caller promises a NUL-terminated string.
    Ok(unsafe { CStr::from_ptr(ptr) }.to_bytes())
}

/// Like [`bytes`], with NULL meaning the empty string.
///
/// # Safety
///
/// As for [`bytes`].
pub(crate) unsafe fn bytes_or_empty<'a>(ptr: *const c_char, what: &str) -> Result<&'a [u8]> {
    if ptr.is_null() {
        return Ok(&[]);
    }
    // SAFETY: forwarded contract.
    unsafe { bytes(ptr, what) }
}

/// A path argument: not NULL, not empty, at most `PATH_MAX` bytes.
///
/// # Safety
///
/// As for [`bytes`].
pub(crate) unsafe fn path<'a>(ptr: *const c_char, what: &str) -> Result<&'a Path> {
    // SAFETY: forwarded contract.
    let b = unsafe { bytes(ptr, what) }?;
    if b.is_empty() {
        return Err(Error::invalid(format!("{what} is empty")));
    }
    if b.len() >= libc::PATH_MAX as usize {
        return Err(Error::new(
            libc::ENAMETOOLONG,
            format!(
                "{what} is {} bytes long, the limit is {}",
                b.len(),
                libc::PATH_MAX - 1
            ),
        ));
    }
    Ok(Path::new(OsStr::from_bytes(b)))
}

/// An object id argument: a UTF-8 string (ids travel as JSON strings); the
/// core checks the rest.
///
/// # Safety
///
/// As for [`bytes`].
pub(crate) unsafe fn id<'a>(ptr: *const c_char) -> Result<&'a str> {
    // SAFETY: forwarded contract.
    let b = unsafe { bytes(ptr, "object id") }?;
    std::str::from_utf8(b).map_err(|_| Error::invalid("object id is not valid UTF-8"))
}

/// A C copy of `bytes` (which contain no NUL: they come from paths and ids).
pub(crate) fn c_string(bytes: &[u8]) -> Result<CString> {
    CString::new(bytes).map_err(|_| Error::new(libc::EINVAL, "string contains a NUL byte"))
}

/// A C copy of a path.
pub(crate) fn c_path(path: &Path) -> Result<CString> {
    c_string(path.as_os_str().as_bytes())
}

/// Hands a string to the caller through `out` (freed with `os_free`).
///
/// # Safety
///
/// `out` must be NULL or valid for writing one pointer.
pub(crate) unsafe fn hand_out(out: *mut *mut c_char, value: CString) {
    if !out.is_null() {
        // SAFETY: `out` is valid for writes, as the caller promises.
        unsafe { *out = value.into_raw() };
    }
}

/// Checks that an out-parameter is not NULL and clears it, so that the
/// caller sees NULL on failure.
///
/// # Safety
///
/// `out` must be NULL or valid for writing one pointer.
pub(crate) unsafe fn out_param<T>(out: *mut *mut T, what: &str) -> Result<()> {
    if out.is_null() {
        return Err(Error::invalid(format!("{what} is NULL")));
    }
    // SAFETY: not NULL and valid for writes, as the caller promises.
    unsafe { *out = std::ptr::null_mut() };
    Ok(())
}
