//! Copying the contents of one regular file into a new, empty one.
//!
//! In order of preference: a reflink (`FICLONE`, shares the extents; instant),
//! `copy_file_range` (in-kernel, may offload), `pread`/`pwrite`. A method the
//! filesystems refuse once is not tried again for the rest of the tree copy.
//! Files with fewer allocated blocks than their size are copied extent by
//! extent (`SEEK_DATA`/`SEEK_HOLE`) so that holes stay holes.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::sys::uio::{pread, pwrite};
use nix::unistd::{Whence, ftruncate, lseek};

use super::sys::{Stat, copy_file_range, ficlone};
use crate::log;

/// Size of the `pread`/`pwrite` buffer.
const BUF_SIZE: usize = 256 * 1024;
/// Largest single `copy_file_range` request.
const CHUNK: usize = 1 << 30;

/// Which methods are still worth trying during one tree copy.
pub(crate) struct Methods {
    reflink: AtomicBool,
    copy_range: AtomicBool,
}

/// A failed data copy: which side failed, and how.
pub(crate) enum DataError {
    /// Reading the source.
    Read(Errno),
    /// Writing the destination.
    Write(Errno),
}

impl Methods {
    /// All methods enabled.
    pub(crate) fn new() -> Self {
        Methods {
            reflink: AtomicBool::new(true),
            copy_range: AtomicBool::new(true),
        }
    }

    /// Copies the contents of `src` (described by `st`) into the empty `dst`.
    /// `buf` is scratch space for the last-resort copy.
    pub(crate) fn copy(
        &self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        st: &Stat,
        buf: &mut Vec<u8>,
    ) -> Result<(), DataError> {
        if st.size == 0 {
            return Ok(());
        }
        if self.reflink.load(Ordering::Relaxed) {
            match ficlone(dst, src) {
                Ok(()) => return Ok(()),
                Err(e) if unsupported(e) => {
                    log::debug(format_args!("reflink refused ({e}): copying file data"));
                    self.reflink.store(false, Ordering::Relaxed);
                }
                // Anything else (e.g. a file with inline data): copy instead;
                // a real problem with the destination will show there too.
                Err(_) => {}
            }
        }
        let size = to_off(st.size);
        if st.blocks.saturating_mul(512) >= st.size {
            return self.copy_range(src, dst, 0, size, buf);
        }
        let mut pos = 0;
        while pos < size {
            let start = match lseek(src, pos, Whence::SeekData) {
                Ok(o) => o,
                // No data past `pos`: the rest is a hole.
                Err(Errno::ENXIO) => break,
                Err(e) => return Err(DataError::Read(e)),
            };
            let end = lseek(src, start, Whence::SeekHole).map_err(DataError::Read)?;
            self.copy_range(src, dst, start, end.min(size), buf)?;
            pos = end;
        }
        // Gives the file its size when it ends with a hole.
        ftruncate(dst, size).map_err(DataError::Write)
    }

    /// Copies bytes `[pos, end)` from `src` to the same offsets in `dst`.
    fn copy_range(
        &self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        mut pos: i64,
        end: i64,
        buf: &mut Vec<u8>,
    ) -> Result<(), DataError> {
        while pos < end && self.copy_range.load(Ordering::Relaxed) {
            let len = usize::try_from(end - pos).map_or(CHUNK, |n| n.min(CHUNK));
            let (mut pin, mut pout) = (pos, pos);
            match copy_file_range(src, &mut pin, dst, &mut pout, len) {
                // Short of the size stat gave: the file shrank, or it lives
                // on a filesystem that does not report its size truthfully.
                // Let read() decide.
                Ok(0) => break,
                Ok(n) => pos += n as i64,
                Err(Errno::EINTR) => {}
                Err(e) if unsupported(e) => {
                    log::debug(format_args!("copy_file_range refused ({e}): read/write"));
                    self.copy_range.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(DataError::Write(e)),
            }
        }
        if pos < end {
            read_write(src, dst, pos, end, buf)?;
        }
        Ok(())
    }
}

/// The last resort: `pread` and `pwrite` through `buf`.
fn read_write(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    mut pos: i64,
    end: i64,
    buf: &mut Vec<u8>,
) -> Result<(), DataError> {
    if buf.len() < BUF_SIZE {
        buf.resize(BUF_SIZE, 0);
    }
    while pos < end {
        let want = usize::try_from(end - pos).map_or(buf.len(), |n| n.min(buf.len()));
        let n = match pread(src, &mut buf[..want], pos) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(DataError::Read(e)),
        };
        let mut done = 0;
        while done < n {
            match pwrite(dst, &buf[done..n], pos + done as i64) {
                Ok(0) => return Err(DataError::Write(Errno::EIO)),
                Ok(w) => done += w,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(DataError::Write(e)),
            }
        }
        pos += n as i64;
    }
    Ok(())
}

/// The errors that mean "this filesystem (pair) cannot do that".
fn unsupported(e: Errno) -> bool {
    matches!(
        e,
        Errno::EOPNOTSUPP | Errno::ENOTTY | Errno::EXDEV | Errno::EINVAL | Errno::ENOSYS
    )
}

/// A size as a file offset (sizes never exceed `i64::MAX` on Linux).
fn to_off(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}
