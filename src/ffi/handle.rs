//! Handles: what C holds is a token, never an address.
//!
//! The pointer value handed to C encodes a slot of a process-wide table and
//! the slot's generation: `generation << HALF | (slot + 1)`. Releasing a
//! handle empties its slot and bumps the generation, so the old value never
//! names anything again, whatever is allocated later (a slot whose
//! generation would wrap is retired for good). Nothing C passes in is ever
//! dereferenced: a NULL, stale, forged or wrong-kind value is looked up,
//! not found, and refused with `-EINVAL`.
//!
//! Each handle also remembers the process that made it. In a child after
//! `fork()` every use of an inherited handle fails with `-ECHILD`, and
//! freeing one only forgets it: its value is parked in [`ORPHANS`] and never
//! dropped, since dropping would run the parent's clean-ups (remove work
//! dirs, stop the parent's server, unmount). The child gets that memory back
//! when it exits or execs.
//!
//! The rest of the C layer uses the typed helpers: `publish_*` to hand a
//! value out, `with_*` to use one, `take_*` to take one back.

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Once, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::object::{os_object, os_object_t};
use super::server::{os_server, os_server_t};
use super::store::{os_store, os_store_t};
use crate::error::{Error, Result};

/// The value C holds for a handle.
pub(crate) type Token = usize;

/// The kinds of handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
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

type Shared = Arc<dyn Any + Send + Sync>;

/// A live handle: its kind, the process that made it, its value.
struct Live {
    kind: Kind,
    pid: u32,
    value: Shared,
}

struct Slot {
    generation: usize,
    live: Option<Live>,
}

/// The slots, and the empty ones that may be used again.
#[derive(Default)]
struct Table {
    slots: Vec<Slot>,
    free: Vec<usize>,
}

/// Half of a token is the slot (plus one, so that no token is NULL), the
/// other half the generation.
const HALF: u32 = usize::BITS / 2;
const LOW: usize = (1 << HALF) - 1;

static TABLE: LazyLock<RwLock<Table>> = LazyLock::new(|| RwLock::new(Table::default()));

/// Values of handles freed in a forked child (see the module's comment).
static ORPHANS: Mutex<Vec<Shared>> = Mutex::new(Vec::new());

/// This process's id, kept by [`pid`] so that a look-up costs no system
/// call.
static PID: AtomicU32 = AtomicU32::new(0);

/// This process's id. The first call registers a `pthread_atfork` handler
/// that renews it in every child of `fork()` (before `fork()` returns
/// there); no handle can be made, nor looked up, before that. Should the
/// registration fail (`ENOMEM`), every call asks the kernel instead.
fn pid() -> u32 {
    static CACHED: Once = Once::new();
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    CACHED.call_once(|| {
        extern "C" fn renew_in_child() {
            PID.store(std::process::id(), Ordering::Relaxed);
        }
        renew_in_child();
        // SAFETY: registers a handler that only makes a system call and an
        // atomic store, both async-signal-safe.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(renew_in_child)) };
        REGISTERED.store(rc == 0, Ordering::Relaxed);
    });
    if REGISTERED.load(Ordering::Relaxed) {
        PID.load(Ordering::Relaxed)
    } else {
        std::process::id()
    }
}

fn read() -> RwLockReadGuard<'static, Table> {
    TABLE.read().unwrap_or_else(|p| p.into_inner())
}

fn write() -> RwLockWriteGuard<'static, Table> {
    TABLE.write().unwrap_or_else(|p| p.into_inner())
}

fn token(index: usize, generation: usize) -> Token {
    (generation << HALF) | (index + 1)
}

/// The slot index and generation a token names; `None` for NULL and values
/// that name no slot.
fn decode(token: Token) -> Option<(usize, usize)> {
    let index = (token & LOW).checked_sub(1)?;
    Some((index, token >> HALF))
}

fn publish(kind: Kind, value: Shared) -> Result<Token> {
    let live = Live {
        kind,
        pid: pid(),
        value,
    };
    let mut table = write();
    if let Some(index) = table.free.pop() {
        let slot = &mut table.slots[index];
        slot.live = Some(live);
        return Ok(token(index, slot.generation));
    }
    let index = table.slots.len();
    if index >= LOW - 1 {
        return Err(Error::new(
            libc::EMFILE,
            format!("too many live handles ({index})"),
        ));
    }
    table.slots.push(Slot {
        generation: 1,
        live: Some(live),
    });
    Ok(token(index, 1))
}

fn not_live(kind: Kind, token: Token) -> Error {
    if token == 0 {
        return Error::invalid(format!("{} handle is NULL", kind.name()));
    }
    Error::invalid(format!(
        "{token:#x} is not a live {} handle (released, freed or never created)",
        kind.name()
    ))
}

fn inherited(kind: Kind, pid: u32) -> Error {
    Error::new(
        libc::ECHILD,
        format!(
            "the {} handle belongs to process {pid}, not to this one (a child after fork()): \
             it can only be freed here, which changes nothing on disk",
            kind.name()
        ),
    )
}

/// The value of a live handle of `kind` made by this process.
fn lookup<T: Any + Send + Sync>(kind: Kind, token: Token) -> Result<Arc<T>> {
    let value = {
        let table = read();
        let live = decode(token)
            .and_then(|(index, generation)| {
                table
                    .slots
                    .get(index)
                    .filter(|slot| slot.generation == generation)
            })
            .and_then(|slot| slot.live.as_ref())
            .filter(|live| live.kind == kind)
            .ok_or_else(|| not_live(kind, token))?;
        if live.pid != pid() {
            return Err(inherited(kind, live.pid));
        }
        live.value.clone()
    };
    value.downcast::<T>().map_err(|_| not_live(kind, token))
}

