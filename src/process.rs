//! What the crate asks about its own process: its id without a system call
//! per ask, renewed in every child of `fork()` (what the handle table and
//! the pin board check to tell their own process from a child that
//! inherited them), and its umask.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// This process's id, kept by [`pid`].
static PID: AtomicU32 = AtomicU32::new(0);

/// This process's id. The first call registers a `pthread_atfork` handler
/// that renews it in every child of `fork()` (before `fork()` returns
/// there). Should the registration fail (`ENOMEM`), every call asks the
/// kernel instead.
pub(crate) fn pid() -> u32 {
    static CACHED: Once = Once::new();
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    CACHED.call_once(|| {
        extern "C" fn renew_in_child() {
            PID.store(std::process::id(), Ordering::Relaxed);
        }
        renew_in_child();
        // SAFETY: registers a handler that only makes a system call and an
        // atomic store, both async-signal-safe.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(renew_in_child)) };
        REGISTERED.store(rc == 0, Ordering::Relaxed);
    });
    if REGISTERED.load(Ordering::Relaxed) {
        PID.load(Ordering::Relaxed)
    } else {
        std::process::id()
    }
}

/// The process's umask, from `/proc/self/status` (`umask(2)` cannot read it
/// without setting it, which other threads would see); `None` when the
/// kernel does not say.
pub(crate) fn umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}
