//! The store: objects, refs, look-ups, commit, temp dirs, host tree and
//! garbage collection (see `shared/spec/store.md` for the contract).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::fcntl::renameat;
use nix::sys::stat::Mode as FileMode;
use nix::unistd::{UnlinkatFlags, symlinkat, unlinkat};

use crate::error::{Error, Result};
use crate::hosttree::HostTree;
use crate::ids;
use crate::lock::DirLock;
use crate::mount;
use crate::object::{Holding, Mode, Object};
use crate::refcache::RefCache;
use crate::tempdir::TempDir;
use crate::tree;

/// How a store is opened.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// Make every committed tree durable before its ref names it (the
    /// default). Off, a power cut may leave a ref to a tree whose files are
    /// empty; for throw-away stores only.
    pub durable: bool,
    /// Sweep what dead processes left behind when opening (the default).
    pub collect_garbage: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            durable: true,
            collect_garbage: true,
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
    // `objects/`, `refs/` and `tmp/`, opened once: creating, moving and
    // looking up entries are `*at` calls relative to them, with no walk of
    // the store's path.
    objects_dir: OwnedFd,
    refs_dir: OwnedFd,
    tmp_dir: Arc<OwnedFd>,
    /// Answers of `refs/<id>` look-ups, kept exact with inotify.
    ref_cache: Mutex<RefCache>,
    tmp: PathBuf,
    options: OpenOptions,
    /// Floating objects by id: (registry key, tree), newest last.
    floating: Mutex<HashMap<String, Vec<(u64, PathBuf)>>>,
    next_key: AtomicU64,
    host_tree: Mutex<Option<HostTree>>,
}

