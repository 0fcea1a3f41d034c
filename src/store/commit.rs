//! Commit: moving (or copying) an object's tree into `objects/` and
//! swapping its ref, durably.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::renameat;
use nix::unistd::{UnlinkatFlags, symlinkat, unlinkat};

use super::{NEW_REF_NAME, Store, TREE_NAME, evict};
use crate::cache::settings::Settings;
use crate::cache::sidecar::{self, Info};
use crate::error::{Error, Result};
use crate::ids::{ObjectId, ToObjectId};
use crate::lock::DirLock;
use crate::object::Object;
use crate::tempdir::TempDir;
use crate::tree::Measure;
use crate::tree::measure::measure_open_tree;

impl Store {
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
    ///
    /// An object of another store (another `Store` value, even of the same
    /// directory) is refused with `EINVAL`.
    pub fn commit(&self, object: &mut Object, id: &(impl ToObjectId + ?Sized)) -> Result<String> {
        let id = id.to_object_id()?;
        self.require_writable("commit")?;
        if !object.belongs_to(self) {
            return Err(Error::invalid(format!(
                "cannot commit object {:?} to the store {}: it belongs to another store",
                object.id().as_str(),
                self.inner.root.display()
            )));
        }
        if object.id() == id {
            return self.move_in(object);
        }
        let context = || {
            format!(
                "cannot commit a copy of object {:?} as {:?}",
                object.id().as_str(),
                id.as_str()
            )
        };
        let mut copy = self.new_object(id).map_err(|e| e.context(context()))?;
        // On failure `copy` is dropped, which removes its work dir and
        // whatever was copied so far. The copy is measured as it is made:
        // its tree is never handed to a caller, so nothing can have
        // changed it since.
        let copied = copy
            .init_for_commit(object)
            .map_err(|e| e.context(context()))?;
        self.move_in_measured(&mut copy, copied)
    }

    fn move_in(&self, object: &mut Object) -> Result<String> {
        self.move_in_measured(object, None)
    }

