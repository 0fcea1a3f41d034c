//! `os_store_*`: opening, look-ups, commit, temp dirs, host tree, clean-up.

use std::ffi::{CString, c_char, c_int, c_uint};
use std::sync::Mutex;

use super::boundary;
use super::handle::{self, Token};
use super::object::{self, os_object_t};
use super::strings;
use crate::error::Error;
use crate::ids::ObjectId;
use crate::store::{OpenOptions, Store};
use crate::tempdir::TempDir;

/// Flag of os_store_open_ex(): commits are not made durable (no `syncfs`
/// or `fsync`), so a power cut may leave refs to trees with empty files. For
/// throw-away stores, e.g. in CI.
pub const OS_STORE_NO_SYNC: c_uint = 1;
/// Flag of os_store_open_ex(): the store is not swept when it is opened.
pub const OS_STORE_NO_GC: c_uint = 2;
/// Flag for `os_store_open_ex()`: change nothing on disk. No directory is
/// created, nothing is collected, no last use is recorded; `os_store_new`,
/// commit, gc, evict and setting changes fail with `-EROFS`; look-ups,
/// export and the server's reads work. Temp dirs, the host tree and the
/// server's temp root go to `$TMPDIR` (or `/tmp`). Works on a read-only
/// mount of a store, alongside writers using it.
pub const OS_STORE_READ_ONLY: c_uint = 4;

/// A store handle (opaque). os_store_free() ends it.
pub struct os_store {
    pub(crate) store: Store,
    path: CString,
    host_tree: Mutex<Option<CString>>,
    /// The temp dirs of os_store_tempdir(), removed with the handle (the
    /// object and server handles it gave out are found in the handle
    /// table).
    tempdirs: Mutex<Vec<TempDir>>,
}

/// A store: a directory of committed trees (`objects/`), the names that
/// point to them (`refs/`) and work dirs (`tmp/`). A store handle may be used
/// by several threads at once (the server uses it from a thread of its own).
pub type os_store_t = os_store;

/// Opens the store at `path` (any bytes but NUL), creating it and its
/// `objects/`, `refs/` and `tmp/` where missing, and sweeps what dead
/// processes left behind (see os_store_gc()). Commits are durable (see
/// os_store_open_ex()). On success `*out` is a new handle for
/// os_store_free(); on failure it is NULL.
///
/// Returns 0; -EINVAL for a NULL `out`, a NULL or empty `path`;
/// -ENAMETOOLONG; -ENOTDIR when `path` or one of its parts is not a
/// directory; -EACCES; or another errno of creating or opening the
/// directories.
///
/// Threads: any.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_store_open(path: *const c_char, out: *mut *mut os_store_t) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { os_store_open_ex(path, 0, out) }
}

/// Like os_store_open(), with `flags`: 0, or a bitwise or of
/// OS_STORE_NO_SYNC and OS_STORE_NO_GC.
///
/// Returns what os_store_open() returns, and -EINVAL for an unknown flag.
///
/// Threads: any.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_store_open_ex(
    path: *const c_char,
    flags: c_uint,
    out: *mut *mut os_store_t,
) -> c_int {
    boundary(|| {
        // SAFETY: forwarded contract.
        unsafe { strings::out_param(out, "out")? };
        // SAFETY: forwarded contract.
        let path = unsafe { strings::path(path, "store path")? };
        if flags & !(OS_STORE_NO_SYNC | OS_STORE_NO_GC | OS_STORE_READ_ONLY) != 0 {
            return Err(Error::invalid(format!("unknown flags {flags:#x}")));
        }
        let options = OpenOptions {
            durable: flags & OS_STORE_NO_SYNC == 0,
            collect_garbage: flags & OS_STORE_NO_GC == 0,
            read_only: flags & OS_STORE_READ_ONLY != 0,
        };
        let store = Store::open_with(path, options)?;
        let handle = os_store {
            path: strings::c_path(store.path())?,
            store,
            host_tree: Mutex::new(None),
            tempdirs: Mutex::new(Vec::new()),
        };
        let ptr = handle::publish_store(handle)?;
        // SAFETY: `out` checked above.
        unsafe { *out = ptr };
        Ok(0)
    })
}

