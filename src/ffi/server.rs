//! `os_server_*`: the store server over its socket protocol.
//!
//! A server handle belongs to the store handle it serves as far as freeing
//! goes: `os_server_stop()` stops and frees it, and `os_store_free()` stops
//! and frees every server of the store that is still running.

use std::ffi::{CString, c_char, c_int, c_uint};
use std::path::PathBuf;
use std::sync::Mutex;

use super::boundary;
use super::handle;
use super::store::os_store_t;
use super::{strings, versioned};
use crate::error::{Error, Result};
use crate::server::{Server, ServerOptions};

/// A server handle (opaque). os_server_stop() or os_store_free() ends it.
pub struct os_server {
    /// `None` once stopped.
    server: Mutex<Option<Server>>,
    socket_path: CString,
}

impl os_server {
    /// Stops the server (once; later calls do nothing).
    pub(crate) fn stop(&self) -> Result<()> {
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        server.map_or(Ok(()), Server::stop)
    }
}

/// A running store server: it answers the store's socket protocol from a
/// thread of its own.
pub type os_server_t = os_server;

/// Options of os_server_start_ex(). Initialise the whole struct to zero
/// and set `struct_size`, e.g.
/// `os_server_options_t o = { .struct_size = sizeof(os_server_options_t) };`,
/// then set the members you need: a zero member means its default.
///
/// Compatibility: `struct_size` tells the library which version of the struct
/// the caller was compiled with. Members are only ever added at the end; a
/// library older than the caller's header accepts a larger struct as long as
/// every byte it does not know is zero (else -E2BIG), and a newer library
/// gives the members the caller does not have their defaults.
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
    /// When not NULL, an array of `mount_roots_len` absolute directory
    /// paths: `read-tree-at` targets must lie strictly below one of them,
    /// and are resolved from it without following any symlink or leaving it
    /// (the mount is made on what was so resolved). NULL: the server's own
    /// temp root (where `mkdtemp` creates directories) when `allowed_uids`
    /// is set, so that an admitted unprivileged uid never mounts over host
    /// paths; anywhere a client names otherwise (a root-only server, as the
    /// reference). The strings are copied. (Added in 0.2; older callers'
    /// smaller `struct_size` gives the default.)
    pub mount_roots: *const *const c_char,
    /// Number of entries of `mount_roots` (0 when it is NULL; with a
    /// non-NULL `mount_roots`, 0 refuses every target).
    pub mount_roots_len: usize,
}

/// The options of os_server_start_ex().
pub type os_server_options_t = os_server_options;

/// Starts a store server for `store`, listening at `socket_path`, in a
/// thread of its own: os_server_start_ex() with NULL options (socket mode
/// 0600, no uid check).
///
/// With a NULL `socket_path`, the socket is the path in the environment
/// variable `OSSTORE_SOCKET` when it is set and not empty (where
/// `osstore-client` connects by default), otherwise a socket named `store`
/// in a fresh private directory (mode 0700) under `/run/osbuild` (created if
/// missing); see os_server_socket_path(). Otherwise the path must not exist.
///
/// On success `*out` is a new handle that belongs to `store`: free it with
/// os_server_stop(), or let os_store_free() stop and free it. On failure
/// `*out` is NULL.
///
/// Returns 0; -EINVAL when `store` is NULL or not a live store handle, -ECHILD
/// when it was inherited through fork(); -EINVAL for a NULL `out` or an empty
/// path; -EADDRINUSE when the path exists; -ENAMETOOLONG for a path too long
/// for a socket address; or the errno of creating the socket, its directory or
/// the server's temp root.
///
/// Threads: any, concurrently with other calls on the store.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_server_start(
    store: *mut os_store_t,
    socket_path: *const c_char,
    out: *mut *mut os_server_t,
) -> c_int {
    // SAFETY: forwarded contract; NULL options are allowed.
    unsafe { os_server_start_ex(store, socket_path, std::ptr::null(), out) }
}

