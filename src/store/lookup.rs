//! Look-ups: whether an id is in the store, its object, its tree, and
//! pinning a tree against collection.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::{Store, lock_ignoring_poison};
use crate::error::{Error, Result};
use crate::ids::{self, ObjectId, ToObjectId};
use crate::lock::DirLock;
use crate::object::Object;

impl Store {
    /// `true` for a floating object with `id`, else whether `refs/<id>`
    /// resolves to an existing tree. An empty id is never contained.
    pub fn contains(&self, id: &(impl ToObjectId + ?Sized)) -> Result<bool> {
        if id.is_empty_id() {
            return Ok(false);
        }
        let id = id.to_object_id()?;
        if self.floating_tree(&id).is_some() {
            return Ok(true);
        }
        self.ref_resolves(&id)
    }

    /// Whether `refs/<id>` and its target exist (`id` valid), answered from
    /// the ref cache when nothing changed since the last look-up.
    fn ref_resolves(&self, id: &ObjectId) -> Result<bool> {
        lock_ignoring_poison(&self.inner.ref_cache).resolves(id, || self.stat_ref(id))
    }

    /// Whether `refs/<id>` and its target exist, asked of the filesystem;
    /// errors other than a missing entry (e.g. `EACCES`) are reported, not
    /// taken for "absent".
    fn stat_ref(&self, id: &ObjectId) -> Result<bool> {
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
            _ => Err(Error::path("cannot look up", &self.ref_path(id), e)),
        }
    }

    /// The floating READ object with `id` if there is one (a view of it),
    /// else a READ object whose tree is `refs/<id>` when that resolves, else
    /// `None`.
    ///
    /// The handle pins nothing: its tree is the ref's path, which shows
    /// whatever the ref names at the time, so an object that a later commit
    /// unnames may be collected. (A work tree, or a tree committed by move,
    /// stays locked by the handle that owns it.)
    pub fn get(&self, id: &(impl ToObjectId + ?Sized)) -> Result<Option<Object>> {
        let id = id.to_object_id()?;
        Ok(self
            .lookup_tree(id.as_ref())?
            .map(|tree| self.view(&id, tree)))
    }

    /// The tree path that `read-tree` hands out for `id`: the floating
    /// object's tree or `refs/<id>` when it resolves; `None` when unknown.
    pub fn lookup_tree(&self, id: &(impl ToObjectId + ?Sized)) -> Result<Option<PathBuf>> {
        let id = id.to_object_id()?;
        if let Some(tree) = self.floating_tree(&id) {
            return Ok(Some(tree));
        }
        let found = self
            .ref_resolves(&id)
            .map_err(|e| e.context(format!("cannot look up object {:?}", id.as_str())))?;
        Ok(found.then(|| self.ref_path(&id)))
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
    pub fn resolve_ref(&self, id: &(impl ToObjectId + ?Sized)) -> Result<PathBuf> {
        Ok(self.ref_path(id.to_object_id()?.as_ref()))
    }

    pub(super) fn ref_path(&self, id: &ObjectId) -> PathBuf {
        self.inner.refs.join(id.as_str())
    }
}
