//! A small pool of threads that walks a directory tree in parallel, one
//! directory per job, with a post-order callback.
//!
//! Jobs sit on a shared stack (LIFO), so the walk is depth-first and the
//! number of queued directories stays bounded by the tree's depth times the
//! width of the directories on the current paths, not by the tree's size.
//! Each directory counts its unfinished subdirectories; whoever finishes the
//! last one runs the directory's post-order step, then walks up.
//!
//! The walk never resolves a path of more than one component: a directory is
//! opened by its name in its parent's open directory and checked against what
//! the parent's listing said (see [`Walker::open`]), so a directory swapped
//! for a symlink or another directory mid-walk fails the walk there instead
//! of leading it outside the tree, and the depth of the tree is not limited
//! by `PATH_MAX`. Open directories are kept only while they are likely
//! needed (a directory keeps its own until its subdirectories are opened,
//! and the first [`KEEP`] ones until they are complete); otherwise the
//! post-order step reaches a directory again from its child through `..`,
//! checked the same way. So the descriptors held stay bounded whatever the
//! depth.

use std::ffi::{CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::{self, Scope};

use crate::error::Result;

/// Directories that keep their descriptors until they are complete.
const KEEP: usize = 64;
/// Directories that keep their descriptors until their subdirectories are
/// opened; past this, a subdirectory reopens its parent from an ancestor.
const CACHE: usize = 256;

/// One directory of the walk.
pub(crate) struct Node<T, D> {
    /// Name in the parent directory; empty for the root.
    pub(crate) name: CString,
    /// What the walker keeps about the directory until its post-order step.
    pub(crate) data: T,
    parent: Option<Arc<Node<T, D>>>,
    /// Subdirectories not finished yet, plus one while the node's own visit
    /// is pending.
    pending: AtomicUsize,
    /// Subdirectories not opened yet.
    unopened: AtomicUsize,
    /// The open directory, while it is kept.
    dir: Mutex<Option<Arc<D>>>,
    /// The directory holds one of the [`KEEP`] places.
    kept: AtomicBool,
}

impl<T, D> Node<T, D> {
    fn new(name: CString, data: T, parent: Option<Arc<Node<T, D>>>) -> Self {
        Node {
            name,
            data,
            parent,
            pending: AtomicUsize::new(1),
            unopened: AtomicUsize::new(0),
            dir: Mutex::new(None),
            kept: AtomicBool::new(false),
        }
    }

    /// True for the root of the walk.
    pub(crate) fn is_root(&self) -> bool {
        self.parent.is_none()
    }

    /// The parent directory's node (`None` for the root).
    pub(crate) fn parent(&self) -> Option<&Node<T, D>> {
        self.parent.as_deref()
    }

    /// The path relative to the root of the walk (empty for the root), for
    /// messages: the walk itself never uses it.
    pub(crate) fn rel(&self) -> PathBuf {
        let mut names: Vec<&CStr> = Vec::new();
        let mut node = self;
        while let Some(parent) = node.parent.as_deref() {
            names.push(&node.name);
            node = parent;
        }
        names
            .iter()
            .rev()
            .map(|n| OsStr::from_bytes(n.to_bytes()))
            .collect()
    }

    fn cached(&self) -> Option<Arc<D>> {
        lock(&self.dir).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another worker panicked; the state is
    // still consistent (every update is a single assignment or push).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the pool calls back into.
pub(crate) trait Walker: Sync {
    /// Per-directory data.
    type Data: Send + Sync;
    /// An open directory (or a pair, for a walk over two trees).
    type Dir: Send + Sync;
    /// Per-thread scratch state (buffers).
    type Scratch;

    /// Fresh scratch state for one thread.
    fn scratch(&self) -> Self::Scratch;

    /// Opens the directory `node` by its name in its parent's open directory
    /// `parent`, without following a symlink, and checks that it is the
    /// directory the parent's listing saw (device and inode).
    fn open(&self, parent: &Self::Dir, node: &Node<Self::Data, Self::Dir>) -> Result<Self::Dir>;

    /// Opens `parent` again through the `..` of its subdirectory's open
    /// directory `child`, checking it is the same directory as before.
    fn open_parent(
        &self,
        child: &Self::Dir,
        parent: &Node<Self::Data, Self::Dir>,
    ) -> Result<Self::Dir>;

    /// Handles the entries of the open directory `dir` of `node` and pushes
    /// a (name, data) pair to `children` for each subdirectory to walk.
    fn visit(
        &self,
        scratch: &mut Self::Scratch,
        node: &Node<Self::Data, Self::Dir>,
        dir: &Self::Dir,
        children: &mut Vec<(CString, Self::Data)>,
    ) -> Result<()>;

    /// Post-order step of a directory, once it and everything below it is
    /// visited: `dir` is its open directory, the last reference to it (so
    /// that a removal can close it before removing the directory: removing
    /// an open directory costs a filesystem more), `parent` its parent's
    /// (`None` for the root).
    fn leave(
        &self,
        scratch: &mut Self::Scratch,
        node: &Node<Self::Data, Self::Dir>,
        dir: Arc<Self::Dir>,
        parent: Option<&Self::Dir>,
    ) -> Result<()>;
}

struct State<N> {
    jobs: Vec<N>,
    /// Threads currently running a visit.
    active: usize,
    error: Option<crate::error::Error>,
    /// Helper threads started so far.
    helpers: usize,
    /// 512-byte blocks the walk's threads have read from a device.
    blocks_read: u64,
}

struct Shared<T, D> {
    state: Mutex<State<Arc<Node<T, D>>>>,
    wake: Condvar,
    /// Directories holding one of the [`KEEP`] places.
    kept: AtomicUsize,
    /// Other directories keeping their descriptors (up to [`CACHE`]).
    cached: AtomicUsize,
}

impl<T, D> Shared<T, D> {
    /// Keeps `dir` as `node`'s open directory, if there is room.
    fn keep(&self, node: &Node<T, D>, dir: Arc<D>) {
        if self.kept.fetch_add(1, Ordering::AcqRel) < KEEP {
            node.kept.store(true, Ordering::Release);
        } else {
            self.kept.fetch_sub(1, Ordering::AcqRel);
            if self.cached.fetch_add(1, Ordering::AcqRel) >= CACHE {
                self.cached.fetch_sub(1, Ordering::AcqRel);
                return;
            }
        }
        *lock(&node.dir) = Some(dir);
    }

    /// Closes `node`'s kept directory, if any.
    fn release(&self, node: &Node<T, D>) {
        if lock(&node.dir).take().is_some() {
            let counter = if node.kept.load(Ordering::Acquire) {
                &self.kept
            } else {
                &self.cached
            };
            counter.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Walks the tree whose root directory is open as `root_dir`, with data
/// `root`, with up to `threads` threads (the calling one included). Returns
/// the first error; the walk stops soon after it.
pub(crate) fn run<W: Walker>(
    walker: &W,
    root_dir: W::Dir,
    root: W::Data,
    threads: usize,
) -> Result<()> {
    let root = Node::new(CString::default(), root, None);
    root.kept.store(true, Ordering::Release);
    *lock(&root.dir) = Some(Arc::new(root_dir));
    let shared = Shared {
        state: Mutex::new(State {
            jobs: vec![Arc::new(root)],
            active: 0,
            error: None,
            helpers: 0,
            blocks_read: 0,
        }),
        wake: Condvar::new(),
        kept: AtomicUsize::new(1),
        cached: AtomicUsize::new(0),
    };
    thread::scope(|scope| {
        let helpers = Helpers {
            scope,
            count: threads.saturating_sub(1),
        };
        work(walker, &shared, Some(&helpers));
    });
    let error = lock(&shared.state).error.take();
    match error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// How to start the helper threads, lazily: only once there are two jobs to
/// share, so that walking a small tree costs no thread.
struct Helpers<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    count: usize,
}

type SharedOf<W> = Shared<<W as Walker>::Data, <W as Walker>::Dir>;
type NodeOf<W> = Node<<W as Walker>::Data, <W as Walker>::Dir>;

fn work<'scope, 'env, W: Walker>(
    walker: &'env W,
    shared: &'env SharedOf<W>,
    helpers: Option<&Helpers<'scope, 'env>>,
) {
    let mut scratch = walker.scratch();
    let mut children = Vec::new();
    // The calling thread counts from the end of its first directory with
    // subdirectories: a walk of one directory then costs no `getrusage`.
    let mut blocks_read = helpers.is_none().then(thread_blocks_read);
    while let Some(node) = next_job(shared) {
        let result = walk_one(walker, shared, &mut scratch, &node, &mut children);
        let read = (blocks_read.is_some() || !children.is_empty()).then(thread_blocks_read);
        let mut state = lock(&shared.state);
        state.active -= 1;
        if let (Some(read), Some(before)) = (read, blocks_read) {
            state.blocks_read += read.saturating_sub(before);
        }
        blocks_read = read.or(blocks_read);
        match result {
            Err(e) => {
                state.error.get_or_insert(e);
                state.jobs.clear();
                children.clear();
            }
            Ok(()) => state.jobs.extend(
                children
                    .drain(..)
                    .map(|(name, data)| Arc::new(Node::new(name, data, Some(Arc::clone(&node))))),
            ),
        }
        if let Some(h) = helpers.filter(|_| state.jobs.len() >= 2) {
            let wanted = if h.count > 0 && state.blocks_read >= IO_BOUND_BLOCKS {
                h.count.max(IO_THREADS - 1)
            } else {
                h.count
            };
            for _ in state.helpers..wanted {
                h.scope.spawn(move || work::<W>(walker, shared, None));
            }
            state.helpers = state.helpers.max(wanted);
        }
        // Only helper threads wait: before any is started there is nobody
        // to wake (and a wake-up is a system call, which would double the
        // cost of walking a tiny tree).
        let waiters = state.helpers > 0;
        drop(state);
        if waiters {
            shared.wake.notify_all();
        }
    }
}

/// Opens and visits `node`; completes it if it has no subdirectories.
fn walk_one<W: Walker>(
    walker: &W,
    shared: &SharedOf<W>,
    scratch: &mut W::Scratch,
    node: &NodeOf<W>,
    children: &mut Vec<(CString, W::Data)>,
) -> Result<()> {
    let dir = match (node.parent(), node.cached()) {
        (_, Some(dir)) => dir,
        (Some(parent), None) => {
            let opened = open_child(walker, parent, node);
            if parent.unopened.fetch_sub(1, Ordering::AcqRel) == 1
                && !parent.kept.load(Ordering::Acquire)
            {
                shared.release(parent);
            }
            Arc::new(opened?)
        }
        (None, None) => return Err(lost_root()),
    };
    walker.visit(scratch, node, &dir, children)?;
    if children.is_empty() {
        return complete(walker, shared, scratch, node, dir);
    }
    // The children replace the visit in the pending count; they are not
    // queued yet, so nothing else touches the counts.
    node.pending.fetch_add(children.len() - 1, Ordering::AcqRel);
    node.unopened.store(children.len(), Ordering::Release);
    if !node.is_root() {
        shared.keep(node, dir);
    }
    Ok(())
}

/// Opens `node` in its parent's kept directory, or else in its parent
/// reopened step by step from the nearest ancestor that kept its own.
fn open_child<W: Walker>(walker: &W, parent: &NodeOf<W>, node: &NodeOf<W>) -> Result<W::Dir> {
    if let Some(dir) = parent.cached() {
        return walker.open(&dir, node);
    }
    let mut chain = vec![parent];
    let mut dir = loop {
        let Some(up) = chain[chain.len() - 1].parent() else {
            return Err(lost_root());
        };
        match up.cached() {
            Some(dir) => break dir,
            None => chain.push(up),
        }
    };
    for step in chain.iter().rev() {
        dir = Arc::new(walker.open(&dir, step)?);
    }
    walker.open(&dir, node)
}

/// The root's directory stays open until the walk is over; not finding it
/// would be a bug of the pool, reported rather than panicked on.
fn lost_root() -> crate::error::Error {
    crate::error::Error::new(libc::EIO, "tree walk: root directory no longer open")
}

/// `node`, open as `dir`, is complete: runs its post-order step, then that of
/// each ancestor whose last pending subdirectory this was.
fn complete<W: Walker>(
    walker: &W,
    shared: &SharedOf<W>,
    scratch: &mut W::Scratch,
    node: &NodeOf<W>,
    dir: Arc<W::Dir>,
) -> Result<()> {
    let (mut node, mut dir) = (node, dir);
    loop {
        let parent = node.parent();
        let parent_dir = match parent {
            None => None,
            Some(p) => Some(match p.cached() {
                Some(d) => d,
                None => Arc::new(walker.open_parent(&dir, p)?),
            }),
        };
        shared.release(node);
        walker.leave(scratch, node, dir, parent_dir.as_deref())?;
        let (Some(p), Some(pd)) = (parent, parent_dir) else {
            return Ok(());
        };
        if p.pending.fetch_sub(1, Ordering::AcqRel) != 1 {
            return Ok(());
        }
        (node, dir) = (p, pd);
    }
}

/// Takes a job, waiting while other threads may still produce some. `None`
/// when the walk is over (done or failed).
fn next_job<T, D>(shared: &Shared<T, D>) -> Option<Arc<Node<T, D>>> {
    let mut state = lock(&shared.state);
    loop {
        if state.error.is_some() {
            return None;
        }
        if let Some(node) = state.jobs.pop() {
            state.active += 1;
            return Some(node);
        }
        if state.active == 0 {
            return None;
        }
        state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
    }
}

/// Threads a walk grows to once it reads from a device (the page cache
/// missed): then the threads mostly wait, and more of them keep more reads
/// in flight. A walk served from the cache is bound by the CPUs and stays at
/// [`default_threads`].
const IO_THREADS: usize = 16;
/// Blocks (of 512 bytes) read from a device after which a walk counts as
/// waiting on it.
const IO_BOUND_BLOCKS: u64 = 2048;

/// The 512-byte blocks the calling thread has read from devices so far.
fn thread_blocks_read() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is writable memory the size of a `struct rusage`.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) } != 0 {
        return 0;
    }
    // SAFETY: initialised by the successful call (and zeroed before).
    u64::try_from(unsafe { usage.assume_init() }.ru_inblock).unwrap_or(0)
}

/// How many threads a walk should use: a few, as the work is mostly
/// syscalls on one filesystem and more threads only add contention.
///
/// Looked up once per process: `available_parallelism` reads the cgroup's
/// CPU quota files each time (some twenty syscalls), which would double
/// the cost of copying or removing a tiny tree.
pub(crate) fn default_threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4)))
}

#[cfg(test)]
mod tests;
