//! The registry of floating objects: finalized objects that were never
//! committed, which look-ups find by id while their handle lives.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::{Store, lock_ignoring_poison};

impl Store {
    /// The tree of the newest floating object with `id`, if any (no I/O).
    pub fn floating_tree(&self, id: &str) -> Option<PathBuf> {
        let floating = lock_ignoring_poison(&self.inner.floating);
        floating
            .get(id)
            .and_then(|v| v.last())
            .map(|(_, tree)| tree.clone())
    }

    pub(crate) fn register_floating(&self, id: &str, tree: &Path) -> u64 {
        let key = self.inner.next_key.fetch_add(1, Ordering::Relaxed);
        let mut floating = lock_ignoring_poison(&self.inner.floating);
        floating
            .entry(id.to_owned())
            .or_default()
            .push((key, tree.to_path_buf()));
        key
    }

    pub(crate) fn unregister_floating(&self, id: &str, key: u64) {
        let mut floating = lock_ignoring_poison(&self.inner.floating);
        if let Some(entries) = floating.get_mut(id) {
            entries.retain(|(k, _)| *k != key);
            if entries.is_empty() {
                floating.remove(id);
            }
        }
    }
}