    /// Commits `object`'s tree by moving it. `copied` is the measure of a
    /// tree this library copied and clamped itself and nobody could write
    /// into since; without it the tree is measured (and clamped) here.
    fn move_in_measured(&self, object: &mut Object, copied: Option<Measure>) -> Result<String> {
        let Some(workdir) = object.work_dir() else {
            return Err(Error::invalid(format!(
                "cannot commit object {:?} under its own id: its tree is not a work tree \
                 (it was committed already or is a view); commit it under another id to copy it",
                object.id().as_str()
            )));
        };
        let context = || format!("cannot commit object {:?}", object.id().as_str());
        // A version 4 uuid from random bytes drawn with the work dir's
        // name. A commit tried again after a failure reuses it: the failure
        // freed the name, or (tree not moved back) there is no tree left
        // in the work dir to move.
        let name = uuid::Builder::from_random_bytes(workdir.spare_random())
            .into_uuid()
            .hyphenated()
            .to_string();
        let dest = self.inner.objects.join(&name);
        // Read again only when the settings file changed.
        let settings = evict::current_settings(self).map_err(|e| e.context(context()))?;
        // Locked before it moves and held by the committed object: no
        // collection takes the tree while it is in `objects/` without a ref,
        // nor while this handle lives. (No store-wide lock is needed: the
        // work dir is locked by its owner until the tree has left it, and a
        // collection reads the refs again once it holds an object; see
        // `gc`.)
        let tree_lock = DirLock::shared_at(workdir.fd(), TREE_NAME, object.tree())
            .map_err(|e| e.context(context()))?;
        // The sidecar: size, clamped timestamps, and what the object
        // carries (see `crate::cache`).
        let info = self
            .measure_for_commit(object, &tree_lock, &settings, copied)
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
        let mut counted = None;
        if let Err(e) = self
            .install_sidecar(&name, &info)
            .and_then(|()| self.make_durable(&tree_lock))
            .and_then(|()| {
                counted = self.count_in(&settings, object.id().as_str(), &name, &info, || {
                    self.swap_ref(object.id(), &name, workdir)
                })?;
                Ok(())
            })
        {
            let _ = crate::tree::remove_tree(&self.inner.meta.join(&name));
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
        object.committed(dest, tree_lock);
        object.cache_mut().info = std::sync::OnceLock::from(info);
        // Best effort: the commit has happened; an eviction that fails now
        // is retried by the next commit or `evict`.
        let _ = self.evict_after_commit(&settings, counted, &name);
        if let Some(refs) = refs_dir {
            refs.sync_all().map_err(|e| {
                Error::path("cannot sync", &self.inner.refs, e).context(format!(
                    "object {:?} was committed as {name} but may not survive a power cut",
                    object.id().as_str()
                ))
            })?;
        }
        Ok(name)
    }

    /// Clamps the tree (open as `tree`) to the source epoch and measures
    /// it, unless `copied` has done both; refuses it with `EFBIG` when it
    /// is larger than `max-size`; returns its sidecar information.
    fn measure_for_commit(
        &self,
        object: &Object,
        tree: &DirLock,
        settings: &Settings,
        copied: Option<Measure>,
    ) -> Result<Info> {
        let measured = match copied {
            Some(m) => m,
            None => measure_open_tree(tree.fd().as_fd(), object.tree(), object.clamp()?)?,
        };
        self.check_fits(settings, measured.bytes)?;
        let mut info = object.info()?.clone();
        info.size = measured.bytes;
        info.files = measured.entries;
        Ok(info)
    }

    /// Writes the sidecar as `meta/<name>`, in place: after the tree has
    /// moved to `objects/<name>`, so a collection keeps it (see `gc`), and
    /// before a ref names the object, so nothing reads it unfinished (every
    /// reader of a sidecar reaches it through a ref). A rename into place
    /// would add nothing but a system call.
    fn install_sidecar(&self, name: &str, info: &Info) -> Result<()> {
        let meta = self
            .inner
            .meta_dir
            .as_ref()
            .ok_or_else(|| Error::new(libc::EROFS, "the store has no meta/ directory"))?;
        let dir = self.inner.meta.join(name);
        let written = match sidecar::write_in(meta.as_fd(), name, info) {
            // Left by an earlier try of this commit (same name) whose
            // clean-up failed: no ref names it, so it is replaced.
            Err(e) if e.errno() == libc::EEXIST => crate::tree::remove_tree(&dir)
                .and_then(|()| sidecar::write_in(meta.as_fd(), name, info)),
            other => other,
        };
        written.map_err(|e| e.context(dir.display()))
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
    fn swap_ref(&self, id: &ObjectId, name: &str, workdir: &TempDir) -> Result<()> {
        let target = format!("../objects/{name}");
        let ref_path = || self.ref_path(id);
        match symlinkat(target.as_str(), &self.inner.refs_dir, id.as_str()) {
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
        if let Err(e) = renameat(
            workdir.fd(),
            NEW_REF_NAME,
            &self.inner.refs_dir,
            id.as_str(),
        ) {
            let _ = unlinkat(workdir.fd(), NEW_REF_NAME, UnlinkatFlags::NoRemoveDir);
            return Err(Error::sys(
                format_args!("cannot replace ref {}", ref_path().display()),
                e,
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::tree::measure::WALKS;
    use crate::{OpenOptions, Store};

    fn walks() -> u64 {
        WALKS.with(std::cell::Cell::get)
    }

    /// A commit by copy takes the copy's measure (and clamp) from the copy
    /// itself; a commit by move walks the caller's tree once.
    #[test]
    fn a_commit_by_copy_walks_no_tree_a_commit_by_move_one() {
        let dir = tempfile::tempdir().unwrap();
        let options = OpenOptions {
            durable: false,
            ..OpenOptions::default()
        };
        let store = Store::open_with(dir.path(), options).unwrap();
        let mut obj = store.new_object("a").unwrap();
        std::fs::create_dir(obj.tree().join("d")).unwrap();
        std::fs::write(obj.tree().join("d/f"), b"x").unwrap();
        std::fs::hard_link(obj.tree().join("d/f"), obj.tree().join("g")).unwrap();
        let before = walks();
        store.commit(&mut obj, "copy").unwrap();
        obj.set_source_epoch(1_000_000).unwrap();
        store.commit(&mut obj, "clamped-copy").unwrap();
        assert_eq!(walks(), before, "commits by copy walked a tree");
        let infos = store.list().unwrap();
        assert!(infos.iter().all(|i| i.files == 4), "{infos:?}");
        store.commit(&mut obj, "a").unwrap();
        assert_eq!(walks(), before + 1);
    }
}
