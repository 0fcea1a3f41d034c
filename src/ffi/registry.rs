//! `os_store_push`, `os_store_pull`: sharing trees through an OCI registry
//! (`docs/registry.md`).

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::path::PathBuf;

use super::copy::{os_progress, os_progress_fn};
use super::store::os_store_t;
use super::{boundary, handle, strings, versioned};
use crate::error::{Error, Result};
use crate::registry::{self, Progress, RegistryOptions};

/// Flag of `os_registry_options_t`: plain HTTP to any registry. Without it
/// only `localhost`, `127.0.0.1` and `[::1]` are spoken to over plain HTTP;
/// every other registry over HTTPS, checked against the system's trust
/// store.
pub const OS_REGISTRY_INSECURE: c_uint = 1;

/// Options of os_store_push() and os_store_pull(). Set it up with
/// `os_registry_options_t o = { .struct_size = sizeof(os_registry_options_t) };`
/// then the members you need: a zero member means its default. A NULL
/// options pointer means all defaults.
///
/// A larger `struct_size` (a newer header) is accepted when the members this
/// library does not know are zero (else -E2BIG); a smaller one is -EINVAL.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct os_registry_options {
    /// `sizeof(os_registry_options_t)` as the caller knows it.
    pub struct_size: usize,
    /// 0 or OS_REGISTRY_INSECURE; other bits are -EINVAL.
    pub flags: c_uint,
    /// The auth file (`containers-auth.json(5)` format); NULL:
    /// `$REGISTRY_AUTH_FILE`, then `$XDG_RUNTIME_DIR/containers/auth.json`,
    /// then `~/.docker/config.json`. Credentials never appear in messages.
    pub auth_file: *const c_char,
    /// Called with the transfer's progress (blobs as files, transferred
    /// bytes), one call at a time, from the threads the call starts to move
    /// blobs (not necessarily the calling thread); a non-zero return cancels
    /// the transfer (-ECANCELED). May be NULL.
    pub progress: os_progress_fn,
    /// Passed to `progress`.
    pub userdata: *mut c_void,
}

/// Options of os_store_push() and os_store_pull().
pub type os_registry_options_t = os_registry_options;

/// The callback and its userdata, handed to the transfer threads.
struct Callback {
    progress: unsafe extern "C" fn(*const os_progress, *mut c_void) -> c_int,
    userdata: *mut c_void,
}

// SAFETY: the C caller is told the callback runs on the library's transfer
// threads (one call at a time); the pointer is only passed back to it.
unsafe impl Send for Callback {}
// SAFETY: as above; calls are serialized by the transfer's progress lock.
unsafe impl Sync for Callback {}

impl Callback {
    /// Reports `progress`; false when the callback asks to stop.
    fn call(&self, progress: &os_progress) -> bool {
        // SAFETY: the caller's callback with its userdata, given a pointer
        // valid during the call.
        unsafe { (self.progress)(progress, self.userdata) == 0 }
    }
}

/// The Rust options for C options (NULL: defaults).
///
/// # Safety
///
/// `options` NULL or pointing to `options->struct_size` readable bytes, its
/// `auth_file` NULL or a NUL-terminated string.
unsafe fn options(options: *const os_registry_options_t) -> Result<RegistryOptions> {
    if options.is_null() {
        return Ok(RegistryOptions::default());
    }
    // The struct's first version is this one: no smaller size is valid.
    let first_version = size_of::<os_registry_options_t>();
    // SAFETY: forwarded contract; zero bytes are 0 and NULL.
    let o = unsafe { versioned::read(options, first_version, &[], "options") }?;
    if o.flags & !OS_REGISTRY_INSECURE != 0 {
        return Err(Error::invalid(format!(
            "unknown flags {:#x} in options",
            o.flags
        )));
    }
    let auth_file = if o.auth_file.is_null() {
        None
    } else {
        // SAFETY: forwarded contract.
        Some(PathBuf::from(unsafe {
            strings::path(o.auth_file, "options->auth_file")
        }?))
    };
    let progress = o.progress.map(|f| {
        let cb = Callback {
            progress: f,
            userdata: o.userdata,
        };
        Box::new(move |p: &Progress| {
            let report = os_progress {
                files_done: p.blobs_done + p.blobs_skipped,
                files_total: p.blobs_total,
                bytes_done: p.bytes_done,
                bytes_total: p.bytes_total,
            };
            cb.call(&report)
        }) as Box<registry::ProgressFn>
    });
    Ok(RegistryOptions {
        insecure: o.flags & OS_REGISTRY_INSECURE != 0,
        auth_file,
        progress,
        ..RegistryOptions::default()
    })
}

