//! The C interface: a thin `extern "C"` layer over the core, from which
//! cbindgen generates `include/osstore.h` (see `build.rs`).
//!
//! Conventions (`docs/c-api.md`): functions return `0` (or a documented
//! non-negative value) or a negative errno, and a failure sets this
//! thread's `os_last_error()`; every exported function runs inside
//! `boundary`, so no panic unwinds into C. Handles are tokens looked up in
//! a table (`handle`), never addresses: a NULL, released, forged or
//! inherited (after `fork()`) handle is refused instead of dereferenced.
//!
//! The doc comments of exported items become the header's documentation:
//! they are written for C programmers (C names, `Returns ...`,
//! `Threads: ...`, no rustdoc links or sections), and
//! `tests/check_header.py` holds them to that. The caller's side of each
//! function's contract is in those comments, hence no `# Safety` sections.
//!
//! A new function follows this shape (handles through `handle::with_*`,
//! strings through `strings`, out-parameters cleared first, strings handed
//! out for `os_free()`):
//!
//! ```ignore
//! /// What it does, in C words.
//! ///
//! /// Returns 0, or -EINVAL when ..., -ECHILD when ....
//! ///
//! /// Threads: any, concurrently with other calls on the store.
//! #[unsafe(no_mangle)]
//! pub unsafe extern "C" fn os_store_example(
//!     store: *mut os_store_t,
//!     key: *const c_char,
//!     value_out: *mut *mut c_char,
//! ) -> c_int {
//!     boundary(|| {
//!         // SAFETY: `value_out` is NULL or writable (the C contract).
//!         unsafe { strings::out_param(value_out, "value_out")? };
//!         // SAFETY: `key` is NULL or a C string (the C contract).
//!         let key = unsafe { strings::bytes(key, "key") }?;
//!         let value = handle::with_store(store, |s| s.store.example(key))?;
//!         // SAFETY: checked above.
//!         unsafe { strings::hand_out(value_out, strings::c_string(value.as_bytes())?) };
//!         Ok(0)
//!     })
//! }
//! ```

#![allow(non_camel_case_types)] // C names for C users: os_store_t, OS_MODE_READ, ...
#![allow(clippy::missing_safety_doc)] // see above: the contract is in C words

pub mod cache;
pub mod copy;
pub mod error;
pub mod handle;
pub mod log;
pub mod object;
pub mod registry;
pub mod server;
pub mod store;
mod strings;
mod versioned;

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
