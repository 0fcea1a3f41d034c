//! `os_store_*`: opening, look-ups, commit, temp dirs, host tree, clean-up.

use std::collections::HashSet;
use std::ffi::{CString, c_char, c_int, c_uint};
use std::sync::Mutex;

use super::boundary;
use super::handle::{self, Token};
use super::object::{self, os_object_t};
use super::strings;
use crate::error::Error;
use crate::store::{OpenOptions, Store};
use crate::tempdir::TempDir;

/// Flag for `os_store_open_ex()`: do not make commits durable (no `syncfs`
/// or `fsync`); a power cut may then leave refs to trees with empty files.
/// For throw-away stores, e.g. in CI.
pub const OS_STORE_NO_SYNC: c_uint = 1;
/// Flag for `os_store_open_ex()`: do not sweep the store when opening it.
pub const OS_STORE_NO_GC: c_uint = 2;

/// A store handle (opaque).
pub struct os_store {
    pub(crate) store: Store,
    path: CString,
    host_tree: Mutex<Option<CString>>,
    owned: Mutex<Owned>,
}

/// What a store handle owns and frees with it.
#[derive(Default)]
struct Owned {
    /// Object handles (one insert and one removal per `get`).
    objects: HashSet<Token>,
    tempdirs: Vec<TempDir>,
    /// Running servers.
    servers: HashSet<Token>,
}

/// The handle type of the C API.
pub type os_store_t = os_store;

impl os_store {
    fn owned(&self) -> std::sync::MutexGuard<'_, Owned> {
        self.owned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an object handle as owned by this store.
    pub(crate) fn adopt(&self, object: Token) {
        self.owned().objects.insert(object);
    }

    /// Forgets an object handle that is being released.
    pub(crate) fn disown(&self, object: Token) {
        self.owned().objects.remove(&object);
    }

    /// Records a running server, which `os_store_free()` stops if it is
    /// still running then.
    pub(crate) fn adopt_server(&self, server: Token) {
        self.owned().servers.insert(server);
    }

    /// Forgets a server that is being stopped through its own handle.
    pub(crate) fn disown_server(&self, server: Token) {
        self.owned().servers.remove(&server);
    }
}

/// Opens the store at `path`, creating it and its `objects/`, `refs/` and
/// `tmp/` where missing, and sweeps what dead processes left behind (see
/// `os_store_gc()`). On success `*out` is a new handle, freed with
/// `os_store_free()`. Commits are durable (see `os_store_open_ex()`).
///
/// Returns 0, or `-EINVAL` (NULL argument), `-ENAMETOOLONG`, `-ENOTDIR`,
/// `-EACCES`, ... with `os_last_error()` set.
///
/// # Safety
///
/// `path` must be NULL or a NUL-terminated string; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_store_open(path: *const c_char, out: *mut *mut os_store_t) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { os_store_open_ex(path, 0, out) }
}

/// Like `os_store_open()`, with `flags`: a bitwise or of
/// `OS_STORE_NO_SYNC` and `OS_STORE_NO_GC`, or 0. Unknown flags are
/// `-EINVAL`.
///
/// # Safety
///
/// As for `os_store_open()`.
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
        if flags & !(OS_STORE_NO_SYNC | OS_STORE_NO_GC) != 0 {
            return Err(Error::invalid(format!("unknown flags {flags:#x}")));
        }
        let options = OpenOptions {
            durable: flags & OS_STORE_NO_SYNC == 0,
            collect_garbage: flags & OS_STORE_NO_GC == 0,
        };
        let store = Store::open_with(path, options)?;
        let handle = os_store {
            path: strings::c_path(store.path())?,
            store,
            host_tree: Mutex::new(None),
            owned: Mutex::new(Owned::default()),
        };
        let ptr = handle::publish_store(handle)?;
        // SAFETY: `out` checked above.
        unsafe { *out = ptr };
        Ok(0)
    })
}

/// Frees a store handle: releases every object handle it gave out (removing
/// their work dirs), stops its servers, removes the temp dirs of
/// `os_store_tempdir()`, and unmounts and removes the host tree. Committed
/// trees stay. `store` may be NULL.
///
/// # Safety
///
/// `store` must not be used (nor its objects) after or during this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_store_free(store: *mut os_store_t) {
    boundary(|| {
        let Some(handle) = handle::take_store(handle::token_of(store))? else {
            return Ok(());
        };
        let owned = std::mem::take(&mut *handle.owned());
        // Servers first: they use the store's objects and temp dirs. Nobody
        // is left to report their clean-up errors to.
        for server in owned.servers {
            if let Ok(Some(server)) = handle::take_server(server) {
                let _ = server.stop();
            }
        }
        for object in owned.objects {
            drop(handle::take_object(object));
        }
        drop(owned.tempdirs);
        Ok(())
    })
}

/// The store's root directory (absolute), valid until `os_store_free()`;
/// NULL if `store` is not a live handle.
///
/// # Safety
///
/// `store` must be NULL or a handle not being freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_store_path(store: *const os_store_t) -> *const c_char {
    boundary(|| handle::with_store(store, |handle| Ok(handle.path.as_ptr())))
}

