//! `os_object_*`: one object's id, mode, tree, init, finalize, export, release.

use std::ffi::{CString, c_char, c_int};
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;

use super::handle;
use super::store::os_store_t;
use super::strings;
use super::{Failed, boundary};
use crate::error::Result;
use crate::object::{Mode, Object};

/// An object's mode, as os_object_mode() reports it.
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

/// An object handle (opaque). It belongs to the store handle that gave it
/// out: os_object_release() or os_store_free() ends it.
pub struct os_object {
    pub(crate) object: Object,
    /// C copies of the id and the tree path, made when first asked for (a
    /// look-up handle is often released unasked).
    id: OnceLock<CString>,
    tree: Option<CString>,
}

/// An object: one tree of a store, being built (OS_MODE_WRITE) or
/// finished (OS_MODE_READ). One thread at a time may use an object handle.
pub type os_object_t = os_object;

/// The mode of an object.
pub type os_mode_t = os_mode;

impl os_object {
    /// The C copy of the id.
    fn id(&self) -> Result<&CString> {
        if let Some(id) = self.id.get() {
            return Ok(id);
        }
        let id = strings::c_string(self.object.id().as_bytes())?;
        Ok(self.id.get_or_init(|| id))
    }

    /// The C copy of the tree path, renewed first if the object's tree
    /// moved (a commit moves it), so no caller has to remember to.
    fn tree(&mut self) -> Result<&CString> {
        let current = self.object.tree();
        let tree = match self.tree.take() {
            Some(tree) if tree.as_bytes() == current.as_os_str().as_bytes() => tree,
            _ => strings::c_path(current)?,
        };
        Ok(self.tree.insert(tree))
    }
}

/// Wraps a core object in a handle owned by the store handle `store`.
pub(crate) fn publish(store: *const os_store_t, object: Object) -> Result<*mut os_object_t> {
    let handle = os_object {
        object,
        id: OnceLock::new(),
        tree: None,
    };
    handle::publish_object(handle, handle::token_of(store))
}

/// The object's id.
///
/// Returns a string that belongs to the handle and stays valid until the
/// handle is released, or NULL (with os_last_error() set) when `object` is
/// NULL, not a live object handle, or inherited through fork().
///
/// Threads: one thread at a time per object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_object_id(object: *const os_object_t) -> *const c_char {
    boundary(|| handle::with_object_ref(object, |obj| Ok(obj.id()?.as_ptr())))
}

/// The object's mode.
///
/// Returns OS_MODE_WRITE for an object being built and OS_MODE_READ for a
/// finalized or committed one. Returns OS_MODE_READ too, with
/// os_last_error() set, when `object` is NULL, not a live object handle, or
/// inherited through fork().
///
/// Threads: one thread at a time per object.
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
/// OS_MODE_WRITE, writes) directly. The path is read from the object on each
/// call: after os_store_commit() moved the tree, the next call gives the new
/// place.
///
/// Returns a string that belongs to the handle and stays valid until the
/// handle is released or a later os_object_tree() call finds the tree moved,
/// or NULL (with os_last_error() set) when `object` is NULL, not a live
/// object handle, or inherited through fork().
///
/// Threads: one thread at a time per object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_object_tree(object: *const os_object_t) -> *const c_char {
    boundary(|| handle::with_object(object, |obj| Ok(obj.tree()?.as_ptr())))
}

/// Copies the whole of `base`'s tree into `object`'s tree with the fidelity
/// of `cp -a` (hard links, special files, owners, modes, timestamps, extended
/// attributes; reflinks where the filesystem has them). `object` must be in
/// OS_MODE_WRITE; `base` is only read.
///
/// Returns 0; -EINVAL for an object in OS_MODE_READ or `base == object`;
/// -EINVAL when `object` is NULL or not a live object handle, -ECHILD when it
/// was inherited through fork() (for either handle); or the errno of the copy,
/// such as -ENOSPC. After a failure the tree may hold a partial copy.
///
/// Threads: one thread at a time per object; several threads may use the same
/// `base` at once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_object_init(
    object: *mut os_object_t,
    base: *const os_object_t,
) -> c_int {
    // SAFETY: forwarded contract; NULL options.
    unsafe { super::copy::os_object_init_ex(object, base, std::ptr::null()) }
}

/// Puts the object into OS_MODE_READ; its tree stays where it is. An object
/// finalized but never committed is "floating": the store's look-ups
/// (os_store_get(), os_store_contains(), the server) find it until it is
/// released. Finalizing an object in OS_MODE_READ does nothing. With a
/// source epoch (os_object_set_source_epoch()) the tree's timestamps are
/// clamped first; if that fails, its negative errno is returned and the
/// object stays in OS_MODE_WRITE.
///
/// Returns 0, or -EINVAL when `object` is NULL or not a live object handle,
/// -ECHILD when it was inherited through fork().
///
/// Threads: one thread at a time per object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_object_finalize(object: *mut os_object_t) -> c_int {
    boundary(|| {
        handle::with_object(object, |obj| {
            obj.object.finalize()?;
            Ok(0)
        })
    })
}

/// Copies the object's tree into the existing directory `to_directory`
/// with the fidelity of os_object_init().
///
/// Returns 0; -EINVAL when `object` is NULL or not a live object handle,
/// -ECHILD when it was inherited through fork(); -EINVAL for a NULL or empty
/// `to_directory`; -ENOENT or -ENOTDIR when it is not an existing directory; or
/// the errno of the copy.
///
/// Threads: one thread at a time per object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_object_export(
    object: *const os_object_t,
    to_directory: *const c_char,
) -> c_int {
    // SAFETY: forwarded contract; NULL options.
    unsafe { super::copy::os_object_export_ex(object, to_directory, std::ptr::null()) }
}

/// Releases an object handle now: the work dir of an object that was never
/// committed is removed, a committed tree stays. The handle is invalid
/// afterwards (any later use is refused with -EINVAL). `object` may be NULL.
/// In a child after fork(), releasing an inherited handle only forgets it and
/// changes nothing on disk. A value that is not a live object handle is
/// refused (os_last_error() says why).
///
/// Threads: not while another thread uses the object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_object_release(object: *mut os_object_t) {
    boundary(|| {
        // The work dir goes with the last reference.
        drop(handle::take_object(handle::token_of(object))?);
        Ok(())
    })
}
