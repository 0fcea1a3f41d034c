//! The store: opening, objects, temp dirs and the host tree; look-ups,
//! commit, garbage collection and the floating-object registry live in the
//! submodules (see `docs/store.md` for the contract).

mod cached;
mod commit;
mod evict;
pub(crate) mod floating;
mod gc;
mod lookup;
mod lru;

pub use cached::{FsckReport, ObjectInfo, StoreStat};
pub use evict::EvictReport;
pub use gc::GcReport;

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use nix::sys::stat::Mode as FileMode;

use crate::cache::lastuse::LastUse;
use crate::cache::pinboard::PinBoard;
use crate::cache::pins::PinTable;
use crate::cache::{ObjectCache, layout, settings};
use crate::error::{Error, Result};
use crate::fd;
use crate::hosttree::HostTree;
use crate::ids::{self, ObjectId, ToObjectId};
use crate::object::Object;
use crate::refcache::RefCache;
use crate::tempdir::TempDir;

/// How a store is opened.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// Make every committed tree durable before its ref names it (the
    /// default). Off, a power cut may leave a ref to a tree whose files are
    /// empty; for throw-away stores only.
    pub durable: bool,
    /// Sweep what dead processes left behind when opening (the default).
    pub collect_garbage: bool,
    /// Change nothing on disk (see `docs/cache.md`): no directories
    /// created, no collection, no last-use updates; what writes fails with
    /// `EROFS`; temp dirs and the host tree go to `$TMPDIR`.
    pub read_only: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            durable: true,
            collect_garbage: true,
            read_only: false,
        }
    }
}

/// A store of trees. Cheap to clone (a shared handle); usable from several
/// threads at once.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// Name of an object's tree inside its work dir.
const TREE_NAME: &std::ffi::CStr = c"object";
/// Name of the link that replaces a ref, made inside the work dir.
const NEW_REF_NAME: &std::ffi::CStr = c"ref";

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    objects: PathBuf,
    refs: PathBuf,
    // The root, `objects/`, `refs/` and `tmp/`, opened once: creating, moving and
    // looking up entries are `*at` calls relative to them, with no walk of
    // the store's path.
    root_dir: OwnedFd,
    objects_dir: OwnedFd,
    refs_dir: OwnedFd,
    tmp_dir: Arc<OwnedFd>,
    /// Whether `tmp/` is on btrfs (object trees are then subvolumes).
    tmp_on_btrfs: OnceLock<bool>,
    /// Answers of `refs/<id>` look-ups, kept exact with inotify.
    ref_cache: Mutex<RefCache>,
    tmp: PathBuf,
    options: OpenOptions,
    /// Floating objects by id.
    floating: Arc<floating::Registry>,
    host_tree: Mutex<Option<HostTree>>,
    /// `meta/` (the sidecars) and its descriptor; `None` in a read-only
    /// store that has none (made by osstore 0.1).
    meta: PathBuf,
    meta_dir: Option<OwnedFd>,
    /// Last uses this process recorded.
    last_use: LastUse,
    /// Object directories kept open for `flock` pins.
    pins: PinTable,
    /// The pin board (see `crate::cache::pinboard`), mapped at its first
    /// use; `None` where the store has none (read-only, not local).
    pin_board: OnceLock<Result<Option<Arc<PinBoard>>>>,
    /// The eviction index (see `lru`), used under the `meta/` lock.
    lru: Mutex<lru::LruIndex>,
    /// The settings as last read (by a commit, an eviction or `stat`).
    settings: settings::Cache,
    /// Whether look-ups pin and record use; off only for the benchmark's
    /// comparison row (`OSSTORE_BENCH_NO_TRACKING=1` at open).
    track_use: bool,
}

