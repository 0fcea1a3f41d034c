//! Objects: a tree under an id, in WRITE or READ mode.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::lock::DirLock;
use crate::log;
use crate::store::Store;
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
    /// fidelity of `cp -a`. The object must be in WRITE mode.
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
        if options.progress.is_none() && !options.caller_owns && self.snapshot_of(base) {
            return Ok(());
        }
        let totals = base.known_totals();
        tree::copy_tree_with(&base.tree, &self.tree, options, totals).map_err(|e| {
            e.context(format!(
                "cannot initialise {:?} from {:?}",
                self.id, base.id
            ))
        })
    }

    /// On btrfs, makes this object's empty work tree a snapshot of `base`'s
    /// tree when it can be one (see [`tree::btrfs::snapshot_into`]); logs
    /// why not when `base` is on btrfs.
    fn snapshot_of(&self, base: &Object) -> bool {
        let Holding::Work(workdir) = &self.holding else {
            return false;
        };
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
    /// Finalizing a READ object does nothing.
    pub fn finalize(&mut self) {
        if self.mode == Mode::Write {
            self.mode = Mode::Read;
            if matches!(self.holding, Holding::Work(_)) {
                self.floating_key = Some(self.store.register_floating(&self.id, &self.tree));
            }
        }
    }

    /// Copies the tree's contents into the existing directory `to`, with the
    /// fidelity of `cp -a`. On failure what was copied until then stays in
    /// `to`.
    pub fn export(&self, to: &Path) -> Result<()> {
        self.export_with(to, CopyOptions::default())
    }

    /// [`Object::export`] with progress reports, cancellation and a choice
    /// of owners (see [`CopyOptions`]); a cancelled export removes what it
    /// added to `to`.
    pub fn export_with(&self, to: &Path, options: CopyOptions<'_>) -> Result<()> {
        let meta = std::fs::metadata(to).map_err(|e| Error::path("cannot export to", to, e))?;
        if !meta.is_dir() {
            return Err(Error::new(
                libc::ENOTDIR,
                format!("cannot export to {}: not a directory", to.display()),
            ));
        }
        tree::copy_tree_with(&self.tree, to, options, self.known_totals())
            .map_err(|e| e.context(format!("cannot export {:?} to {}", self.id, to.display())))
    }

    /// The size and entry count of the tree, where known without walking
    /// it: the progress totals of a copy from it. Nothing is recorded yet
    /// (0, "not known"); once the store records the size and entry count of
    /// each committed object (the cache, issue 11), they are passed in here.
    fn known_totals(&self) -> Totals {
        Totals::default()
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
