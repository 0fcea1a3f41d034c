//! The methods: what each validated request does and the reply it gets.
//!
//! Look-ups go through [`Store::get`], as the library's do: a committed
//! object is named by `objects/<name>` (what the ref named at the look-up),
//! its use is recorded and it is pinned. A `read-tree-at` mount holds its
//! pin until it is unmounted; `read-tree` and `open-tree` answers hold
//! theirs until the connection that asked closes (the client can use the
//! path or the descriptor until then at least).

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::path::PathBuf;

use super::protocol::{Reply, Request};
use super::readtree_at::{self, Mounts};
use crate::error::Result;
use crate::object::Object;
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
    /// The committed objects that `read-tree` and `open-tree` answers pin,
    /// by connection and object name; let go when the connection closes.
    held: HashMap<RawFd, HashMap<String, Object>>,
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
            held: HashMap::new(),
        }
    }

    /// Carries out `request`, received on connection `conn`; failures become
    /// `{"error": ...}` replies.
    pub fn handle(&mut self, conn: RawFd, request: Request) -> Reply {
        self.dispatch(conn, request)
            .unwrap_or_else(|e| Reply::error(&e))
    }

    /// Connection `conn` closed: the pins of its answers go.
    pub fn disconnected(&mut self, conn: RawFd) {
        self.held.remove(&conn);
    }

    fn dispatch(&mut self, conn: RawFd, request: Request) -> Result<Reply> {
        match request {
            Request::ReadTree { object_id } => Ok(match self.store.get(&object_id)? {
                Some(object) => {
                    let tree = object.tree().to_path_buf();
                    self.hold(conn, object);
                    Reply::Path(tree)
                }
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
                let Some(object) = self.store.get(&object_id)? else {
                    return Ok(Reply::NoObject);
                };
                let source = readtree_at::open_subtree(object.tree(), &subtree)?;
                self.mounts
                    .attach(&source, &target, target_fd.as_ref(), object)?;
                Ok(Reply::Path(target))
            }
            Request::Mkdtemp { prefix, suffix } => Ok(Reply::Path(self.mkdtemp(&prefix, &suffix)?)),
            Request::Source { name } => Ok(Reply::Path(self.sources.join(name))),
            Request::OpenTree { object_id, subtree } => {
                let Some(object) = self.store.get(&object_id)? else {
                    return Ok(Reply::NoObject);
                };
                let source = readtree_at::open_subtree(object.tree(), &subtree)?;
                let view = readtree_at::detached_view(&source)?;
                let whole = readtree_at::is_whole_tree(&subtree).then_some(&view);
                let pin = readtree_at::pin_descriptor(object.tree(), whole)?;
                self.hold(conn, object);
                Ok(Reply::Fd { view, pin })
            }
        }
    }

    /// Keeps `object`'s pin for connection `conn` (once per object); a
    /// floating object's view pins nothing and is not kept.
    fn hold(&mut self, conn: RawFd, object: Object) {
        let Some(name) = object.committed_name() else {
            return;
        };
        let held = self.held.entry(conn).or_default();
        match held.get_mut(name) {
            // Both pin the same object: one pin per object and connection.
            Some(older) => *older = object,
            None => {
                let name = name.to_owned();
                held.insert(name, object);
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
