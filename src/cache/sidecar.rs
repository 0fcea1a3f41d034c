//! Sidecars: `meta/<name>/info`, what the store knows about the committed
//! object `objects/<name>`.
//!
//! The info file is one JSON object: creation time, size, entry count, the
//! base name for an object made by `init`, and the caller's metadata. Its
//! mtime is the object's last use (see [`super::lastuse`]). A commit writes
//! the sidecar in place in `meta/` once the tree is in `objects/` and
//! before the ref names the tree, so both are flushed by the commit's
//! `syncfs` (nothing reads a sidecar before a ref names its object); the
//! sidecar of an object from osstore 0.1 is written, durably,
//! the first time it is needed ([`write_later`]).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Name of the info file inside a sidecar directory.
pub const INFO: &str = "info";
/// Sidecar format written by this version.
const VERSION: u64 = 1;

/// What the store knows about one object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Info {
    /// Creation time, Unix seconds.
    pub created: i64,
    /// Size in bytes (see `tree::measure_tree`).
    pub size: u64,
    /// Entries of the tree.
    pub files: u64,
    /// `objects/<name>` of the base an `init` copied, if any.
    pub base: Option<String>,
    /// Metadata: key to JSON value.
    pub meta: BTreeMap<String, Value>,
}

impl Info {
    /// The file's contents.
    pub fn encode(&self) -> Vec<u8> {
        let mut m = Map::new();
        m.insert("version".into(), VERSION.into());
        m.insert("created".into(), self.created.into());
        m.insert("size".into(), self.size.into());
        m.insert("files".into(), self.files.into());
        if let Some(b) = &self.base {
            m.insert("base".into(), b.clone().into());
        }
        let meta: Map<String, Value> = self.meta.clone().into_iter().collect();
        m.insert("meta".into(), Value::Object(meta));
        serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
    }

    /// Parses a file's contents; `None` when it is not a sidecar.
    pub fn decode(bytes: &[u8]) -> Option<Info> {
        let Value::Object(m) = serde_json::from_slice(bytes).ok()? else {
            return None;
        };
        let meta = match m.get("meta") {
            Some(Value::Object(meta)) => meta.clone().into_iter().collect(),
            _ => BTreeMap::new(),
        };
        Some(Info {
            created: m.get("created")?.as_i64()?,
            size: m.get("size")?.as_u64()?,
            files: m.get("files")?.as_u64()?,
            base: m.get("base").and_then(Value::as_str).map(str::to_owned),
            meta,
        })
    }
}

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::invalid(format!("name {s:?} contains NUL")))
}

/// Reads `<name>/info` below the open `meta/` directory; `None` when there
/// is no (readable) sidecar.
pub fn read(meta: BorrowedFd<'_>, name: &str) -> Result<Option<(Info, i64)>> {
    let path = cstr(&format!("{name}/{INFO}"))?;
    // SAFETY: `path` is NUL-terminated; `meta` is open.
    let raw = unsafe {
        libc::openat(
            meta.as_raw_fd(),
            path.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    if raw < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR) => Ok(None),
            _ => Err(Error::io(format_args!("cannot open sidecar of {name}"), e)),
        };
    }
    // SAFETY: a descriptor we just opened and own.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(raw) });
    let used = file
        .metadata()
        .map_err(|e| Error::io(format_args!("cannot stat sidecar of {name}"), e))?
        .mtime();
    let bytes = std::io::read_to_string(&file)
        .map_err(|e| Error::io(format_args!("cannot read sidecar of {name}"), e))?;
    Ok(Info::decode(bytes.as_bytes()).map(|i| (i, used)))
}

/// Creates the sidecar directory `dir_name` with its info file below the
/// open directory `parent` (a work dir), not flushed: the commit's `syncfs`
/// does that.
pub fn write_in(parent: BorrowedFd<'_>, dir_name: &str, info: &Info) -> Result<()> {
    let fail = |what: &str, e: std::io::Error| Error::io(format_args!("cannot {what} sidecar"), e);
    let dir = cstr(dir_name)?;
    // SAFETY: `dir` is NUL-terminated; `parent` is open.
    if unsafe { libc::mkdirat(parent.as_raw_fd(), dir.as_ptr(), 0o755) } != 0 {
        return Err(fail("create", std::io::Error::last_os_error()));
    }
    let file = cstr(&format!("{dir_name}/{INFO}"))?;
    // SAFETY: as above.
    let raw = unsafe {
        libc::openat(
            parent.as_raw_fd(),
            file.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            0o644,
        )
    };
    if raw < 0 {
        return Err(fail("create", std::io::Error::last_os_error()));
    }
    // SAFETY: a descriptor we just opened and own.
    let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(raw) });
    f.write_all(&info.encode()).map_err(|e| fail("write", e))
}

/// Writes the sidecar of an already committed object `name` (one made by
/// osstore 0.1, or whose sidecar was lost): built in the work dir `work`
/// (open as `work_fd`), flushed, renamed to `meta/<name>`. When another
/// process wrote it first, theirs stays.
pub fn write_later(
    work_fd: BorrowedFd<'_>,
    work: &Path,
    meta: &Path,
    name: &str,
    info: &Info,
    used: i64,
) -> Result<()> {
    write_in(work_fd, name, info)?;
    let built = work.join(name);
    let flush = |p: &Path| std::fs::File::open(p).and_then(|f| f.sync_all());
    let dest = meta.join(name);
    flush(&built.join(INFO))
        .and_then(|()| set_used_path(&built.join(INFO), used))
        .and_then(|()| flush(&built))
        .map_err(|e| Error::path("cannot write sidecar", &built, e))?;
    match std::fs::rename(&built, &dest) {
        Ok(()) => flush(meta).map_err(|e| Error::path("cannot sync", meta, e)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => Ok(()),
        Err(e) => Err(Error::path("cannot install sidecar", &dest, e)),
    }
}

fn set_used_path(path: &Path, secs: i64) -> std::io::Result<()> {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    let f = std::fs::File::options().write(true).open(path)?;
    f.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn info_round_trips() {
        let mut info = Info {
            created: 1_700_000_000,
            size: 4096,
            files: 3,
            base: Some("b".into()),
            meta: BTreeMap::new(),
        };
        info.meta
            .insert("k".into(), serde_json::json!({"a": [1, "x"]}));
        assert_eq!(Info::decode(&info.encode()), Some(info));
        assert_eq!(Info::decode(b"[]"), None);
    }

    #[test]
    fn written_sidecars_are_read_back_with_their_use() {
        let dir = tempfile::tempdir().unwrap();
        let (work, meta) = (dir.path().join("work"), dir.path().join("meta"));
        std::fs::create_dir_all(&work).unwrap();
        std::fs::create_dir_all(&meta).unwrap();
        let work_fd = std::fs::File::open(&work).unwrap();
        let meta_fd = std::fs::File::open(&meta).unwrap();
        assert_eq!(read(meta_fd.as_fd(), "n").unwrap(), None);
        let info = Info {
            created: 5,
            size: 6,
            files: 7,
            ..Info::default()
        };
        write_later(work_fd.as_fd(), &work, &meta, "n", &info, 1234).unwrap();
        assert_eq!(
            read(meta_fd.as_fd(), "n").unwrap(),
            Some((info.clone(), 1234))
        );
        // A second writer keeps the first one's sidecar.
        write_later(work_fd.as_fd(), &work, &meta, "n", &Info::default(), 1).unwrap();
        assert_eq!(read(meta_fd.as_fd(), "n").unwrap(), Some((info, 1234)));
    }
}
