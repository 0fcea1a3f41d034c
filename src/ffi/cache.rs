//! `os_store_config_*`, `os_store_stat`, `os_store_list`, `os_store_evict`,
//! `os_store_contains_ex`, `os_object_meta_*`, `os_object_created`,
//! `os_object_set_source_epoch`: the store as a bounded cache
//! (`docs/cache.md`).

use std::ffi::{CString, c_char, c_int, c_uint, c_void};

use super::boundary;
use super::handle;
use super::object::os_object_t;
use super::store::os_store_t;
use super::strings;
use crate::error::{Error, Result};

/// Flag for os_store_contains_ex(): ignore floating objects; answer whether
/// a committed object for the id is in the store (what a builder reports as
/// "cached").
pub const OS_LOOKUP_CACHED_ONLY: c_uint = 1;

/// The totals of a store, filled by os_store_stat(). Set `struct_size` to
/// `sizeof(os_store_stat_t)` before the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct os_store_stat {
    /// `sizeof(os_store_stat_t)` as the caller knows it.
    pub struct_size: usize,
    /// Committed objects on disk (named by a ref).
    pub objects: u64,
    /// Refs.
    pub refs: u64,
    /// Total size of the committed objects, in allocated bytes; exact.
    pub bytes: u64,
    /// The part of `bytes` held by live handles in any process.
    pub pinned_bytes: u64,
    /// The `max-size` setting; UINT64_MAX when unlimited.
    pub max_size: u64,
    /// Free bytes on the store's filesystem.
    pub fs_free: u64,
}

/// The totals of a store (see os_store_stat()).
pub type os_store_stat_t = os_store_stat;

/// One ref of a store, as os_store_list() reports it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct os_object_info {
    /// The ref's name (the object id); valid during the callback only.
    pub id: *const c_char,
    /// `objects/<name>`; valid during the callback only.
    pub name: *const c_char,
    /// Size in allocated bytes.
    pub size: u64,
    /// Entries of the tree, its root included.
    pub files: u64,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// Last use, Unix seconds.
    pub last_used: i64,
    /// 1 if a live handle in any process holds the object, else 0.
    pub pinned: c_int,
}

/// One ref of a store (see os_store_list()).
pub type os_object_info_t = os_object_info;

/// The callback of os_store_list(): a non-zero return stops the walk.
pub type os_list_fn =
    Option<unsafe extern "C" fn(info: *const os_object_info_t, userdata: *mut c_void) -> c_int>;

/// A C string argument that must be valid UTF-8 (keys, values, JSON).
///
/// # Safety
///
/// `ptr` must be NULL or a NUL-terminated string.
unsafe fn text<'a>(ptr: *const c_char, what: &str) -> Result<&'a str> {
    // SAFETY: forwarded contract.
    let bytes = unsafe { strings::bytes(ptr, what) }?;
    std::str::from_utf8(bytes).map_err(|_| Error::invalid(format!("{what} is not valid UTF-8")))
}

/// Sets the store's setting `key` to `value`, atomically and durably, for
/// every process using the store (each applies it at its next commit).
///
/// Keys and values (cache.md): `max-size`: bytes with an optional unit
/// (`kB KiB MB MiB GB GiB TB TiB`, spaces allowed before it) or `unlimited`
/// (the default); `low-water`: percent of max-size an eviction brings the
/// total down to, 1-100 (default 90); `min-free`: bytes (units as above)
/// or `N%` of the filesystem to keep free (default `5%`).
///
/// Returns 0; -EINVAL for a NULL or unknown key or a bad value (the message
/// names the accepted forms; nothing is written); -EROFS for a store opened
/// with OS_STORE_READ_ONLY; -ENOTSUP for a settings file of a newer format;
/// -EINVAL when `store` is NULL or not a live store handle, -ECHILD when it
/// was inherited through fork(); or the errno of writing the file.
///
/// Threads: any, concurrently with other calls on the store.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_store_config_set(
    store: *mut os_store_t,
    key: *const c_char,
    value: *const c_char,
) -> c_int {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (key, value) = unsafe { (text(key, "key")?, text(value, "value")?) };
        handle::with_store(store, |h| h.store.config_set(key, value))?;
        Ok(0)
    })
}

/// Hands out the canonical value of the setting `key` through `*value_out`
/// (bytes as a plain integer, `unlimited`, or `N%`; the default when unset);
/// free it with os_free(). On failure `*value_out` is NULL.
///
/// Returns 0; -EINVAL for a NULL or unknown key or a NULL `value_out`;
/// -ENOTSUP for a settings file of a newer format; -EINVAL when `store` is
/// NULL or not a live store handle, -ECHILD when it was inherited through
/// fork().
///
/// Threads: any, concurrently with other calls on the store.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_store_config_get(
    store: *mut os_store_t,
    key: *const c_char,
    value_out: *mut *mut c_char,
) -> c_int {
    boundary(|| {
        // SAFETY: forwarded contract.
        unsafe { strings::out_param(value_out, "value_out")? };
        // SAFETY: forwarded contract.
        let key = unsafe { text(key, "key")? };
        let value = handle::with_store(store, |h| h.store.config_get(key))?;
        // SAFETY: `value_out` checked above.
        unsafe { strings::hand_out(value_out, strings::c_string(value.as_bytes())?) };
        Ok(0)
    })
}

