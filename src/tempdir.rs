//! Owned, locked directories inside the store's `tmp/`.
//!
//! Work dirs of objects, temp dirs handed to callers, the host tree and the
//! server's private root are all [`TempDir`]s: a fresh directory named
//! `<prefix><random><suffix>`, locked by its owner (see [`crate::lock`]) and
//! removed, whatever a build left in it, when the owner drops it.
//!
//! # Recognising osstore's names
//!
//! The collector may remove only what osstore made (other tools, such as
//! osbuild's 2022 tools sharing the store, put their own entries in
//! `tmp/`), but prefix and suffix are the caller's. So the random part
//! is marked: [`RANDOM_LEN`] random characters followed by a
//! [`CHECK_LEN`]-character check computed from them with a keyed hash
//! ([`is_generated`]). A name made by anything else has some window of
//! that length that checks with a chance of about 1 in 2.5 * 10^9 per
//! window. The mark is in the name rather than in an extended attribute
//! or a file inside the directory because the name exists from the
//! `mkdir` on: a directory whose owner died right after creating it is
//! still recognised, with no second step to lose and no reliance on what
//! the filesystem supports.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::stat::{Mode, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::error::{Error, Result};
use crate::fd;
use crate::lock::DirLock;
use crate::tree;

/// Characters of the random part of a name, as `mkdtemp` implementations use.
const NAME_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_";
/// Random characters of a name.
pub const RANDOM_LEN: usize = 8;
/// Characters of the check that follows them.
pub const CHECK_LEN: usize = 6;
/// The key of the check ("osstore1"): part of the on-disk format, since
/// every version must recognise the names of every other.
const CHECK_KEY: u64 = 0x6f73_7374_6f72_6531;
const ATTEMPTS: usize = 100;

/// A directory that its owner removes on drop.
#[derive(Debug)]
pub struct TempDir {
    /// The directory it is in (the store's `tmp/`), and its name there.
    parent: Arc<OwnedFd>,
    name: CString,
    path: PathBuf,
    // Held until the directory is removed (the field is dropped after
    // `Drop::drop` has removed it), so a collector never takes it.
    lock: DirLock,
    removed: bool,
    /// Random bytes drawn with the name, for [`TempDir::spare_random`].
    spare_random: [u8; 16],
}

impl TempDir {
    /// Creates `<parent>/<prefix><random><suffix>` with mode 0700 and locks
    /// it; `parent` is open as `parent_fd`. Prefix and suffix contain no
    /// `/` or NUL (checked by the caller).
    ///
    /// A collector may remove the new directory before it is locked (see
    /// [`crate::lock`]); another name is tried then.
    pub(crate) fn create_in(
        parent_fd: &Arc<OwnedFd>,
        parent: &Path,
        prefix: &[u8],
        suffix: &[u8],
    ) -> Result<TempDir> {
        for _ in 0..ATTEMPTS {
            let (name, path, spare_random) =
                make_unique_dir(parent_fd.as_fd(), parent, prefix, suffix)?;
            let locked = DirLock::shared_at(parent_fd.as_fd(), &name, &path)
                .and_then(|lock| Ok((lock.is_unlinked(&path)?, lock)));
            match locked {
                Ok((false, lock)) => {
                    return Ok(TempDir {
                        parent: Arc::clone(parent_fd),
                        name,
                        path,
                        lock,
                        removed: false,
                        spare_random,
                    });
                }
                // Removed by a collector before it was locked.
                Ok((true, _)) => continue,
                Err(e) if e.errno() == libc::ENOENT => continue,
                Err(e) => {
                    // Not ours without the lock: leave no stray entry.
                    let _ = unlinkat(parent_fd.as_fd(), name.as_c_str(), UnlinkatFlags::RemoveDir);
                    return Err(e);
                }
            }
        }
        Err(Error::new(
            libc::EAGAIN,
            format!(
                "every new directory in {} was collected before it could be locked",
                parent.display()
            ),
        ))
    }

    /// Sixteen random bytes drawn together with the directory's name and
    /// used for nothing else (a commit names its object's tree with them:
    /// one `getrandom` fewer per commit).
    pub(crate) fn spare_random(&self) -> [u8; 16] {
        self.spare_random
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory's locked descriptor, for `*at` calls inside it.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.lock.fd().as_fd()
    }

    /// Removes the directory and everything in it now, reporting failure.
    pub fn remove(mut self) -> Result<()> {
        self.remove_now()
    }

    fn remove_now(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.removed, true) {
            return Ok(());
        }
        // An empty directory (a work dir whose tree was committed) goes with
        // one rmdir; anything else takes the full removal. What cannot be
        // removed is left to a later collection once the lock is released.
        match unlinkat(
            self.parent.as_fd(),
            self.name.as_c_str(),
            UnlinkatFlags::RemoveDir,
        ) {
            Ok(()) => Ok(()),
            Err(_) => tree::remove_tree(&self.path),
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Errors cannot be reported from drop; what is left is reclaimed by
        // the next garbage collection, since the lock is released.
        let _ = self.remove_now();
    }
}

/// Creates a fresh directory `<parent>/<prefix><random><suffix>` with mode
/// 0700, as `mkdtemp(3)` does, and returns its path.
pub(crate) fn create_unique_dir(parent: &Path, prefix: &[u8], suffix: &[u8]) -> Result<PathBuf> {
    let dir = fd::open_dir_path(parent)?;
    make_unique_dir(dir.as_fd(), parent, prefix, suffix).map(|(_, path, _)| path)
}

