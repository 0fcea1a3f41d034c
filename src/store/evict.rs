//! Eviction: removing the least recently used unpinned objects until the
//! total and the free space are within the settings.
//!
//! Evictions are serialised by an exclusive lock on `meta/`. Each takes
//! its victims from the eviction index ([`super::lru`]): the least
//! recently used object first, its last use verified against its sidecar,
//! skipped when pinned or just committed. The index is built by a full scan
//! (every ref and sidecar) when it is missing or out of date (another
//! process committed or evicted since this one last did, a settings change
//! of the bound, a reboot; always in an unbounded store), so an eviction
//! costs in proportion to what it removes, and its decisions and the total
//! it writes are exact whatever happened before (kills included).
//! An object is removed only while the evictor holds it locked exclusively,
//! which no handle in any process can then hold: pinned objects are skipped
//! and a look-up that comes in between waits, then finds no ref. Its refs
//! are removed before it.
//!
//! Whether a commit must evict is decided from a running total in
//! `meta/total`, kept only while `max-size` is set: the commit adds its
//! object's size under the `meta/` lock before its ref names the object
//! (and swaps the ref under that lock), so a kill can only leave the
//! running total too high (never too low), and an eviction replaces it with
//! the index's exact sum. The file records the boot it was written in;
//! after a reboot (a power cut may have lost a write) it is measured
//! afresh. Commits by osstore 0.1 tools leave no trace in it: their objects
//! are counted at the next full scan.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::MutexGuard;

use nix::errno::Errno;
use nix::fcntl::{RenameFlags, renameat, renameat2};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::cached::RefEntry;
use super::lru::{Indexed, LruIndex, Stamp};
use super::{Store, gc};
use crate::cache::lastuse;
use crate::cache::settings::{MinFree, Settings};
use crate::cache::sidecar::Info;
use crate::error::{Error, Result};
use crate::lock::DirLock;
use crate::tempdir::TempDir;
use crate::{log, tree};

/// What an eviction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvictReport {
    /// Bytes freed (sizes of the objects removed).
    pub freed: u64,
    /// Ids of the refs removed, in the order they were.
    pub evicted: Vec<String>,
}

/// A bounded commit's hold on the running total, from its count to the
/// eviction that may follow: the `meta/` lock, the index, the new total and
/// the stamp written with it.
pub(crate) struct Counted<'a> {
    total: u64,
    stamp: Stamp,
    index: MutexGuard<'a, LruIndex>,
    lock: DirLock,
}

/// When an eviction may stop.
#[derive(Debug, Clone, Copy, Default)]
struct Goal {
    /// The total must be at most this.
    total: Option<u64>,
    /// Free space must be at least this.
    free: Option<u64>,
}

impl Store {
    /// Evicts the least recently used unpinned refs, each with its object,
    /// until the total is at most `target_bytes`. Pinned objects are
    /// skipped, so the total may stay above the target.
    pub fn evict(&self, target_bytes: u64) -> Result<EvictReport> {
        self.require_writable("evict")?;
        let goal = Goal {
            total: Some(target_bytes),
            free: None,
        };
        let bounded = current_settings(self)?.max_size.is_some();
        self.evict_to(goal, None, bounded, None)
    }

    /// `EFBIG` when an object of `size` bytes is larger than `max-size` on
    /// its own.
    pub(crate) fn check_fits(&self, settings: &Settings, size: u64) -> Result<()> {
        match settings.max_size {
            Some(max) if size > max => Err(Error::new(
                libc::EFBIG,
                format!("the object's {size} bytes are more than the store's max-size of {max}"),
            )),
            _ => Ok(()),
        }
    }

