//! The handle table: slots in chunks that never move, each with one atomic
//! state word, entered and left without a lock (see the parent module).

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::{Kind, Token, Value, inherited, not_live};
use crate::error::{Error, Result};
use crate::process::pid;

/// A slot's state word: calls in it (low bits), live and dying bits, kind,
/// and the generation in the high half.
const USERS: u64 = (1 << 24) - 1;
const LIVE: u64 = 1 << 24;
const DYING: u64 = 1 << 25;
pub(super) const KIND_SHIFT: u32 = 26;
const GENERATION_SHIFT: u32 = 32;

struct Slot {
    state: AtomicU64,
    /// The process that made the handle.
    pid: AtomicU32,
    /// The store handle that gave out an object or server handle, else 0.
    owner: AtomicUsize,
    /// Written only by whoever holds the slot alone: the publisher of a
    /// slot that is neither live nor dying, or the last call to leave a
    /// dying slot. Read only by calls inside the slot.
    value: UnsafeCell<Option<Value>>,
}

// SAFETY: `value` is shared between threads only under the protocol of the
// state word described on `Slot::value`; the rest is atomic.
unsafe impl Sync for Slot {}

impl Slot {
    fn new() -> Slot {
        Slot {
            state: AtomicU64::new(1 << GENERATION_SHIFT),
            pid: AtomicU32::new(0),
            owner: AtomicUsize::new(0),
            value: UnsafeCell::new(None),
        }
    }
}

/// Half of a token is the slot (plus one, so that no token is NULL), the
/// other half the generation (starting at 1, so that no token is a small
/// integer).
pub(super) const HALF: u32 = usize::BITS / 2;
const LOW: usize = (1 << HALF) - 1;

/// Slots of chunk 0; chunk `k` has `FIRST_CHUNK << k`.
pub(super) const FIRST_CHUNK: usize = 64;
/// Enough chunks for as many slots as a token can name (`LOW - 1`).
pub(super) const CHUNKS: usize = HALF as usize - FIRST_CHUNK.trailing_zeros() as usize;
/// Most slots: what the chunks hold, just under what a token can name.
pub(super) const MAX_SLOTS: usize = FIRST_CHUNK * ((1 << CHUNKS) - 1);

/// The chunks (allocated on first need, never freed).
static TABLE: [AtomicPtr<Slot>; CHUNKS] = [const { AtomicPtr::new(std::ptr::null_mut()) }; CHUNKS];

/// Slots handed out so far, and the ones free to use again.
struct Allocator {
    used: usize,
    free: Vec<usize>,
}

static ALLOCATOR: Mutex<Allocator> = Mutex::new(Allocator {
    used: 0,
    free: Vec::new(),
});

fn allocator() -> MutexGuard<'static, Allocator> {
    ALLOCATOR.lock().unwrap_or_else(|p| p.into_inner())
}

/// The chunk and the place in it of slot `index`.
pub(super) fn locate(index: usize) -> (usize, usize) {
    let chunk = (usize::BITS - 1 - (index / FIRST_CHUNK + 1).leading_zeros()) as usize;
    (chunk, index - FIRST_CHUNK * ((1 << chunk) - 1))
}

/// Slot `index`, if its chunk exists.
fn slot(index: usize) -> Option<&'static Slot> {
    let (chunk, offset) = locate(index);
    let first = TABLE.get(chunk)?.load(Ordering::Acquire);
    if first.is_null() {
        return None;
    }
    // SAFETY: a chunk of `FIRST_CHUNK << chunk` slots, published with
    // Release after it was initialised and never freed; `offset` is below
    // its length by construction of `locate`.
    Some(unsafe { &*first.add(offset) })
}

fn token(index: usize, generation: u64) -> Token {
    ((generation as usize) << HALF) | (index + 1)
}

/// The slot index and generation a token names; `None` for NULL and values
/// that name no slot.
fn decode(token: Token) -> Option<(usize, u64)> {
    let index = (token & LOW).checked_sub(1)?;
    Some((index, (token >> HALF) as u64))
}

/// A free slot's index, making a chunk when the ones there are full.
fn allocate(allocator: &mut Allocator) -> Result<usize> {
    if let Some(index) = allocator.free.pop() {
        return Ok(index);
    }
    let index = allocator.used;
    if index >= MAX_SLOTS {
        return Err(Error::new(
            libc::EMFILE,
            format!("too many live handles ({index})"),
        ));
    }
    let (chunk, offset) = locate(index);
    if offset == 0 {
        let slots: Box<[Slot]> = (0..FIRST_CHUNK << chunk).map(|_| Slot::new()).collect();
        // Leaked on purpose: calls may look slots up at any time.
        TABLE[chunk].store(Box::leak(slots).as_mut_ptr(), Ordering::Release);
    }
    allocator.used += 1;
    Ok(index)
}