/// Makes `<prefix><random><suffix>` (mode 0700) in the directory open as
/// `dir`, whose path is `parent`, trying new names while one exists.
/// Returns the name, the path and 16 more random bytes (see
/// [`TempDir::spare_random`]).
fn make_unique_dir(
    dir: BorrowedFd<'_>,
    parent: &Path,
    prefix: &[u8],
    suffix: &[u8],
) -> Result<(CString, PathBuf, [u8; 16])> {
    for _ in 0..ATTEMPTS {
        let (name, spare) = fresh_name_and_spare(prefix, suffix)?;
        let path = parent.join(OsStr::from_bytes(name.to_bytes()));
        match mkdirat(dir, name.as_c_str(), Mode::from_bits_truncate(0o700)) {
            Ok(()) => return Ok((name, path, spare)),
            Err(Errno::EEXIST) => continue,
            Err(e) => {
                return Err(Error::sys(
                    format_args!("cannot create directory {}", path.display()),
                    e,
                ));
            }
        }
    }
    Err(Error::new(
        libc::EEXIST,
        format!("no free temporary name in {}", parent.display()),
    ))
}

/// A fresh name `<prefix><random><suffix>`, the random part being
/// [`RANDOM_LEN`] random characters and their [`CHECK_LEN`]-character check
/// (see [`is_generated`]). `EINVAL` when prefix or suffix contains NUL.
pub fn fresh_name(prefix: &[u8], suffix: &[u8]) -> Result<CString> {
    fresh_name_and_spare(prefix, suffix).map(|(name, _)| name)
}

/// [`fresh_name`], and 16 more random bytes from the same `getrandom`.
fn fresh_name_and_spare(prefix: &[u8], suffix: &[u8]) -> Result<(CString, [u8; 16])> {
    let mut random = [0u8; RANDOM_LEN + 16];
    fill_random(&mut random)?;
    let mut name = Vec::with_capacity(prefix.len() + RANDOM_LEN + CHECK_LEN + suffix.len() + 1);
    name.extend_from_slice(prefix);
    name.extend(
        random[..RANDOM_LEN]
            .iter()
            .map(|b| NAME_CHARS[*b as usize % NAME_CHARS.len()]),
    );
    let check = check_of(&name[prefix.len()..]);
    name.extend_from_slice(&check);
    name.extend_from_slice(suffix);
    let name = CString::new(name)
        .map_err(|_| Error::invalid("a directory name prefix or suffix contains NUL"))?;
    let mut spare = [0u8; 16];
    spare.copy_from_slice(&random[RANDOM_LEN..]);
    Ok((name, spare))
}

/// Fills `buf` from the kernel's random source (`getrandom(2)`).
fn fill_random(buf: &mut [u8]) -> Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is writable for `rest.len()` bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        match usize::try_from(n) {
            Ok(n) => filled += n,
            Err(_) if Errno::last() == Errno::EINTR => {}
            Err(_) => return Err(Error::sys("cannot get random bytes", Errno::last())),
        }
    }
    Ok(())
}

/// Whether osstore made `name` with [`fresh_name`]: some window of it is
/// [`RANDOM_LEN`] characters of the random alphabet followed by their check.
pub fn is_generated(name: &[u8]) -> bool {
    name.windows(RANDOM_LEN + CHECK_LEN).any(|window| {
        let (random, check) = window.split_at(RANDOM_LEN);
        random.iter().all(|c| NAME_CHARS.contains(c)) && check_of(random) == check
    })
}

/// The check of the random characters `random`: a keyed FNV-1a hash,
/// mixed (the splitmix64 finaliser) so that every character of the check
/// depends on every input character, written in the random alphabet.
/// Fixed, not `std`'s hasher: it must never change between versions.
fn check_of(random: &[u8]) -> [u8; CHECK_LEN] {
    let mut h = 0xcbf2_9ce4_8422_2325_u64 ^ CHECK_KEY;
    for &c in random {
        h = (h ^ u64::from(c)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    let base = NAME_CHARS.len() as u64;
    let mut check = [0u8; CHECK_LEN];
    for c in &mut check {
        *c = NAME_CHARS[(h % base) as usize];
        h /= base;
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_names_are_recognised_whatever_the_affixes() {
        for (prefix, suffix) in [
            (&b""[..], &b""[..]),
            (b"object-abc1234-", b"-workdir"),
            (b"x", b"y"),
        ] {
            let name = fresh_name(prefix, suffix).unwrap();
            let bytes = name.as_bytes();
            assert_eq!(
                bytes.len(),
                prefix.len() + RANDOM_LEN + CHECK_LEN + suffix.len()
            );
            assert!(is_generated(bytes), "{name:?}");
        }
    }

    #[test]
    fn other_names_are_not_recognised() {
        let name = fresh_name(b"t-", b"").unwrap();
        let mut changed = name.as_bytes().to_vec();
        // Any one character of the random part or the check altered.
        for i in 2..changed.len() {
            let kept = changed[i];
            changed[i] = if kept == b'a' { b'b' } else { b'a' };
            assert!(!is_generated(&changed), "{changed:?}");
            changed[i] = kept;
        }
        for stranger in [
            &b"stranger-dir"[..],
            b"object-dead-xxxxxxxx-workdir",
            b"tmpab12cd34",
            b"store-server-abcdefgh",
            b"0e1f2a3b-0000-4000-8000-00000000abcd",
        ] {
            assert!(!is_generated(stranger), "{stranger:?}");
        }
    }
}
