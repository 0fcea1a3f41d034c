//! Last use: the mtime of an object's sidecar info file, set to the current
//! second by every look-up that finds the object.
//!
//! A process touches a given object's file at most once per second: it
//! remembers, per object name, the second it last recorded, so a hot loop
//! of look-ups costs one clock read (vDSO) and one hash look-up each, and
//! one `utimensat` per object and second. The time is in the filesystem, so
//! it is shared by every process and survives restarts.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::fcntl::AtFlags;

use super::sidecar::INFO;
use crate::error::{Error, Result};

/// Most names remembered; the memory is emptied when full.
const MAX_NAMES: usize = 4096;

/// What this process recorded recently.
#[derive(Debug, Default)]
pub struct LastUse {
    recorded: Mutex<HashMap<String, i64>>,
}

/// The current Unix second (coarse clock: a vDSO read, no syscall).
pub fn now() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    ts.tv_sec
}

impl LastUse {
    /// Records a use of `objects/<name>` now, in the sidecar below the open
    /// `meta/` directory. Best effort: an object without a sidecar (from
    /// osstore 0.1, until it gets one) or a failure records nothing.
    pub fn record(&self, meta: BorrowedFd<'_>, name: &str) {
        let second = now();
        {
            let mut recorded = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
            if recorded.get(name) == Some(&second) {
                return;
            }
            if recorded.len() >= MAX_NAMES {
                recorded.clear();
            }
            recorded.insert(name.to_owned(), second);
        }
        let Ok(path) = CString::new(format!("{name}/{INFO}")) else {
            return;
        };
        let t = libc::timespec {
            tv_sec: second,
            tv_nsec: 0,
        };
        let times = [t, t];
        // SAFETY: `path` is NUL-terminated, `times` holds two timespecs,
        // `meta` is open. A failure is ignored (best effort, see above).
        unsafe { libc::utimensat(meta.as_raw_fd(), path.as_ptr(), times.as_ptr(), 0) };
    }
}

/// The last use of `objects/<name>` (its sidecar's mtime) below the open
/// `meta/` directory; `None` when it has no sidecar.
pub fn read(meta: BorrowedFd<'_>, name: &str) -> Result<Option<i64>> {
    let path = CString::new(format!("{name}/{INFO}"))
        .map_err(|_| Error::invalid(format!("object name {name:?} contains NUL")))?;
    match nix::sys::stat::fstatat(meta, path.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st.st_mtime)),
        Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(None),
        Err(e) => Err(Error::sys(format_args!("cannot stat sidecar of {name}"), e)),
    }
}
