//! The pin board: look-up pins that cost no system call.
//!
//! A pin taken with `flock` (see [`super::pins`]) costs two system calls
//! per look-up (lock, unlock), as much as the rest of a cached look-up. So
//! a look-up pins in shared memory instead: `meta/pins`, mapped by every
//! process that pins or removes objects, holds a header and 256 slots, one
//! per open store handle (a [`PinBoard`]), each with 64 entries of two
//! words, the key of an object name (a 64-bit hash, never 0) and how many
//! handles of that process pin it. Only its owner writes a slot.
//!
//! - A slot is owned while its owner holds an open-file-description write
//!   lock (`F_OFD_SETLK`) on the file's byte at the slot's index; the kernel
//!   drops it when the owner dies, so the pins of a dead process count for
//!   nothing, and the next owner of the slot clears them.
//! - A remover reads the entries of every slot in use and asks the kernel
//!   (`F_OFD_GETLK`) whether the owner of one that pins its object lives.
//! - An eviction (one at a time, under the `meta/` lock) first writes the key
//!   of its victim into the header, then reads the entries; a look-up first
//!   counts its pin, then reads that header word. With sequentially
//!   consistent atomics one of the two sees the other: either the eviction
//!   skips the object, or the look-up takes its pin back and pins with
//!   `flock`, which waits for the eviction's exclusive lock.
//! - A collection removes only objects no ref names, so it needs no header
//!   word: a look-up checks, after counting its pin, that the ref still
//!   names the object (or that the ref cache saw no change).
//!
//! The board is used only on local filesystems, where every process maps
//! the same pages; elsewhere (and in a read-only store, a forked child, a
//! full slot) look-ups pin with `flock`. A key collision only makes an
//! object look pinned (it stays) or a look-up pin with `flock`.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// The board's file, in `meta/`.
pub const FILE: &CStr = c"pins";
const MAGIC: u64 = u64::from_le_bytes(*b"osspins1");
const SLOTS: usize = 256;
const ENTRIES: usize = 64;
/// Header words: the magic, the key an eviction is removing (0: none), the
/// number of slots ever claimed (readers scan no further).
const HEADER_WORDS: usize = 8;
const EVICTING: usize = 1;
const SLOTS_USED: usize = 2;
const WORDS: usize = HEADER_WORDS + SLOTS * ENTRIES * 2;
const LEN: usize = WORDS * 8;

/// Filesystems whose pages every process on this machine shares when it
/// maps a file (`statfs` magic numbers): ext2/3/4, XFS, btrfs, tmpfs,
/// ramfs, F2FS, ZFS, bcachefs, overlayfs.
const LOCAL_FILESYSTEMS: [i64; 9] = [
    0xEF53,
    0x5846_5342,
    0x9123_683E,
    0x0102_1994,
    0x8584_58F6,
    0xF2F5_2010,
    0x2FC1_2FC1,
    0xCA45_1A4E,
    0x794C_7630,
];

/// One store handle's view of the board, with its own slot if it got one.
#[derive(Debug)]
pub struct PinBoard {
    words: NonNull<AtomicU64>,
    /// Holds the lock that owns `slot`.
    file: OwnedFd,
    slot: Option<usize>,
    /// The process that owns `slot` (a forked child must not write it).
    pid: u32,
    /// Serialises this process's writes to its slot.
    writing: Mutex<()>,
}

// SAFETY: the mapping is only accessed through atomics, and stays mapped
// until the board is dropped.
unsafe impl Send for PinBoard {}
// SAFETY: as above: every access is atomic.
unsafe impl Sync for PinBoard {}

/// One handle's pin on the board; taken back when dropped.
#[derive(Debug)]
pub struct BoardPin {
    board: Arc<PinBoard>,
    entry: usize,
}

/// An eviction's claim on an object (the header's `EVICTING` word), given
/// back when dropped.
#[derive(Debug)]
pub struct Evicting<'a> {
    board: &'a PinBoard,
}

/// The key of an object name: its hash, never 0 (a free entry).
fn key(name: &str) -> u64 {
    super::name_hash(name).max(1)
}