fn lock_ignoring_poison<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Store {
    /// Opens the store at `path` with the default options, creating it (and
    /// `objects/`, `refs/`, `tmp/`) where missing.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        Self::open_with(path, OpenOptions::default())
    }

    /// Opens the store at `path` with `options`. With `collect_garbage`
    /// the store is swept as by [`Store::gc`], on a best-effort basis: what
    /// cannot be removed (a read-only store, entries of another user) stays
    /// for a later collection and does not make opening fail.
    pub fn open_with(path: impl AsRef<Path>, options: OpenOptions) -> Result<Store> {
        let root = path.as_ref();
        if root.as_os_str().is_empty() {
            return Err(Error::invalid("store path is empty"));
        }
        let root = std::path::absolute(root).map_err(|e| Error::path("cannot resolve", root, e))?;
        // Checked before anything is created: another tool's cache, or a
        // store of a newer osstore, is left exactly as it is.
        if std::fs::metadata(&root).is_ok_and(|m| m.is_dir()) {
            layout::refuse_foreign(&root)?;
            settings::read_raw(&root)?;
        }
        let (objects, refs) = (root.join("objects"), root.join("refs"));
        let meta = root.join("meta");
        let tmp = if options.read_only {
            std::env::temp_dir()
        } else {
            root.join("tmp")
        };
        let mut dirs = vec![&root, &objects, &refs, &tmp];
        if !options.read_only {
            dirs.push(&meta);
        }
        for dir in dirs {
            if !options.read_only {
                std::fs::create_dir_all(dir).map_err(|e| match e.kind() {
                    // Only a non-directory in the way makes creating one fail so.
                    std::io::ErrorKind::AlreadyExists => Error::new(
                        libc::ENOTDIR,
                        format!("cannot open store {}: not a directory", dir.display()),
                    ),
                    _ => Error::path("cannot create store directory", dir, e),
                })?;
            }
            let meta = std::fs::metadata(dir).map_err(|e| Error::path("cannot open", dir, e))?;
            if !meta.is_dir() {
                return Err(Error::new(
                    libc::ENOTDIR,
                    format!("{} is not a directory", dir.display()),
                ));
            }
        }
        if !options.read_only {
            layout::write_tag(&root)?;
        }
        let meta_dir = match fd::open_dir_path(&meta) {
            Ok(fd) => Some(fd),
            Err(e) if options.read_only && e.errno() == libc::ENOENT => None,
            Err(e) => return Err(e),
        };
        let root_dir = fd::open_dir_path(&root)?;
        let (objects_dir, refs_dir) = (fd::open_dir_path(&objects)?, fd::open_dir_path(&refs)?);
        let tmp_dir = Arc::new(fd::open_dir_path(&tmp)?);
        let ref_cache = Mutex::new(RefCache::new(&refs, &objects));
        let store = Store {
            inner: Arc::new(Inner {
                objects,
                refs,
                root_dir,
                objects_dir,
                refs_dir,
                tmp_dir,
                tmp_on_btrfs: OnceLock::new(),
                ref_cache,
                tmp,
                root,
                options,
                floating: Arc::default(),
                host_tree: Mutex::new(None),
                meta,
                meta_dir,
                last_use: LastUse::default(),
                pins: PinTable::default(),
                pin_board: OnceLock::new(),
                lru: Mutex::default(),
                settings: settings::Cache::default(),
                track_use: std::env::var_os("OSSTORE_BENCH_NO_TRACKING").is_none_or(|v| v != "1"),
            }),
        };
        if options.collect_garbage && !options.read_only {
            // Best effort: what cannot be removed now (a read-only store, an
            // entry of another user) is harmless and left for a later `gc`;
            // it must not keep anybody from opening the store to read it.
            let _ = store.gc();
        }
        Ok(store)
    }

    /// The store's root directory (absolute).
    pub fn path(&self) -> &Path {
        &self.inner.root
    }

    /// `EROFS` in a read-only store, saying what could not be done.
    pub(crate) fn require_writable(&self, what: &str) -> Result<()> {
        if self.inner.options.read_only {
            return Err(Error::new(
                libc::EROFS,
                format!(
                    "cannot {what}: the store {} is open read-only",
                    self.inner.root.display()
                ),
            ));
        }
        Ok(())
    }

    /// The options the store was opened with.
    pub fn options(&self) -> OpenOptions {
        self.inner.options
    }

    /// A fresh WRITE object for `id`, with an empty tree at
    /// `tmp/object-<first 7 characters of id>-<random>-workdir/object`.
    pub fn new_object(&self, id: &(impl ToObjectId + ?Sized)) -> Result<Object> {
        let id = id.to_object_id()?.to_owned();
        self.require_writable("create an object")?;
        // Characters, as the reference's `id[:7]`: a byte count could split
        // a character and make the tree's path invalid UTF-8, which the
        // socket protocol cannot carry. For ASCII ids both are 7 bytes.
        let short: String = id.chars().take(7).collect();
        let prefix = format!("object-{short}-");
        let context = || format!("cannot create object {:?}", id.as_str());
        let workdir = self
            .create_tempdir(prefix.as_bytes(), b"-workdir")
            .map_err(|e| e.context(context()))?;
        let tree = workdir.path().join(OsStr::from_bytes(TREE_NAME.to_bytes()));
        crate::tree::btrfs::make_tree_dir(
            workdir.fd(),
            self.tmp_on_btrfs(),
            TREE_NAME,
            FileMode::from_bits_truncate(0o777),
        )
        .map_err(|e| {
            Error::sys(
                format_args!("cannot create object tree {}", tree.display()),
                e,
            )
            .context(context())
        })?;
        Ok(Object::in_work_dir(
            id,
            tree,
            workdir,
            ObjectCache::new_object(self),
        ))
    }

    /// The registry of this store's floating objects.
    pub(crate) fn floating(&self) -> &Arc<floating::Registry> {
        &self.inner.floating
    }

    /// Whether `other` is this store handle or a clone of it.
    pub(crate) fn is_same(&self, other: &Store) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Whether `tmp/` (so every work dir and object tree in it) is on
    /// btrfs; looked up once.
    pub(crate) fn tmp_on_btrfs(&self) -> bool {
        *self
            .inner
            .tmp_on_btrfs
            .get_or_init(|| crate::tree::btrfs::on_btrfs(self.inner.tmp_dir.as_fd()))
    }

    /// A fresh directory `tmp/<prefix><random><suffix>`, removed when the
    /// returned value is dropped. Prefix and suffix may not contain `/`.
    pub fn tempdir(&self, prefix: &[u8], suffix: &[u8]) -> Result<TempDir> {
        ids::check_affix("prefix", prefix)?;
        ids::check_affix("suffix", suffix)?;
        self.create_tempdir(prefix, suffix)
    }

    fn create_tempdir(&self, prefix: &[u8], suffix: &[u8]) -> Result<TempDir> {
        TempDir::create_in(&self.inner.tmp_dir, &self.inner.tmp, prefix, suffix)
    }

    /// The host tree (created on first use), valid until the store is dropped.
    pub fn host_tree(&self) -> Result<PathBuf> {
        let mut slot = lock_ignoring_poison(&self.inner.host_tree);
        if let Some(tree) = slot.as_ref() {
            return Ok(tree.path());
        }
        let dir = self.create_tempdir(b"host", b"")?;
        let tree = HostTree::create(dir).map_err(|e| e.context("cannot create the host tree"))?;
        let path = tree.path();
        *slot = Some(tree);
        Ok(path)
    }

    /// A READ view of `tree` under `id`.
    fn view(&self, id: &ObjectId, tree: PathBuf) -> Object {
        Object::view(id.to_owned(), tree, ObjectCache::read(self))
    }

    /// The tree of the newest floating object with `id`, if any (no I/O).
    fn floating_tree(&self, id: &ObjectId) -> Option<PathBuf> {
        self.inner.floating.tree(id)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The host tree is unmounted and removed; work and temp dirs are
        // owned by their handles, which remove them (they hold the `tmp/`
        // descriptor they need).
        lock_ignoring_poison(&self.host_tree).take();
    }
}
