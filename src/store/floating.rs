//! The registry of floating objects: finalized objects that were never
//! committed, which look-ups find by id while their handle lives.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::lock_ignoring_poison;
use crate::ids::{ObjectId, ObjectIdBuf};

/// Floating objects by id: (registration key, tree), newest last. One per
/// store; an object holds its store's registry, which is also how the store
/// recognises its own objects.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    entries: Mutex<HashMap<ObjectIdBuf, Vec<(u64, PathBuf)>>>,
    next_key: AtomicU64,
}

impl Registry {
    /// The tree of the newest floating object with `id`, if any (no I/O).
    pub(crate) fn tree(&self, id: &ObjectId) -> Option<PathBuf> {
        let entries = lock_ignoring_poison(&self.entries);
        entries
            .get(id)
            .and_then(|v| v.last())
            .map(|(_, tree)| tree.clone())
    }

    /// Enters the object `id` with its tree; it stays until the returned
    /// registration is dropped.
    pub(crate) fn register(self: &Arc<Self>, id: &ObjectId, tree: &Path) -> Registration {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        lock_ignoring_poison(&self.entries)
            .entry(id.to_owned())
            .or_default()
            .push((key, tree.to_path_buf()));
        Registration {
            registry: Arc::clone(self),
            id: id.to_owned(),
            key,
        }
    }
}

/// An object's entry in the registry; leaves it when dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Arc<Registry>,
    id: ObjectIdBuf,
    key: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut entries = lock_ignoring_poison(&self.registry.entries);
        if let Some(list) = entries.get_mut(&*self.id) {
            list.retain(|(k, _)| *k != self.key);
            if list.is_empty() {
                entries.remove(&*self.id);
            }
        }
    }
}