/// What [`Store::gc`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Entries of `tmp/` and `objects/` removed.
    pub removed: usize,
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
        let (objects, refs, tmp) = (root.join("objects"), root.join("refs"), root.join("tmp"));
        for dir in [&root, &objects, &refs, &tmp] {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::path("cannot create store directory", dir, e))?;
            let meta = std::fs::metadata(dir).map_err(|e| Error::path("cannot open", dir, e))?;
            if !meta.is_dir() {
                return Err(Error::new(
                    libc::ENOTDIR,
                    format!("{} is not a directory", dir.display()),
                ));
            }
        }
        let (objects_dir, refs_dir) = (open_dir_path(&objects)?, open_dir_path(&refs)?);
        let tmp_dir = Arc::new(open_dir_path(&tmp)?);
        let ref_cache = Mutex::new(RefCache::new(&refs, &objects));
        let store = Store {
            inner: Arc::new(Inner {
                objects,
                refs,
                objects_dir,
                refs_dir,
                tmp_dir,
                ref_cache,
                tmp,
                root,
                options,
                floating: Mutex::new(HashMap::new()),
                next_key: AtomicU64::new(1),
                host_tree: Mutex::new(None),
            }),
        };
        if options.collect_garbage {
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

    /// The options the store was opened with.
    pub fn options(&self) -> OpenOptions {
        self.inner.options
    }

    /// A fresh WRITE object for `id`, with an empty tree at
    /// `tmp/object-<first 7 characters of id>-<random>-workdir/object`.
    pub fn new_object(&self, id: &str) -> Result<Object> {
        ids::check_id(id)?;
        // Characters, as the reference's `id[:7]`: a byte count could split
        // a character and make the tree's path invalid UTF-8, which the
        // socket protocol cannot carry. For ASCII ids both are 7 bytes.
        let short: String = id.chars().take(7).collect();
        let prefix = format!("object-{short}-");
        let context = || format!("cannot create object {id:?}");
        let workdir = self
            .create_tempdir(prefix.as_bytes(), b"-workdir")
            .map_err(|e| e.context(context()))?;
        let tree = workdir.path().join(OsStr::from_bytes(TREE_NAME.to_bytes()));
        tree::btrfs::make_tree_dir(workdir.fd(), TREE_NAME, FileMode::from_bits_truncate(0o777))
            .map_err(|e| {
                Error::sys(
                    format_args!("cannot create object tree {}", tree.display()),
                    e,
                )
                .context(context())
            })?;
        Ok(Object {
            store: self.clone(),
            id: id.to_owned(),
            mode: Mode::Write,
            tree,
            holding: Holding::Work(workdir),
            floating_key: None,
        })
    }

    /// `true` for a floating object with `id`, else whether `refs/<id>`
    /// resolves to an existing tree. An empty id is never contained.
    pub fn contains(&self, id: &str) -> Result<bool> {
        if id.is_empty() {
            return Ok(false);
        }
        ids::check_id(id)?;
        if self.floating_tree(id).is_some() {
            return Ok(true);
        }
        self.ref_resolves(id)
    }

    /// Whether `refs/<id>` and its target exist (`id` valid), answered from
    /// the ref cache when nothing changed since the last look-up.
    fn ref_resolves(&self, id: &str) -> Result<bool> {
        lock_ignoring_poison(&self.inner.ref_cache).resolves(id, || self.stat_ref(id))
    }

    /// Whether `refs/<id>` and its target exist, asked of the filesystem;
    /// errors other than a missing entry (e.g. `EACCES`) are reported, not
    /// taken for "absent". `id` must be valid (checked by the caller).
    fn stat_ref(&self, id: &str) -> Result<bool> {
        // A valid id has at most 255 bytes and no NUL: build the C string
        // on the stack, since this is the hot path of every look-up.
        let mut name = [0u8; ids::MAX_NAME_BYTES + 1];
        name[..id.len()].copy_from_slice(id.as_bytes());
        // SAFETY: an all-zero `stat` is a valid value for fstatat to fill.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `name` is NUL-terminated, `st` is writable, `refs_dir` open.
        let r = unsafe {
            libc::fstatat(
                self.inner.refs_dir.as_raw_fd(),
                name.as_ptr().cast(),
                &mut st,
                0,
            )
        };
        if r == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR) => Ok(false),
            _ => Err(Error::path("cannot look up", &self.inner.refs.join(id), e)),
        }
    }

    /// The floating READ object with `id` if there is one (a view of it),
    /// else a READ object whose tree is `refs/<id>` when that resolves, else
    /// `None`.
    ///
    /// The handle pins nothing: its tree is the ref's path, which shows
    /// whatever the ref names at the time, so an object that a later commit
    /// unnames may be collected. (A work tree, or a tree committed by move,
    /// stays locked by the handle that owns it.)
    pub fn get(&self, id: &str) -> Result<Option<Object>> {
        ids::check_id(id)?;
        if let Some(tree) = self.floating_tree(id) {
            return Ok(Some(self.read_object(id, tree, Holding::View)));
        }
        let found = self
            .ref_resolves(id)
            .map_err(|e| e.context(format!("cannot get object {id:?}")))?;
        Ok(found.then(|| self.read_object(id, self.inner.refs.join(id), Holding::View)))
    }

    /// The tree path that `read-tree` hands out for `id`: the floating
    /// object's tree or `refs/<id>` when it resolves; `None` when unknown.
    pub fn lookup_tree(&self, id: &str) -> Result<Option<PathBuf>> {
        ids::check_id(id)?;
        if let Some(tree) = self.floating_tree(id) {
            return Ok(Some(tree));
        }
        Ok(self.ref_resolves(id)?.then(|| self.inner.refs.join(id)))
    }

    /// Pins the tree at `tree` (from [`Store::lookup_tree`]) against
    /// garbage collection for as long as the returned lock lives, e.g. while
    /// it is mounted somewhere: a later commit may unname the object, but
    /// nobody removes it under the mount. Through a ref, the object pinned
    /// is the one the ref names now; the lock's descriptor is that tree.
    pub fn pin_tree(&self, tree: &Path) -> Result<DirLock> {
        // Under the store lock, so that no collection runs between resolving
        // the ref and locking what it names.
        let _store_lock = DirLock::shared(&self.inner.tmp)?;
        DirLock::shared_following(tree)
    }

    /// The path `refs/<id>`, whether or not it exists.
    pub fn resolve_ref(&self, id: &str) -> Result<PathBuf> {
        ids::check_id(id)?;
        Ok(self.inner.refs.join(id))
    }

    /// Commits `object` under `id` and returns the new object's name.
    ///
    /// With the object's own id its tree is moved (`rename(2)`, inodes kept)
    /// to `objects/<uuid>` and the object becomes READ. With another id a
    /// copy is committed and `object` is left as it was (a snapshot). Then
    /// `refs/<id>` is replaced atomically.
    ///
    /// With a durable store (the default) the tree, its new name in
    /// `objects/` and every directory entry are flushed (`syncfs(2)`) before
    /// the ref names it, and `refs/` is `fsync`ed after the swap.
    ///
    /// On failure nothing changes: the tree stays in the object, no copy is
    /// left behind and the ref keeps its old target. The one exception is a
    /// failure of the final `fsync` of `refs/`: the ref has been swapped by
    /// then, so the commit has happened (`object` is committed as for a
    /// success) and the error says that it may not survive a power cut
    /// (the ref then names the old tree or the new one, both complete).
    pub fn commit(&self, object: &mut Object, id: &str) -> Result<String> {
        ids::check_id(id)?;
        if object.id == id {
            return self.move_in(object);
        }
        let context = || format!("cannot commit a copy of object {:?} as {id:?}", object.id);
        let mut copy = self.new_object(id).map_err(|e| e.context(context()))?;
        // On failure `copy` is dropped, which removes its work dir and
        // whatever was copied so far.
        copy.init(object).map_err(|e| e.context(context()))?;
        self.move_in(&mut copy)
    }

    fn move_in(&self, object: &mut Object) -> Result<String> {
        let Holding::Work(workdir) = &object.holding else {
            return Err(Error::invalid(format!(
                "cannot commit object {:?} under its own id: its tree is not a work tree \
                 (it was committed already or is a view); commit it under another id to copy it",
                object.id
            )));
        };
        let context = || format!("cannot commit object {:?}", object.id);
        let name = uuid::Uuid::new_v4().hyphenated().to_string();
        let dest = self.inner.objects.join(&name);
        // Locked before it moves and held by the committed object: no
        // collection takes the tree while it is in `objects/` without a ref,
        // nor while this handle lives. (No store-wide lock is needed: the
        // work dir is locked by its owner until the tree has left it, and a
        // collection reads the refs again once it holds an object; see
        // `gc`.)
        let tree_lock = DirLock::shared_at(workdir.fd(), TREE_NAME, &object.tree)
            .map_err(|e| e.context(context()))?;
        // Opened before anything moves, so that once the ref is swapped only
        // the sync itself can still fail.
        let refs_dir = self
            .open_refs_for_sync()
            .map_err(|e| e.context(context()))?;
        renameat(
            workdir.fd(),
            TREE_NAME,
            &self.inner.objects_dir,
            name.as_str(),
        )
        .map_err(|e| {
            Error::sys(format_args!("cannot move tree to {}", dest.display()), e).context(context())
        })?;
        if let Err(e) = self
            .make_durable(&tree_lock)
            .and_then(|()| self.swap_ref(&object.id, &name, workdir))
        {
            // Put the tree back: the object is as it was before the call.
            let e = match renameat(
                &self.inner.objects_dir,
                name.as_str(),
                workdir.fd(),
                TREE_NAME,
            ) {
                Ok(()) => e,
                // The name is in no ref: collection reclaims it once this
                // process has let go of it.
                Err(back) => Error::new(
                    e.errno(),
                    format!(
                        "{e}; and the tree could not be moved back from {} ({back})",
                        dest.display()
                    ),
                ),
            };
            return Err(e.context(context()));
        }
        object.stop_floating();
        object.mode = Mode::Read;
        object.tree = dest;
        // Dropping the work dir removes it (it is empty now).
        object.holding = Holding::Committed(tree_lock);
        if let Some(refs) = refs_dir {
            refs.sync_all().map_err(|e| {
                Error::path("cannot sync", &self.inner.refs, e).context(format!(
                    "object {:?} was committed as {name} but may not survive a power cut",
                    object.id
                ))
            })?;
        }
        Ok(name)
    }

    /// `refs/`, opened to be `fsync`ed after a ref swap (durable stores
    /// only).
    fn open_refs_for_sync(&self) -> Result<Option<std::fs::File>> {
        if !self.inner.options.durable {
            return Ok(None);
        }
        let refs = &self.inner.refs;
        std::fs::File::open(refs)
            .map(Some)
            .map_err(|e| Error::path("cannot open", refs, e))
    }

    /// Flushes the store's filesystem (durable stores only): the tree's
    /// contents, its rename into `objects/` and every directory entry, so
    /// that nothing a ref will name can be lost to a power cut.
    fn make_durable(&self, tree: &DirLock) -> Result<()> {
        if !self.inner.options.durable {
            return Ok(());
        }
        // SAFETY: the descriptor is open for the lifetime of `tree`.
        if unsafe { libc::syncfs(tree.fd().as_raw_fd()) } != 0 {
            return Err(Error::io(
                format_args!("syncfs of the store {}", self.inner.root.display()),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Points `refs/<id>` at `../objects/<name>`. A new ref is created in
    /// place (`symlinkat` is atomic: readers see no ref, then the complete
    /// one); an existing one is replaced by a link made under a temporary
    /// name in the committing object's work dir and renamed over it. (The
    /// work dir is locked by its owner, so no collection removes the link
    /// before the rename, and none needs to wait.)
    fn swap_ref(&self, id: &str, name: &str, workdir: &TempDir) -> Result<()> {
        let target = format!("../objects/{name}");
        let ref_path = || self.inner.refs.join(id);
        match symlinkat(target.as_str(), &self.inner.refs_dir, id) {
            Ok(()) => return Ok(()),
            Err(Errno::EEXIST) => {}
            Err(e) => {
                return Err(Error::sys(
                    format_args!("cannot create ref {}", ref_path().display()),
                    e,
                ));
            }
        }
        symlinkat(target.as_str(), workdir.fd(), NEW_REF_NAME).map_err(|e| {
            let path = workdir
                .path()
                .join(OsStr::from_bytes(NEW_REF_NAME.to_bytes()));
            Error::sys(format_args!("cannot create link {}", path.display()), e)
        })?;
        if let Err(e) = renameat(workdir.fd(), NEW_REF_NAME, &self.inner.refs_dir, id) {
            let _ = unlinkat(workdir.fd(), NEW_REF_NAME, UnlinkatFlags::NoRemoveDir);
            return Err(Error::sys(
                format_args!("cannot replace ref {}", ref_path().display()),
                e,
            ));
        }
        Ok(())
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

    /// Removes what nobody can use any more: entries of `tmp/` that no live
    /// handle (in any process) holds, and objects that no ref names and no
    /// live handle holds. Mounts left inside abandoned entries are detached.
    ///
    /// Creating objects and temp dirs and committing go on while a
    /// collection runs; only pinning a tree (for a read-only mount) waits
    /// for it (see [`crate::lock`]). An entry that cannot be removed does not stop the
    /// sweep: everything else is collected and then the first such error is
    /// returned.
    pub fn gc(&self) -> Result<GcReport> {
        let context = || format!("cannot collect garbage in {}", self.inner.root.display());
        let _sweeping = DirLock::exclusive(&self.inner.tmp).map_err(|e| e.context(context()))?;
        let mut report = GcReport::default();
        // One entry that cannot be removed (another user's, a busy mount)
        // does not stop the sweep; the first such error is reported at the
        // end.
        let mut first_error = None;
        let mut note = |result: Result<bool>| match result {
            Ok(true) => report.removed += 1,
            Ok(false) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        };
        for (path, is_dir) in list_dir(&self.inner.tmp).map_err(|e| e.context(context()))? {
            note(reclaim(&path, is_dir));
        }
        // Objects only once every ref could be read: a ref that cannot be
        // read might name any of them.
        let named = self.names_in_refs().map_err(|e| e.context(context()))?;
        let unnamed: Vec<(PathBuf, bool)> = list_dir(&self.inner.objects)
            .map_err(|e| e.context(context()))?
            .into_iter()
            .filter(|(path, _)| {
                path.file_name()
                    .is_none_or(|n| !named.contains(n.as_bytes()))
            })
            .collect();
        for batch in unnamed.chunks(OBJECT_BATCH) {
            let mut locked = Vec::new();
            for (path, is_dir) in batch {
                if !is_dir {
                    note(remove_file_if_present(path));
                    continue;
                }
                match lock_unowned(path) {
                    Ok(Some(lock)) => locked.push((path, lock)),
                    Ok(None) => {}
                    Err(e) => note(Err(e)),
                }
            }
            if locked.is_empty() {
                continue;
            }
            // Read the refs again now that these objects are locked: a
            // commit holds its tree from before it enters `objects/` until
            // its ref names it, so one that ended after the first reading
            // shows its ref now, and none can still be under way.
            let named = self.names_in_refs().map_err(|e| e.context(context()))?;
            for (path, _lock) in locked {
                let referenced = path
                    .file_name()
                    .is_some_and(|n| named.contains(n.as_bytes()));
                if !referenced {
                    note(remove_locked(path).map(|()| true));
                }
            }
        }
        first_error.map_or(Ok(report), Err)
    }

    /// Object names that some ref points at. Fails if a ref cannot be read.
    fn names_in_refs(&self) -> Result<HashSet<Vec<u8>>> {
        let mut named = HashSet::new();
        for (path, _) in list_dir(&self.inner.refs)? {
            match std::fs::read_link(&path) {
                Ok(target) => {
                    if let Some(name) = target.file_name() {
                        named.insert(name.as_bytes().to_vec());
                    }
                }
                // Not a link (names nothing), or removed since listed.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) => {}
                Err(e) => return Err(Error::path("cannot read ref", &path, e)),
            }
        }
        Ok(named)
    }

    /// The tree of the newest floating object with `id`, if any (no I/O).
    pub fn floating_tree(&self, id: &str) -> Option<PathBuf> {
        let floating = lock_ignoring_poison(&self.inner.floating);
        floating
            .get(id)
            .and_then(|v| v.last())
            .map(|(_, tree)| tree.clone())
    }

    pub(crate) fn register_floating(&self, id: &str, tree: &Path) -> u64 {
        let key = self.inner.next_key.fetch_add(1, Ordering::Relaxed);
        let mut floating = lock_ignoring_poison(&self.inner.floating);
        floating
            .entry(id.to_owned())
            .or_default()
            .push((key, tree.to_path_buf()));
        key
    }

    pub(crate) fn unregister_floating(&self, id: &str, key: u64) {
        let mut floating = lock_ignoring_poison(&self.inner.floating);
        if let Some(entries) = floating.get_mut(id) {
            entries.retain(|(k, _)| *k != key);
            if entries.is_empty() {
                floating.remove(id);
            }
        }
    }

    fn read_object(&self, id: &str, tree: PathBuf, holding: Holding) -> Object {
        Object {
            store: self.clone(),
            id: id.to_owned(),
            mode: Mode::Read,
            tree,
            holding,
            floating_key: None,
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The host tree is unmounted and removed; work and temp dirs are
        // owned by their handles, which hold a `Store` and so are gone.
        lock_ignoring_poison(&self.host_tree).take();
    }
}

/// How many unnamed objects a collection locks before it reads the refs
/// again (bounded: each lock is a descriptor).
const OBJECT_BATCH: usize = 256;

/// Removes one unowned entry of `tmp/`; `false` when somebody holds it or it
/// is gone already.
fn reclaim(path: &Path, is_dir: bool) -> Result<bool> {
    if !is_dir {
        return remove_file_if_present(path);
    }
    match lock_unowned(path)? {
        Some(_owned) => remove_locked(path).map(|()| true),
        None => Ok(false),
    }
}

/// An exclusive lock on the directory `path` if nobody holds it; `None`
/// when somebody does or it is gone already.
fn lock_unowned(path: &Path) -> Result<Option<DirLock>> {
    match DirLock::try_exclusive(path) {
        // Owners remove their entries without the store lock, so one listed
        // a moment ago may be gone.
        Err(e) if e.errno() == libc::ENOENT => Ok(None),
        other => other,
    }
}

/// Removes the directory `path`, which the caller holds locked, with the
/// mounts left inside it.
fn remove_locked(path: &Path) -> Result<()> {
    detach_mounts_below(path)?;
    tree::remove_tree(path)
}

/// Removes a file that is not a directory; `false` when it is gone already.
fn remove_file_if_present(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::path("cannot remove", path, e)),
    }
}

/// A directory of the store opened for `*at` calls (`O_PATH`).
fn open_dir_path(dir: &Path) -> Result<OwnedFd> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(dir)
        .map(OwnedFd::from)
        .map_err(|e| Error::path("cannot open", dir, e))
}

/// Entries of a directory with whether each is a directory (not following
/// symlinks).
fn list_dir(dir: &Path) -> Result<Vec<(PathBuf, bool)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::path("cannot read", dir, e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::path("cannot read", dir, e))?;
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        out.push((entry.path(), is_dir));
    }
    Ok(out)
}

/// Detaches every mount at or below `dir` (innermost first), found in this
/// process's mount table.
fn detach_mounts_below(dir: &Path) -> Result<()> {
    let table = std::fs::read("/proc/self/mountinfo")
        .map_err(|e| Error::io("cannot read /proc/self/mountinfo", e))?;
    let mut points: Vec<PathBuf> = table
        .split(|b| *b == b'\n')
        .filter_map(|line| line.split(|b| *b == b' ').nth(4))
        .map(|field| PathBuf::from(OsStr::from_bytes(&unescape_mountinfo(field))))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for point in points {
        mount::unmount(&point)?;
    }
    Ok(())
}

/// Undoes the octal escapes (`\040` for a space, ...) of `/proc/*/mountinfo`.
fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && i + 3 < field.len()
            && field[i + 1..i + 4]
                .iter()
                .all(|c| (b'0'..=b'7').contains(c))
        {
            out.push(
                (field[i + 1] - b'0') * 64 + (field[i + 2] - b'0') * 8 + (field[i + 3] - b'0'),
            );
            i += 4;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    out
}
