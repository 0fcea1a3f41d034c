//! Sharing trees through an OCI registry (the contract and the wire format:
//! `docs/registry.md`).
//!
//! [`push`] uploads a committed object as a standard OCI image; [`pull`]
//! commits the flattened root filesystem of any OCI image under an id.
//! Transfers (and the compression of a layer being written) run on threads
//! started for the call and joined before it returns; nothing runs between
//! calls.

mod auth;
mod client;
mod extract;
mod holes;
mod layer;
mod progress;
mod pull;
mod push;
mod record;
mod reference;
mod tarread;
mod walk;

use std::path::PathBuf;

pub use progress::Progress;
pub use pull::{PullReport, pull};
pub use push::{PushReport, push};
pub use reference::{Reference, tag_for_id};

pub(crate) use record::reclaim;

use crate::error::Result;
use crate::lock::DirLock;
use crate::object::Object;
use crate::store::Store;

/// Pins the committed object `objects/<name>` (a shared lock, as a look-up
/// takes) so that no eviction or collection empties it while a transfer
/// reads it as a base; `None` when it is gone (removed before the lock was
/// granted).
pub(crate) fn pin_base(store: &Store, name: &str) -> Result<Option<(PathBuf, DirLock)>> {
    let path = store.path().join("objects").join(name);
    let lock = match DirLock::shared(&path) {
        Err(e) if e.errno() == libc::ENOENT => return Ok(None),
        other => other?,
    };
    Ok((!lock.is_unlinked(&path)?).then_some((path, lock)))
}

/// The progress callback: called with the running totals, one call at a
/// time, from the threads that move the data. Returning `false` cancels the
/// transfer (it then fails with `ECANCELED`).
pub type ProgressFn = dyn Fn(&Progress) -> bool + Send + Sync;

/// How layers are compressed on push (a pull reads either).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    /// `application/vnd.oci.image.layer.v1.tar+gzip`, level 6 (the default).
    #[default]
    Gzip,
    /// `application/vnd.oci.image.layer.v1.tar+zstd`, level 3.
    Zstd,
}

impl Compression {
    pub(crate) fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// Options of [`push`] and [`pull`].
#[derive(Default)]
pub struct RegistryOptions {
    /// Plain HTTP to any registry (otherwise only to `localhost`,
    /// `127.0.0.1` and `[::1]`; everything else is HTTPS checked against the
    /// system's trust store).
    pub insecure: bool,
    /// The auth file; `None`: `$REGISTRY_AUTH_FILE`, then
    /// `$XDG_RUNTIME_DIR/containers/auth.json`, then `~/.docker/config.json`.
    pub auth_file: Option<PathBuf>,
    /// Compression of pushed layers.
    pub compression: Compression,
    /// Progress callback (may cancel).
    pub progress: Option<Box<ProgressFn>>,
    /// Blobs moved at once (0: 4).
    pub jobs: usize,
}

impl RegistryOptions {
    fn jobs(&self) -> usize {
        if self.jobs == 0 { 4 } else { self.jobs }
    }
}

/// What travels with a tree besides its entries.
pub(crate) struct Facts {
    /// Creation time, seconds since the epoch.
    pub(crate) created: i64,
    /// Metadata: key -> JSON text.
    pub(crate) meta: Vec<(String, String)>,
    /// `objects/<name>` of the base the object was built on.
    pub(crate) base: Option<String>,
}

/// The facts of a committed object, from its sidecar.
pub(crate) fn facts(object: &Object) -> Result<Facts> {
    let mut meta = Vec::new();
    for key in object.meta_keys()? {
        let value = object.meta_get(&key)?;
        meta.push((key, value));
    }
    Ok(Facts {
        created: object.created()?,
        meta,
        base: object.base_name(),
    })
}

/// Gives a pulled object (still in WRITE mode) the creation time and
/// metadata its image carried.
pub(crate) fn restore_facts(object: &mut Object, facts: &Facts) -> Result<()> {
    for (key, json) in &facts.meta {
        object.meta_set(key, json)?;
    }
    // The sidecar API has no setter for the creation time: a new object's
    // info is its own until commit, so it is set in place.
    if let Some(info) = object.cache_mut().info.get_mut() {
        info.created = facts.created;
    }
    Ok(())
}
