//! `os_object_init_ex`, `os_object_export_ex`: copies with progress reports,
//! cancellation and a choice of owners.

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::mem::offset_of;

use super::handle;
use super::object::os_object_t;
use super::{boundary, strings, versioned};
use crate::error::{Error, Result};
use crate::tree::{CopyOptions, Progress};

/// Flag of `os_copy_options_t` for `os_object_export_ex()`: the exported
/// files belong to the caller (its uid and gid, as new files get them)
/// instead of the tree's owners; set-id bits of files the caller did not own
/// in the tree are dropped.
pub const OS_COPY_NO_OWNER: c_uint = 1;

/// Where a copy is. Totals are 0 when not known in advance: a copy from a
/// committed object knows its entry total (recorded at commit), the byte
/// total is not recorded.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct os_progress {
    /// Entries copied so far (files, directories, symlinks, special files;
    /// the root not counted).
    pub files_done: u64,
    /// Entries to copy, or 0 when not known.
    pub files_total: u64,
    /// Bytes of regular files copied so far (each inode once).
    pub bytes_done: u64,
    /// Bytes to copy, or 0 when not known.
    pub bytes_total: u64,
}

/// The progress type of the C API.
pub type os_progress_t = os_progress;

/// A progress callback: called with the copy's progress (valid during the
/// call only) and the options' `userdata`; a non-zero return cancels the
/// copy.
pub type os_progress_fn =
    Option<unsafe extern "C" fn(progress: *const os_progress_t, userdata: *mut c_void) -> c_int>;

/// Options of `os_object_init_ex()` and `os_object_export_ex()`. Set it up
/// with `os_copy_options_t o = { .struct_size = sizeof(os_copy_options_t) };`,
/// then the members you need: a zero member means its default.
///
/// `struct_size` tells the library which version of the struct the caller
/// was compiled with: a smaller (older) struct is read up to its size, the
/// missing members taking their defaults; a larger one is accepted when the
/// members this library does not know are zero (else `-E2BIG`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct os_copy_options {
    /// `sizeof(os_copy_options_t)` as the caller knows it.
    pub struct_size: usize,
    /// A bitwise or of `OS_COPY_NO_OWNER`, or 0. Unknown flags are
    /// `-EINVAL`.
    pub flags: c_uint,
    /// Called on the calling thread: once before anything is copied, at
    /// least every 100 ms while the copy works (unless the callback itself
    /// takes longer), and once at the end with the final counts. A non-zero
    /// return cancels the copy: the call then fails with `-ECANCELED` and
    /// removes what it wrote. NULL: no reports.
    pub progress: os_progress_fn,
    /// Passed to `progress` as is.
    pub userdata: *mut c_void,
}

/// The copy options type of the C API.
pub type os_copy_options_t = os_copy_options;

/// The caller's options (NULL: the defaults), checked.
///
/// The caller passes: `options` NULL or pointing to `options->struct_size`
/// readable bytes.
unsafe fn read_options(options: *const os_copy_options_t) -> Result<Option<os_copy_options_t>> {
    if options.is_null() {
        return Ok(None);
    }
    const MEMBERS: [(usize, usize); 4] = [
        (
            offset_of!(os_copy_options_t, struct_size),
            size_of::<usize>(),
        ),
        (offset_of!(os_copy_options_t, flags), size_of::<c_uint>()),
        (
            offset_of!(os_copy_options_t, progress),
            size_of::<os_progress_fn>(),
        ),
        (
            offset_of!(os_copy_options_t, userdata),
            size_of::<*mut c_void>(),
        ),
    ];
    // Any size down to `struct_size` alone is a version: the members are
    // read up to the caller's size.
    let min_size = size_of::<usize>();
    // SAFETY: forwarded contract; zero bytes are 0, None and NULL.
    let options = unsafe { versioned::read(options, min_size, &MEMBERS, "options") }?;
    if options.flags & !OS_COPY_NO_OWNER != 0 {
        return Err(Error::invalid(format!(
            "options->flags has unknown flags {:#x}",
            options.flags & !OS_COPY_NO_OWNER
        )));
    }
    Ok(Some(options))
}

