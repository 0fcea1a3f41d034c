//! `os_server_*`: the store server over its socket protocol.
//!
//! A server handle belongs to the store handle it serves as far as freeing
//! goes: [`os_server_stop`] stops and frees it, and
//! [`os_store_free`](super::store::os_store_free) stops and frees every
//! server of the store that is still running.

use std::ffi::{CString, c_char, c_int, c_uint};

use super::handle::{self, Kind};
use super::store::os_store_t;
use super::strings;
use super::{boundary, boundary_ptr, boundary_void};
use crate::error::{Error, Result};
use crate::server::{Server, ServerOptions};

/// A running store server (opaque).
pub struct os_server {
    server: Server,
    socket_path: CString,
    /// The store handle that owns this server.
    store: usize,
}

/// The handle type of the C API.
pub type os_server_t = os_server;

/// Options of [`os_server_start_ex`]. Initialise the whole struct to zero
/// and set `struct_size`, e.g.
/// `os_server_options_t o = { .struct_size = sizeof(os_server_options_t) };`,
/// then set the members you need: a zero member means its default.
///
/// Forward compatibility: `struct_size` tells the library which version of
/// the struct the caller was compiled with. Members added later go at the
/// end; a library older than the caller's header accepts a larger struct
/// as long as every byte it does not know is zero (else `-E2BIG`), and a
/// newer library gives the members it has but the caller lacks their
/// defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct os_server_options {
    /// `sizeof(os_server_options_t)` as the caller knows it.
    pub struct_size: usize,
    /// Permission bits of the socket file (at most 0777); 0 means the
    /// default, 0600. The file never has wider permissions than these.
    pub socket_mode: c_uint,
    /// When not NULL, an array of `allowed_uids_len` uids: only peers with
    /// one of these uids (`SO_PEERCRED`, taken when they connect) are
    /// served; other connections are closed as soon as they are accepted.
    /// NULL: whoever can open the socket file is served. The array is
    /// copied; it need not outlive the call.
    pub allowed_uids: *const c_uint,
    /// Number of entries of `allowed_uids` (0 when it is NULL).
    pub allowed_uids_len: usize,
}

/// The options type of the C API.
pub type os_server_options_t = os_server_options;

/// Starts a store server for `store`, listening at `socket_path`, in a
/// thread of its own. The same as [`os_server_start_ex`] with NULL options:
/// socket mode 0600, no uid check.
///
/// `socket_path` NULL: the path in the environment variable
/// `OSSTORE_SOCKET` when it is set and not empty (the socket
/// `osstore-client` connects to by default), otherwise a fresh private
/// directory (mode 0700) under `/run/osbuild` (created if missing) holds a
/// socket named `store`; see [`os_server_socket_path`]. Otherwise the path
/// must not exist.
///
/// On success `*out` is a new handle, owned by `store`: free it with
/// [`os_server_stop`], or let
/// [`os_store_free`](super::store::os_store_free) stop and free it.
///
/// Returns 0, or `-EINVAL` (NULL `store` or `out`, an empty path),
/// `-EADDRINUSE` (the path exists), `-ENAMETOOLONG` (a path too long for a
/// socket address), or the error of creating the socket, its directory or
/// the server's temp root, with [`os_last_error`](super::error::os_last_error)
/// set.
///
/// # Safety
///
/// `store` a live handle or NULL, `socket_path` NULL or a C string, `out`
/// NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_server_start(
    store: *mut os_store_t,
    socket_path: *const c_char,
    out: *mut *mut os_server_t,
) -> c_int {
    // SAFETY: forwarded contract; NULL options are allowed.
    unsafe { os_server_start_ex(store, socket_path, std::ptr::null(), out) }
}

