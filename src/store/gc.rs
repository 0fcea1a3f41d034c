//! Garbage collection: reclaiming abandoned entries of `tmp/` and objects
//! that no ref names.

use std::collections::HashSet;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::Store;
use super::cached::is_generated_name;
use crate::error::{Error, Result};
use crate::lock::DirLock;
use crate::log;
use crate::mount;
use crate::tempdir;
use crate::tree;

/// What [`Store::gc`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Entries of `tmp/` and `objects/` removed.
    pub removed: usize,
}

impl Store {
    /// Removes what nobody can use any more: entries of `tmp/` that osstore
    /// made and no live handle (in any process) holds, and objects that no
    /// ref names and no live handle holds. Mounts left inside abandoned
    /// entries are detached. Names osstore never generates are left alone
    /// in `tmp/`, `objects/` and `meta/`.
    ///
    /// Creating objects and temp dirs, committing, look-ups and pinning go
    /// on while a collection runs (see [`crate::lock`]). An entry that cannot be removed does not stop the
    /// sweep: everything else is collected and then the first such error is
    /// returned.
    pub fn gc(&self) -> Result<GcReport> {
        self.require_writable("collect garbage")?;
        let context = || format!("cannot collect garbage in {}", self.inner.root.display());
        let _sweeping = DirLock::exclusive(&self.inner.tmp).map_err(|e| e.context(context()))?;
        let mut report = GcReport::default();
        let free_before = log::enabled(log::Level::Info).then(|| free_bytes(&self.inner.tmp));
        // One entry that cannot be removed (another user's, a busy mount)
        // does not stop the sweep; the first such error is reported at the
        // end.
        let mut first_error = None;
        let mut note = |path: &Path, result: Result<bool>| match result {
            Ok(true) => {
                log::debug(format_args!("gc removed {}", path.display()));
                report.removed += 1;
            }
            Ok(false) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        };
        for (path, is_dir) in list_dir(&self.inner.tmp).map_err(|e| e.context(context()))? {
            note(&path, reclaim(&path, is_dir));
        }
        // Objects only once every ref could be read: a ref that cannot be
        // read might name any of them.
        let named = self.names_in_refs().map_err(|e| e.context(context()))?;
        // Only names osstore generates: a stranger's entry stays.
        let unnamed: Vec<(PathBuf, bool)> = list_dir(&self.inner.objects)
            .map_err(|e| e.context(context()))?
            .into_iter()
            .filter(|(path, is_dir)| {
                *is_dir
                    && path.file_name().is_some_and(|n| {
                        is_generated_name(n.as_bytes()) && !named.contains(n.as_bytes())
                    })
            })
            .collect();
        for batch in unnamed.chunks(OBJECT_BATCH) {
            let mut locked = Vec::new();
            for (path, _) in batch {
                match lock_unowned(path) {
                    Ok(Some(lock)) => locked.push((path, lock)),
                    Ok(None) => {}
                    Err(e) => note(path, Err(e)),
                }
            }
            if locked.is_empty() {
                continue;
            }
            // Read the refs again now that these objects are locked: a
            // commit holds its tree from before it enters `objects/` until
            // its ref names it, so one that ended after the first reading
            // shows its ref now, and none can still be under way.
            let named = self.names_in_refs().map_err(|e| e.context(context()))?;
            // Objects a ref names are let go of before anything is removed:
            // pinning one waits for exactly this (see `crate::lock`).
            let doomed: Vec<_> = locked
                .into_iter()
                .filter(|(path, _)| {
                    path.file_name()
                        .is_none_or(|n| !named.contains(n.as_bytes()))
                })
                .collect();
            for (path, lock) in doomed {
                // A look-up that pinned it on the board before the ref
                // changed (it finds the change and lets go, see
                // `crate::cache::pinboard`) or holds it since.
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                match self.pinned_on_board(name) {
                    Ok(false) => note(path, remove_locked(path, &lock).map(|()| true)),
                    Ok(true) => {}
                    Err(e) => note(path, Err(e)),
                }
            }
        }
        // Sidecars whose object is gone (removed by a collection or an
        // eviction that was killed). A commit moves its tree into
        // `objects/` before its sidecar into `meta/`, so a sidecar listed
        // here whose object is missing afterwards has none.
        for (path, is_dir) in list_dir(&self.inner.meta).map_err(|e| e.context(context()))? {
            let Some(name) = path.file_name() else {
                continue;
            };
            if is_dir
                && is_generated_name(name.as_bytes())
                && std::fs::symlink_metadata(self.inner.objects.join(name)).is_err()
            {
                // Not counted: the report counts trees.
                note(&path, tree::remove_tree(&path).map(|()| false));
            }
        }
        // What failed pulls left for a second try, once no pull runs; the
        // registry records of objects that are gone.
        if let Err(e) = crate::registry::reclaim(&self.inner.root) {
            first_error.get_or_insert(e);
        }
        if let Some(before) = free_before.filter(|_| report.removed > 0) {
            let freed = free_bytes(&self.inner.tmp).saturating_sub(before);
            let n = report.removed;
            log::info(format_args!("gc removed {n} entries, {freed} bytes freed"));
        }
        first_error.map_or(Ok(report), Err)
    }

