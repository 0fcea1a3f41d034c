//! Last use: the mtime of an object's sidecar info file, set to the current
//! second by every look-up that finds the object.
//!
//! A process touches a given object's file at most once per second: it
//! remembers what it recorded lately in a small table of atomic words, each
//! a hash of an object's name (its 40 high bits) with the second recorded
//! (its 24 low bits), in buckets of four chosen by the hash's low bits. A
//! hot loop of look-ups costs one clock read (vDSO), one hash of the name
//! and a few atomic loads each, no lock, and one `utimensat` per object and
//! second. Names that crowd one bucket only cost each other an extra
//! `utimensat`. The time is in the filesystem, so it is shared by every
//! process and survives restarts.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::AtFlags;

use super::name_hash;
use super::sidecar::INFO;
use crate::error::{Error, Result};

/// Buckets of the table, and words per bucket.
const BUCKETS: usize = 256;
const WAYS: usize = 4;
/// Bits of a word that hold the second.
const SECOND_BITS: u32 = 24;

/// What this process recorded recently.
#[derive(Debug)]
pub struct LastUse {
    recorded: Box<[AtomicU64]>,
}

impl Default for LastUse {
    fn default() -> LastUse {
        LastUse {
            recorded: (0..BUCKETS * WAYS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
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
        let hash = name_hash(name);
        let seconds = (1 << SECOND_BITS) - 1;
        let tag = hash & !seconds;
        let word = tag | (second as u64 & seconds);
        let bucket = &self.recorded[(hash as usize % BUCKETS) * WAYS..][..WAYS];
        // The word to replace: this name's older one, else one from another
        // second, else the first. Two threads may both record: harmless.
        let mut victim = 0;
        for (i, slot) in bucket.iter().enumerate() {
            let seen = slot.load(Ordering::Relaxed);
            if seen == word {
                return;
            }
            if seen & !seconds == tag {
                victim = i;
                break;
            }
            if seen & seconds != word & seconds {
                victim = i;
            }
        }
        bucket[victim].store(word, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn mtime(meta: &std::path::Path, name: &str) -> i64 {
        std::fs::metadata(meta.join(name).join(INFO))
            .unwrap()
            .mtime()
    }

    fn set_mtime_zero(meta: &std::path::Path, name: &str) {
        let file = std::fs::File::options()
            .write(true)
            .open(meta.join(name).join(INFO))
            .unwrap();
        file.set_modified(UNIX_EPOCH + Duration::ZERO).unwrap();
    }

    fn make(meta: &std::path::Path, name: &str) {
        std::fs::create_dir(meta.join(name)).unwrap();
        std::fs::write(meta.join(name).join(INFO), "").unwrap();
        set_mtime_zero(meta, name);
    }

    #[test]
    fn a_name_is_recorded_once_a_second_at_most() {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path();
        make(meta, "object");
        let fd = std::fs::File::open(meta).unwrap();
        let last_use = LastUse::default();
        loop {
            let before = now();
            last_use.record(fd.as_fd(), "object");
            assert!(mtime(meta, "object") >= before);
            set_mtime_zero(meta, "object");
            last_use.record(fd.as_fd(), "object");
            if now() == before {
                assert_eq!(mtime(meta, "object"), 0);
                break;
            }
            // The second changed in between (a slow machine): again.
        }
    }

    #[test]
    fn every_name_is_recorded_when_more_than_a_bucket_holds() {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path();
        let names: Vec<String> = (0..)
            .map(|i| format!("object-{i:05}"))
            .filter(|name| name_hash(name) as usize % BUCKETS == 0)
            .take(WAYS + 2)
            .collect();
        for name in &names {
            make(meta, name);
        }
        let fd = std::fs::File::open(meta).unwrap();
        let last_use = LastUse::default();
        let before = now();
        for name in &names {
            last_use.record(fd.as_fd(), name);
        }
        for name in &names {
            let t = mtime(meta, name);
            assert!(t >= before, "{name}: {t} < {before}");
        }
    }
}