/// Frees a store handle: stops the servers it started, releases every
/// object handle it gave out (removing their work dirs), removes the temp
/// dirs of os_store_tempdir(), and unmounts and removes the host tree.
/// Committed trees stay. The handle and its objects are invalid afterwards
/// (any later use is refused with -EINVAL). `store` may be NULL. In a child
/// after fork(), freeing an inherited handle only forgets it: nothing on disk,
/// no mount and no server of the parent is touched. A value that is not a
/// live store handle is refused (os_last_error() says why).
///
/// Threads: not while another thread uses the store or one of its objects.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_store_free(store: *mut os_store_t) {
    boundary(|| {
        let token: Token = handle::token_of(store);
        let Some(handle) = handle::take_store(token)? else {
            return Ok(());
        };
        // Servers first: they use the store's objects and temp dirs. Nobody
        // is left to report their clean-up errors to.
        let (servers, objects) = handle::owned_by(token);
        for server in servers {
            if let Ok(Some(server)) = handle::take_server(server) {
                let _ = server.stop();
            }
        }
        for object in objects {
            drop(handle::take_object(object));
        }
        handle
            .tempdirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(())
    })
}

/// The store's root directory, as an absolute path.
///
/// Returns a string that belongs to the handle and stays valid until
/// os_store_free(), or NULL (with os_last_error() set) when `store` is NULL,
/// not a live store handle, or inherited through fork().
///
/// Threads: any, concurrently with other calls on the store.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_store_path(store: *const os_store_t) -> *const c_char {
    boundary(|| handle::with_store(store, |handle| Ok(handle.path.as_ptr())))
}

/// Creates an object for `object_id` in OS_MODE_WRITE, with an empty tree in
/// a fresh work dir. On success `*out` is a new handle that belongs to the
/// store (see os_object_release()); on failure it is NULL.
///
/// Returns 0; -EINVAL for an invalid id (NULL, empty, longer than 255 bytes,
/// containing `/`, `.` or `..`, not UTF-8); -EINVAL for a NULL `out`; -EINVAL
/// when `store` is NULL or not a live store handle, -ECHILD when it was
/// inherited through fork(); or the errno of creating the work dir.
///
/// Threads: any, concurrently with other calls on the store.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_store_new(
    store: *mut os_store_t,
    object_id: *const c_char,
    out: *mut *mut os_object_t,
) -> c_int {
    boundary(|| {
        // SAFETY: forwarded contract.
        unsafe { strings::out_param(out, "out")? };
        // SAFETY: forwarded contract.
        let id = ObjectId::new(unsafe { strings::id(object_id) }?)?;
        let ptr = handle::with_store(store, |handle| {
            object::publish(store, handle.store.new_object(id)?)
        })?;
        // SAFETY: `out` checked above.
        unsafe { *out = ptr };
        Ok(0)
    })
}

/// Looks up `object_id`: a floating object of this store first (finalized,
/// never committed, not released), else the committed tree that
/// `refs/<object_id>` names. On success `*out` is a new handle in
/// OS_MODE_READ that belongs to the store; on failure it is NULL. A handle
/// for a floating object shares its tree, which goes when that object is
/// released.
///
/// Returns 0; -ENOENT when the store has no such object; -EINVAL for an invalid
/// id (NULL, empty, longer than 255 bytes, containing `/`, `.` or `..`, not
/// UTF-8); -EINVAL for a NULL `out`; -EINVAL when `store` is NULL or not a live
/// store handle, -ECHILD when it was inherited through fork().
///
/// Threads: any, concurrently with other calls on the store.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_store_get(
    store: *mut os_store_t,
    object_id: *const c_char,
    out: *mut *mut os_object_t,
) -> c_int {
    boundary(|| {
        // SAFETY: forwarded contract.
        unsafe { strings::out_param(out, "out")? };
        // SAFETY: forwarded contract.
        let id = ObjectId::new(unsafe { strings::id(object_id) }?)?;
        let ptr = handle::with_store(store, |handle| {
            let obj = handle.store.get(id)?.ok_or_else(|| {
                Error::new(libc::ENOENT, format!("no object \"{id}\" in the store"))
            })?;
            object::publish(store, obj)
        })?;
        // SAFETY: `out` checked above.
        unsafe { *out = ptr };
        Ok(0)
    })
}

