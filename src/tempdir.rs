//! Owned, locked directories inside the store's `tmp/`.
//!
//! Work dirs of objects, temp dirs handed to callers, the host tree and the
//! server's private root are all [`TempDir`]s: a fresh directory named
//! `<prefix><random><suffix>`, locked by its owner (see [`crate::lock`]) and
//! removed, whatever a build left in it, when the owner drops it.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::lock::DirLock;
use crate::tree;

/// Characters of the random part of a name, as `mkdtemp` implementations use.
const NAME_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_";
const RANDOM_LEN: usize = 8;
const ATTEMPTS: usize = 100;

/// A directory that its owner removes on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    // Held until the directory is removed, so a collector never takes it.
    lock: Option<DirLock>,
}

impl TempDir {
    /// Creates `<parent>/<prefix><random><suffix>` with mode 0700 and locks
    /// it. `store_lock` is the store-wide lock directory (`tmp/`), held
    /// shared while the new entry is not yet locked.
    pub fn create_in(
        parent: &Path,
        store_lock: &Path,
        prefix: &[u8],
        suffix: &[u8],
    ) -> Result<TempDir> {
        let _creating = DirLock::shared(store_lock)
            .map_err(|e| e.context(format!("cannot create a directory in {}", parent.display())))?;
        let path = create_unique_dir(parent, prefix, suffix)?;
        let lock = DirLock::shared(&path).inspect_err(|_| {
            // Not ours without the lock: leave no stray entry.
            let _ = std::fs::remove_dir(&path);
        })?;
        Ok(TempDir {
            path,
            lock: Some(lock),
        })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory and everything in it now, reporting failure.
    pub fn remove(mut self) -> Result<()> {
        self.remove_now()
    }

    fn remove_now(&mut self) -> Result<()> {
        if self.lock.is_none() {
            return Ok(());
        }
        // An empty directory (a work dir whose tree was committed) goes with
        // one rmdir; anything else takes the full removal.
        let result = match std::fs::remove_dir(&self.path) {
            Ok(()) => Ok(()),
            Err(_) => tree::remove_tree(&self.path),
        };
        // Unlock only once the directory is gone (or could not be removed,
        // in which case the collector may try again later).
        self.lock = None;
        result
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Errors cannot be reported from drop; what is left is reclaimed by
        // the next garbage collection, since the lock is released.
        let _ = self.remove_now();
    }
}

/// Creates a fresh directory `<parent>/<prefix><random><suffix>` with mode
/// 0700, as `mkdtemp(3)` does, and returns its path.
pub fn create_unique_dir(parent: &Path, prefix: &[u8], suffix: &[u8]) -> Result<PathBuf> {
    for _ in 0..ATTEMPTS {
        let mut name = Vec::with_capacity(prefix.len() + RANDOM_LEN + suffix.len());
        name.extend_from_slice(prefix);
        name.extend_from_slice(random_name().as_bytes());
        name.extend_from_slice(suffix);
        let path = parent.join(OsString::from_vec(name));
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::path("cannot create directory", &path, e)),
        }
    }
    Err(Error::new(
        libc::EEXIST,
        format!("no free temporary name in {}", parent.display()),
    ))
}

/// Eight random characters from [`NAME_CHARS`].
pub fn random_name() -> String {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..RANDOM_LEN]
        .iter()
        .map(|b| NAME_CHARS[*b as usize % NAME_CHARS.len()] as char)
        .collect()
}