    /// Under the `meta/` lock (bounded stores only): adds a committed
    /// object's size to the running total, then calls `swap`, which makes
    /// the ref `id` name `objects/<name>`. The total is written before the
    /// ref names the object, so a kill in between leaves it too high, never
    /// too low; and since bounded commits swap their refs under the lock,
    /// an eviction sees every counted object. Nothing fails once `swap` has
    /// succeeded (the commit has happened). The lock stays held in the
    /// result, for [`Store::evict_after_commit`].
    pub(crate) fn count_in(
        &self,
        settings: &Settings,
        id: &str,
        name: &str,
        info: &Info,
        swap: impl FnOnce() -> Result<()>,
    ) -> Result<Option<Counted<'_>>> {
        if settings.max_size.is_none() {
            return swap().map(|()| None);
        }
        let lock = DirLock::exclusive(&self.inner.meta)?;
        let mut index = self.lru_index();
        let file = self.read_total();
        if file.is_none() {
            self.rebuild_index(&mut index)?;
        }
        let indexed = file.is_none() || index.matches(file.as_ref());
        let (total, replaced) = match &file {
            Some(f) if !indexed => (f.total + info.size, None),
            _ => {
                let replaced = self.ref_name(id)?;
                let freed = replaced
                    .as_deref()
                    .map_or(0, |old| index.size_freed_by_replacing(id, old));
                (index.total() + info.size - freed, replaced)
            }
        };
        let stamp = self.write_total(total, file.and_then(|f| f.stamp).as_ref())?;
        swap()?;
        if indexed {
            if let Some(old) = replaced {
                index.remove_ref(id, &old);
            }
            // Its sidecar was written just now; should its second differ,
            // the eviction's check of each victim's last use puts it right.
            index.add(id, name, info, lastuse::now());
            index.set_stamp(Some(stamp.clone()));
        }
        Ok(Some(Counted {
            total,
            stamp,
            index,
            lock,
        }))
    }

    /// After the commit of `objects/<name>`: evicts when the total is over
    /// `max-size` (down to `low-water`) or free space is under `min-free`
    /// (up to twice that). Never evicts `name` itself.
    pub(crate) fn evict_after_commit(
        &self,
        settings: &Settings,
        counted: Option<Counted<'_>>,
        name: &str,
    ) -> Result<()> {
        let mut goal = Goal::default();
        if let (Some(max), Some(c)) = (settings.max_size, &counted) {
            if c.total > max {
                goal.total = Some((u128::from(max) * u128::from(settings.low_water) / 100) as u64);
            }
        }
        // No statfs when no free space is asked for.
        if !matches!(settings.min_free, MinFree::Bytes(0) | MinFree::Percent(0)) {
            let (free, fs_size) = self.fs_space()?;
            let min_free = settings.min_free.bytes(fs_size);
            if free < min_free {
                goal.free = Some(min_free.saturating_mul(2));
            }
        }
        if goal.total.is_none() && goal.free.is_none() {
            return Ok(());
        }
        let bounded = settings.max_size.is_some();
        self.evict_to(goal, Some(name), bounded, counted).map(drop)
    }

    /// Evicts until `goal` is met, never `keep`; under the lock a commit's
    /// count still holds, if any. The victims come from the index (see
    /// [`super::lru`]), rebuilt when out of date; in an unbounded store
    /// (evictions for `min-free` or by [`Store::evict`] only, rare) it is
    /// rebuilt every time, since its commits keep no running total.
    fn evict_to(
        &self,
        goal: Goal,
        keep: Option<&str>,
        bounded: bool,
        counted: Option<Counted<'_>>,
    ) -> Result<EvictReport> {
        let context = || format!("cannot evict from {}", self.inner.root.display());
        // A commit's count changed the stamp since any other process read
        // it: the others' indexes are out of date already.
        let announced = counted.is_some();
        let (_lock, mut index, stamp) = match counted {
            Some(c) => (c.lock, c.index, Some(c.stamp)),
            None => {
                let lock =
                    DirLock::exclusive(&self.inner.meta).map_err(|e| e.context(context()))?;
                (
                    lock,
                    self.lru_index(),
                    self.read_total().and_then(|f| f.stamp),
                )
            }
        };
        if !bounded || !stamp.as_ref().is_some_and(|s| index.is_true_at(s)) {
            self.rebuild_index(&mut index)
                .map_err(|e| e.context(context()))?;
        }
        let mut victims = Victims {
            store: self,
            index: &mut index,
            work: None,
            bounded,
            stamp,
            announced,
            exact: true,
            report: EvictReport::default(),
            removing: std::time::Duration::ZERO,
        };
        let outcome = victims.take(goal, keep);
        let Victims {
            stamp,
            exact,
            report,
            removing,
            ..
        } = victims;
        if !report.evicted.is_empty() {
            log::info(format_args!(
                "evicted {} refs ({} bytes) from {}; removing the objects took {} us",
                report.evicted.len(),
                report.freed,
                self.inner.root.display(),
                removing.as_micros()
            ));
        }
        match outcome {
            Ok(()) if bounded => {
                let new = self
                    .write_total(index.total(), stamp.as_ref())
                    .map_err(|e| e.context(context()))?;
                index.set_stamp(exact.then_some(new));
            }
            Ok(()) => index.invalidate(),
            Err(e) => {
                index.invalidate();
                return Err(e.context(context()));
            }
        }
        Ok(report)
    }

    /// Removes `refs/<id>` if it still names `objects/<name>`: it is moved
    /// aside to `aside` (a name below the open directory `dir`, atomic, as
    /// a swap), checked there, and put back (unless a newer one took its
    /// place) if a commit replaced it meanwhile.
    fn unlink_ref(&self, dir: BorrowedFd<'_>, aside: &CStr, entry: &RefEntry) -> Result<bool> {
        let id = CString::new(entry.id.as_str()).map_err(|_| Error::invalid("bad id"))?;
        let fail = |what: &str, e: Errno| {
            Error::sys(
                format_args!("{what} {}", self.inner.refs.join(&entry.id).display()),
                e,
            )
        };
        match renameat(&self.inner.refs_dir, id.as_c_str(), dir, aside) {
            Ok(()) => {}
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(fail("cannot remove ref", e)),
        }
        let moved = nix::fcntl::readlinkat(dir, aside).ok();
        let expected = format!("../objects/{}", entry.name);
        if moved.is_some_and(|t| t.as_os_str() == expected.as_str()) {
            unlinkat(dir, aside, UnlinkatFlags::NoRemoveDir)
                .map_err(|e| fail("cannot remove ref", e))?;
            return Ok(true);
        }
        match renameat2(
            dir,
            aside,
            &self.inner.refs_dir,
            id.as_c_str(),
            RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) | Err(Errno::EEXIST) => {
                let _ = unlinkat(dir, aside, UnlinkatFlags::NoRemoveDir);
                Ok(false)
            }
            Err(e) => Err(fail("cannot put back ref", e)),
        }
    }
}

