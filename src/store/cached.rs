//! The store as a cache: what it knows about its objects (sidecars, last
//! use, pins), its settings, `stat`, `list` and `fsck`.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use super::Store;
use crate::cache::pinboard::PinBoard;
use crate::cache::pins::{Pin, PinnedDir};
use crate::cache::settings;
use crate::cache::sidecar::{self, Info};
use crate::error::{Error, Result};
use crate::ids::{ObjectId, ToObjectId};
use crate::lock::DirLock;
use crate::tree;

/// What [`Store::pin_ref`] found and pinned: the object's name, its pin,
/// and its open directory when the pin is a `flock` on it.
pub(crate) struct RefPin {
    pub name: String,
    pub dir: Option<Arc<PinnedDir>>,
    pub pin: Pin,
}

/// What [`Store::stat`] reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStat {
    /// Committed objects on disk (named by a ref).
    pub objects: u64,
    /// Refs.
    pub refs: u64,
    /// Total size of the committed objects, exact.
    pub bytes: u64,
    /// The part of `bytes` held by live handles in any process.
    pub pinned_bytes: u64,
    /// The `max-size` setting; `None` for unlimited.
    pub max_size: Option<u64>,
    /// Free bytes on the store's filesystem (for unprivileged users).
    pub fs_free: u64,
}

/// One ref of the store, as [`Store::list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The ref's name (the object id).
    pub id: String,
    /// `objects/<name>`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Entries of the tree.
    pub files: u64,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// Last use, Unix seconds.
    pub last_used: i64,
    /// Whether a live handle (in any process) holds the object.
    pub pinned: bool,
}

/// What [`Store::fsck`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsckReport {
    /// One line per problem; empty for a healthy store.
    pub problems: Vec<String>,
    /// Refs checked.
    pub refs: u64,
    /// Objects measured.
    pub objects: u64,
}

/// A ref and the object it names.
#[derive(Debug, Clone)]
pub(crate) struct RefEntry {
    pub(crate) id: String,
    pub(crate) name: String,
}

impl Store {
    /// The canonical value of the setting `key` (`max-size`, `low-water`,
    /// `min-free`); its default when unset.
    pub fn config_get(&self, key: &str) -> Result<String> {
        settings::get(&self.inner.root, key)
    }

    /// Sets `key` to `value`, atomically and durably; every process applies
    /// it at its next commit. `EINVAL` for a bad key or value (nothing is
    /// written), `EROFS` in a read-only store.
    pub fn config_set(&self, key: &str, value: &str) -> Result<()> {
        self.require_writable("change settings")?;
        let bounded_before = settings::load(&self.inner.root)?.max_size.is_some();
        settings::set(&self.inner.root, key, value)?;
        // The running total is kept only while there is a bound: when the
        // bound comes or goes, measure afresh at the next commit.
        if bounded_before && settings::load(&self.inner.root)?.max_size.is_some() {
            return Ok(());
        }
        self.forget_total()
    }

    /// Whether a committed object for `id` is in the store (floating objects
    /// are ignored). A hit counts as a use.
    pub fn contains_cached(&self, id: &(impl ToObjectId + ?Sized)) -> Result<bool> {
        self.note_use_of_ref(id.to_object_id()?)
    }

    /// Whether `refs/<id>` resolves; if it does, a use of the object it
    /// names is recorded.
    pub(crate) fn note_use_of_ref(&self, id: &ObjectId) -> Result<bool> {
        let (found, name, _) = self.ref_lookup(id)?;
        if found {
            match name {
                Some(name) => self.record_use(&name),
                None => {
                    if let Some(name) = self.ref_name(id)? {
                        self.record_use(&name);
                    }
                }
            }
        }
        Ok(found)
    }

    /// Records a use of `objects/<name>` (not in a read-only store).
    pub(crate) fn record_use(&self, name: &str) {
        if !self.inner.track_use {
            return;
        }
        if let (false, Some(meta)) = (self.inner.options.read_only, &self.inner.meta_dir) {
            self.inner.last_use.record(meta.as_fd(), name);
        }
    }

