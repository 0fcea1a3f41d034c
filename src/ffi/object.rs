//! `os_object_*`: one object's id, mode, tree, init, finalize, export, release.

use std::ffi::{CString, c_char, c_int};

use super::handle::{self, Token};
use super::store::{os_store, os_store_t};
use super::strings;
use super::{Failed, boundary};
use crate::error::{Error, Result};
use crate::object::{Mode, Object};

/// An object's mode.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum os_mode {
    /// Finalized or committed: not to be written.
    OS_MODE_READ = 0,
    /// Being built: the tree is the caller's to write.
    OS_MODE_WRITE = 1,
}

impl Failed for os_mode {
    fn failed(_: c_int) -> Self {
        os_mode::OS_MODE_READ
    }
}

/// An object handle (opaque), owned by the store that gave it out.
pub struct os_object {
    pub(crate) object: Object,
    /// The store handle that gave it out.
    owner: Token,
    id: CString,
    tree: CString,
}

/// The handle type of the C API.
pub type os_object_t = os_object;

/// The mode type of the C API.
pub type os_mode_t = os_mode;

impl os_object {
    /// Refuses an object of another store.
    pub(crate) fn check_owner(&self, store: *const os_store_t) -> Result<()> {
        if self.owner != handle::token_of(store) {
            return Err(Error::invalid("the object belongs to another store handle"));
        }
        Ok(())
    }

    /// Updates the C copy of the tree path after the object changed.
    pub(crate) fn refresh(&mut self) -> Result<()> {
        self.tree = strings::c_path(self.object.tree())?;
        Ok(())
    }
}

/// Wraps a core object in a handle owned by the store handle `store`
/// (whose value is `owner`).
pub(crate) fn publish(
    store: *const os_store_t,
    owner: &os_store,
    object: Object,
) -> Result<*mut os_object_t> {
    let handle = os_object {
        id: strings::c_string(object.id().as_bytes())?,
        tree: strings::c_path(object.tree())?,
        owner: handle::token_of(store),
        object,
    };
    let ptr = handle::publish_object(handle)?;
    owner.adopt(handle::token_of(ptr));
    Ok(ptr)
}

/// The object's id, valid as long as the handle; NULL if `object` is not a
/// live handle.
///
/// # Safety
///
/// `object` must be NULL or a handle not being released.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_object_id(object: *const os_object_t) -> *const c_char {
    boundary(|| handle::with_object_ref(object, |obj| Ok(obj.id.as_ptr())))
}

/// The object's mode. An invalid handle gives `OS_MODE_READ` with
/// `os_last_error()` set.
///
/// # Safety
///
/// `object` must be NULL or a handle not being released.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_object_mode(object: *const os_object_t) -> os_mode_t {
    boundary(|| {
        handle::with_object_ref(object, |obj| {
            Ok(match obj.object.mode() {
                Mode::Write => os_mode::OS_MODE_WRITE,
                Mode::Read => os_mode::OS_MODE_READ,
            })
        })
    })
}

/// The path of the object's tree: a directory the caller reads (and, in
/// WRITE mode, writes) directly. Valid until the next call that changes the
/// object (`os_store_commit()` moves it);
/// NULL if `object` is not a live handle.
///
/// # Safety
///
/// `object` must be NULL or a handle not being released.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_object_tree(object: *const os_object_t) -> *const c_char {
    boundary(|| handle::with_object_ref(object, |obj| Ok(obj.tree.as_ptr())))
}

/// Copies the whole of `base`'s tree into `object`'s tree with the fidelity
/// of `cp -a` (hard links, special files, owners, modes, timestamps,
/// xattrs; reflinks where possible). `object` must be in WRITE mode.
///
/// Returns 0, `-EINVAL` (NULL, READ mode, `base == object`), or an I/O
/// error such as `-ENOSPC`; on failure the tree may hold a partial copy.
///
/// # Safety
///
/// Both must be NULL or live handles not being released.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_object_init(
    object: *mut os_object_t,
    base: *const os_object_t,
) -> c_int {
    // SAFETY: forwarded contract; NULL options.
    unsafe { super::copy::os_object_init_ex(object, base, std::ptr::null()) }
}

/// Puts the object into READ mode; its tree stays where it is. An object
/// finalized but never committed is "floating": the store's look-ups
/// (`os_store_get()`,
/// `os_store_contains()`, the server)
/// find it. Finalizing a READ object does nothing.
///
/// # Safety
///
/// `object` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_object_finalize(object: *mut os_object_t) -> c_int {
    boundary(|| {
        handle::with_object(object, |obj| {
            obj.object.finalize();
            Ok(0)
        })
    })
}

/// Copies the object's tree into the existing directory `to_directory`
/// with the fidelity of `os_object_init()`.
///
/// Returns 0, `-EINVAL`, `-ENOENT`/`-ENOTDIR` (no such directory), or an
/// I/O error.
///
/// # Safety
///
/// `object` NULL or a live handle, `to_directory` NULL or a C string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_object_export(
    object: *const os_object_t,
    to_directory: *const c_char,
) -> c_int {
    // SAFETY: forwarded contract; NULL options.
    unsafe { super::copy::os_object_export_ex(object, to_directory, std::ptr::null()) }
}

/// Releases an object handle now: a work dir (of a WRITE or floating
/// object) is removed, a committed tree stays. `object` may be NULL.
///
/// # Safety
///
/// `object` must not be used after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_object_release(object: *mut os_object_t) {
    boundary(|| {
        let token = handle::token_of(object);
        let Some(obj) = handle::take_object(token)? else {
            return Ok(());
        };
        let owner = obj.read().unwrap_or_else(|p| p.into_inner()).owner;
        // The store may be gone already (freed from another thread).
        let _ = handle::with_store(owner as *const os_store_t, |store| {
            store.disown(token);
            Ok(())
        });
        // The work dir goes with the last reference.
        drop(obj);
        Ok(())
    })
}