impl PinBoard {
    /// Maps `meta/pins` below the open `meta` directory (making it if
    /// missing) and claims a free slot. `None` on a filesystem that is not
    /// known to be local (pins are then all `flock`s).
    pub fn open(meta: BorrowedFd<'_>) -> Result<Option<PinBoard>> {
        let fs = nix::sys::statfs::fstatfs(meta).map_err(|e| Error::sys("cannot stat meta/", e))?;
        if !LOCAL_FILESYSTEMS.contains(&(fs.filesystem_type().0 as i64)) {
            return Ok(None);
        }
        let fail = |e| Error::io("cannot open the pin board meta/pins", e);
        let file = open_or_create(meta).map_err(fail)?;
        let size = nix::sys::stat::fstat(&file)
            .map_err(|e| fail(e.into()))?
            .st_size;
        // Every process makes it this size: growing it concurrently is
        // harmless, and new pages read as zeros.
        if size < LEN as i64 {
            // SAFETY: `file` is open for writing.
            if unsafe { libc::ftruncate(file.as_raw_fd(), LEN as libc::off_t) } != 0 {
                return Err(fail(std::io::Error::last_os_error()));
            }
        }
        // SAFETY: a shared mapping of LEN bytes of a file at least that
        // long; unmapped in Drop.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(fail(std::io::Error::last_os_error()));
        }
        let words = NonNull::new(map.cast::<AtomicU64>())
            .ok_or_else(|| Error::new(libc::EIO, "mmap of meta/pins gave no address"))?;
        let mut board = PinBoard {
            words,
            file,
            slot: None,
            pid: crate::process::pid(),
            writing: Mutex::new(()),
        };
        match board
            .word(0)
            .compare_exchange(0, MAGIC, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => {}
            Err(MAGIC) => {}
            Err(_) => {
                return Err(Error::new(
                    libc::ENOTSUP,
                    "meta/pins is not a pin board of this osstore version",
                ));
            }
        }
        board.slot = board.claim()?;
        Ok(Some(board))
    }

    fn word(&self, index: usize) -> &AtomicU64 {
        assert!(index < WORDS);
        // SAFETY: the mapping holds WORDS aligned words and lives as long
        // as `self`; atomics may alias shared memory.
        unsafe { &*self.words.as_ptr().add(index) }
    }

    /// The key and count words of entry `entry` of `slot`.
    fn entry(&self, slot: usize, entry: usize) -> (&AtomicU64, &AtomicU64) {
        let at = HEADER_WORDS + (slot * ENTRIES + entry) * 2;
        (self.word(at), self.word(at + 1))
    }

    /// The first slot whose lock is free, locked and cleared.
    fn claim(&self) -> Result<Option<usize>> {
        for slot in 0..SLOTS {
            if self.lock_byte(slot, libc::F_OFD_SETLK)? {
                for entry in 0..ENTRIES {
                    let (key, count) = self.entry(slot, entry);
                    count.store(0, Ordering::SeqCst);
                    key.store(0, Ordering::SeqCst);
                }
                self.word(SLOTS_USED)
                    .fetch_max(slot as u64 + 1, Ordering::SeqCst);
                return Ok(Some(slot));
            }
        }
        Ok(None)
    }

    /// `F_OFD_SETLK` (take) or `F_OFD_GETLK` (test) of a write lock on the
    /// byte `slot`: whether it was taken, or whether nobody holds it.
    fn lock_byte(&self, slot: usize, command: libc::c_int) -> Result<bool> {
        // SAFETY: an all-zero flock is a valid value (pid 0, as OFD locks want).
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = libc::F_WRLCK as libc::c_short;
        lock.l_whence = libc::SEEK_SET as libc::c_short;
        lock.l_start = slot as libc::off_t;
        lock.l_len = 1;
        // SAFETY: `file` is open, `lock` a valid flock for the call to fill.
        if unsafe { libc::fcntl(self.file.as_raw_fd(), command, &mut lock) } == 0 {
            return Ok(command == libc::F_OFD_SETLK || lock.l_type == libc::F_UNLCK as i16);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EACCES) => Ok(false),
            _ => Err(Error::io("cannot lock the pin board meta/pins", e)),
        }
    }

    /// Pins the object `name` for one handle; `None` when this board cannot
    /// (no slot, a forked child, a full slot) or an eviction is taking the
    /// object: the caller then pins with `flock`.
    pub fn pin(self: &Arc<Self>, name: &str) -> Option<BoardPin> {
        let slot = self.slot?;
        if crate::process::pid() != self.pid {
            return None;
        }
        let key = key(name);
        let entry = {
            let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
            let mut free = None;
            let mut found = None;
            for entry in 0..ENTRIES {
                let (k, count) = self.entry(slot, entry);
                if k.load(Ordering::Relaxed) == key {
                    found = Some(entry);
                    break;
                }
                if free.is_none() && count.load(Ordering::Relaxed) == 0 {
                    free = Some(entry);
                }
            }
            let entry = found.or(free)?;
            let (k, count) = self.entry(slot, entry);
            if found.is_none() {
                k.store(key, Ordering::SeqCst);
            }
            count.store(count.load(Ordering::Relaxed) + 1, Ordering::SeqCst);
            entry
        };
        let pin = BoardPin {
            board: Arc::clone(self),
            entry,
        };
        // Counted before this read: see the module's comment.
        (self.word(EVICTING).load(Ordering::SeqCst) != key).then_some(pin)
    }

    /// Marks `name` as the object an eviction is about to remove (the caller
    /// holds the `meta/` lock); look-ups that pin it from now on use `flock`.
    pub fn evicting(&self, name: &str) -> Evicting<'_> {
        self.word(EVICTING).store(key(name), Ordering::SeqCst);
        Evicting { board: self }
    }

    /// Whether a live handle of any process pins `name` on the board.
    pub fn is_pinned(&self, name: &str) -> Result<bool> {
        let key = key(name);
        let used = (self.word(SLOTS_USED).load(Ordering::SeqCst) as usize).min(SLOTS);
        for slot in 0..used {
            for entry in 0..ENTRIES {
                let (k, count) = self.entry(slot, entry);
                if k.load(Ordering::SeqCst) != key || count.load(Ordering::SeqCst) == 0 {
                    continue;
                }
                // This board's own slot is alive; another's while its lock
                // is held (the test sees another handle's lock as a conflict
                // even in this process).
                if Some(slot) == self.slot || !self.lock_byte(slot, libc::F_OFD_GETLK)? {
                    return Ok(true);
                }
                break;
            }
        }
        Ok(false)
    }
}

