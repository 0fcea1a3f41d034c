//! The progress type of the C API, as `copyopts` defines it in
//! `src/ffi/copy.rs` (same names, same members). This file exists only
//! because that branch is not merged here yet: when it is, delete this file
//! and its `mod` line, and import `os_progress_t`/`os_progress_fn` from
//! `super::copy` in `registry.rs`.

use std::ffi::{c_int, c_void};

/// Where a copy or a transfer is. Totals are 0 when not known in advance.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct os_progress {
    /// Entries copied so far; for os_store_push() and os_store_pull(),
    /// blobs moved or found present.
    pub files_done: u64,
    /// Entries to copy, or 0 when not known; blobs of the image for
    /// os_store_push() and os_store_pull().
    pub files_total: u64,
    /// Bytes copied (or sent or received) so far.
    pub bytes_done: u64,
    /// Bytes to copy (or to move when nothing is skipped), or 0 when not
    /// known.
    pub bytes_total: u64,
}

/// The progress type of the C API.
pub type os_progress_t = os_progress;

/// A progress callback: called with the progress (valid during the call
/// only) and the options' `userdata`; a non-zero return cancels.
pub type os_progress_fn =
    Option<unsafe extern "C" fn(progress: *const os_progress_t, userdata: *mut c_void) -> c_int>;
