//! A small pool of threads that walks a directory tree in parallel, one
//! directory per job, with a post-order callback.
//!
//! Jobs sit on a shared stack (LIFO), so the walk is depth-first and the
//! number of queued directories stays bounded by the tree's depth times the
//! width of the directories on the current paths, not by the tree's size.
//! Each directory counts its unfinished subdirectories; whoever finishes the
//! last one runs the directory's post-order step, then walks up.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::{self, Scope};

use crate::error::Result;

/// One directory of the walk.
pub(crate) struct Node<T> {
    /// Path relative to the root of the walk; empty for the root.
    pub(crate) rel: PathBuf,
    /// What the walker keeps about the directory until its post-order step.
    pub(crate) data: T,
    parent: Option<Arc<Node<T>>>,
    /// Subdirectories not finished yet, plus one while the node's own visit
    /// is pending.
    pending: AtomicUsize,
}

impl<T> Node<T> {
    /// True for the root of the walk.
    pub(crate) fn is_root(&self) -> bool {
        self.parent.is_none()
    }
}

/// What the pool calls back into.
pub(crate) trait Walker: Sync {
    /// Per-directory data.
    type Data: Send + Sync;
    /// Per-thread scratch state (buffers).
    type Scratch;

    /// Fresh scratch state for one thread.
    fn scratch(&self) -> Self::Scratch;

    /// Handles the entries of the directory `node` and pushes a (relative
    /// path, data) pair to `children` for each subdirectory to walk. When it
    /// pushes none, the directory is complete when `visit` returns, and
    /// `visit` must itself do what `leave` would do.
    fn visit(
        &self,
        scratch: &mut Self::Scratch,
        node: &Node<Self::Data>,
        children: &mut Vec<(PathBuf, Self::Data)>,
    ) -> Result<()>;

    /// Post-order step of a directory that had subdirectories, once they are
    /// all complete.
    fn leave(&self, scratch: &mut Self::Scratch, node: &Node<Self::Data>) -> Result<()>;
}

