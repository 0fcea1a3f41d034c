//! The C interface: a thin `extern "C"` layer over the core.
//!
//! Conventions, as in `shared/spec/c-api.md`: functions return `0` (or a
//! documented non-negative value) or a negative errno; `os_last_error()`
//! holds this thread's message for the last failure. Every exported function
//! runs inside [`boundary`], which turns a panic into `-EIO` so that no
//! unwinding crosses into C. Handles are boxes handed to C as raw pointers
//! and recorded in a registry ([`handle`]), so a NULL, released or foreign
//! pointer is refused with `-EINVAL` instead of being dereferenced.

#![allow(non_camel_case_types)] // C names for C users: os_store_t, OS_MODE_READ, ...

pub mod copy;
pub mod error;
pub mod handle;
pub mod log;
pub mod object;
pub mod server;
pub mod store;
mod strings;
mod versioned;

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::Error;

/// Runs `f` for an exported function returning `int`: `Ok(n)` becomes `n`,
/// an error or a panic becomes a negative errno with the thread's message set.
pub(crate) fn boundary(f: impl FnOnce() -> Result<libc::c_int, Error>) -> libc::c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(n)) => {
            error::clear();
            n
        }
        Ok(Err(e)) => error::fail(&e),
        Err(panic) => error::fail(&panic_error(panic)),
    }
}

/// Like [`boundary`] for functions returning a pointer: NULL on failure.
pub(crate) fn boundary_ptr<T>(f: impl FnOnce() -> Result<*const T, Error>) -> *const T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            error::fail(&e);
            std::ptr::null()
        }
        Err(panic) => {
            error::fail(&panic_error(panic));
            std::ptr::null()
        }
    }
}

/// Like [`boundary`] for functions returning nothing.
pub(crate) fn boundary_void(f: impl FnOnce() -> Result<(), Error>) {
    boundary(|| f().map(|()| 0));
}

fn panic_error(panic: Box<dyn std::any::Any + Send>) -> Error {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".into());
    Error::new(libc::EIO, format!("internal error in osstore: {what}"))
}
