//! The C interface: a thin `extern "C"` layer over the core, from which
//! cbindgen generates `include/osstore.h` (see `build.rs`).
//!
//! Conventions (`docs/c-api.md`): functions return `0` (or a documented
//! non-negative value) or a negative errno, and a failure sets this
//! thread's `os_last_error()`; every exported function runs inside
//! [`boundary`], so no panic unwinds into C. Handles are tokens looked up in
//! a table ([`handle`]), never addresses: a NULL, released, forged or
//! inherited (after `fork()`) handle is refused instead of dereferenced.
//!
//! The doc comments of exported items become the header's documentation:
//! they are written for C programmers (C names, `Returns ...`,
//! `Threads: ...`, no rustdoc links or sections), and
//! `tests/check_header.py` holds them to that. The caller's side of each
//! function's contract is in those comments, hence no `# Safety` sections.

#![allow(non_camel_case_types)] // C names for C users: os_store_t, OS_MODE_READ, ...
#![allow(clippy::missing_safety_doc)] // see above: the contract is in C words

pub mod cache;
pub mod error;
pub mod handle;
pub mod object;
pub mod server;
pub mod store;
mod strings;

use std::ffi::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::Error;

/// What an exported function returns when it fails.
pub(crate) trait Failed {
    /// The value for a failure with the (positive) `errno`.
    fn failed(errno: c_int) -> Self;
}

impl Failed for c_int {
    fn failed(errno: c_int) -> Self {
        -errno
    }
}

impl<T> Failed for *const T {
    fn failed(_: c_int) -> Self {
        std::ptr::null()
    }
}

impl Failed for () {
    fn failed(_: c_int) {}
}

/// The one panic boundary: every exported function runs its body in it.
/// `Ok(value)` is returned as it is and leaves `os_last_error()` alone; an
/// error or a panic records the thread's message and returns the function's
/// failure value ([`Failed`]). No unwinding crosses into C.
pub(crate) fn boundary<R: Failed>(f: impl FnOnce() -> Result<R, Error>) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => value,
        Ok(Err(e)) => R::failed(error::fail(&e)),
        Err(panic) => R::failed(error::fail(&panic_error(panic))),
    }
}

fn panic_error(panic: Box<dyn std::any::Any + Send>) -> Error {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".into());
    Error::new(libc::EIO, format!("internal error in osstore: {what}"))
}
