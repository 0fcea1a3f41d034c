//! Handles: what C holds is a token, never an address.
//!
//! The pointer value handed to C encodes a slot of a process-wide table and
//! the slot's generation: `generation << HALF | (slot + 1)`. Releasing a
//! handle bumps the slot's generation, so the old value never names
//! anything again, whatever is allocated later (a slot whose generation
//! would wrap is retired for good). Nothing C passes in is ever
//! dereferenced: a NULL, stale, forged or wrong-kind value is looked up,
//! not found, and refused with `-EINVAL`.
//!
//! A look-up must cost little more than the pointer dereference it
//! replaces, so it takes no lock and copies nothing. The slots live in
//! chunks that never move or go away (chunk `k` holds `FIRST_CHUNK << k`
//! slots), and each slot has one atomic state word: its generation, kind,
//! whether it is live or being released, and how many calls are using it
//! right now. A call enters a slot by incrementing that count, with one
//! compare-and-swap that also checks the generation, kind and liveness the
//! token claims; it then uses the value in place and leaves by decrementing
//! the count. Releasing a handle only clears the live bit (no new call
//! enters) and marks the slot dying: whoever leaves it last, the releasing
//! call itself or a call another thread (or a callback) is still running on
//! it, drops the value and frees the slot. So a handle freed while another
//! thread uses it never pulls the value from under that thread, and nobody
//! waits for anybody.
//!
//! Each handle also remembers the process that made it. In a child after
//! `fork()` every use of an inherited handle fails with `-ECHILD`, and
//! freeing one only forgets it: the slot is retired with its value in it,
//! never dropped, since dropping would run the parent's clean-ups (remove
//! work dirs, stop the parent's server, unmount). The child gets that
//! memory back when it exits or execs.
//!
//! Object and server handles also record the store handle that gave them
//! out, so that freeing a store finds them ([`owned_by`]) without a
//! per-store set to update at every `get` and release.
//!
//! The rest of the C layer uses the typed helpers: `publish_*` to hand a
//! value out, `with_*` to use one, `take_*` to take one back.

use std::sync::{Arc, RwLock};

use self::table::{Inside, publish};
use super::object::{os_object, os_object_t};
use super::server::{os_server, os_server_t};
use super::store::{os_store, os_store_t};
use crate::error::{Error, Result};

pub(crate) use self::table::owned_by;

mod table;
#[cfg(test)]
mod tests;

/// The value C holds for a handle.
pub(crate) type Token = usize;

/// The kinds of handle (never 0 in a state word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Store = 1,
    Object = 2,
    Server = 3,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Store => "store",
            Kind::Object => "object",
            Kind::Server => "server",
        }
    }

    fn bits(self) -> u64 {
        (self as u64) << table::KIND_SHIFT
    }
}