    /// The object name `refs/<id>` links to (`../objects/<name>`), `None`
    /// when there is no such ref or it is not a link of that form.
    pub(crate) fn ref_name(&self, id: &str) -> Result<Option<String>> {
        let c = CString::new(id).map_err(|_| Error::invalid("object id contains NUL"))?;
        let mut buf = [0u8; 512];
        // SAFETY: `c` is NUL-terminated, `buf` writable for its length.
        let n = unsafe {
            libc::readlinkat(
                self.inner.refs_dir.as_raw_fd(),
                c.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOENT | libc::EINVAL) => Ok(None),
                _ => Err(Error::path("cannot read ref", &self.inner.refs.join(id), e)),
            };
        }
        Ok(object_name(&buf[..n as usize]))
    }

    /// The pin board, mapped at the first call; `None` in a read-only store
    /// or one on a filesystem that is not known to be local.
    pub(crate) fn pin_board(&self) -> Result<Option<&Arc<PinBoard>>> {
        let inner = &self.inner;
        let (Some(meta), false) = (&inner.meta_dir, inner.options.read_only) else {
            return Ok(None);
        };
        let board = inner
            .pin_board
            .get_or_init(|| Ok(PinBoard::open(meta.as_fd())?.map(Arc::new)));
        board.as_ref().map(Option::as_ref).map_err(Clone::clone)
    }

    /// Pins the object `refs/<id>` names: on the pin board where it can,
    /// else with a shared lock on `objects/<name>` (then the directory is
    /// returned too). Either way eviction and collection respect it. `None`
    /// when the ref names no object (any more).
    pub(crate) fn pin_ref(&self, id: &str) -> Result<Option<RefPin>> {
        // A look-up that cannot use the board (another user's store) pins
        // with `flock`, which every remover respects too.
        let board = self.pin_board().ok().flatten();
        // An eviction or collection that took the object first removes the
        // ref before the object: retry with the ref read again.
        for _ in 0..8 {
            let Some(name) = self.ref_name(id)? else {
                return Ok(None);
            };
            if let Some(pin) = board.and_then(|b| b.pin(&name)) {
                // Counted, so no remover takes it from now on; it is the
                // object if the ref still names it (names are never reused).
                if self.ref_name(id)?.as_deref() == Some(name.as_str()) {
                    return Ok(Some(RefPin {
                        name,
                        dir: None,
                        pin: Pin::Board(pin),
                    }));
                }
                continue;
            }
            let c = CString::new(name.as_str()).map_err(|_| Error::invalid("bad object name"))?;
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
            // SAFETY: `c` is NUL-terminated; `objects_dir` is open.
            let raw =
                unsafe { libc::openat(self.inner.objects_dir.as_raw_fd(), c.as_ptr(), flags) };
            if raw < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENOENT) {
                    continue;
                }
                return Err(Error::path(
                    "cannot open",
                    &self.inner.objects.join(&name),
                    e,
                ));
            }
            // SAFETY: a descriptor we just opened and own.
            let dir = PinnedDir::new(unsafe { OwnedFd::from_raw_fd(raw) });
            let pin = dir.pin()?;
            if !dir.is_unlinked()? {
                return Ok(Some(RefPin {
                    name,
                    dir: Some(dir),
                    pin,
                }));
            }
        }
        Ok(None)
    }

    /// The sidecar information of `objects/<name>` and its last use; for an
    /// object without a sidecar (osstore 0.1) it is measured (creation time
    /// and last use from the tree's mtime) and written unless read-only.
    pub(crate) fn object_info(&self, name: &str) -> Result<(Info, i64)> {
        if let Some(meta) = &self.inner.meta_dir {
            if let Some(found) = sidecar::read(meta.as_fd(), name)? {
                return Ok(found);
            }
        }
        let tree = self.inner.objects.join(name);
        let measured = tree::measure_tree(&tree, None)?;
        let created = self.created_from_tree(&tree)?;
        let info = Info {
            created,
            size: measured.bytes,
            files: measured.entries,
            ..Info::default()
        };
        if !self.inner.options.read_only {
            let work = self.create_tempdir(b"sidecar-", b"")?;
            sidecar::write_later(
                work.fd(),
                work.path(),
                &self.inner.meta,
                name,
                &info,
                created,
            )?;
        }
        Ok((info, created))
    }

    /// A creation time derived from a tree's timestamps.
    pub(crate) fn created_from_tree(&self, tree: &Path) -> Result<i64> {
        let m = std::fs::symlink_metadata(tree).map_err(|e| Error::path("cannot stat", tree, e))?;
        Ok(m.mtime().min(m.ctime()))
    }

    /// Every ref that names an object in `objects/` (dangling ones left
    /// out), and the number of refs.
    pub(crate) fn ref_entries(&self) -> Result<(Vec<RefEntry>, u64)> {
        let refs = &self.inner.refs;
        let dir = std::fs::read_dir(refs).map_err(|e| Error::path("cannot read", refs, e))?;
        let (mut out, mut count) = (Vec::new(), 0);
        for entry in dir {
            let entry = entry.map_err(|e| Error::path("cannot read", refs, e))?;
            let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            count += 1;
            let Some(name) = self.ref_name(&id)? else {
                continue;
            };
            if std::fs::symlink_metadata(self.inner.objects.join(&name)).is_ok_and(|m| m.is_dir()) {
                out.push(RefEntry { id, name });
            }
        }
        Ok((out, count))
    }

    /// Whether a live handle in any process holds `objects/<name>`.
    pub(crate) fn is_pinned(&self, name: &str) -> Result<bool> {
        let locked = match DirLock::try_exclusive(&self.inner.objects.join(name)) {
            Ok(lock) => lock.is_none(),
            Err(e) if e.errno() == libc::ENOENT => return Ok(false),
            Err(e) => return Err(e),
        };
        Ok(locked || self.pinned_on_board(name)?)
    }

    /// Whether the pin board shows a live pin on `objects/<name>`.
    pub(crate) fn pinned_on_board(&self, name: &str) -> Result<bool> {
        match self.pin_board()? {
            Some(board) => board.is_pinned(name),
            None => Ok(false),
        }
    }

    /// Every ref with what the store knows about its object, least recently
    /// used first (ties: older creation first, then by object name: the order
    /// eviction follows).
    pub fn list(&self) -> Result<Vec<ObjectInfo>> {
        let (entries, _) = self.ref_entries()?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let (info, used) = self.object_info(&e.name)?;
            let pinned = self.is_pinned(&e.name)?;
            out.push(ObjectInfo {
                id: e.id,
                name: e.name,
                size: info.size,
                files: info.files,
                created: info.created,
                last_used: used,
                pinned,
            });
        }
        // The eviction index's order (see `lru`): ties by object name.
        out.sort_by(|a, b| {
            (a.last_used, a.created, &a.name).cmp(&(b.last_used, b.created, &b.name))
        });
        Ok(out)
    }

    /// Totals of the store: committed objects, refs, exact size, pinned
    /// size, the bound and the free space.
    pub fn stat(&self) -> Result<StoreStat> {
        let (entries, refs) = self.ref_entries()?;
        let mut sizes = HashMap::new();
        for e in &entries {
            if !sizes.contains_key(&e.name) {
                let size = self.object_info(&e.name)?.0.size;
                sizes.insert(e.name.clone(), size);
            }
        }
        let mut pinned_bytes = 0;
        for (name, size) in &sizes {
            if self.is_pinned(name)? {
                pinned_bytes += size;
            }
        }
        Ok(StoreStat {
            objects: sizes.len() as u64,
            refs,
            bytes: sizes.values().sum(),
            pinned_bytes,
            max_size: super::evict::current_settings(self)?.max_size,
            fs_free: self.fs_space()?.0,
        })
    }

    /// Free bytes (for unprivileged users) and size of the store's
    /// filesystem.
    pub(crate) fn fs_space(&self) -> Result<(u64, u64)> {
        let st = nix::sys::statvfs::fstatvfs(self.inner.objects_dir.as_fd()).map_err(|e| {
            Error::sys(
                format_args!("cannot statvfs {}", self.inner.root.display()),
                e,
            )
        })?;
        let frsize = st.fragment_size();
        Ok((st.blocks_available() * frsize, st.blocks() * frsize))
    }

    /// Checks every ref and object: dangling refs, sidecars whose size or
    /// entry count differ from a fresh measurement, sidecars without an
    /// object. Changes nothing.
    pub fn fsck(&self) -> Result<FsckReport> {
        let mut report = FsckReport::default();
        let (entries, refs) = self.ref_entries()?;
        report.refs = refs;
        if entries.len() as u64 != refs {
            report.problems.push(format!(
                "{} refs name no object in objects/",
                refs - entries.len() as u64
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for e in &entries {
            if !seen.insert(e.name.clone()) {
                continue;
            }
            report.objects += 1;
            let measured = tree::measure_tree(&self.inner.objects.join(&e.name), None)?;
            let recorded = match &self.inner.meta_dir {
                Some(meta) => sidecar::read(meta.as_fd(), &e.name)?,
                None => None,
            };
            match recorded {
                None => report
                    .problems
                    .push(format!("object {} ({}) has no sidecar", e.name, e.id)),
                Some((info, _))
                    if (info.size, info.files) != (measured.bytes, measured.entries) =>
                {
                    report.problems.push(format!(
                        "object {} ({}): sidecar says {} bytes in {} entries, measured {} in {}",
                        e.name, e.id, info.size, info.files, measured.bytes, measured.entries
                    ))
                }
                Some(_) => {}
            }
        }
        if let Ok(dir) = std::fs::read_dir(&self.inner.meta) {
            for entry in dir.flatten() {
                let name = entry.file_name();
                if is_generated_name(name.as_bytes())
                    && std::fs::symlink_metadata(self.inner.objects.join(&name)).is_err()
                {
                    report.problems.push(format!(
                        "sidecar meta/{} has no object",
                        name.to_string_lossy()
                    ));
                }
            }
        }
        Ok(report)
    }
}

/// The `<name>` of a ref target `../objects/<name>`.
fn object_name(target: &[u8]) -> Option<String> {
    let name = target.strip_prefix(b"../objects/")?;
    if name.is_empty() || name.contains(&b'/') || name == b"." || name == b".." {
        return None;
    }
    String::from_utf8(name.to_vec()).ok()
}

/// Whether osstore generates names like this one in `objects/` and `meta/`:
/// a hyphenated lowercase UUID.
pub(crate) fn is_generated_name(name: &[u8]) -> bool {
    name.len() == 36
        && name.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
}