/// Uploads the committed object `object_id` as a standard OCI image to
/// `reference` (`host[:port]/repository[:tag]` or `...@sha256:<hex>`;
/// without a tag the id is the tag, mapped to the tag rules as
/// docs/registry.md says). Blobs the registry has are not sent again; an
/// object built by os_object_init() on a base that was pushed or pulled goes
/// up as the base's layers plus one layer of its changes. Unless
/// `digest_out` is NULL, the manifest digest (`sha256:<hex>`) is handed out
/// through it (free it with os_free()).
///
/// Returns 0; -EINVAL for a NULL or malformed reference or id, bad options
/// or a NULL, released or foreign `store`; -ECHILD for a store inherited
/// through fork(); -ENOENT when no committed object has the id; -EACCES
/// when the registry refuses the credentials (the message names the
/// registry, the repository and the HTTP status, never the password);
/// -ECANCELED when the progress callback asked to stop; or another negative
/// errno of the network or the store.
///
/// Threads: any, concurrently with other calls on the store; `progress` is
/// called from the library's transfer threads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_store_push(
    store: *mut os_store_t,
    object_id: *const c_char,
    reference: *const c_char,
    options: *const os_registry_options_t,
    digest_out: *mut *mut c_char,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe {
        transfer(
            store,
            object_id,
            reference,
            options,
            digest_out,
            |store, id, reference, opts| {
                registry::push(store, id, reference, opts).map(|r| r.digest)
            },
        )
    }
}

/// Pulls the image `reference` (any OCI or Docker v2 image; for an index,
/// the linux manifest of this machine's architecture) and commits its
/// flattened root filesystem under `object_id`, with the usual atomic ref
/// swap. Every blob is checked against its digest as it arrives; entries,
/// links and whiteouts that would act outside the tree are refused. On any
/// failure nothing is committed; what was downloaded stays in the store's
/// `registry/blobs/` so that a new try downloads only the rest (os_store_gc()
/// removes it once nobody touched it for a day). Unless
/// `name_out` is NULL, the new object's name is handed out through it (free
/// it with os_free()).
///
/// Returns 0; -EINVAL for a NULL or malformed reference or id, bad options
/// or a NULL, released or foreign `store`; -ECHILD for a store inherited
/// through fork(); -ENOENT for an unknown image; -EACCES when the registry
/// refuses the credentials; -EBADMSG for a blob that does not match its
/// digest; -EPERM for a layer entry refused for the tree's safety;
/// -EPROTO for what is not a usable image; -ECANCELED when the progress
/// callback asked to stop; or another negative errno.
///
/// Threads: any, concurrently with other calls on the store; `progress` is
/// called from the library's transfer threads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_store_pull(
    store: *mut os_store_t,
    reference: *const c_char,
    object_id: *const c_char,
    options: *const os_registry_options_t,
    name_out: *mut *mut c_char,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe {
        transfer(
            store,
            object_id,
            reference,
            options,
            name_out,
            |store, id, reference, opts| registry::pull(store, reference, id, opts).map(|r| r.name),
        )
    }
}

/// The common part of os_store_push() and os_store_pull(): checks the
/// arguments, runs `f` and hands its string out through `out` (if not NULL).
///
/// # Safety
///
/// As for os_store_push().
unsafe fn transfer(
    store: *mut os_store_t,
    object_id: *const c_char,
    reference: *const c_char,
    options: *const os_registry_options_t,
    out: *mut *mut c_char,
    f: impl FnOnce(&crate::Store, &str, &str, &RegistryOptions) -> Result<String>,
) -> c_int {
    boundary(|| {
        if !out.is_null() {
            // SAFETY: forwarded contract.
            unsafe { strings::out_param(out, "the out parameter")? };
        }
        // SAFETY: forwarded contract.
        let (id, reference, opts) = unsafe {
            (
                strings::id(object_id)?,
                text(reference)?,
                self::options(options)?,
            )
        };
        let value = handle::with_store(store, |h| f(&h.store, id, reference, &opts))?;
        // SAFETY: `out` is NULL or writable.
        unsafe { strings::hand_out(out, strings::c_string(value.as_bytes())?) };
        Ok(0)
    })
}

/// The reference argument as UTF-8.
///
/// # Safety
///
/// `ptr` NULL or a NUL-terminated string.
unsafe fn text<'a>(ptr: *const c_char) -> Result<&'a str> {
    // SAFETY: forwarded contract.
    let bytes = unsafe { strings::bytes(ptr, "reference") }?;
    std::str::from_utf8(bytes).map_err(|_| Error::invalid("reference is not valid UTF-8"))
}