/// Tells whether the store has `object_id`, floating or as a ref that
/// resolves.
///
/// Returns 1 when it has, 0 when not (always 0 for an empty id), or a negative
/// errno: -EINVAL for an invalid id (NULL, empty, longer than 255 bytes,
/// containing `/`, `.` or `..`, not UTF-8); -EINVAL when `store` is NULL or not
/// a live store handle, -ECHILD when it was inherited through fork().
///
/// Threads: any, concurrently with other calls on the store.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_store_contains(
    store: *mut os_store_t,
    object_id: *const c_char,
) -> c_int {
    boundary(|| {
        // SAFETY: forwarded contract.
        let id = unsafe { strings::id(object_id) }?;
        handle::with_store(store, |handle| Ok(c_int::from(handle.store.contains(id)?)))
    })
}

/// Hands out the path `<store>/refs/<object_id>` through `*path_out`,
/// whether or not it exists; free it with os_free(). On failure `*path_out`
/// is NULL.
///
/// Returns 0; -EINVAL for an invalid id (NULL, empty, longer than 255 bytes,
/// containing `/`, `.` or `..`, not UTF-8); -EINVAL for a NULL `path_out`;
/// -EINVAL when `store` is NULL or not a live store handle, -ECHILD when it was
/// inherited through fork().
///
/// Threads: any, concurrently with other calls on the store.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_store_resolve_ref(
    store: *mut os_store_t,
    object_id: *const c_char,
    path_out: *mut *mut c_char,
) -> c_int {
    boundary(|| {
        // SAFETY: forwarded contract.
        unsafe { strings::out_param(path_out, "path_out")? };
        // SAFETY: forwarded contract.
        let id = ObjectId::new(unsafe { strings::id(object_id) }?)?;
        let path = handle::with_store(store, |handle| {
            strings::c_path(&handle.store.resolve_ref(id)?)
        })?;
        // SAFETY: `path_out` checked above.
        unsafe { strings::hand_out(path_out, path) };
        Ok(0)
    })
}

/// Commits `object` under `object_id` and makes `refs/<object_id>` name it,
/// atomically. With the object's own id its tree is moved into `objects/`
/// (inodes kept) and the object turns to OS_MODE_READ; with another id a copy
/// is committed and `object` stays as it was. Unless `name_out` is NULL, the
/// new object's name (a UUID) is handed out through it (free it with
/// os_free()). After a failure nothing changed.
///
/// Returns 0; -EINVAL for an invalid id (NULL, empty, longer than 255 bytes,
/// containing `/`, `.` or `..`, not UTF-8); -EINVAL for an object committed
/// already under its own id or an object of another store handle; -EINVAL when
/// `store` is NULL or not a live store handle, -ECHILD when it was inherited
/// through fork(); -EINVAL or -ECHILD for `object` the same way; or the errno
/// of the commit, such as -ENOSPC.
///
/// Threads: any, concurrently with other calls on the store; one thread at a
/// time per object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_store_commit(
    store: *mut os_store_t,
    object: *mut os_object_t,
    object_id: *const c_char,
    name_out: *mut *mut c_char,
) -> c_int {
    boundary(|| {
        if !name_out.is_null() {
            // SAFETY: forwarded contract.
            unsafe { strings::out_param(name_out, "name_out")? };
        }
        // SAFETY: forwarded contract.
        let id = ObjectId::new(unsafe { strings::id(object_id) }?)?;
        let name = handle::with_store(store, |handle| {
            handle::with_object(object, |obj| handle.store.commit(&mut obj.object, id))
        })?;
        // SAFETY: `name_out` is NULL or writable.
        unsafe { strings::hand_out(name_out, strings::c_string(name.as_bytes())?) };
        Ok(0)
    })
}

