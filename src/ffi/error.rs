//! Library-wide functions: version, last error, freeing strings.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_void};

use super::boundary;
use crate::error::Error;

/// This thread's messages: the last failure's, and the one before it.
#[derive(Default)]
struct Messages {
    last: CString,
    previous: CString,
}

thread_local! {
    static LAST_ERROR: RefCell<Messages> = RefCell::default();
}

/// Records `e` as this thread's last error and returns its (positive) errno.
/// The message before it is kept one failure longer, so that a pointer read
/// just before a failing call (`fprintf(..., os_f(), os_last_error())` with the
/// arguments evaluated right to left) still points to valid memory.
pub(crate) fn fail(e: &Error) -> libc::c_int {
    let message = CString::new(e.message().replace('\0', "\\0")).unwrap_or_default();
    // `try_with`: a failure while the thread exits is not recorded.
    let _ = LAST_ERROR.try_with(|slot| {
        let mut slot = slot.borrow_mut();
        slot.previous = std::mem::replace(&mut slot.last, message);
    });
    e.errno().max(1)
}

/// The version of the library the program runs with, e.g. "0.1.0". The
/// OSSTORE_VERSION_* macros give the version of the header it was compiled
/// with.
///
/// Returns a static string.
///
/// Threads: any.
#[unsafe(no_mangle)]
pub extern "C" fn os_version() -> *const c_char {
    static VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    boundary(|| Ok(VERSION.as_ptr()))
}

/// The message of this thread's last failure. The rule is errno's: a
/// function that fails sets it, a function that succeeds leaves it alone.
/// Read it right after a function reported a failure.
///
/// Returns a string that belongs to the library, never NULL: "" until the
/// first failure on this thread. It stays valid until the next failure on
/// this thread (it is even kept one failure longer, so that a pointer
/// fetched just before a failing call does not dangle).
///
/// Threads: any; each thread has its own message.
#[unsafe(no_mangle)]
pub extern "C" fn os_last_error() -> *const c_char {
    boundary(|| {
        Ok(LAST_ERROR
            .try_with(|slot| slot.borrow().last.as_ptr())
            .unwrap_or(c"".as_ptr()))
    })
}

/// Frees a string the library handed out through a `char **`
/// out-parameter. `ptr` may be NULL. Any other pointer, or freeing a string
/// twice, is undefined behaviour, as with free().
///
/// Threads: any.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_free(ptr: *mut c_void) {
    boundary(|| {
        if !ptr.is_null() {
            // SAFETY: out-parameter strings are allocated with
            // `CString::into_raw` (see `strings::hand_out`), and the caller
            // passes each back once.
            drop(unsafe { CString::from_raw(ptr.cast::<c_char>()) });
        }
        Ok(())
    })
}