/// Like [`os_server_start`], with `options` (NULL for the defaults): the
/// socket's mode and a list of uids allowed to connect (see
/// [`os_server_options_t`]).
///
/// Returns 0, or the errors of [`os_server_start`], and `-EINVAL` for a
/// `struct_size` smaller than the first version of the struct, a mode
/// beyond 0777, or `allowed_uids` NULL with a non-zero length; `-E2BIG`
/// when the struct is larger than this library knows and the unknown part
/// is not all zero.
///
/// # Safety
///
/// As for [`os_server_start`]; `options` NULL or pointing to
/// `options->struct_size` readable bytes, and `allowed_uids` (when not
/// NULL) to `allowed_uids_len` readable uids.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_server_start_ex(
    store: *mut os_store_t,
    socket_path: *const c_char,
    options: *const os_server_options_t,
    out: *mut *mut os_server_t,
) -> c_int {
    boundary(|| {
        // SAFETY: forwarded contract.
        unsafe { strings::out_param(out, "out")? };
        // SAFETY: forwarded contract.
        let owner = unsafe { handle::borrow(Kind::Store, store) }?;
        let mut server_options = ServerOptions::default();
        if !socket_path.is_null() {
            // SAFETY: forwarded contract.
            server_options.socket_path =
                Some(unsafe { strings::path(socket_path, "socket_path") }?.to_path_buf());
        }
        if !options.is_null() {
            // SAFETY: forwarded contract.
            let options = unsafe { read_options(options) }?;
            if options.socket_mode != 0 {
                server_options.socket_mode = options.socket_mode;
            }
            // SAFETY: forwarded contract.
            server_options.allowed_uids = unsafe { allowed_uids(&options) }?;
        }
        let server = Server::start(owner.store.clone(), server_options)?;
        let handle = os_server {
            socket_path: strings::c_path(server.socket_path())?,
            server,
            store: store as usize,
        };
        let ptr = handle::publish(Kind::Server, handle);
        let key = ptr as usize;
        owner.adopt_server(
            key,
            Box::new(move || {
                // SAFETY: `os_store_free` calls this once, while freeing the
                // store; the server handle is taken back only if
                // `os_server_stop` has not done so already.
                if let Some(handle) =
                    unsafe { handle::retire(Kind::Server, key as *mut os_server_t) }
                {
                    // Nobody is left to report an error to.
                    let _ = handle.server.stop();
                }
            }),
        );
        // SAFETY: `out` checked above.
        unsafe { *out = ptr };
        Ok(0)
    })
}

/// Copies the caller's options, whatever version of the struct it has.
///
/// # Safety
///
/// `options` must point to `options->struct_size` readable bytes.
unsafe fn read_options(options: *const os_server_options_t) -> Result<os_server_options_t> {
    const KNOWN: usize = size_of::<os_server_options_t>();
    // SAFETY: the caller passes at least the first member.
    let size = unsafe { (*options).struct_size };
    if size < KNOWN {
        return Err(Error::invalid(format!(
            "options->struct_size is {size}, smaller than any version of os_server_options_t ({KNOWN} bytes)"
        )));
    }
    if size > KNOWN {
        // SAFETY: the caller promises `size` readable bytes.
        let unknown =
            unsafe { std::slice::from_raw_parts(options.cast::<u8>().add(KNOWN), size - KNOWN) };
        if unknown.iter().any(|b| *b != 0) {
            return Err(Error::new(
                libc::E2BIG,
                "options has members this library does not know (struct_size is larger and they are not zero)",
            ));
        }
    }
    // SAFETY: at least KNOWN readable bytes, checked above.
    Ok(unsafe { *options })
}

/// The uid list of `options`, copied.
///
/// # Safety
///
/// `allowed_uids` NULL or pointing to `allowed_uids_len` readable uids.
unsafe fn allowed_uids(options: &os_server_options_t) -> Result<Option<Vec<u32>>> {
    if options.allowed_uids.is_null() {
        if options.allowed_uids_len != 0 {
            return Err(Error::invalid(
                "options->allowed_uids is NULL but allowed_uids_len is not 0",
            ));
        }
        return Ok(None);
    }
    // SAFETY: not NULL, and the caller promises `allowed_uids_len` entries.
    let uids =
        unsafe { std::slice::from_raw_parts(options.allowed_uids, options.allowed_uids_len) };
    Ok(Some(uids.to_vec()))
}

/// The path of the server's listening socket, valid until the server is
/// stopped ([`os_server_stop`] or
/// [`os_store_free`](super::store::os_store_free)); NULL if `server` is not
/// a live handle.
///
/// # Safety
///
/// `server` must be NULL or a handle not being stopped.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_server_socket_path(server: *const os_server_t) -> *const c_char {
    boundary_ptr(|| {
        // SAFETY: forwarded contract.
        let handle = unsafe { handle::borrow(Kind::Server, server) }?;
        Ok(handle.socket_path.as_ptr())
    })
}

/// Stops the server and frees the handle: stops accepting, closes every
/// connection, unmounts what `read-tree-at` mounted (syncing first,
/// detaching lazily, newest first), removes the server's temp root, its
/// socket file and, when the path was chosen by the server, the socket's
/// private directory. `server` may be NULL. Clean-up failures are reported
/// through [`os_last_error`](super::error::os_last_error) (the handle is
/// freed regardless).
///
/// # Safety
///
/// `server` must not be used after or during this call, and its store must
/// not be freed during it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_server_stop(server: *mut os_server_t) {
    boundary_void(|| {
        // SAFETY: the caller hands the handle back.
        let Some(handle) = (unsafe { handle::retire(Kind::Server, server) }) else {
            if server.is_null() {
                return Ok(());
            }
            return Err(Error::invalid(format!(
                "{server:p} is not a live server handle"
            )));
        };
        // SAFETY: the store outlives its live servers (freeing it stops
        // them), and it is not being freed concurrently (contract above).
        if let Ok(owner) = unsafe { handle::borrow(Kind::Store, handle.store as *const os_store_t) }
        {
            owner.disown_server(server as usize);
        }
        handle.server.stop()
    })
}
