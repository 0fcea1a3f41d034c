//! What an object handle knows for the cache: creation time, metadata, base
//! and source epoch; and the methods of [`Object`] that use it.

use std::sync::OnceLock;

use super::lastuse;
use super::sidecar::Info;
use crate::error::{Error, Result};
use crate::ids;
use crate::object::{Mode, Object};
use crate::store::Store;
use crate::tree;

/// The cache's part of an object handle.
#[derive(Debug)]
pub struct ObjectCache {
    /// The store, for the sidecar and last use of a committed object.
    store: Store,
    /// Set when the handle is made for a new object; loaded from the
    /// sidecar on first need for a committed one.
    pub(crate) info: OnceLock<Info>,
    /// The source epoch to clamp timestamps to, if any.
    pub(crate) source_epoch: Option<i64>,
}

impl ObjectCache {
    /// The cache part of a new WRITE object of `store`: created now.
    pub(crate) fn new_object(store: &Store) -> ObjectCache {
        let info = Info {
            created: lastuse::now(),
            ..Info::default()
        };
        ObjectCache {
            store: store.clone(),
            info: OnceLock::from(info),
            source_epoch: None,
        }
    }

    /// The cache part of a READ handle of `store` (information loaded on
    /// first need).
    pub(crate) fn read(store: &Store) -> ObjectCache {
        ObjectCache {
            store: store.clone(),
            info: OnceLock::new(),
            source_epoch: None,
        }
    }

    /// The store the object belongs to.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Records a use of `objects/<name>`.
    pub(crate) fn record_use(&self, name: &str) {
        self.store.record_use(name);
    }
}

impl Object {
    /// What the store knows about the object (its sidecar for a committed
    /// object, measured and written on first need for one from osstore 0.1).
    pub(crate) fn info(&self) -> Result<&Info> {
        let cache = self.cache();
        if let Some(info) = cache.info.get() {
            return Ok(info);
        }
        let info = match self.committed_name() {
            Some(name) => cache.store.object_info(name)?.0,
            // A view of another handle's floating object: what its tree shows.
            None => Info {
                created: cache.store.created_from_tree(self.tree())?,
                ..Info::default()
            },
        };
        Ok(cache.info.get_or_init(|| info))
    }

    /// The object's creation time (Unix seconds): set by `new`, copied from
    /// the base by `init`.
    pub fn created(&self) -> Result<i64> {
        Ok(self.info()?.created)
    }

    /// The JSON text of the metadata `key`; `ENOENT` when it has none.
    pub fn meta_get(&self, key: &str) -> Result<String> {
        ids::check_name("metadata key", key.as_bytes())?;
        match self.info()?.meta.get(key) {
            Some(v) => Ok(v.to_string()),
            None => Err(Error::new(
                libc::ENOENT,
                format!("object {:?} has no metadata {key:?}", self.id().as_str()),
            )),
        }
    }

    /// The object's metadata keys, sorted.
    pub fn meta_keys(&self) -> Result<Vec<String>> {
        Ok(self.info()?.meta.keys().cloned().collect())
    }

    /// Sets the metadata `key` to the JSON text `json` (validated: `EINVAL`
    /// otherwise). Only in WRITE mode: `EPERM` for a READ or committed
    /// object.
    pub fn meta_set(&mut self, key: &str, json: &str) -> Result<()> {
        ids::check_name("metadata key", key.as_bytes())?;
        self.require_writable_meta("set metadata of")?;
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| Error::invalid(format!("metadata {key:?} is not valid JSON: {e}")))?;
        if let Some(info) = self.cache_mut().info.get_mut() {
            info.meta.insert(key.to_owned(), value);
        }
        Ok(())
    }

    /// Gives the object a source epoch: at `finalize` and at commit every
    /// entry whose mtime is at or after the creation second gets the epoch
    /// as atime and mtime. `EPERM` once the object is committed.
    pub fn set_source_epoch(&mut self, epoch: i64) -> Result<()> {
        if self.work_dir().is_none() {
            return Err(Error::new(
                libc::EPERM,
                format!(
                    "cannot set the source epoch of object {:?}: it is committed or a view",
                    self.id().as_str()
                ),
            ));
        }
        self.cache_mut().source_epoch = Some(epoch);
        Ok(())
    }

    /// `objects/<name>` of the base this object was initialised from, if
    /// any.
    pub fn base_name(&self) -> Option<String> {
        self.info().ok().and_then(|i| i.base.clone())
    }

    /// Takes over what `base` carries to an object made from it: creation
    /// time, metadata and base name.
    pub(crate) fn inherit(&mut self, base: &Object) -> Result<()> {
        let from = base.info()?;
        let inherited = Info {
            created: from.created,
            size: 0,
            files: 0,
            base: base
                .committed_name()
                .map(str::to_owned)
                .or_else(|| from.base.clone()),
            meta: from.meta.clone(),
        };
        self.cache_mut().info = OnceLock::from(inherited);
        Ok(())
    }

    /// Clamps the tree's timestamps to the source epoch, if there is one.
    pub(crate) fn clamp_times(&self) -> Result<()> {
        if let Some(clamp) = self.clamp()? {
            tree::measure_tree(self.tree(), Some(clamp))?;
        }
        Ok(())
    }

    /// How the object's tree is clamped to its source epoch: entries from
    /// its creation second on; `None` without a source epoch.
    pub(crate) fn clamp(&self) -> Result<Option<tree::Clamp>> {
        match self.cache().source_epoch {
            Some(epoch) => Ok(Some(tree::Clamp {
                epoch,
                since: self.created()?,
            })),
            None => Ok(None),
        }
    }

    fn require_writable_meta(&self, what: &str) -> Result<()> {
        if self.mode() != Mode::Write {
            return Err(Error::new(
                libc::EPERM,
                format!(
                    "cannot {what} object {:?}: it is in READ mode",
                    self.id().as_str()
                ),
            ));
        }
        Ok(())
    }
}
