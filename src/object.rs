//! Objects: a tree under an id, in WRITE or READ mode.
//!
//! An object changes state only through its own methods: the store hands
//! it a new tree and lock when it commits it ([`Object::committed`]), and
//! the object enters and leaves its store's floating registry itself.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::cache::ObjectCache;
use crate::cache::pins::Pin;
use crate::error::{Error, Result};
use crate::ids::{ObjectId, ObjectIdBuf};
use crate::lock::DirLock;
use crate::log;
use crate::store::Store;
use crate::store::floating::Registration;
use crate::tempdir::TempDir;
use crate::tree::{self, CopyOptions, Totals};

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
enum Holding {
    /// A work dir in `tmp/` holding the tree at `<workdir>/object`; removed
    /// with the handle. While finalized and not committed the object is
    /// also in the floating registry (declared first: it leaves the
    /// registry before its tree goes).
    Work {
        floating: Option<Registration>,
        dir: TempDir,
    },
    /// A lock on a committed tree in `objects/`, so that garbage collection
    /// leaves it alone while the handle lives.
    Committed(#[expect(dead_code, reason = "held for the lock, released on drop")] DirLock),
    /// A pin on a committed tree in `objects/` that a look-up found (see
    /// [`crate::cache::pins`]).
    Pinned(#[expect(dead_code, reason = "held for the pin, released on drop")] Pin),
    /// A view of another handle's tree; owns nothing.
    View,
}

/// An object of a [`crate::Store`]: an id, a mode and a tree (a directory
/// path the caller reads and writes with ordinary file I/O).
#[derive(Debug)]
pub struct Object {
    id: ObjectIdBuf,
    mode: Mode,
    tree: PathBuf,
    holding: Holding,
    /// Creation time, metadata, base and source epoch (see [`crate::cache`]).
    cache: ObjectCache,
}

impl Object {
    fn new(
        id: ObjectIdBuf,
        mode: Mode,
        tree: PathBuf,
        holding: Holding,
        cache: ObjectCache,
    ) -> Object {
        Object {
            id,
            mode,
            tree,
            holding,
            cache,
        }
    }

    /// A WRITE object whose tree is `tree`, inside the work dir `dir`.
    pub(crate) fn in_work_dir(
        id: ObjectIdBuf,
        tree: PathBuf,
        dir: TempDir,
        cache: ObjectCache,
    ) -> Object {
        let holding = Holding::Work {
            floating: None,
            dir,
        };
        Object::new(id, Mode::Write, tree, holding, cache)
    }

    /// A READ view of `tree`, owning nothing.
    pub(crate) fn view(id: ObjectIdBuf, tree: PathBuf, cache: ObjectCache) -> Object {
        Object::new(id, Mode::Read, tree, Holding::View, cache)
    }

    /// A READ handle of the committed tree `tree`, pinned by `pin`.
    pub(crate) fn pinned(id: ObjectIdBuf, tree: PathBuf, pin: Pin, cache: ObjectCache) -> Object {
        Object::new(id, Mode::Read, tree, Holding::Pinned(pin), cache)
    }

    /// `objects/<name>` for a committed object (one this handle committed
    /// or got from a ref), else `None`.
    pub(crate) fn committed_name(&self) -> Option<&str> {
        match self.holding {
            Holding::Committed(_) | Holding::Pinned(_) => {
                self.tree.file_name().and_then(|n| n.to_str())
            }
            _ => None,
        }
    }

    /// The cache's part of the handle.
    pub(crate) fn cache(&self) -> &ObjectCache {
        &self.cache
    }

    /// The cache's part of the handle, to change.
    pub(crate) fn cache_mut(&mut self) -> &mut ObjectCache {
        &mut self.cache
    }

    /// The object's id.
    pub fn id(&self) -> &ObjectId {
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

    /// Whether the object belongs to the store handle `store` (or a clone).
    pub(crate) fn belongs_to(&self, store: &Store) -> bool {
        self.cache.store().is_same(store)
    }

    /// The work dir holding the tree, while the tree is a work tree.
    pub(crate) fn work_dir(&self) -> Option<&TempDir> {
        match &self.holding {
            Holding::Work { dir, .. } => Some(dir),
            _ => None,
        }
    }

    /// The tree was moved into the store as `tree`, locked by `lock`: the
    /// object becomes READ, leaves the floating registry and lets its
    /// (now empty) work dir go.
    pub(crate) fn committed(&mut self, tree: PathBuf, lock: DirLock) {
        self.mode = Mode::Read;
        self.tree = tree;
        self.holding = Holding::Committed(lock);
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
        self.init_with(base, CopyOptions::default())
    }

    /// [`Object::init`] with progress reports and cancellation (see
    /// [`CopyOptions`]); a cancelled init leaves the tree as it was before.
    pub fn init_with(&mut self, base: &Object, options: CopyOptions<'_>) -> Result<()> {
        self.require_write("init")?;
        let what = self.start_init(base);
        if options.progress.is_none() && !options.caller_owns && self.snapshot_of(base) {
            return self.inherit(base).map_err(|e| e.context(&what));
        }
        let totals = base.known_totals();
        tree::copy_tree_with(&base.tree, &self.tree, options, totals)
            .map_err(|e| e.context(&what))?;
        self.inherit(base).map_err(|e| e.context(&what))
    }

    /// What an `init` from `base` does first: record the use of `base` (a
    /// committed object); returns the context for its errors.
    fn start_init(&self, base: &Object) -> String {
        if let Some(name) = base.committed_name() {
            base.cache.record_use(name);
        }
        format!(
            "cannot initialise {:?} from {:?}",
            self.id.as_str(),
            base.id.as_str()
        )
    }

    /// [`Object::init`] of an object the store made to commit a copy of
    /// `base` (its tree is never handed to a caller): the copy also takes
    /// `base`'s source epoch, is clamped to it, and is measured as it is
    /// made. Returns the measure, or `None` when the tree is a btrfs
    /// snapshot (not walked, so not measured).
    pub(crate) fn init_for_commit(&mut self, base: &Object) -> Result<Option<tree::Measure>> {
        let what = self.start_init(base);
        self.cache_mut().source_epoch = base.cache().source_epoch;
        let measure = if self.snapshot_of(base) {
            None
        } else {
            let clamp = base.clamp().map_err(|e| e.context(&what))?;
            let copied = tree::copy::copy_tree_measured(&base.tree, &self.tree, clamp);
            Some(copied.map_err(|e| e.context(&what))?)
        };
        self.inherit(base).map_err(|e| e.context(&what))?;
        Ok(measure)
    }

    /// On btrfs, makes this object's empty work tree a snapshot of `base`'s
    /// tree when it can be one (see [`tree::btrfs::snapshot_into`]); logs
    /// why not when `base` is on btrfs.
    fn snapshot_of(&self, base: &Object) -> bool {
        // Only a work dir on btrfs can hold a snapshot (known once per store).
        let Holding::Work { dir: workdir, .. } = &self.holding else {
            return false;
        };
        if !self.cache.store().tmp_on_btrfs() {
            return false;
        }
        let Some(name) = self.tree.file_name() else {
            return false;
        };
        let Ok(name) = CString::new(name.as_bytes()) else {
            return false;
        };
        match tree::btrfs::snapshot_into(&base.tree, workdir.fd(), &name) {
            Ok(done) => done,
            Err(e) => {
                log::debug(format_args!(
                    "init of {:?} from {:?}: no snapshot ({e}): copying file by file",
                    self.id, base.id
                ));
                false
            }
        }
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
            if let Holding::Work { floating, .. } = &mut self.holding {
                *floating = Some(self.cache.store().floating().register(&self.id, &self.tree));
            }
        }
        Ok(())
    }

    /// Copies the tree's contents into the existing directory `to`, with the
    /// fidelity of `cp -a`. On failure what was copied until then stays in
    /// `to`.
    ///
    /// Exporting a committed object counts as a use of it.
    pub fn export(&self, to: &Path) -> Result<()> {
        self.export_with(to, CopyOptions::default())
    }

    /// [`Object::export`] with progress reports, cancellation and a choice
    /// of owners (see [`CopyOptions`]); a cancelled export removes what it
    /// added to `to`.
    pub fn export_with(&self, to: &Path, options: CopyOptions<'_>) -> Result<()> {
        if let Some(name) = self.committed_name() {
            self.cache.record_use(name);
        }
        let meta = std::fs::metadata(to).map_err(|e| Error::path("cannot export to", to, e))?;
        if !meta.is_dir() {
            return Err(Error::new(
                libc::ENOTDIR,
                format!("cannot export to {}: not a directory", to.display()),
            ));
        }
        tree::copy_tree_with(&self.tree, to, options, self.known_totals()).map_err(|e| {
            e.context(format!(
                "cannot export {:?} to {}",
                self.id.as_str(),
                to.display()
            ))
        })
    }

    /// The progress totals of a copy from this object, where known without
    /// walking the tree: a committed object's sidecar records its entries
    /// (the root among them, which a copy does not count). Its recorded
    /// size is allocated bytes, not the file bytes a copy reports, so the
    /// byte total stays 0 ("not known").
    fn known_totals(&self) -> Totals {
        match self.committed_name().map(|_| self.info()) {
            Some(Ok(info)) => Totals {
                files: info.files.saturating_sub(1),
                bytes: 0,
            },
            _ => Totals::default(),
        }
    }

    fn require_write(&self, what: &str) -> Result<()> {
        if self.mode != Mode::Write {
            return Err(Error::invalid(format!(
                "cannot {what} object {:?}: it is in READ mode",
                self.id.as_str()
            )));
        }
        Ok(())
    }
}