struct State<T> {
    jobs: Vec<Arc<Node<T>>>,
    /// Threads currently running a visit.
    active: usize,
    error: Option<crate::error::Error>,
    /// Helper threads started so far.
    helpers: usize,
    /// 512-byte blocks the walk's threads have read from a device.
    blocks_read: u64,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    wake: Condvar,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A poisoned lock only means another worker panicked; the state is
        // still consistent (every update is a single assignment or push).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Walks the tree whose root directory is described by `root`, with up to
/// `threads` threads (the calling one included). Returns the first error; the
/// walk stops soon after it.
pub(crate) fn run<W: Walker>(walker: &W, root: W::Data, threads: usize) -> Result<()> {
    let shared = Shared {
        state: Mutex::new(State {
            jobs: vec![Arc::new(Node {
                rel: PathBuf::new(),
                data: root,
                parent: None,
                pending: AtomicUsize::new(1),
            })],
            active: 0,
            error: None,
            helpers: 0,
            blocks_read: 0,
        }),
        wake: Condvar::new(),
    };
    thread::scope(|scope| {
        let helpers = Helpers {
            scope,
            count: threads.saturating_sub(1),
        };
        work(walker, &shared, Some(&helpers));
    });
    match shared.lock().error.take() {
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

fn work<'scope, 'env, W: Walker>(
    walker: &'env W,
    shared: &'env Shared<W::Data>,
    helpers: Option<&Helpers<'scope, 'env>>,
) {
    let mut scratch = walker.scratch();
    let mut children = Vec::new();
    let mut blocks_read = thread_blocks_read();
    while let Some(node) = next_job(shared) {
        let result = walker
            .visit(&mut scratch, &node, &mut children)
            .and_then(|()| {
                if children.is_empty() {
                    complete_ancestors(walker, &mut scratch, &node)
                } else {
                    // The children replace the visit in the pending count;
                    // they are not queued yet, so nothing else touches it.
                    node.pending.fetch_add(children.len() - 1, Ordering::AcqRel);
                    Ok(())
                }
            });
        let read = thread_blocks_read();
        let mut state = shared.lock();
        state.active -= 1;
        state.blocks_read += read.saturating_sub(blocks_read);
        blocks_read = read;
        match result {
            Err(e) => {
                state.error.get_or_insert(e);
                state.jobs.clear();
                children.clear();
            }
            Ok(()) => state.jobs.extend(children.drain(..).map(|(rel, data)| {
                Arc::new(Node {
                    rel,
                    data,
                    parent: Some(Arc::clone(&node)),
                    pending: AtomicUsize::new(1),
                })
            })),
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
        drop(state);
        shared.wake.notify_all();
    }
}

/// Takes a job, waiting while other threads may still produce some. `None`
/// when the walk is over (done or failed).
fn next_job<T>(shared: &Shared<T>) -> Option<Arc<Node<T>>> {
    let mut state = shared.lock();
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

/// `node` is complete: run `leave` for each ancestor whose last pending
/// subdirectory this was.
fn complete_ancestors<W: Walker>(
    walker: &W,
    scratch: &mut W::Scratch,
    node: &Node<W::Data>,
) -> Result<()> {
    let mut parent = node.parent.as_deref();
    while let Some(p) = parent {
        if p.pending.fetch_sub(1, Ordering::AcqRel) != 1 {
            break;
        }
        walker.leave(scratch, p)?;
        parent = p.parent.as_deref();
    }
    Ok(())
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
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::Mutex as StdMutex;

    /// A synthetic tree: every directory at depth < 3 has 3 subdirectories.
    struct Fake {
        log: StdMutex<Vec<String>>,
        fail_at: Option<&'static str>,
    }

    impl Walker for Fake {
        type Data = ();
        type Scratch = ();
        fn scratch(&self) {}
        fn visit(
            &self,
            _: &mut (),
            node: &Node<()>,
            children: &mut Vec<(PathBuf, ())>,
        ) -> Result<()> {
            if self.fail_at == Some(node.rel.to_str().unwrap_or("")) {
                return Err(crate::error::Error::new(libc::EIO, "boom"));
            }
            if node.rel.components().count() < 3 {
                for i in 0..3 {
                    children.push((node.rel.join(i.to_string()), ()));
                }
            } else {
                self.leave(&mut (), node)?;
            }
            Ok(())
        }
        fn leave(&self, _: &mut (), node: &Node<()>) -> Result<()> {
            let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            // Post-order: every child must already be logged.
            for i in 0..3 {
                let child = node.rel.join(i.to_string());
                if node.rel.components().count() < 3 {
                    assert!(
                        log.iter().any(|l| Path::new(l) == child),
                        "{child:?} not done"
                    );
                }
            }
            log.push(node.rel.to_string_lossy().into_owned());
            Ok(())
        }
    }

    #[test]
    fn tree_pool_visits_all_in_post_order() {
        let fake = Fake {
            log: StdMutex::new(Vec::new()),
            fail_at: None,
        };
        run(&fake, (), 4).expect("walk");
        let log = fake.log.into_inner().unwrap_or_else(|p| p.into_inner());
        assert_eq!(log.len(), 1 + 3 + 9 + 27);
        assert_eq!(log.last().map(String::as_str), Some(""));
    }

    #[test]
    fn tree_pool_returns_first_error() {
        let fake = Fake {
            log: StdMutex::new(Vec::new()),
            fail_at: Some("1/2"),
        };
        let err = run(&fake, (), 3).expect_err("must fail");
        assert_eq!(err.errno(), libc::EIO);
        let log = fake.log.into_inner().unwrap_or_else(|p| p.into_inner());
        assert!(!log.iter().any(|l| l.is_empty()), "root must not complete");
    }
}
