//! Look-ups: whether an id is in the store and its object (pinned).

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

use super::cached::RefPin;
use super::{Store, lock_ignoring_poison};
use crate::cache::ObjectCache;
use crate::cache::pins::Pin;
use crate::error::{Error, Result};
use crate::ids::{self, ObjectId, ToObjectId};
use crate::object::Object;

impl Store {
    /// `true` for a floating object with `id`, else whether `refs/<id>`
    /// resolves to an existing tree (a use of that object). An empty id is
    /// never contained.
    pub fn contains(&self, id: &(impl ToObjectId + ?Sized)) -> Result<bool> {
        if id.is_empty_id() {
            return Ok(false);
        }
        let id = id.to_object_id()?;
        if self.floating_tree(id).is_some() {
            return Ok(true);
        }
        self.contains_cached(id)
    }

    /// Whether `refs/<id>` and its target exist (`id` valid), answered from
    /// the ref cache when nothing changed since the last look-up; with the
    /// name of the object the ref names and the ref cache's generation when
    /// the cache knows them.
    pub(crate) fn ref_lookup(
        &self,
        id: &ObjectId,
    ) -> Result<(bool, Option<Arc<str>>, Option<u64>)> {
        lock_ignoring_poison(&self.inner.ref_cache).resolves(id, || self.stat_ref(id))
    }

    /// The ref cache's generation, once pending changes are read.
    pub(crate) fn ref_generation(&self) -> Option<u64> {
        lock_ignoring_poison(&self.inner.ref_cache).generation()
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
    /// else a READ object for the committed object `refs/<id>` names, else
    /// `None`.
    ///
    /// A committed object's handle names the object itself
    /// (`objects/<name>`), not the ref, and pins it: while the handle lives
    /// no eviction or collection in any process removes it, even when a
    /// later commit replaces the ref. The look-up counts as a use.
    pub fn get(&self, id: &(impl ToObjectId + ?Sized)) -> Result<Option<Object>> {
        let id = id.to_object_id()?;
        if let Some(tree) = self.floating_tree(id) {
            return Ok(Some(self.view(id, tree)));
        }
        let context = || format!("cannot get object {:?}", id.as_str());
        // Fast path: the ref cache knows the object's name; it is the
        // object if nothing changed in the store since (checked once it is
        // pinned).
        let peeked = self
            .inner
            .track_use
            .then(|| lock_ignoring_poison(&self.inner.ref_cache).peek(id))
            .flatten();
        if let Some((name, generation)) = peeked {
            if let Some(pin) = self
                .pin_known(&name, generation)
                .map_err(|e| e.context(context()))?
            {
                if self.ref_generation() == Some(generation) {
                    return Ok(Some(self.pinned_object(id, &name, pin)));
                }
            }
        }
        let (found, _, _) = self.ref_lookup(id).map_err(|e| e.context(context()))?;
        if !found {
            return Ok(None);
        }
        if !self.inner.track_use {
            return Ok(Some(self.view(id, self.ref_path(id))));
        }
        let generation = self.ref_generation();
        let Some(RefPin { name, dir, pin }) = self.pin_ref(id).map_err(|e| e.context(context()))?
        else {
            return Ok(None);
        };
        if let (Some(generation), Some(dir)) = (generation, dir) {
            self.inner
                .pins
                .insert(Arc::from(name.as_str()), generation, &dir);
        }
        Ok(Some(self.pinned_object(id, &name, pin)))
    }

    /// Pins `objects/<name>`, which the ref cache named in `generation`,
    /// without reading the ref: on the pin board, else through its
    /// directory if it is open since that generation; `None` when neither
    /// can. The caller checks that the generation is still current.
    fn pin_known(&self, name: &str, generation: u64) -> Result<Option<Pin>> {
        if let Some(board) = self.pin_board().ok().flatten() {
            if let Some(pin) = board.pin(name) {
                return Ok(Some(Pin::Board(pin)));
            }
        }
        match self.inner.pins.get(name, generation) {
            Some(dir) => dir.pin().map(Some),
            None => Ok(None),
        }
    }

    /// A READ handle pinning `objects/<name>`; the look-up is a use of it.
    fn pinned_object(&self, id: &ObjectId, name: &str, pin: Pin) -> Object {
        self.record_use(name);
        let tree = self.inner.objects.join(name);
        Object::pinned(id.to_owned(), tree, pin, ObjectCache::read(self))
    }

    /// The path `refs/<id>`, whether or not it exists.
    pub fn resolve_ref(&self, id: &(impl ToObjectId + ?Sized)) -> Result<PathBuf> {
        Ok(self.ref_path(id.to_object_id()?))
    }

    pub(super) fn ref_path(&self, id: &ObjectId) -> PathBuf {
        self.inner.refs.join(id.as_str())
    }
}
