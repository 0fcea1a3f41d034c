//! Eviction: removing the least recently used unpinned objects until the
//! total and the free space are within the settings.
//!
//! Evictions are serialised by an exclusive lock on `meta/`; each one sums
//! the sizes of the objects the refs name afresh, so its decisions and the
//! total it reports are exact whatever happened before (kills included).
//! An object is removed only while the evictor holds it locked exclusively,
//! which no handle in any process can then hold: pinned objects are skipped
//! and a look-up that comes in between waits, then finds no ref.
//!
//! Whether a commit must evict is decided from a running total in
//! `meta/total`, kept only while `max-size` is set: the commit adds its
//! object's size under the `meta/` lock before its ref names the object, so
//! a kill can only leave the running total too high (never too low), and an
//! eviction replaces it with the exact sum. The file records the boot it
//! was written in; after a reboot (a power cut may have lost a write) it is
//! measured afresh.

use std::ffi::CString;
use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::fcntl::{RenameFlags, renameat, renameat2};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::cached::RefEntry;
use super::{Store, gc};
use crate::cache::settings::{MinFree, Settings};
use crate::error::{Error, Result};
use crate::lock::DirLock;
use crate::tree;

/// The running total's file in `meta/`.
const TOTAL: &str = "total";

/// What an eviction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvictReport {
    /// Bytes freed (sizes of the objects removed).
    pub freed: u64,
    /// Ids of the refs removed, in the order they were.
    pub evicted: Vec<String>,
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
        self.evict_to(goal, None)
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

    /// Adds a committed object's size to the running total (bounded stores
    /// only), before its ref names it; returns the new total.
    pub(crate) fn count_in(&self, settings: &Settings, size: u64) -> Result<Option<u64>> {
        if settings.max_size.is_none() {
            return Ok(None);
        }
        let _lock = DirLock::exclusive(&self.inner.meta)?;
        let total = match self.read_total() {
            Some(t) => t,
            None => self.exact_total()?,
        } + size;
        self.write_total(total)?;
        Ok(Some(total))
    }

    /// After the commit of `objects/<name>`: evicts when the total is over
    /// `max-size` (down to `low-water`) or free space is under `min-free`
    /// (up to twice that). Never evicts `name` itself.
    pub(crate) fn evict_after_commit(
        &self,
        settings: &Settings,
        total: Option<u64>,
        name: &str,
    ) -> Result<()> {
        let mut goal = Goal::default();
        if let (Some(max), Some(total)) = (settings.max_size, total) {
            if total > max {
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
        self.evict_to(goal, Some(name)).map(drop)
    }

    fn evict_to(&self, goal: Goal, keep: Option<&str>) -> Result<EvictReport> {
        let context = || format!("cannot evict from {}", self.inner.root.display());
        let _lock = DirLock::exclusive(&self.inner.meta).map_err(|e| e.context(context()))?;
        let work = self
            .create_tempdir(b"evict-", b"")
            .map_err(|e| e.context(context()))?;
        let mut candidates = Vec::new();
        let mut total = 0;
        let (entries, _) = self.ref_entries().map_err(|e| e.context(context()))?;
        // Refs per object (several refs may name one object, made by hand).
        let mut naming: std::collections::HashMap<String, usize> = Default::default();
        for e in entries {
            let (info, used) = self
                .object_info(&e.name)
                .map_err(|e| e.context(context()))?;
            let refs = naming.entry(e.name.clone()).or_default();
            if *refs == 0 {
                total += info.size;
            }
            *refs += 1;
            candidates.push((used, info.created, info.size, e));
        }
        candidates.sort_by_key(|c| (c.0, c.1));
        let mut report = EvictReport::default();
        for (_, _, size, entry) in candidates {
            let free_ok = match goal.free {
                Some(f) => self.fs_space()?.0 >= f,
                None => true,
            };
            if goal.total.is_none_or(|t| total <= t) && free_ok {
                break;
            }
            if keep == Some(entry.name.as_str()) {
                continue;
            }
            let object = self.inner.objects.join(&entry.name);
            let Some(held) = DirLock::try_exclusive(&object).or_else(|e| {
                if e.errno() == libc::ENOENT {
                    Ok(None)
                } else {
                    Err(e)
                }
            })?
            else {
                continue; // pinned (or gone)
            };
            if !self
                .unlink_ref(&work, &entry)
                .map_err(|e| e.context(context()))?
            {
                continue;
            }
            let refs = naming.entry(entry.name.clone()).or_default();
            *refs = refs.saturating_sub(1);
            if *refs == 0 {
                gc::remove_locked(&object, &held).map_err(|e| e.context(context()))?;
                tree::remove_tree(&self.inner.meta.join(&entry.name))
                    .map_err(|e| e.context(context()))?;
                total -= size;
                report.freed += size;
            }
            report.evicted.push(entry.id);
        }
        self.write_total(total).map_err(|e| e.context(context()))?;
        Ok(report)
    }

    /// Removes `refs/<id>` if it still names `objects/<name>`: it is moved
    /// into the work dir (atomic, as a swap), checked there, and put back
    /// (unless a newer one took its place) if a commit replaced it meanwhile.
    fn unlink_ref(&self, work: &crate::tempdir::TempDir, entry: &RefEntry) -> Result<bool> {
        let id = CString::new(entry.id.as_str()).map_err(|_| Error::invalid("bad id"))?;
        let fail = |what: &str, e: Errno| {
            Error::sys(
                format_args!("{what} {}", self.inner.refs.join(&entry.id).display()),
                e,
            )
        };
        match renameat(&self.inner.refs_dir, id.as_c_str(), work.fd(), c"ref") {
            Ok(()) => {}
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(fail("cannot remove ref", e)),
        }
        let moved = std::fs::read_link(work.path().join("ref")).ok();
        let expected = format!("../objects/{}", entry.name);
        if moved.is_some_and(|t| t.as_os_str() == expected.as_str()) {
            unlinkat(work.fd(), c"ref", UnlinkatFlags::NoRemoveDir)
                .map_err(|e| fail("cannot remove ref", e))?;
            return Ok(true);
        }
        match renameat2(
            work.fd(),
            c"ref",
            &self.inner.refs_dir,
            id.as_c_str(),
            RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) | Err(Errno::EEXIST) => {
                let _ = unlinkat(work.fd(), c"ref", UnlinkatFlags::NoRemoveDir);
                Ok(false)
            }
            Err(e) => Err(fail("cannot put back ref", e)),
        }
    }

    /// The exact total: the sum of the sizes of the objects refs name.
    fn exact_total(&self) -> Result<u64> {
        let (entries, _) = self.ref_entries()?;
        let mut seen = std::collections::HashSet::new();
        let mut total = 0;
        for e in entries {
            if seen.insert(e.name.clone()) {
                total += self.object_info(&e.name)?.0.size;
            }
        }
        Ok(total)
    }

    /// The running total, if it was written in this boot.
    fn read_total(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.inner.meta.join(TOTAL)).ok()?;
        let (boot, total) = text.trim().split_once(' ')?;
        (boot == boot_id()).then(|| total.parse().ok()).flatten()
    }

    fn write_total(&self, total: u64) -> Result<()> {
        let text = format!("{} {total}\n", boot_id());
        std::fs::write(self.inner.meta.join(TOTAL), text)
            .map_err(|e| Error::path("cannot write", &self.inner.meta.join(TOTAL), e))
    }

    /// Drops the running total (the bound changed): the next commit sums
    /// the objects afresh.
    pub(crate) fn forget_total(&self) -> Result<()> {
        let _lock = DirLock::exclusive(&self.inner.meta)?;
        match std::fs::remove_file(self.inner.meta.join(TOTAL)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::path(
                "cannot remove",
                &self.inner.meta.join(TOTAL),
                e,
            )),
            _ => Ok(()),
        }
    }
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), read once.
fn boot_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    })
}

/// Loads the settings for a commit.
pub(crate) fn commit_settings(store: &Store) -> Result<Settings> {
    store
        .inner
        .settings
        .load(store.inner.root_dir.as_fd(), &store.inner.root)
}
