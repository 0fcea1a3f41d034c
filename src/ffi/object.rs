//! `os_object_*`: one object's id, mode, tree, init, finalize, export, release.

use std::ffi::{CString, c_char, c_int};

use super::handle::{self, Kind};
use super::store::{os_store, os_store_t};
use super::strings;
use super::{boundary, boundary_ptr, boundary_void};
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

/// An object handle (opaque), owned by the store that gave it out.
pub struct os_object {
    pub(crate) object: Object,
    owner: *const os_store_t,
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
        if self.owner != store {
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

/// Wraps a core object in a handle owned by `store`.
pub(crate) fn publish(store: &os_store, object: Object) -> Result<*mut os_object_t> {
    let handle = os_object {
        id: strings::c_string(object.id().as_bytes())?,
        tree: strings::c_path(object.tree())?,
        owner: store,
        object,
    };
    let ptr = handle::publish(Kind::Object, handle);
    store.adopt(ptr);
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
    // SAFETY: forwarded contract.
    boundary_ptr(|| Ok(unsafe { handle::borrow(Kind::Object, object) }?.id.as_ptr()))
}

/// The object's mode. An invalid handle gives `OS_MODE_READ` with
/// `os_last_error()` set.
///
/// # Safety
///
/// `object` must be NULL or a handle not being released.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_object_mode(object: *const os_object_t) -> os_mode_t {
    let mut mode = os_mode::OS_MODE_READ;
    boundary_void(|| {
        // SAFETY: forwarded contract.
        let obj = unsafe { handle::borrow(Kind::Object, object) }?;
        if obj.object.mode() == Mode::Write {
            mode = os_mode::OS_MODE_WRITE;
        }
        Ok(())
    });
    mode
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
    boundary_ptr(|| {
        // SAFETY: forwarded contract.
        let obj = unsafe { handle::borrow(Kind::Object, object) }?;
        Ok(obj.tree.as_ptr())
    })
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
    boundary(|| {
        if std::ptr::eq(object, base) {
            return Err(Error::invalid(
                "an object cannot be initialised from itself",
            ));
        }
        // SAFETY: forwarded contract.
        let obj = unsafe { handle::borrow_mut(Kind::Object, object) }?;
        // SAFETY: forwarded contract; a different handle from `obj`.
        let base = unsafe { handle::borrow(Kind::Object, base) }?;
        obj.object.init(&base.object)?;
        Ok(0)
    })
}

/// Puts the object into READ mode; its tree stays where it is. An object
/// finalized but never committed is "floating": the store's look-ups
/// (`os_store_get()`,
/// `os_store_contains()`, the server)
/// find it. Finalizing a READ object does nothing. With a source epoch
/// (`os_object_set_source_epoch()`) the tree's timestamps are clamped first;
/// if that fails (its errno is returned) the object stays WRITE.
///
/// # Safety
///
/// `object` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_object_finalize(object: *mut os_object_t) -> c_int {
    boundary(|| {
        // SAFETY: forwarded contract.
        unsafe { handle::borrow_mut(Kind::Object, object) }?
            .object
            .finalize()?;
        Ok(0)
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
    boundary(|| {
        // SAFETY: forwarded contract.
        let obj = unsafe { handle::borrow(Kind::Object, object) }?;
        // SAFETY: forwarded contract.
        let to = unsafe { strings::path(to_directory, "to_directory") }?;
        obj.object.export(to)?;
        Ok(0)
    })
}

/// Releases an object handle now: a work dir (of a WRITE or floating
/// object) is removed, a committed tree stays. `object` may be NULL.
///
/// # Safety
///
/// `object` must not be used after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_object_release(object: *mut os_object_t) {
    boundary_void(|| {
        if object.is_null() {
            return Ok(());
        }
        // SAFETY: forwarded contract; the owner pointer is checked live
        // before it is used.
        let owner = unsafe { handle::borrow(Kind::Object, object) }?.owner;
        // SAFETY: the caller hands the handle back.
        if let Ok(store) = unsafe { handle::borrow(Kind::Store, owner) } {
            store.disown(object);
        }
        // SAFETY: as above.
        drop(unsafe { handle::retire(Kind::Object, object) });
        Ok(())
    })
}
