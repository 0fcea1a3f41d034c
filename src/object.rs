//! Objects: a tree under an id, in WRITE or READ mode.

use std::path::{Path, PathBuf};

use crate::cache::ObjectCache;
use crate::error::{Error, Result};
use crate::lock::DirLock;
use crate::store::Store;
use crate::tempdir::TempDir;
use crate::tree;

/// Whether an object's tree may still be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Finalized or committed: the tree is not to be changed.
    Read,
    /// Being built: the tree is the caller's to write.
    Write,
}

/// What an object handle owns, which decides what releasing it does.
#[derive(Debug)]
pub(crate) enum Holding {
    /// A work dir in `tmp/` holding the tree at `<workdir>/object`; removed
    /// with the handle.
    Work(TempDir),
    /// A lock on a committed tree in `objects/`, so that garbage collection
    /// leaves it alone while the handle lives.
    Committed(#[expect(dead_code, reason = "held for the lock, released on drop")] DirLock),
    /// A view of another handle's floating tree; owns nothing.
    View,
}

/// An object of a [`Store`]: an id, a mode and a tree (a directory path the
/// caller reads and writes with ordinary file I/O).
#[derive(Debug)]
pub struct Object {
    pub(crate) store: Store,
    pub(crate) id: String,
    pub(crate) mode: Mode,
    pub(crate) tree: PathBuf,
    pub(crate) holding: Holding,
    /// Key in the store's floating registry while this is a floating object.
    pub(crate) floating_key: Option<u64>,
    /// Creation time, metadata, base and source epoch (see [`crate::cache`]).
    pub(crate) cache: ObjectCache,
}

impl Object {
    /// The object's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The object's mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The path of the object's tree.
    pub fn tree(&self) -> &Path {
        &self.tree
    }

    /// Copies the whole of `base`'s tree into this object's tree, with the
    /// fidelity of `cp -a`, and takes over `base`'s creation time and
    /// metadata. The object must be in WRITE mode. Using a committed base
    /// counts as a use of it.
    ///
    /// On failure (e.g. `ENOSPC`) what was copied until then stays in this
    /// object's tree, which is then partial: release the object or empty its
    /// tree before using it. Nothing outside the object's work dir changes.
    pub fn init(&mut self, base: &Object) -> Result<()> {
        self.require_write("init")?;
        let what = format!("cannot initialise {:?} from {:?}", self.id, base.id);
        let context = || what.clone();
        if let Some(name) = base.committed_name() {
            self.store.record_use(name);
        }
        tree::copy_tree(&base.tree, &self.tree).map_err(|e| e.context(context()))?;
        self.inherit(base).map_err(|e| e.context(context()))
    }

    /// WRITE becomes READ; the tree stays where it is. An object that was
    /// never committed is then "floating": the store's look-ups find it.
    /// Finalizing a READ object does nothing. With a source epoch, the
    /// tree's timestamps are clamped first (see
    /// [`Object::set_source_epoch`]); on failure the object stays WRITE.
    pub fn finalize(&mut self) -> Result<()> {
        if self.mode == Mode::Write {
            self.clamp_times()?;
            self.mode = Mode::Read;
            if matches!(self.holding, Holding::Work(_)) {
                self.floating_key = Some(self.store.register_floating(&self.id, &self.tree));
            }
        }
        Ok(())
    }

    /// Clamps the tree's timestamps to the source epoch, if there is one.
    pub(crate) fn clamp_times(&self) -> Result<()> {
        if let Some(epoch) = self.cache.source_epoch {
            let clamp = tree::Clamp {
                epoch,
                since: self.created()?,
            };
            tree::measure_tree(&self.tree, Some(clamp))?;
        }
        Ok(())
    }

    /// Copies the tree's contents into the existing directory `to`, with the
    /// fidelity of `cp -a`. On failure what was copied until then stays in
    /// `to`.
    ///
    /// Exporting a committed object counts as a use of it.
    pub fn export(&self, to: &Path) -> Result<()> {
        if let Some(name) = self.committed_name() {
            self.store.record_use(name);
        }
        let meta = std::fs::metadata(to).map_err(|e| Error::path("cannot export to", to, e))?;
        if !meta.is_dir() {
            return Err(Error::new(
                libc::ENOTDIR,
                format!("cannot export to {}: not a directory", to.display()),
            ));
        }
        tree::copy_tree(&self.tree, to)
            .map_err(|e| e.context(format!("cannot export {:?} to {}", self.id, to.display())))
    }

    pub(crate) fn require_write(&self, what: &str) -> Result<()> {
        if self.mode != Mode::Write {
            return Err(Error::invalid(format!(
                "cannot {what} object {:?}: it is in READ mode",
                self.id
            )));
        }
        Ok(())
    }

    /// Leaves the floating registry (on commit or release).
    pub(crate) fn stop_floating(&mut self) {
        if let Some(key) = self.floating_key.take() {
            self.store.unregister_floating(&self.id, key);
        }
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        self.stop_floating();
        // `holding` drops next: a work dir is removed, a lock released.
    }
}