/// One eviction's work on the index (under the `meta/` lock).
struct Victims<'a> {
    store: &'a Store,
    index: &'a mut LruIndex,
    /// Where refs are moved aside when their object has no sidecar
    /// directory (made on first need).
    work: Option<TempDir>,
    /// Whether the store keeps a running total (`max-size` set).
    bounded: bool,
    /// The running total's stamp as last read or written.
    stamp: Option<Stamp>,
    /// Whether the other processes were told (see [`Victims::announce`]).
    announced: bool,
    /// Cleared when refs changed behind the index.
    exact: bool,
    report: EvictReport,
    /// Time spent removing objects and sidecars (logged).
    removing: std::time::Duration,
}

impl Victims<'_> {
    /// Takes least recently used objects until `goal` is met: each has its
    /// last use verified, is skipped when it is `keep` or pinned, and is
    /// removed ref first. Skipped objects go back in the index.
    fn take(&mut self, goal: Goal, keep: Option<&str>) -> Result<()> {
        let mut skipped = Vec::new();
        let outcome = self.take_skipping(goal, keep, &mut skipped);
        for (name, used) in skipped {
            self.index.put_back(&name, used);
        }
        outcome
    }

    fn take_skipping(
        &mut self,
        goal: Goal,
        keep: Option<&str>,
        skipped: &mut Vec<(String, i64)>,
    ) -> Result<()> {
        let inner = &self.store.inner;
        loop {
            let free_ok = match goal.free {
                Some(f) => self.store.fs_space()?.0 >= f,
                None => true,
            };
            if goal.total.is_none_or(|t| self.index.total() <= t) && free_ok {
                return Ok(());
            }
            let Some((name, victim)) = self.index.pop_least() else {
                return Ok(());
            };
            if keep == Some(name.as_str()) {
                skipped.push((name, victim.used));
                continue;
            }
            let object = inner.objects.join(&name);
            let used = match &inner.meta_dir {
                Some(meta) => lastuse::read(meta.as_fd(), &name)?,
                None => None,
            };
            match used {
                // Used since it was indexed (or its time was set back).
                Some(used) if used != victim.used => {
                    self.index.put_back(&name, used);
                    continue;
                }
                // A missing object is dropped below (the lock finds it gone).
                _ => {}
            }
            let held = match DirLock::try_exclusive(&object) {
                Ok(Some(held)) => held,
                Ok(None) => {
                    skipped.push((name, victim.used));
                    continue;
                }
                Err(e) if e.errno() == libc::ENOENT => {
                    self.index.remove(&name);
                    continue;
                }
                Err(e) => return Err(e),
            };
            // Announced on the board before its pins are read (see
            // `crate::cache::pinboard`), until the object is gone.
            let board = self.store.pin_board()?;
            let _evicting = board.map(|b| b.evicting(&name));
            let on_board = match board {
                Some(b) => b.is_pinned(&name)?,
                None => false,
            };
            if on_board {
                skipped.push((name, victim.used));
                continue;
            }
            self.announce()?;
            self.remove(&name, &victim, &held, used.is_some())?;
        }
    }

    /// Removes a locked victim: its refs (moved aside into its sidecar
    /// directory when it has one, removed with it, or by a collection after
    /// a kill), then its tree and its sidecar.
    fn remove(
        &mut self,
        name: &str,
        victim: &Indexed,
        held: &DirLock,
        has_sidecar: bool,
    ) -> Result<()> {
        let inner = &self.store.inner;
        let (dir, aside) = match (&inner.meta_dir, has_sidecar) {
            (Some(meta), true) => (meta.as_fd(), CString::new(format!("{name}/ref"))),
            _ => {
                let work = match &mut self.work {
                    Some(work) => work,
                    None => self.work.insert(self.store.create_tempdir(b"evict-", b"")?),
                };
                (work.fd(), CString::new("ref"))
            }
        };
        let aside = aside.map_err(|_| Error::invalid("bad object name"))?;
        let mut all_refs = true;
        for id in &victim.ids {
            let entry = RefEntry {
                id: id.clone(),
                name: name.to_owned(),
            };
            if self.store.unlink_ref(dir, &aside, &entry)? {
                self.report.evicted.push(entry.id);
            } else {
                all_refs = false;
            }
        }
        if !all_refs {
            // A ref was removed or replaced behind the index: the object
            // stays (a collection takes it once no ref names it) and the
            // index is rebuilt next time.
            self.index.forget(name);
            self.exact = false;
            return Ok(());
        }
        let start = std::time::Instant::now();
        gc::remove_locked(&inner.objects.join(name), held)?;
        tree::remove_tree(&inner.meta.join(name))?;
        self.removing += start.elapsed();
        self.index.remove(name);
        self.report.freed += victim.size;
        Ok(())
    }

    /// Before the first removal: changes the running total's stamp (removes
    /// the file in an unbounded store), so that every other process's index
    /// is out of date even if this one is killed before it is done.
    fn announce(&mut self) -> Result<()> {
        if self.announced {
            return Ok(());
        }
        if self.bounded {
            self.stamp = Some(
                self.store
                    .write_total(self.index.total(), self.stamp.as_ref())?,
            );
        } else {
            self.store.remove_total()?;
        }
        self.announced = true;
        Ok(())
    }
}

/// The settings, read again only when the file changed since this handle
/// last read them (commits, evictions, `stat`).
pub(crate) fn current_settings(store: &Store) -> Result<Settings> {
    store
        .inner
        .settings
        .load(store.inner.root_dir.as_fd(), &store.inner.root)
}
