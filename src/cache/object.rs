//! What an object handle knows for the cache: creation time, metadata, base
//! and source epoch; and the methods of [`Object`] that use it.

use std::sync::OnceLock;

use super::lastuse;
use super::sidecar::Info;
use crate::error::{Error, Result};
use crate::ids;
use crate::object::{Holding, Mode, Object};

/// The cache's part of an object handle.
#[derive(Debug, Default)]
pub struct ObjectCache {
    /// Set when the handle is made for a new object; loaded from the
    /// sidecar on first need for a committed one.
    pub(crate) info: OnceLock<Info>,
    /// The source epoch to clamp timestamps to, if any.
    pub(crate) source_epoch: Option<i64>,
}

impl ObjectCache {
    /// The cache part of a new WRITE object: created now.
    pub(crate) fn new_object() -> ObjectCache {
        let info = Info {
            created: lastuse::now(),
            ..Info::default()
        };
        ObjectCache {
            info: OnceLock::from(info),
            source_epoch: None,
        }
    }
}

impl Object {
    /// `objects/<name>` for a committed object (one this handle committed
    /// or got from a ref), else `None`.
    pub(crate) fn committed_name(&self) -> Option<&str> {
        match self.holding {
            Holding::Committed(_) => self.tree.file_name().and_then(|n| n.to_str()),
            _ => None,
        }
    }

    /// What the store knows about the object (its sidecar for a committed
    /// object, measured and written on first need for one from osstore 0.1).
    pub(crate) fn info(&self) -> Result<&Info> {
        if let Some(info) = self.cache.info.get() {
            return Ok(info);
        }
        let info = match self.committed_name() {
            Some(name) => self.store.object_info(name)?.0,
            // A view of another handle's floating object: what its tree shows.
            None => Info {
                created: self.store.created_from_tree(&self.tree)?,
                ..Info::default()
            },
        };
        Ok(self.cache.info.get_or_init(|| info))
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
                format!("object {:?} has no metadata {key:?}", self.id),
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
        if let Some(info) = self.cache.info.get_mut() {
            info.meta.insert(key.to_owned(), value);
        }
        Ok(())
    }

    /// Gives the object a source epoch: at `finalize` and at commit every
    /// entry whose mtime is at or after the creation second gets the epoch
    /// as atime and mtime. `EPERM` once the object is committed.
    pub fn set_source_epoch(&mut self, epoch: i64) -> Result<()> {
        if !matches!(self.holding, Holding::Work(_)) {
            return Err(Error::new(
                libc::EPERM,
                format!(
                    "cannot set the source epoch of object {:?}: it is committed or a view",
                    self.id
                ),
            ));
        }
        self.cache.source_epoch = Some(epoch);
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
        self.cache.info = OnceLock::from(inherited);
        Ok(())
    }

    fn require_writable_meta(&self, what: &str) -> Result<()> {
        if self.mode != Mode::Write {
            return Err(Error::new(
                libc::EPERM,
                format!("cannot {what} object {:?}: it is in READ mode", self.id),
            ));
        }
        Ok(())
    }
}
