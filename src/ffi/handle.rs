//! The registry of live handles.
//!
//! Every handle given to C is a `Box` turned into a raw pointer and recorded
//! here with its kind. A pointer is only dereferenced after the registry
//! confirms that it is a live handle of the expected kind, so NULL, a
//! released handle or a pointer of another kind gets `-EINVAL` rather than
//! undefined behaviour.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use crate::error::{Error, Result};

/// The kinds of handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Store,
    Object,
    Server,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Store => "store",
            Kind::Object => "object",
            Kind::Server => "server",
        }
    }
}

static LIVE: LazyLock<Mutex<HashMap<usize, Kind>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn live() -> std::sync::MutexGuard<'static, HashMap<usize, Kind>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Turns `value` into a handle for C.
pub(crate) fn publish<T>(kind: Kind, value: T) -> *mut T {
    let ptr = Box::into_raw(Box::new(value));
    live().insert(ptr as usize, kind);
    ptr
}

fn check_live<T>(kind: Kind, ptr: *const T) -> Result<()> {
    if ptr.is_null() {
        return Err(Error::invalid(format!("{} handle is NULL", kind.name())));
    }
    match live().get(&(ptr as usize)) {
        Some(k) if *k == kind => Ok(()),
        _ => Err(Error::invalid(format!(
            "{:p} is not a live {} handle (released, freed or never created)",
            ptr,
            kind.name()
        ))),
    }
}

/// Borrows a live handle.
///
/// # Safety
///
/// The handle must not be released while the borrow lives (the C contract:
/// a handle is not used after, or concurrently with, its release).
pub(crate) unsafe fn borrow<'a, T>(kind: Kind, ptr: *const T) -> Result<&'a T> {
    check_live(kind, ptr)?;
    // SAFETY: the registry says `ptr` is a live box of this kind.
    Ok(unsafe { &*ptr })
}

/// Borrows a live handle mutably.
///
/// # Safety
///
/// As for [`borrow`], and no other borrow of the handle may be live (the C
/// contract: an object is used by one thread at a time).
pub(crate) unsafe fn borrow_mut<'a, T>(kind: Kind, ptr: *mut T) -> Result<&'a mut T> {
    check_live(kind, ptr)?;
    // SAFETY: the registry says `ptr` is a live box of this kind.
    Ok(unsafe { &mut *ptr })
}

/// Takes a handle back from C: it is no longer live. `None` for NULL or a
/// pointer that is not a live handle of this kind.
///
/// # Safety
///
/// No borrow of the handle may be live.
pub(crate) unsafe fn retire<T>(kind: Kind, ptr: *mut T) -> Option<Box<T>> {
    let mut live = live();
    match live.get(&(ptr as usize)) {
        Some(k) if *k == kind => {
            live.remove(&(ptr as usize));
            // SAFETY: the pointer came from `publish` (Box::into_raw) and is
            // removed from the registry, so it is turned back only once.
            Some(unsafe { Box::from_raw(ptr) })
        }
        _ => None,
    }
}
