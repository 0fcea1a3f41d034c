//! The registry of live handles.
//!
//! Every handle given to C is a `Box` turned into a raw pointer and recorded
//! here with its kind. A pointer is only dereferenced after the registry
//! confirms that it is a live handle of the expected kind, so NULL, a
//! released handle or a pointer of another kind gets `-EINVAL` rather than
//! undefined behaviour.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
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

/// Hashing for maps and sets keyed by handle addresses.
pub(crate) type ByAddress = BuildHasherDefault<AddressHasher>;

/// Live handles by address.
type Registry = HashMap<usize, Kind, ByAddress>;

static LIVE: LazyLock<Mutex<Registry>> = LazyLock::new(|| Mutex::new(Registry::default()));

fn live() -> std::sync::MutexGuard<'static, Registry> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hashes a handle's address with one multiplication: the keys are
/// addresses the allocator chose, not input anybody controls, so a keyed
/// (and slower) hash buys nothing here, and every handle operation hashes.
#[derive(Default)]
pub(crate) struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_usize(&mut self, address: usize) {
        self.write_u64(address as u64);
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing; folding the high half down spreads addresses
        // (aligned, so their low bits are zero) over the low bits that pick
        // the bucket.
        let h = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 32);
    }
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
