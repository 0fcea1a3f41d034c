//! Tree copies with progress reports and cancellation ([`copy_tree_with`]).
//!
//! The copy engine's threads only count (two relaxed atomic additions per
//! entry) and look at a cancellation flag; the progress callback runs on
//! the calling thread alone, which waits for the copy in a thread of its
//! own and wakes every [`INTERVAL`] to report. So a slow callback slows
//! nothing but its own reports, and a callback never runs concurrently with
//! itself. Without a callback the copy runs as [`super::copy_tree`] does,
//! on the calling thread, with no counting.
//!
//! Cancelling (the callback returns `false`) stops the copy at the next
//! entry and removes what the call added to the destination, using a
//! [`Snapshot`] of what was there before.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::copy::copy_tree_hooked;
use super::undo::Snapshot;
use crate::error::{Error, Result};

/// The longest time between two progress reports while the copy works
/// (unless the callback itself takes longer).
pub const INTERVAL: Duration = Duration::from_millis(100);

/// Where a copy is: entries and bytes done, and the totals when they are
/// known in advance (0 otherwise).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Entries copied so far (files, directories, links, special files;
    /// the root not counted).
    pub files_done: u64,
    /// Entries to copy, or 0 when not known.
    pub files_total: u64,
    /// Bytes of regular files copied so far (each inode once).
    pub bytes_done: u64,
    /// Bytes to copy, or 0 when not known.
    pub bytes_total: u64,
}

/// What is known of a tree before it is copied: its entry count and bytes
/// (each 0 when not known).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Entries below the root.
    pub files: u64,
    /// Bytes of regular files, each inode once.
    pub bytes: u64,
}

/// How a tree copy runs.
#[derive(Default)]
pub struct CopyOptions<'a> {
    /// Called on the calling thread with the copy's progress: first before
    /// anything is copied, then at least every [`INTERVAL`] while the copy
    /// works, and once at the end with the final counts. Returning `false`
    /// cancels: the copy fails with `ECANCELED` and what it added to the
    /// destination is removed.
    pub progress: Option<&'a mut (dyn FnMut(&Progress) -> bool + 'a)>,
    /// The copies belong to the caller: owners are not copied (and set-id
    /// bits of entries the caller does not own in the source are dropped).
    pub caller_owns: bool,
}

/// What the copy engine consults per entry: a [`Watch`] when progress is
/// reported, and whether owners are copied.
#[derive(Default)]
pub(crate) struct Hooks {
    watch: Option<Arc<Watch>>,
    /// See [`CopyOptions::caller_owns`].
    pub(crate) caller_owns: bool,
}

impl Hooks {
    /// Counts an entry about to be copied; `ECANCELED` once cancelled.
    #[inline]
    pub(crate) fn entry(&self) -> std::result::Result<(), Errno> {
        match &self.watch {
            Some(watch) => watch.entry(),
            None => Ok(()),
        }
    }

    /// Counts the bytes of a regular file copied.
    #[inline]
    pub(crate) fn bytes(&self, n: u64) {
        if let Some(watch) = &self.watch {
            watch.bytes.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Counters the copy's threads update and the calling thread reads.
#[derive(Default)]
struct Watch {
    files: AtomicU64,
    bytes: AtomicU64,
    cancelled: AtomicBool,
}

impl Watch {
    fn entry(&self) -> std::result::Result<(), Errno> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(Errno::ECANCELED);
        }
        self.files.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn progress(&self, totals: Totals) -> Progress {
        Progress {
            files_done: self.files.load(Ordering::Relaxed),
            files_total: totals.files,
            bytes_done: self.bytes.load(Ordering::Relaxed),
            bytes_total: totals.bytes,
        }
    }
}

/// Like [`super::copy_tree`], with `options`; `totals` is what is known of
/// the source in advance (reported as the progress's totals).
///
/// Errors other than a cancellation leave what was copied in place, as
/// [`super::copy_tree`] does. A cancellation whose clean-up fails returns
/// the clean-up's error.
pub fn copy_tree_with(
    src: &Path,
    dst: &Path,
    options: CopyOptions<'_>,
    totals: Totals,
) -> Result<()> {
    let mut hooks = Hooks {
        watch: None,
        caller_owns: options.caller_owns,
    };
    let Some(report) = options.progress else {
        return copy_tree_hooked(src, dst, hooks);
    };
    let before = Snapshot::take(src, dst)?;
    let watch = Arc::new(Watch::default());
    hooks.watch = Some(Arc::clone(&watch));
    let mut cancelled = !report(&watch.progress(totals));
    let result = if cancelled {
        Ok(())
    } else {
        let done = Done::default();
        thread::scope(|scope| {
            let copy = scope.spawn(|| {
                let _signal = done.on_drop();
                copy_tree_hooked(src, dst, hooks)
            });
            while !done.wait(INTERVAL) {
                if !cancelled && !report(&watch.progress(totals)) {
                    cancelled = true;
                    watch.cancelled.store(true, Ordering::Relaxed);
                }
            }
            copy.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    };
    if result.is_ok() && !cancelled {
        cancelled = !report(&watch.progress(totals));
    }
    if !cancelled {
        return result;
    }
    before.restore(dst).map_err(|e| {
        e.context(format!(
            "copy cancelled, but what it wrote to {} could not all be removed",
            dst.display()
        ))
    })?;
    Err(Error::new(
        libc::ECANCELED,
        format!(
            "copy to {} cancelled by the progress callback; what it wrote is removed",
            dst.display()
        ),
    ))
}

/// The copy's end, signalled from its thread.
#[derive(Default)]
struct Done {
    done: Mutex<bool>,
    wake: Condvar,
}

impl Done {
    /// Signals the end when dropped, also by a panic of the copy.
    fn on_drop(&self) -> impl Drop + '_ {
        struct Signal<'a>(&'a Done);
        impl Drop for Signal<'_> {
            fn drop(&mut self) {
                *self.0.done.lock().unwrap_or_else(|p| p.into_inner()) = true;
                self.0.wake.notify_all();
            }
        }
        Signal(self)
    }

    /// Waits up to `timeout`; true once the copy is over.
    fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        while !*done {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            done = self
                .wake
                .wait_timeout(done, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}