/// Like os_server_start(), with `options` (NULL for the defaults): the
/// socket's mode and the uids allowed to connect (see os_server_options_t).
///
/// Returns what os_server_start() returns, and -EINVAL for a `struct_size`
/// smaller than the first version of the struct, a mode beyond 0777, or a
/// NULL `allowed_uids` with a non-zero length; -E2BIG when the struct is
/// larger than this library knows and the part it does not know is not all
/// zero.
///
/// Threads: any, concurrently with other calls on the store.
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
        let mut server_options = ServerOptions::default();
        if !socket_path.is_null() {
            // SAFETY: forwarded contract.
            server_options.socket_path =
                Some(unsafe { strings::path(socket_path, "socket_path") }?.to_path_buf());
        }
        if !options.is_null() {
            // The first version (0.1) ends before the mount roots.
            let min_size = std::mem::offset_of!(os_server_options_t, mount_roots);
            let added = [
                (
                    std::mem::offset_of!(os_server_options_t, mount_roots),
                    size_of::<*const *const c_char>(),
                ),
                (
                    std::mem::offset_of!(os_server_options_t, mount_roots_len),
                    size_of::<usize>(),
                ),
            ];
            // SAFETY: forwarded contract; `options` is not NULL.
            let options = unsafe { versioned::read(options, min_size, &added, "options") }?;
            if options.socket_mode != 0 {
                server_options.socket_mode = options.socket_mode;
            }
            // SAFETY: forwarded contract.
            server_options.allowed_uids = unsafe { allowed_uids(&options) }?;
            // SAFETY: forwarded contract.
            server_options.mount_roots = unsafe { mount_roots(&options) }?;
        }
        let ptr = handle::with_store(store, |owner| {
            let server = Server::start(owner.store.clone(), server_options)?;
            handle::publish_server(
                os_server {
                    socket_path: strings::c_path(server.socket_path())?,
                    server: Mutex::new(Some(server)),
                },
                handle::token_of(store),
            )
        })?;
        // SAFETY: `out` checked above.
        unsafe { *out = ptr };
        Ok(0)
    })
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

/// The mount roots of `options`, copied.
///
/// # Safety
///
/// `mount_roots` NULL or pointing to `mount_roots_len` C strings.
unsafe fn mount_roots(options: &os_server_options_t) -> Result<Option<Vec<PathBuf>>> {
    if options.mount_roots.is_null() {
        if options.mount_roots_len != 0 {
            return Err(Error::invalid(
                "options->mount_roots is NULL but mount_roots_len is not 0",
            ));
        }
        return Ok(None);
    }
    // SAFETY: not NULL, and the caller promises `mount_roots_len` entries.
    let roots = unsafe { std::slice::from_raw_parts(options.mount_roots, options.mount_roots_len) };
    let mut out = Vec::with_capacity(roots.len());
    for &root in roots {
        // SAFETY: the caller promises C strings; NULL is refused by `path`.
        let root = unsafe { strings::path(root, "mount_roots[]") }?;
        if !root.is_absolute() {
            return Err(Error::invalid(format!(
                "options->mount_roots: {} is not an absolute path",
                root.display()
            )));
        }
        out.push(root.to_path_buf());
    }
    Ok(Some(out))
}

/// The path of the server's listening socket.
///
/// Returns a string that belongs to the handle and stays valid until the
/// server is stopped (os_server_stop() or os_store_free()), or NULL (with
/// os_last_error() set) when `server` is NULL, not a live server handle, or
/// inherited through fork().
///
/// Threads: any.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_server_socket_path(server: *const os_server_t) -> *const c_char {
    boundary(|| handle::with_server(server, |handle| Ok(handle.socket_path.as_ptr())))
}

/// Stops the server and frees the handle: it stops accepting, closes every
/// connection, unmounts what `read-tree-at` mounted (syncing first,
/// detaching lazily, newest first), removes the server's temp root, its
/// socket file and, when the server chose the path, the socket's private
/// directory. `server` may be NULL. Clean-up failures are reported through
/// os_last_error(); the handle is freed regardless. In a child after fork(),
/// stopping an inherited handle only forgets it: the parent's server goes on
/// serving.
///
/// Threads: any, but not while another thread frees the server's store.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_server_stop(server: *mut os_server_t) {
    boundary(|| {
        let Some(handle) = handle::take_server(handle::token_of(server))? else {
            return Ok(());
        };
        handle.stop()
    })
}