pub(super) fn publish(kind: Kind, value: Value, owner: Token) -> Result<Token> {
    let pid = pid();
    let index = allocate(&mut allocator())?;
    let slot = slot(index).ok_or_else(|| Error::new(libc::EIO, "handle table slot missing"))?;
    let generation = slot.state.load(Ordering::Acquire) >> GENERATION_SHIFT;
    slot.pid.store(pid, Ordering::Relaxed);
    slot.owner.store(owner, Ordering::Relaxed);
    // SAFETY: a slot taken from the allocator is neither live nor dying:
    // no call is in it and none can enter until the store below.
    unsafe { *slot.value.get() = Some(value) };
    slot.state.store(
        (generation << GENERATION_SHIFT) | LIVE | kind.bits(),
        Ordering::Release,
    );
    Ok(token(index, generation))
}

/// A call inside a live slot: the value stays in place until it leaves
/// (when dropped).
pub(super) struct Inside {
    index: usize,
    slot: &'static Slot,
}

impl Inside {
    /// Enters the slot `token` names if it holds a live handle of `kind`
    /// (of any process).
    pub(super) fn enter(kind: Kind, token: Token) -> Result<Inside> {
        let (index, generation) = decode(token).ok_or_else(|| not_live(kind, token))?;
        let slot = slot(index).ok_or_else(|| not_live(kind, token))?;
        let expected = (generation << GENERATION_SHIFT) | LIVE | kind.bits();
        let mut state = slot.state.load(Ordering::Relaxed);
        loop {
            if state & !USERS != expected {
                return Err(not_live(kind, token));
            }
            if state & USERS == USERS {
                return Err(Error::new(
                    libc::EAGAIN,
                    format!(
                        "too many calls at once on {} handle {token:#x}",
                        kind.name()
                    ),
                ));
            }
            match slot.state.compare_exchange_weak(
                state,
                state + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(Inside { index, slot }),
                Err(now) => state = now,
            }
        }
    }

    /// Whether the handle was made by another process (this one's parent
    /// before a `fork()`).
    pub(super) fn is_inherited(&self) -> bool {
        self.slot.pid.load(Ordering::Relaxed) != pid()
    }

    /// Enters the slot of a live handle of `kind` made by this process.
    pub(super) fn enter_own(kind: Kind, token: Token) -> Result<Inside> {
        let inside = Inside::enter(kind, token)?;
        let maker = inside.slot.pid.load(Ordering::Relaxed);
        if maker != pid() {
            return Err(inherited(kind, maker));
        }
        Ok(inside)
    }

    pub(super) fn value(&self) -> Option<&Value> {
        // SAFETY: while a call is inside, nobody writes the value (see
        // `Slot::value`).
        unsafe { (*self.slot.value.get()).as_ref() }
    }

    /// Ends the handle: no call enters any more. Unless it is inherited,
    /// the slot is dying (freed by the last call to leave); an inherited
    /// one is retired with its value. `false` when another call ended it
    /// first.
    pub(super) fn end(&self, inherited: bool) -> bool {
        let mark = if inherited { 0 } else { DYING };
        let mut state = self.slot.state.load(Ordering::Relaxed);
        loop {
            if state & LIVE == 0 {
                return false;
            }
            match self.slot.state.compare_exchange_weak(
                state,
                (state & !LIVE) | mark,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        let before = self.slot.state.fetch_sub(1, Ordering::AcqRel);
        if before & DYING == 0 || before & USERS != 1 {
            return;
        }
        // The last call left a dying slot: it is this call's alone.
        // SAFETY: not live (no call enters), no call inside.
        let value = unsafe { (*self.slot.value.get()).take() };
        let generation = (before >> GENERATION_SHIFT) + 1;
        if generation < LOW as u64 {
            self.slot
                .state
                .store(generation << GENERATION_SHIFT, Ordering::Release);
            allocator().free.push(self.index);
        } else {
            // Its next token would wrap around: never used again.
            self.slot.state.store(0, Ordering::Release);
        }
        drop(value);
    }
}

/// The live server and object handles that the store handle `store` gave
/// out (in that order: servers use the store's objects), found in one scan.
pub(crate) fn owned_by(store: Token) -> (Vec<Token>, Vec<Token>) {
    let used = allocator().used;
    let (mut servers, mut objects) = (Vec::new(), Vec::new());
    for index in 0..used {
        let Some(slot) = slot(index) else { continue };
        let state = slot.state.load(Ordering::Acquire);
        if state & (LIVE | DYING) != LIVE || slot.owner.load(Ordering::Relaxed) != store {
            continue;
        }
        let handle = token(index, state >> GENERATION_SHIFT);
        match state & (3 << KIND_SHIFT) {
            k if k == Kind::Server.bits() => servers.push(handle),
            k if k == Kind::Object.bits() => objects.push(handle),
            _ => {}
        }
    }
    (servers, objects)
}