    /// Object names that some ref points at. Fails if a ref cannot be read.
    fn names_in_refs(&self) -> Result<HashSet<Vec<u8>>> {
        let mut named = HashSet::new();
        for (path, _) in list_dir(&self.inner.refs)? {
            match std::fs::read_link(&path) {
                Ok(target) => {
                    if let Some(name) = target.file_name() {
                        named.insert(name.as_bytes().to_vec());
                    }
                }
                // Not a link (names nothing), or removed since listed.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) => {}
                Err(e) => return Err(Error::path("cannot read ref", &path, e)),
            }
        }
        Ok(named)
    }
}

/// How many unnamed objects a collection locks before it reads the refs
/// again (bounded: each lock is a descriptor).
const OBJECT_BATCH: usize = 256;

/// Removes one unowned entry of `tmp/`; `false` when somebody holds it, it
/// is gone already or osstore did not make it.
fn reclaim(path: &Path, is_dir: bool) -> Result<bool> {
    // osstore makes only directories in `tmp/`, with names it can tell
    // (see `crate::tempdir`): anything else is a stranger's, locked or not.
    let ours = path
        .file_name()
        .is_some_and(|n| tempdir::is_generated(n.as_bytes()));
    if !is_dir || !ours {
        return Ok(false);
    }
    match lock_unowned(path)? {
        Some(owned) => remove_locked(path, &owned).map(|()| true),
        None => Ok(false),
    }
}

/// An exclusive lock on the directory `path` if nobody holds it; `None`
/// when somebody does or it is gone already.
fn lock_unowned(path: &Path) -> Result<Option<DirLock>> {
    match DirLock::try_exclusive(path) {
        // Owners remove their entries without the store lock, so one listed
        // a moment ago may be gone.
        Err(e) if e.errno() == libc::ENOENT => Ok(None),
        other => other,
    }
}

/// Removes the directory `path`, which the caller holds locked as `lock`, with the
/// mounts left inside it.
pub(super) fn remove_locked(path: &Path, lock: &DirLock) -> Result<()> {
    mount::detach_mounts_below(lock.fd().as_fd())?;
    tree::remove_tree(path)
}

/// Entries of a directory with whether each is a directory (not following
/// symlinks).
fn list_dir(dir: &Path) -> Result<Vec<(PathBuf, bool)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::path("cannot read", dir, e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::path("cannot read", dir, e))?;
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        out.push((entry.path(), is_dir));
    }
    Ok(out)
}

/// Free bytes of the filesystem holding `path` (0 when unknown), for the
/// log: what a collection gave back, as the filesystem counts it.
fn free_bytes(path: &Path) -> u64 {
    nix::sys::statvfs::statvfs(path).map_or(0, |s| s.blocks_available() * s.fragment_size())
}
