//! Look-ups: whether an id is in the store, its object, its tree, and
//! pinning a tree against collection.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::{Store, lock_ignoring_poison};
use crate::error::{Error, Result};
use crate::ids;
use crate::lock::DirLock;
use crate::object::{Holding, Object};

impl Store {
    /// `true` for a floating object with `id`, else whether `refs/<id>`
    /// resolves to an existing tree (a use of that object). An empty id is
    /// never contained.
    pub fn contains(&self, id: &str) -> Result<bool> {
        if id.is_empty() {
            return Ok(false);
        }
        ids::check_id(id)?;
        if self.floating_tree(id).is_some() {
            return Ok(true);
        }
        self.contains_cached(id)
    }

    /// Whether `refs/<id>` and its target exist (`id` valid), answered from
    /// the ref cache when nothing changed since the last look-up.
    pub(crate) fn ref_resolves(&self, id: &str) -> Result<bool> {
        lock_ignoring_poison(&self.inner.ref_cache).resolves(id, || self.stat_ref(id))
    }

    /// Whether `refs/<id>` and its target exist, asked of the filesystem;
    /// errors other than a missing entry (e.g. `EACCES`) are reported, not
    /// taken for "absent". `id` must be valid (checked by the caller).
    fn stat_ref(&self, id: &str) -> Result<bool> {
        // A valid id has at most 255 bytes and no NUL: build the C string
        // on the stack, since this is the hot path of every look-up.
        let mut name = [0u8; ids::MAX_NAME_BYTES + 1];
        name[..id.len()].copy_from_slice(id.as_bytes());
        // SAFETY: an all-zero `stat` is a valid value for fstatat to fill.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `name` is NUL-terminated, `st` is writable, `refs_dir` open.
        let r = unsafe {
            libc::fstatat(
                self.inner.refs_dir.as_raw_fd(),
                name.as_ptr().cast(),
                &mut st,
                0,
            )
        };
        if r == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR) => Ok(false),
            _ => Err(Error::path("cannot look up", &self.inner.refs.join(id), e)),
        }
    }

    /// The floating READ object with `id` if there is one (a view of it),
    /// else a READ object for the committed object `refs/<id>` names, else
    /// `None`.
    ///
    /// A committed object's handle names the object itself
    /// (`objects/<name>`), not the ref, and pins it: while the handle lives
    /// no eviction or collection in any process removes it, even when a
    /// later commit replaces the ref. The look-up counts as a use.
    pub fn get(&self, id: &str) -> Result<Option<Object>> {
        ids::check_id(id)?;
        if let Some(tree) = self.floating_tree(id) {
            return Ok(Some(self.read_object(id, tree, Holding::View)));
        }
        let context = || format!("cannot get object {id:?}");
        if !self.ref_resolves(id).map_err(|e| e.context(context()))? {
            return Ok(None);
        }
        let Some((name, pin)) = self.pin_ref(id).map_err(|e| e.context(context()))? else {
            return Ok(None);
        };
        self.record_use(&name);
        let tree = self.inner.objects.join(&name);
        Ok(Some(self.read_object(id, tree, Holding::Committed(pin))))
    }

    /// The tree path that `read-tree` hands out for `id`: the floating
    /// object's tree or `refs/<id>` when it resolves (a use of the object it
    /// names); `None` when unknown.
    pub fn lookup_tree(&self, id: &str) -> Result<Option<PathBuf>> {
        ids::check_id(id)?;
        if let Some(tree) = self.floating_tree(id) {
            return Ok(Some(tree));
        }
        if !self.ref_resolves(id)? {
            return Ok(None);
        }
        if let Some(name) = self.ref_name(id)? {
            self.record_use(&name);
        }
        Ok(Some(self.inner.refs.join(id)))
    }

    /// Pins the tree at `tree` (from [`Store::lookup_tree`]) against
    /// garbage collection for as long as the returned lock lives, e.g. while
    /// it is mounted somewhere: a later commit may unname the object, but
    /// nobody removes it under the mount. Through a ref, the object pinned
    /// is the one the ref names now; the lock's descriptor is that tree.
    ///
    /// Takes no store-wide lock: a collection under way delays this by its
    /// re-reading of the refs at most (see [`crate::lock`]).
    pub fn pin_tree(&self, tree: &Path) -> Result<DirLock> {
        let mut pause = std::time::Duration::from_micros(50);
        loop {
            if let Some(lock) = DirLock::try_shared_following(tree)? {
                if lock.is_at(tree)? {
                    return Ok(lock);
                }
                // The ref moved on before the lock was taken: pin its new
                // target instead.
                continue;
            }
            // A collector holds the object: either it is checking whether a
            // ref names it (it lets go within that check), or the ref has
            // moved on and the object is being removed (the next resolution
            // finds the new one).
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(2));
        }
    }

    /// The path `refs/<id>`, whether or not it exists.
    pub fn resolve_ref(&self, id: &str) -> Result<PathBuf> {
        ids::check_id(id)?;
        Ok(self.inner.refs.join(id))
    }
}
