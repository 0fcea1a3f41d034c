//! Copying the contents of one regular file into a new, empty one.
//!
//! In order of preference: a reflink (`FICLONE`, shares the extents; instant),
//! `copy_file_range` (in-kernel, may offload), `pread`/`pwrite`. A method the
//! filesystems refuse once is not tried again for the rest of the tree copy.
//! Files with fewer allocated blocks than their size are copied extent by
//! extent (`SEEK_DATA`/`SEEK_HOLE`) so that holes stay holes.
//!
//! Copied (not cloned) data stays dirty in memory until the kernel writes
//! it back, which it starts once the dirty pages pass its background
//! threshold (`vm.dirty_background_*`): its flusher then writes back the
//! oldest dirty inodes during the copy, on the CPUs the copy is using, in a
//! big tree mostly small files, each a block allocation and a write of its
//! own. So once a copy has copied half that threshold, each file of
//! [`EARLY_WRITEBACK_FILE`] or more has its writeback started as soon as its
//! data is copied (`sync_file_range`, not waiting): few files hold most of
//! the bytes, so the dirty pages grow mostly by the small files, and fewer
//! of those are written back during the copy. (Copying the 200,000-file
//! bench tree onto an ext4, this cut the kernel threads' CPU time during
//! the copy by about a third, 0.5-0.9 s, for 0.1-0.3 s more in the copy's
//! own threads.) A copy smaller than that is left alone: its data is
//! written back after it, as the kernel would.

use std::os::fd::BorrowedFd;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nix::errno::Errno;
use nix::sys::uio::{pread, pwrite};
use nix::unistd::{Whence, ftruncate, lseek};

use super::sys::{Stat, copy_file_range, dirty_background_threshold, ficlone, start_writeback};
use crate::log;

/// Size of the `pread`/`pwrite` buffer.
const BUF_SIZE: usize = 256 * 1024;
/// Largest single `copy_file_range` request.
const CHUNK: usize = 1 << 30;
/// Files from this size on have their writeback started early in a big
/// copy (see the [module doc](self)).
const EARLY_WRITEBACK_FILE: u64 = 64 * 1024;
/// Copied bytes below which a copy does not even look up the kernel's
/// threshold (a small copy never reaches half of it).
const EARLY_WRITEBACK_FLOOR: u64 = 64 << 20;

/// Which methods are still worth trying during one tree copy, and how much
/// it has copied.
pub(crate) struct Methods {
    reflink: AtomicBool,
    copy_range: AtomicBool,
    /// Bytes of file data copied (not cloned) so far.
    copied: AtomicU64,
    /// Copied bytes from which large files' writeback is started early:
    /// half the kernel's dirty background threshold (`u64::MAX` when
    /// unknown), looked up once the copy passes [`EARLY_WRITEBACK_FLOOR`].
    early_writeback_from: OnceLock<u64>,
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
            copied: AtomicU64::new(0),
            early_writeback_from: OnceLock::new(),
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
            self.copy_range(src, dst, 0, size, buf)?;
        } else {
            self.copy_sparse(src, dst, size, buf)?;
        }
        self.copied_data(dst, st.size);
        Ok(())
    }

    /// Copies the `size` bytes of the sparse file `src` extent by extent.
    fn copy_sparse(
        &self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        size: i64,
        buf: &mut Vec<u8>,
    ) -> Result<(), DataError> {
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

    /// Counts `size` bytes copied into `dst`, and starts `dst`'s writeback
    /// when the copy is big and the file large (see the [module
    /// doc](self)).
    fn copied_data(&self, dst: BorrowedFd<'_>, size: u64) {
        let copied = self.copied.fetch_add(size, Ordering::Relaxed) + size;
        if size < EARLY_WRITEBACK_FILE || copied < self.early_writeback_from(copied) {
            return;
        }
        // Only a hint: a failed writeback shows where writeback errors
        // always do (fsync, syncfs), not here.
        if let Err(e) = start_writeback(dst) {
            log::debug(format_args!("early writeback refused ({e})"));
        }
    }

    /// The copied bytes from which large files' writeback starts early,
    /// once the copy has `copied` bytes: not looked up below
    /// [`EARLY_WRITEBACK_FLOOR`].
    fn early_writeback_from(&self, copied: u64) -> u64 {
        if let Some(&from) = self.early_writeback_from.get() {
            return from;
        }
        if copied < EARLY_WRITEBACK_FLOOR {
            return u64::MAX;
        }
        *self
            .early_writeback_from
            .get_or_init(|| dirty_background_threshold().map_or(u64::MAX, |t| t / 2))
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

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;
    use crate::tree::sys::fstatx;

    /// With early writeback on from the first byte, large files still copy
    /// byte for byte (their writeback only starts sooner), small ones too.
    #[test]
    fn early_writeback_keeps_the_data() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let methods = Methods::new();
        methods.early_writeback_from.set(0).expect("unset");
        let mut buf = Vec::new();
        for (i, size) in [100usize, 3 * EARLY_WRITEBACK_FILE as usize + 5]
            .into_iter()
            .enumerate()
        {
            let data: Vec<u8> = (0..size).map(|n| (n * 7 + i) as u8).collect();
            let (a, b) = (
                tmp.path().join(format!("a{i}")),
                tmp.path().join(format!("b{i}")),
            );
            std::fs::write(&a, &data).expect("write");
            let src = std::fs::File::open(&a).expect("open");
            let dst = std::fs::File::create(&b).expect("create");
            let st = fstatx(src.as_fd()).expect("stat");
            let copied = methods.copy(src.as_fd(), dst.as_fd(), &st, &mut buf);
            assert!(copied.is_ok(), "copy of {size} bytes failed");
            assert_eq!(std::fs::read(&b).expect("read"), data, "{size} bytes");
        }
    }

    /// The threshold early writeback is measured against is found.
    #[test]
    fn kernel_dirty_background_threshold_is_read() {
        assert!(dirty_background_threshold().is_some_and(|t| t > 0));
    }
}