/// Fills `*out` with the store's totals: committed objects, refs, their
/// exact total size (a fresh measurement of every object would give the
/// same number), the part pinned by live handles in any process, the
/// `max-size` setting and the free space of the store's filesystem. An
/// object from osstore 0.1 is measured on the way (and its sidecar written,
/// unless the store is read-only).
///
/// Returns 0; -EINVAL for a NULL `out` or a `struct_size` smaller than
/// `sizeof(os_store_stat_t)` of this version; -EINVAL when `store` is NULL or
/// not a live store handle, -ECHILD when it was inherited through fork(); or
/// the errno of reading the store.
///
/// Threads: any, concurrently with other calls on the store.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_store_stat(store: *mut os_store_t, out: *mut os_store_stat_t) -> c_int {
    boundary(|| {
        if out.is_null() {
            return Err(Error::invalid("out is NULL"));
        }
        // SAFETY: not NULL; the caller promises a struct of `struct_size`
        // bytes starting with `struct_size`.
        let size = unsafe { (*out).struct_size };
        if size < size_of::<os_store_stat_t>() {
            return Err(Error::invalid(format!(
                "struct_size {size} is smaller than os_store_stat_t ({})",
                size_of::<os_store_stat_t>()
            )));
        }
        let stat = handle::with_store(store, |h| h.store.stat())?;
        let filled = os_store_stat {
            struct_size: size,
            objects: stat.objects,
            refs: stat.refs,
            bytes: stat.bytes,
            pinned_bytes: stat.pinned_bytes,
            max_size: stat.max_size.unwrap_or(u64::MAX),
            fs_free: stat.fs_free,
        };
        // SAFETY: `out` has room for at least this struct (checked above).
        unsafe { out.write(filled) };
        Ok(0)
    })
}

/// Calls `fn` once per ref of the store, least recently used first (ties:
/// older creation first, then by object name: the order eviction follows),
/// with what the store knows about its object. A
/// non-zero return of `fn` stops the walk and is returned. The store is
/// read first and the calls made afterwards, so `fn` may call the library
/// (even on this store).
///
/// Returns 0 after the last call, the callback's non-zero value, or a
/// negative errno: -EINVAL for a NULL `fn`; -EINVAL when `store` is NULL or
/// not a live store handle, -ECHILD when it was inherited through fork(); or
/// the errno of reading the store.
///
/// Threads: any, concurrently with other calls on the store.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_store_list(
    store: *mut os_store_t,
    r#fn: os_list_fn,
    userdata: *mut c_void,
) -> c_int {
    boundary(|| {
        let Some(callback) = r#fn else {
            return Err(Error::invalid("fn is NULL"));
        };
        let list = handle::with_store(store, |h| h.store.list())?;
        for o in list {
            let id = strings::c_string(o.id.as_bytes())?;
            let name = CString::new(o.name).map_err(|_| Error::invalid("bad object name"))?;
            let info = os_object_info {
                id: id.as_ptr(),
                name: name.as_ptr(),
                size: o.size,
                files: o.files,
                created: o.created,
                last_used: o.last_used,
                pinned: c_int::from(o.pinned),
            };
            // SAFETY: the caller's callback, given a pointer valid for the
            // call and the caller's own userdata.
            let rc = unsafe { callback(&info, userdata) };
            if rc != 0 {
                return Ok(rc);
            }
        }
        Ok(0)
    })
}

/// Evicts the least recently used unpinned refs, each with its object, until
/// the store's total is at most `target_bytes`. Objects held by live handles
/// in any process are skipped, so the total may stay above the target.
/// Unless `freed_out` is NULL, the bytes freed are stored there.
///
/// Returns 0; -EROFS for a store opened with OS_STORE_READ_ONLY; -EINVAL when
/// `store` is NULL or not a live store handle, -ECHILD when it was inherited
/// through fork(); or the errno of removing an object.
///
/// Threads: any, concurrently with other calls on the store (and other
/// processes: evictions take turns).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_store_evict(
    store: *mut os_store_t,
    target_bytes: u64,
    freed_out: *mut u64,
) -> c_int {
    boundary(|| {
        let report = handle::with_store(store, |h| h.store.evict(target_bytes))?;
        if !freed_out.is_null() {
            // SAFETY: not NULL; the caller promises a writable u64.
            unsafe { freed_out.write(report.freed) };
        }
        Ok(0)
    })
}

