//! Library-wide functions: version, last error, freeing strings.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_void};

use crate::error::Error;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `e` as this thread's last error and returns `-errno`.
pub(crate) fn fail(e: &Error) -> libc::c_int {
    let message = CString::new(e.message().replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|slot| *slot.borrow_mut() = message);
    -e.errno().max(1)
}

/// Clears this thread's last error after a success.
pub(crate) fn clear() {
    LAST_ERROR.with(|slot| {
        let mut slot = slot.borrow_mut();
        if !slot.as_bytes().is_empty() {
            *slot = CString::default();
        }
    });
}

/// The library's version, e.g. `"0.1.0"`. The string is static.
#[unsafe(no_mangle)]
pub extern "C" fn os_version() -> *const c_char {
    static VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    VERSION.as_ptr()
}

/// A human-readable message for this thread's last failure, `""` if the last
/// call succeeded. Never NULL. The string stays valid until the next call
/// into the library from this thread.
#[unsafe(no_mangle)]
pub extern "C" fn os_last_error() -> *const c_char {
    LAST_ERROR
        .try_with(|slot| slot.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

/// Frees a string the library handed out through a `char **` out-parameter.
/// `ptr` may be NULL.
///
/// # Safety
///
/// `ptr` must be NULL or a string returned by this library that was not
/// freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_free(ptr: *mut c_void) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: out-parameter strings are allocated with `CString::into_raw`
    // (see `strings::hand_out`), and the caller passes each back once.
    drop(unsafe { CString::from_raw(ptr.cast::<c_char>()) });
}