/// What a live handle holds. `Arc`s, so that releasing a handle while
/// another call still uses it hands the releasing call its own reference.
enum Value {
    Store(Arc<os_store>),
    Object(Arc<RwLock<os_object>>),
    Server(Arc<os_server>),
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

/// What a handle of each kind holds, and how to find it in a [`Value`].
trait Held: Sized {
    const KIND: Kind;
    fn in_value(value: &Value) -> Option<&Arc<Self>>;
}

impl Held for os_store {
    const KIND: Kind = Kind::Store;
    fn in_value(value: &Value) -> Option<&Arc<Self>> {
        match value {
            Value::Store(store) => Some(store),
            _ => None,
        }
    }
}

impl Held for RwLock<os_object> {
    const KIND: Kind = Kind::Object;
    fn in_value(value: &Value) -> Option<&Arc<Self>> {
        match value {
            Value::Object(object) => Some(object),
            _ => None,
        }
    }
}

impl Held for os_server {
    const KIND: Kind = Kind::Server;
    fn in_value(value: &Value) -> Option<&Arc<Self>> {
        match value {
            Value::Server(server) => Some(server),
            _ => None,
        }
    }
}

/// Runs `f` on what the live handle `token` of kind `T::KIND` holds.
fn with_held<T: Held, R>(token: Token, f: impl FnOnce(&T) -> Result<R>) -> Result<R> {
    let inside = Inside::enter_own(T::KIND, token)?;
    match inside.value().and_then(T::in_value) {
        Some(held) => f(held),
        None => Err(not_live(T::KIND, token)),
    }
}

/// Takes a handle back: the token is dead from now on. `Ok(None)` for NULL
/// and for a handle inherited through `fork()` (forgotten, see the module's
/// comment); `-EINVAL` for a value that is not a live handle of its kind.
/// The value goes when the last of the returned value and the calls still
/// using it goes.
fn take<T: Held>(token: Token) -> Result<Option<Arc<T>>> {
    if token == 0 {
        return Ok(None);
    }
    let inside = Inside::enter(T::KIND, token)?;
    let inherited = inside.is_inherited();
    if !inside.end(inherited) {
        return Err(not_live(T::KIND, token));
    }
    if inherited {
        return Ok(None);
    }
    inside
        .value()
        .and_then(T::in_value)
        .map(|held| Some(Arc::clone(held)))
        .ok_or_else(|| not_live(T::KIND, token))
}

/// The token of a handle pointer.
pub(crate) fn token_of<T>(ptr: *const T) -> Token {
    ptr as Token
}

/// Hands out a store handle.
pub(crate) fn publish_store(store: os_store) -> Result<*mut os_store_t> {
    publish(Kind::Store, Value::Store(Arc::new(store)), 0).map(|t| t as *mut os_store_t)
}

/// Hands out an object handle that the store handle `owner` gave out.
pub(crate) fn publish_object(object: os_object, owner: Token) -> Result<*mut os_object_t> {
    publish(
        Kind::Object,
        Value::Object(Arc::new(RwLock::new(object))),
        owner,
    )
    .map(|t| t as *mut os_object_t)
}

/// Hands out a server handle that the store handle `owner` started.
pub(crate) fn publish_server(server: os_server, owner: Token) -> Result<*mut os_server_t> {
    publish(Kind::Server, Value::Server(Arc::new(server)), owner).map(|t| t as *mut os_server_t)
}

/// Runs `f` on a live store handle (shared: stores may be used by several
/// threads at once).
pub(crate) fn with_store<R>(
    store: *const os_store_t,
    f: impl FnOnce(&os_store) -> Result<R>,
) -> Result<R> {
    with_held(token_of(store), f)
}

/// Runs `f` on a live object handle, exclusively.
pub(crate) fn with_object<R>(
    object: *const os_object_t,
    f: impl FnOnce(&mut os_object) -> Result<R>,
) -> Result<R> {
    with_held(token_of(object), |lock: &RwLock<os_object>| {
        f(&mut lock.write().unwrap_or_else(|p| p.into_inner()))
    })
}

/// Runs `f` on a live object handle, shared with other readers (e.g. one
/// base for several `os_object_init()` calls at once).
pub(crate) fn with_object_ref<R>(
    object: *const os_object_t,
    f: impl FnOnce(&os_object) -> Result<R>,
) -> Result<R> {
    with_held(token_of(object), |lock: &RwLock<os_object>| {
        f(&lock.read().unwrap_or_else(|p| p.into_inner()))
    })
}

/// Runs `f` on a live server handle.
pub(crate) fn with_server<R>(
    server: *const os_server_t,
    f: impl FnOnce(&os_server) -> Result<R>,
) -> Result<R> {
    with_held(token_of(server), f)
}

/// Takes a store handle back (see [`take`]).
pub(crate) fn take_store(store: Token) -> Result<Option<Arc<os_store>>> {
    take(store)
}

/// Takes an object handle back (see [`take`]).
pub(crate) fn take_object(object: Token) -> Result<Option<Arc<RwLock<os_object>>>> {
    take(object)
}

/// Takes a server handle back (see [`take`]).
pub(crate) fn take_server(server: Token) -> Result<Option<Arc<os_server>>> {
    take(server)
}