/// os_store_contains() with `flags`: with OS_LOOKUP_CACHED_ONLY, floating
/// objects are ignored and the answer is whether a committed object for the
/// id is in the store. A hit counts as a use of the object.
///
/// Returns 1 when it has, 0 when not (always 0 for an empty id), or a
/// negative errno: -EINVAL for an invalid id or unknown flags; -EINVAL when
/// `store` is NULL or not a live store handle, -ECHILD when it was inherited
/// through fork().
///
/// Threads: any, concurrently with other calls on the store.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_store_contains_ex(
    store: *mut os_store_t,
    object_id: *const c_char,
    flags: c_uint,
) -> c_int {
    boundary(|| {
        if flags & !OS_LOOKUP_CACHED_ONLY != 0 {
            return Err(Error::invalid(format!("unknown flags {flags:#x}")));
        }
        // SAFETY: forwarded contract.
        let id = unsafe { strings::id(object_id) }?;
        handle::with_store(store, |h| {
            let found = match (id.is_empty(), flags & OS_LOOKUP_CACHED_ONLY != 0) {
                (true, _) => false,
                (false, true) => h.store.contains_cached(id)?,
                (false, false) => h.store.contains(id)?,
            };
            Ok(c_int::from(found))
        })
    })
}

/// Sets the metadata `key` of an object in OS_MODE_WRITE to the JSON text
/// `json` (setting a key again replaces it). Keys follow the rules of object
/// ids. os_object_init() copies the base's metadata; a commit (move or copy)
/// carries it; a committed object's metadata never changes.
///
/// Returns 0; -EINVAL for an invalid key or a `json` that is not valid JSON;
/// -EPERM for an object in OS_MODE_READ or committed; -EINVAL when `object`
/// is NULL or not a live object handle, -ECHILD when it was inherited
/// through fork().
///
/// Threads: one thread at a time per object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_object_meta_set(
    object: *mut os_object_t,
    key: *const c_char,
    json: *const c_char,
) -> c_int {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (key, json) = unsafe { (text(key, "key")?, text(json, "json")?) };
        handle::with_object(object, |obj| obj.object.meta_set(key, json))?;
        Ok(0)
    })
}

/// Hands out the JSON text of the metadata `key` through `*json_out` (free
/// it with os_free()); in any mode. On failure `*json_out` is NULL.
///
/// Returns 0; -ENOENT when the object has no such key; -EINVAL for an
/// invalid key or a NULL `json_out`; -EINVAL when `object` is NULL or not a
/// live object handle, -ECHILD when it was inherited through fork(); or the
/// errno of reading the object's sidecar.
///
/// Threads: any number of threads at once per object, but not while another
/// thread changes it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_object_meta_get(
    object: *const os_object_t,
    key: *const c_char,
    json_out: *mut *mut c_char,
) -> c_int {
    boundary(|| {
        // SAFETY: forwarded contract.
        unsafe { strings::out_param(json_out, "json_out")? };
        // SAFETY: forwarded contract.
        let key = unsafe { text(key, "key")? };
        let json = handle::with_object_ref(object, |obj| obj.object.meta_get(key))?;
        // SAFETY: `json_out` checked above.
        unsafe { strings::hand_out(json_out, strings::c_string(json.as_bytes())?) };
        Ok(0)
    })
}

/// Stores the object's creation time (Unix seconds) in `*unix_seconds_out`:
/// set by os_store_new(), copied from the base by os_object_init().
///
/// Returns 0; -EINVAL for a NULL `unix_seconds_out`; -EINVAL when `object`
/// is NULL or not a live object handle, -ECHILD when it was inherited
/// through fork(); or the errno of reading the object's sidecar.
///
/// Threads: any number of threads at once per object, but not while another
/// thread changes it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_object_created(
    object: *const os_object_t,
    unix_seconds_out: *mut i64,
) -> c_int {
    boundary(|| {
        if unix_seconds_out.is_null() {
            return Err(Error::invalid("unix_seconds_out is NULL"));
        }
        let created = handle::with_object_ref(object, |obj| obj.object.created())?;
        // SAFETY: not NULL; the caller promises a writable int64_t.
        unsafe { unix_seconds_out.write(created) };
        Ok(0)
    })
}

/// Gives an object that is not committed a source epoch (Unix seconds). At
/// os_object_finalize() and at commit, every entry of its tree (root,
/// directories, files, symbolic links themselves) whose mtime is at or after
/// the object's creation second gets atime and mtime set to `epoch`; older
/// entries keep theirs; immutable entries are skipped.
///
/// Returns 0; -EPERM for a committed object or a view of another handle's
/// object; -EINVAL when `object` is NULL or not a live object handle,
/// -ECHILD when it was inherited through fork().
///
/// Threads: one thread at a time per object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_object_set_source_epoch(object: *mut os_object_t, epoch: i64) -> c_int {
    boundary(|| {
        handle::with_object(object, |obj| obj.object.set_source_epoch(epoch))?;
        Ok(0)
    })
}