/// Runs `copy` with the core's form of `options`.
fn with_options<T>(
    options: Option<os_copy_options_t>,
    copy: impl FnOnce(CopyOptions<'_>) -> Result<T>,
) -> Result<T> {
    let Some(options) = options else {
        return copy(CopyOptions::default());
    };
    let mut report = options.progress.map(|callback| {
        move |p: &Progress| {
            let p = os_progress {
                files_done: p.files_done,
                files_total: p.files_total,
                bytes_done: p.bytes_done,
                bytes_total: p.bytes_total,
            };
            // SAFETY: the caller gave a function of this signature with the
            // userdata it expects; `p` lives during the call.
            unsafe { callback(&p, options.userdata) == 0 }
        }
    });
    copy(CopyOptions {
        progress: report
            .as_mut()
            .map(|r| r as &mut dyn FnMut(&Progress) -> bool),
        caller_owns: options.flags & OS_COPY_NO_OWNER != 0,
    })
}

/// `os_object_init()` with `options` (NULL: the defaults, the same as
/// `os_object_init()`): progress reports and cancellation, see
/// `os_copy_options_t`. `OS_COPY_NO_OWNER` makes the copy the caller's.
///
/// A cancelled init leaves `object`'s tree as it was before the call
/// (empty, for a new object) and returns `-ECANCELED`.
///
/// Threads: `progress` is called on the calling thread only, never
/// concurrently with itself; the copy runs meanwhile in threads of the
/// library. The callback may call the library, but not with `object` or
/// `base`.
///
/// Returns 0, `-ECANCELED`, the errors of `os_object_init()`, and
/// `-EINVAL` (unknown flags, a `struct_size` that is no version of the
/// struct) or `-E2BIG` (see `os_copy_options_t`). If removing what a
/// cancelled copy wrote fails, that error is returned instead of
/// `-ECANCELED`.
///
/// The caller passes: `object` and `base` NULL or live handles not being
/// released; `options` NULL or pointing to `options->struct_size` readable
/// bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_object_init_ex(
    object: *mut os_object_t,
    base: *const os_object_t,
    options: *const os_copy_options_t,
) -> c_int {
    boundary(|| {
        if std::ptr::eq(object, base) {
            return Err(Error::invalid(
                "an object cannot be initialised from itself",
            ));
        }
        // SAFETY: forwarded contract.
        let options = unsafe { read_options(options) }?;
        // Two different handles (checked above), so the two locks are too.
        handle::with_object(object, |obj| {
            handle::with_object_ref(base, |base| {
                with_options(options, |o| obj.object.init_with(&base.object, o))
            })
        })?;
        Ok(0)
    })
}

/// `os_object_export()` with `options` (NULL: the defaults, the same as
/// `os_object_export()`): progress reports and cancellation (see
/// `os_copy_options_t`), and with `OS_COPY_NO_OWNER` files that belong to
/// the caller.
///
/// A cancelled export removes everything the call created below
/// `to_directory` and puts back the owner, mode and times of the
/// directories that were there before; entries that were there before stay
/// (a file the export replaced keeps the exported contents). It returns
/// `-ECANCELED`.
///
/// Threads: as for `os_object_init_ex()`; the callback must not use
/// `object`.
///
/// Returns 0, `-ECANCELED`, the errors of `os_object_export()`, and
/// `-EINVAL` or `-E2BIG` for bad options, as `os_object_init_ex()`.
///
/// The caller passes: `object` NULL or a live handle, `to_directory` NULL
/// or a C string, `options` NULL or pointing to `options->struct_size`
/// readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_object_export_ex(
    object: *const os_object_t,
    to_directory: *const c_char,
    options: *const os_copy_options_t,
) -> c_int {
    boundary(|| {
        // SAFETY: forwarded contract.
        let to = unsafe { strings::path(to_directory, "to_directory") }?;
        // SAFETY: forwarded contract.
        let options = unsafe { read_options(options) }?;
        handle::with_object_ref(object, |obj| {
            with_options(options, |o| obj.object.export_with(to, o))
        })?;
        Ok(0)
    })
}