/// Creates a fresh directory `<store>/tmp/<prefix><random><suffix>` (mode
/// 0700) and hands its path out through `*path_out` (free the string with
/// os_free()). `prefix` and `suffix` may be NULL, meaning "", and may not
/// contain `/`. `<random>` is 14 characters: 8 random ones and a check of
/// them, by which os_store_gc() knows the directory for osstore's.
/// os_store_free() removes the directory.
///
/// Returns 0; -EINVAL for a `/` in `prefix` or `suffix` or a NULL `path_out`;
/// -EINVAL when `store` is NULL or not a live store handle, -ECHILD when it was
/// inherited through fork(); or the errno of creating the directory.
///
/// Threads: any, concurrently with other calls on the store.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_store_tempdir(
    store: *mut os_store_t,
    prefix: *const c_char,
    suffix: *const c_char,
    path_out: *mut *mut c_char,
) -> c_int {
    boundary(|| {
        // SAFETY: forwarded contract.
        unsafe { strings::out_param(path_out, "path_out")? };
        // SAFETY: forwarded contract.
        let prefix = unsafe { strings::bytes_or_empty(prefix, "prefix") }?;
        // SAFETY: forwarded contract.
        let suffix = unsafe { strings::bytes_or_empty(suffix, "suffix") }?;
        let path = handle::with_store(store, |handle| {
            let dir = handle.store.tempdir(prefix, suffix)?;
            let path = strings::c_path(dir.path())?;
            handle
                .tempdirs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(dir);
            Ok(path)
        })?;
        // SAFETY: `path_out` checked above.
        unsafe { strings::hand_out(path_out, path) };
        Ok(0)
    })
}

/// Hands out, through `*path_out`, the host tree: a read-only view of the
/// host with only `/usr` in it (bind mounts, which need CAP_SYS_ADMIN), made
/// on first use. Writing in it fails with EROFS.
///
/// The exception to the rule for strings: the string belongs to the store
/// handle (do not free it) and stays valid until os_store_free(), which
/// unmounts and removes the tree. Every other function hands strings out
/// through `char **` for the caller to free with os_free().
///
/// Returns 0; -EINVAL for a NULL `path_out`; -EINVAL when `store` is NULL or
/// not a live store handle, -ECHILD when it was inherited through fork();
/// -EPERM without the capability; or the errno of mounting.
///
/// Threads: any, concurrently with other calls on the store.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_store_host_tree(
    store: *mut os_store_t,
    path_out: *mut *const c_char,
) -> c_int {
    boundary(|| {
        if path_out.is_null() {
            return Err(Error::invalid("path_out is NULL"));
        }
        // SAFETY: not NULL, writable by contract.
        unsafe { *path_out = std::ptr::null() };
        let ptr = handle::with_store(store, |handle| {
            let mut slot = handle.host_tree.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(strings::c_path(&handle.store.host_tree()?)?);
            }
            Ok(slot.as_ref().map_or(std::ptr::null(), |p| p.as_ptr()))
        })?;
        // SAFETY: `path_out` checked above; the CString lives in the handle.
        unsafe { *path_out = ptr };
        Ok(0)
    })
}

/// Removes what nobody can use any more: directories of `tmp/` that osstore
/// made and whose owning process died (work dirs, temp dirs, host trees;
/// mounts left in them are detached) and objects that no ref names and no
/// live handle, in any process, holds. Never touches what a live handle
/// uses; safe to run while other processes use the store. Entries osstore
/// did not name (another tool's files and directories in `objects/`, `tmp/`
/// or `meta/`) stay, locked or not.
///
/// Returns the number of entries removed, or a negative errno: -EINVAL when
/// `store` is NULL or not a live store handle, -ECHILD when it was inherited
/// through fork(); or the errno of the sweep.
///
/// Threads: any, concurrently with other calls on the store.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_store_gc(store: *mut os_store_t) -> c_int {
    boundary(|| {
        let report = handle::with_store(store, |handle| handle.store.gc())?;
        Ok(c_int::try_from(report.removed).unwrap_or(c_int::MAX))
    })
}
