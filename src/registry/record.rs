//! What the store remembers about images: for each object pushed or pulled,
//! the layers it is made of (`<store>/registry/objects/<name>.json`), so that
//! a tree built on it can push only its own changes and a pull can start
//! from it; and the download area for blobs (`<store>/registry/blobs/`),
//! where an interrupted pull finds what it already fetched.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::lock::DirLock;
use crate::store::Store;

/// A layer as a manifest lists it, with its uncompressed digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layer {
    pub(crate) digest: String,
    pub(crate) size: u64,
    pub(crate) media_type: String,
    pub(crate) diff_id: String,
}

/// The image an object was pushed as or pulled from.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) registry: String,
    pub(crate) repository: String,
    pub(crate) manifest: String,
    pub(crate) layers: Vec<Layer>,
}

fn area(store: &Store) -> PathBuf {
    store.path().join("registry")
}

/// The download directory for blobs, created if missing, with a shared
/// lock on it held by the pull for as long as it uses the directory: what
/// a failed or killed pull left there (kept so that a second try downloads
/// only the rest) is reclaimed by the collector only while no pull holds
/// it (see [`reclaim`]).
pub(crate) fn blob_dir(store: &Store) -> Result<(PathBuf, DirLock)> {
    let dir = area(store).join("blobs");
    std::fs::create_dir_all(&dir).map_err(|e| Error::path("cannot create", &dir, e))?;
    let lock = DirLock::shared(&dir)?;
    Ok((dir, lock))
}

/// How long the blobs a failed or killed pull left stay for a second try.
/// A collection runs at every open, so "until the next collection" would
/// throw them away before any retry.
const DOWNLOADS_KEPT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// What the collector reclaims of the registry's area in the store at
/// `root`: the blobs failed or killed pulls left in the download area and
/// nobody touched for [`DOWNLOADS_KEPT`] (unless a pull is running: it holds
/// the area's lock), and the records of pulled objects that are gone.
/// Returns the number of files removed.
pub(crate) fn reclaim(root: &Path) -> Result<u64> {
    let area = root.join("registry");
    let mut removed = 0;
    let blobs = area.join("blobs");
    let alone = match DirLock::try_exclusive(&blobs) {
        Err(e) if e.errno() == libc::ENOENT => None,
        other => other?,
    };
    if alone.is_some() {
        // The download area holds only blob files this module writes.
        let stale = |name: &str| {
            std::fs::symlink_metadata(blobs.join(name))
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > DOWNLOADS_KEPT))
        };
        removed += remove_files(&blobs, stale)?;
    }
    let objects = root.join("objects");
    removed += remove_files(&area.join("objects"), |name| {
        let object = name.strip_suffix(".json").unwrap_or(name);
        std::fs::symlink_metadata(objects.join(object)).is_err()
    })?;
    Ok(removed)
}

/// Removes the files of `dir` (if it exists) whose names `doomed` picks.
fn remove_files(dir: &Path, doomed: impl Fn(&str) -> bool) -> Result<u64> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        other => other.map_err(|e| Error::path("cannot list", dir, e))?,
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| Error::path("cannot list", dir, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !doomed(&name) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::path("cannot remove", &entry.path(), e)),
        }
    }
    Ok(removed)
}

fn record_path(store: &Store, name: &str) -> PathBuf {
    area(store).join("objects").join(format!("{name}.json"))
}

impl Record {
    fn to_json(&self) -> Value {
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|l| json!({"digest": l.digest, "size": l.size, "mediaType": l.media_type, "diffID": l.diff_id}))
            .collect();
        json!({"registry": self.registry, "repository": self.repository, "manifest": self.manifest, "layers": layers})
    }

    fn from_json(v: &Value) -> Option<Record> {
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let layers = v
            .get("layers")?
            .as_array()?
            .iter()
            .map(|l| {
                Some(Layer {
                    digest: s(l, "digest")?,
                    size: l.get("size")?.as_u64()?,
                    media_type: s(l, "mediaType")?,
                    diff_id: s(l, "diffID")?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Record {
            registry: s(v, "registry")?,
            repository: s(v, "repository")?,
            manifest: s(v, "manifest")?,
            layers,
        })
    }

    /// The record of the object `name`, if there is one.
    pub(crate) fn load(store: &Store, name: &str) -> Option<Record> {
        let text = std::fs::read(record_path(store, name)).ok()?;
        Record::from_json(&serde_json::from_slice(&text).ok()?)
    }

    /// Saves the record of the object `name` (replacing any).
    pub(crate) fn save(&self, store: &Store, name: &str) -> Result<()> {
        let path = record_path(store, name);
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::path("cannot create", dir, e))?;
        let tmp = dir.join(format!(".{name}.{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(self.to_json().to_string().as_bytes())?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::path("cannot save the image record", &path, e)
        })
    }

    /// The committed object whose layers are the longest prefix of
    /// `layers` (by digest), with the length of that prefix.
    pub(crate) fn best_prefix(store: &Store, layers: &[Layer]) -> Option<(String, usize)> {
        let dir = area(store).join("objects");
        let mut best: Option<(String, usize)> = None;
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let file = entry.file_name();
            let Some(name) = file.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if name.starts_with('.') || !store.path().join("objects").join(name).is_dir() {
                continue;
            }
            let Some(record) = Record::load(store, name) else {
                continue;
            };
            let n = record.layers.len();
            let fits = n <= layers.len()
                && record
                    .layers
                    .iter()
                    .zip(layers)
                    .all(|(a, b)| a.digest == b.digest);
            if fits && n > best.as_ref().map_or(0, |b| b.1) {
                best = Some((name.to_owned(), n));
            }
        }
        best
    }
}
