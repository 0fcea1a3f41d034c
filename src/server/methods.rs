//! The methods: what each validated request does and the reply it gets.

use std::os::fd::AsFd;
use std::path::PathBuf;

use super::protocol::{Reply, Request};
use super::readtree_at::{self, Mounts};
use crate::error::Result;
use crate::store::Store;
use crate::tempdir::create_unique_dir;

/// The server's state as the methods see it.
pub struct Methods {
    store: Store,
    /// The private temp root, where `mkdtemp` creates directories.
    tmproot: PathBuf,
    /// `<store>/sources`.
    sources: PathBuf,
    mounts: Mounts,
    /// Where `read-tree-at` may mount (`None`: anywhere).
    mount_roots: Option<Vec<PathBuf>>,
}

impl Methods {
    /// Methods serving `store`, with `tmproot` as the private temp root,
    /// mounting only below `mount_roots` when set.
    pub fn new(store: Store, tmproot: PathBuf, mount_roots: Option<Vec<PathBuf>>) -> Methods {
        Methods {
            sources: store.path().join("sources"),
            store,
            tmproot,
            mounts: Mounts::default(),
            mount_roots,
        }
    }

    /// Carries out `request`; failures become `{"error": ...}` replies.
    pub fn handle(&mut self, request: Request) -> Reply {
        self.dispatch(request).unwrap_or_else(|e| Reply::error(&e))
    }

    fn dispatch(&mut self, request: Request) -> Result<Reply> {
        match request {
            Request::ReadTree { object_id } => Ok(match self.store.lookup_tree(&object_id)? {
                Some(tree) => Reply::Path(tree),
                None => Reply::NoObject,
            }),
            Request::ReadTreeAt {
                object_id,
                target,
                subtree,
            } => {
                let target = PathBuf::from(target);
                // Checked first: a refused target costs no look-up.
                let target_fd = match &self.mount_roots {
                    Some(roots) => Some(readtree_at::open_target(roots, &target)?),
                    None => None,
                };
                let Some(tree) = self.store.lookup_tree(&object_id)? else {
                    return Ok(Reply::NoObject);
                };
                let pin = self.store.pin_tree(&tree)?;
                let source = readtree_at::open_subtree_in(pin.fd().as_fd(), &tree, &subtree)?;
                self.mounts
                    .attach(&source, &target, target_fd.as_ref(), pin)?;
                Ok(Reply::Path(target))
            }
            Request::Mkdtemp { prefix, suffix } => Ok(Reply::Path(self.mkdtemp(&prefix, &suffix)?)),
            Request::Source { name } => Ok(Reply::Path(self.sources.join(name))),
            Request::OpenTree { object_id, subtree } => {
                let Some(tree) = self.store.lookup_tree(&object_id)? else {
                    return Ok(Reply::NoObject);
                };
                let source = readtree_at::open_subtree(&tree, &subtree)?;
                Ok(Reply::Fd(readtree_at::detached_view(&source)?))
            }
        }
    }

    /// A fresh directory `<tmproot>/<prefix><random><suffix>`, mode 0700.
    fn mkdtemp(&self, prefix: &str, suffix: &str) -> Result<PathBuf> {
        create_unique_dir(&self.tmproot, prefix.as_bytes(), suffix.as_bytes())
    }

    /// Undoes every mount made by `read-tree-at` (see
    /// [`Mounts::unmount_all`]).
    pub fn unmount_all(&mut self) -> Result<()> {
        self.mounts.unmount_all()
    }
}