/// Takes a handle back: the token is dead from now on. `Ok(None)` for NULL
/// and for a handle inherited through `fork()` (forgotten, see the module's
/// comment); `-EINVAL` for a value that is not a live handle of `kind`.
fn take<T: Any + Send + Sync>(kind: Kind, token: Token) -> Result<Option<Arc<T>>> {
    if token == 0 {
        return Ok(None);
    }
    let live = {
        let mut table = write();
        let found = decode(token).and_then(|(index, generation)| {
            let slot = table.slots.get_mut(index)?;
            let is_it =
                slot.generation == generation && slot.live.as_ref().is_some_and(|l| l.kind == kind);
            if !is_it {
                return None;
            }
            let live = slot.live.take()?;
            slot.generation += 1;
            Some((index, slot.generation, live))
        });
        let (index, generation, live) = found.ok_or_else(|| not_live(kind, token))?;
        // A slot whose next token would wrap around is never used again.
        if generation < LOW {
            table.free.push(index);
        }
        live
    };
    if live.pid != pid() {
        ORPHANS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(live.value);
        return Ok(None);
    }
    live.value
        .downcast::<T>()
        .map(Some)
        .map_err(|_| not_live(kind, token))
}

/// The token of a handle pointer.
pub(crate) fn token_of<T>(ptr: *const T) -> Token {
    ptr as Token
}

/// Hands out a store handle.
pub(crate) fn publish_store(store: os_store) -> Result<*mut os_store_t> {
    publish(Kind::Store, Arc::new(store)).map(|t| t as *mut os_store_t)
}

/// Hands out an object handle.
pub(crate) fn publish_object(object: os_object) -> Result<*mut os_object_t> {
    publish(Kind::Object, Arc::new(RwLock::new(object))).map(|t| t as *mut os_object_t)
}

/// Hands out a server handle.
pub(crate) fn publish_server(server: os_server) -> Result<*mut os_server_t> {
    publish(Kind::Server, Arc::new(server)).map(|t| t as *mut os_server_t)
}

/// Runs `f` on a live store handle (shared: stores may be used by several
/// threads at once).
pub(crate) fn with_store<R>(
    store: *const os_store_t,
    f: impl FnOnce(&os_store) -> Result<R>,
) -> Result<R> {
    let store = lookup::<os_store>(Kind::Store, token_of(store))?;
    f(&store)
}

/// Runs `f` on a live object handle, exclusively.
pub(crate) fn with_object<R>(
    object: *const os_object_t,
    f: impl FnOnce(&mut os_object) -> Result<R>,
) -> Result<R> {
    let object = lookup::<RwLock<os_object>>(Kind::Object, token_of(object))?;
    let mut guard = object.write().unwrap_or_else(|p| p.into_inner());
    f(&mut guard)
}

/// Runs `f` on a live object handle, shared with other readers (e.g. one
/// base for several `os_object_init()` calls at once).
pub(crate) fn with_object_ref<R>(
    object: *const os_object_t,
    f: impl FnOnce(&os_object) -> Result<R>,
) -> Result<R> {
    let object = lookup::<RwLock<os_object>>(Kind::Object, token_of(object))?;
    let guard = object.read().unwrap_or_else(|p| p.into_inner());
    f(&guard)
}

/// Runs `f` on a live server handle.
pub(crate) fn with_server<R>(
    server: *const os_server_t,
    f: impl FnOnce(&os_server) -> Result<R>,
) -> Result<R> {
    let server = lookup::<os_server>(Kind::Server, token_of(server))?;
    f(&server)
}

/// Takes a store handle back (see [`take`]).
pub(crate) fn take_store(store: Token) -> Result<Option<Arc<os_store>>> {
    take(Kind::Store, store)
}

/// Takes an object handle back (see [`take`]).
pub(crate) fn take_object(object: Token) -> Result<Option<Arc<RwLock<os_object>>>> {
    take(Kind::Object, object)
}

/// Takes a server handle back (see [`take`]).
pub(crate) fn take_server(server: Token) -> Result<Option<Arc<os_server>>> {
    take(Kind::Server, server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_tokens_are_never_reused() {
        let a = publish(Kind::Server, Arc::new(1u8)).unwrap();
        assert!(take::<u8>(Kind::Server, a).unwrap().is_some());
        let b = publish(Kind::Server, Arc::new(2u8)).unwrap();
        assert_ne!(a, b);
        assert!(lookup::<u8>(Kind::Server, a).is_err());
        assert!(take::<u8>(Kind::Server, a).is_err());
        assert_eq!(*lookup::<u8>(Kind::Server, b).unwrap(), 2);
        assert!(lookup::<u8>(Kind::Store, b).is_err());
        assert!(take::<u8>(Kind::Server, b).unwrap().is_some());
    }

    #[test]
    fn handle_tokens_refuse_values_that_name_no_slot() {
        for t in [0, 1 << HALF, usize::MAX, usize::MAX / 3] {
            assert_eq!(
                lookup::<u8>(Kind::Object, t).unwrap_err().errno(),
                libc::EINVAL
            );
        }
        assert!(take::<u8>(Kind::Object, 0).unwrap().is_none());
    }
}
