//! Pins held by look-up handles: on the pin board (see [`super::pinboard`])
//! where the store has one, else shared `flock`s on `objects/<name>`.
//!
//! Eviction and collection remove an object only while they hold it locked
//! exclusively and the board shows no pin on it, so a pin held by any
//! process keeps the object (and its ref, which eviction removes only with
//! the object) in place. A pin goes when the handle is released or its
//! process dies.
//!
//! A `flock` pin must stay cheap too, so the directories of recently used objects
//! stay open in a small per-process table, each with a count of the handles
//! of this process that pin it: the first handle takes the shared lock, the
//! last one drops it, and the ones in between cost nothing. An open
//! directory is only trusted while the store's ref cache has seen no change
//! since the directory was opened (same generation, checked after the lock
//! is taken): then the object named by the ref when it was opened is still
//! in place, and the lock now keeps it there.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use super::pinboard::BoardPin;
use crate::error::{Error, Result};

/// Most directories kept open; the table is emptied when it is full
/// (handles keep what they pin).
const MAX_OPEN: usize = 128;

/// An open object directory and the handles of this process pinning it.
#[derive(Debug)]
pub struct PinnedDir {
    fd: OwnedFd,
    holders: Mutex<usize>,
}

/// One handle's pin; unpins when dropped.
#[derive(Debug)]
pub enum Pin {
    /// A count on the pin board.
    Board(BoardPin),
    /// A share of this process's `flock` on the object's directory.
    Flock(FlockPin),
}

/// A share of this process's shared `flock` on an object's directory.
#[derive(Debug)]
pub struct FlockPin {
    dir: Arc<PinnedDir>,
}

impl PinnedDir {
    /// Wraps the open directory `fd` of an object.
    pub fn new(fd: OwnedFd) -> Arc<PinnedDir> {
        Arc::new(PinnedDir {
            fd,
            holders: Mutex::new(0),
        })
    }

    /// Pins the object: the first pin of this process takes the shared lock
    /// (waiting while an eviction or collection holds it).
    pub fn pin(self: &Arc<Self>) -> Result<Pin> {
        let mut holders = self.holders.lock().unwrap_or_else(|p| p.into_inner());
        if *holders == 0 {
            flock(&self.fd, libc::LOCK_SH)?;
        }
        *holders += 1;
        Ok(Pin::Flock(FlockPin {
            dir: Arc::clone(self),
        }))
    }

    /// Whether the directory was removed (its object evicted or collected).
    pub fn is_unlinked(&self) -> Result<bool> {
        let st = nix::sys::stat::fstat(&self.fd)
            .map_err(|e| Error::sys("cannot stat an object directory", e))?;
        Ok(st.st_nlink == 0)
    }
}

impl Drop for FlockPin {
    fn drop(&mut self) {
        let mut holders = self.dir.holders.lock().unwrap_or_else(|p| p.into_inner());
        *holders -= 1;
        if *holders == 0 {
            // Cannot fail for a descriptor we hold locked.
            let _ = flock(&self.dir.fd, libc::LOCK_UN);
        }
    }
}

fn flock(fd: &OwnedFd, op: libc::c_int) -> Result<()> {
    crate::lock::flock(fd, op).map_err(|e| Error::io("cannot lock an object directory", e))
}

/// The open directories of one store, by object name, with the ref-cache
/// generation each was opened in.
#[derive(Debug, Default)]
pub struct PinTable {
    open: Mutex<HashMap<Arc<str>, Opened>>,
}

/// An open directory and the ref-cache generation it was opened in.
type Opened = (u64, Arc<PinnedDir>);

impl PinTable {
    /// The directory of `name` opened in `generation`, if there is one.
    pub fn get(&self, name: &str, generation: u64) -> Option<Arc<PinnedDir>> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(name)
            .filter(|(g, _)| *g == generation)
            .map(|(_, d)| Arc::clone(d))
    }

    /// Remembers the directory of `name`, opened in `generation`.
    pub fn insert(&self, name: Arc<str>, generation: u64, dir: &Arc<PinnedDir>) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.len() >= MAX_OPEN {
            open.clear();
        }
        open.insert(name, (generation, Arc::clone(dir)));
    }
}