/// Opens `meta/pins` for reading and writing, making it if missing. A new
/// board is writable by whoever may write `meta/` (its mode is `meta/`'s
/// read and write bits, whatever the umask): every user who can evict
/// from the store must be able to announce it there.
fn open_or_create(meta: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    let flags = libc::O_RDWR | libc::O_NOFOLLOW;
    match crate::fd::open_at(meta, FILE, flags) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        other => return other,
    }
    let dir_mode = nix::sys::stat::fstat(meta)?.st_mode & 0o666;
    let dir_mode = nix::sys::stat::Mode::from_bits_truncate(dir_mode);
    let made =
        match crate::fd::open_at_mode(meta, FILE, flags | libc::O_CREAT | libc::O_EXCL, 0o600) {
            // Made by another process meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                return crate::fd::open_at(meta, FILE, flags);
            }
            other => other?,
        };
    nix::sys::stat::fchmod(&made, dir_mode)?;
    Ok(made)
}

impl Drop for PinBoard {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, with no reference left to it
        // (pins hold the board alive).
        unsafe { libc::munmap(self.words.as_ptr().cast(), LEN) };
    }
}

impl Drop for BoardPin {
    fn drop(&mut self) {
        let board = &self.board;
        let Some(slot) = board.slot.filter(|_| crate::process::pid() == board.pid) else {
            return;
        };
        let _writing = board.writing.lock().unwrap_or_else(|p| p.into_inner());
        let (_, count) = board.entry(slot, self.entry);
        count.store(count.load(Ordering::Relaxed) - 1, Ordering::SeqCst);
    }
}

impl Drop for Evicting<'_> {
    fn drop(&mut self) {
        self.board.word(EVICTING).store(0, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests;