/// Creates a WRITE object for `object_id` with an empty tree in a fresh work
/// dir. The handle in `*out` belongs to the store (see
/// `os_object_release()`).
///
/// Returns 0, or `-EINVAL` for an invalid id (empty, over 255 bytes, with
/// `/`, `.`, `..`, not UTF-8), or an I/O error.
///
/// # Safety
///
/// `store` a live handle or NULL, `object_id` NULL or a C string, `out` NULL
/// or writable.
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
        let id = unsafe { strings::id(object_id) }?;
        let ptr = handle::with_store(store, |handle| {
            object::publish(store, handle, handle.store.new_object(id)?)
        })?;
        // SAFETY: `out` checked above.
        unsafe { *out = ptr };
        Ok(0)
    })
}

/// Looks up `object_id`: a floating object (finalized, never committed) of
/// this store first, else the committed tree `refs/<id>`. On success `*out`
/// is a new READ handle owned by the store. A view of a floating object
/// shares its tree, which is gone once that object is released.
///
/// Returns 0, `-ENOENT` when absent, `-EINVAL` for an invalid id.
///
/// # Safety
///
/// As for `os_store_new()`.
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
        let id = unsafe { strings::id(object_id) }?;
        let ptr = handle::with_store(store, |handle| {
            let obj = handle.store.get(id)?.ok_or_else(|| {
                Error::new(libc::ENOENT, format!("no object \"{id}\" in the store"))
            })?;
            object::publish(store, handle, obj)
        })?;
        // SAFETY: `out` checked above.
        unsafe { *out = ptr };
        Ok(0)
    })
}

/// Returns 1 when the store has `object_id` (floating, or a ref that
/// resolves), 0 when not (always 0 for an empty id), or a negative errno
/// (`-EINVAL` for an invalid id).
///
/// # Safety
///
/// `store` a live handle or NULL, `object_id` NULL or a C string.
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

/// Sets `*path_out` to the path `<store>/refs/<object_id>`, whether or not it
/// exists (free it with `os_free()`).
///
/// Returns 0, or `-EINVAL` for an invalid (or empty) id.
///
/// # Safety
///
/// `store` a live handle or NULL, `object_id` NULL or a C string, `path_out`
/// NULL or writable.
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
        let id = unsafe { strings::id(object_id) }?;
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
/// (inodes kept) and the object becomes READ; with another id a copy is
/// committed and `object` stays as it was. On success the new object's name
/// (a UUID) is handed out through `name_out` unless it is NULL. On failure
/// nothing changed.
///
/// Returns 0, `-EINVAL` (invalid id, an object committed already under its
/// own id, an object of another store), or an I/O error such as `-ENOSPC`.
///
/// # Safety
///
/// `store` and `object` live handles or NULL, `object_id` NULL or a C
/// string, `name_out` NULL or writable.
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
        let id = unsafe { strings::id(object_id) }?;
        let name = handle::with_store(store, |handle| {
            handle::with_object(object, |obj| {
                obj.check_owner(store)?;
                let committed = handle.store.commit(&mut obj.object, id);
                // Even a failed commit may have moved the tree (when only the
                // final fsync of refs/ failed), so the C copy of the path is
                // renewed first.
                obj.refresh()?;
                committed
            })
        })?;
        // SAFETY: `name_out` is NULL or writable.
        unsafe { strings::hand_out(name_out, strings::c_string(name.as_bytes())?) };
        Ok(0)
    })
}

/// Creates a fresh directory `<store>/tmp/<prefix><random><suffix>` and
/// hands its path out through `path_out`. `prefix` and `suffix` may be NULL
/// (meaning `""`) and may not contain `/`. The directory is removed by
/// `os_store_free()`.
///
/// # Safety
///
/// `store` a live handle or NULL, `prefix`/`suffix` NULL or C strings,
/// `path_out` NULL or writable.
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
            handle.owned().tempdirs.push(dir);
            Ok(path)
        })?;
        // SAFETY: `path_out` checked above.
        unsafe { strings::hand_out(path_out, path) };
        Ok(0)
    })
}

/// Sets `*path_out` to the host tree: a read-only view of the host with only
/// `/usr` in it (bind mounts; needs `CAP_SYS_ADMIN`), made on first use.
/// Writing in it fails with `EROFS`. The string belongs to the store and is
/// valid until `os_store_free()`, which unmounts and removes the tree.
///
/// # Safety
///
/// `store` a live handle or NULL, `path_out` NULL or writable.
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

/// Removes what nobody can use any more: entries of `tmp/` whose owning
/// process died (work dirs, temp dirs, host trees; mounts left in them are
/// detached) and objects that no ref names and no live handle, in any
/// process, holds. Never touches what a live handle uses; safe to run while
/// other processes use the store. Returns the number of entries removed, or
/// a negative errno.
///
/// # Safety
///
/// `store` a live handle or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_store_gc(store: *mut os_store_t) -> c_int {
    boundary(|| {
        let report = handle::with_store(store, |handle| handle.store.gc())?;
        Ok(c_int::try_from(report.removed).unwrap_or(c_int::MAX))
    })
}
