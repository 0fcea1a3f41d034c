//! Setting one copied inode's metadata: owner, xattrs, mode, times, in that
//! order (see the [module doc](super)), leaving out what the inode already
//! has from its creation ([`Plain`]).

use std::borrow::Cow;
use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat};
use nix::sys::stat::{FchmodatFlags, Mode, fchmod, fchmodat, futimens};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchown, fchownat};

use super::{Copier, DirNode, Failure, Scratch, Side, on_dst};
use crate::tree::sys::{REPLACED, Stat, Time, XattrTarget, fstatx};
use crate::tree::xattr::copy_xattrs;

/// What [`Copier::apply_metadata`] may leave out, because the destination
/// inode already has it from its creation.
#[derive(Clone, Copy)]
pub(super) struct Plain {
    /// The inode was created with the caller's uid and gid, as wanted.
    pub(super) owner: bool,
    /// The permission bits the file was created with (before the umask).
    pub(super) created_mode: Option<u32>,
}

/// The inode metadata is applied to: an open descriptor, or an `O_PATH`
/// descriptor of what is never opened for I/O (symlinks and special files;
/// see [`open_created`]), with `/proc/self/fd/N` for it.
#[derive(Clone, Copy)]
pub(super) enum Dest<'a> {
    Fd(BorrowedFd<'a>),
    Path(BorrowedFd<'a>, &'a CStr),
}

impl Dest<'_> {
    fn chown(self, uid: u32, gid: u32) -> nix::Result<()> {
        let (uid, gid) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        match self {
            Dest::Fd(fd) => fchown(fd, uid, gid),
            Dest::Path(fd, _) => fchownat(fd, c"", uid, gid, EMPTY_PATH_NOFOLLOW),
        }
    }

    /// Never called for a symlink (their mode cannot be set on Linux).
    fn chmod(self, mode: u32) -> nix::Result<()> {
        let mode = Mode::from_bits_truncate(mode as libc::mode_t);
        match self {
            Dest::Fd(fd) => fchmod(fd, mode),
            // The magic link leads to the descriptor's inode, whatever its
            // name has become.
            Dest::Path(_, proc) => fchmodat(AT_FDCWD, proc, mode, FchmodatFlags::FollowSymlink),
        }
    }

    fn set_times(self, atime: Time, mtime: Time) -> nix::Result<()> {
        let ts = |t: Time| TimeSpec::new(t.sec, i64::from(t.nsec));
        let (atime, mtime) = (ts(atime), ts(mtime));
        match self {
            Dest::Fd(fd) => futimens(fd, &atime, &mtime),
            Dest::Path(fd, _) => {
                let times = [*atime.as_ref(), *mtime.as_ref()];
                // SAFETY: the empty name is NUL-terminated, `times` holds
                // the two timespecs the call reads, and the descriptor is
                // open for the duration of the call.
                let rc = unsafe {
                    libc::utimensat(
                        fd.as_raw_fd(),
                        c"".as_ptr(),
                        times.as_ptr(),
                        EMPTY_PATH_NOFOLLOW.bits(),
                    )
                };
                Errno::result(rc).map(drop)
            }
        }
    }
}

/// The `*at` flags that act on an `O_PATH` descriptor's own inode.
const EMPTY_PATH_NOFOLLOW: AtFlags = AtFlags::AT_EMPTY_PATH.union(AtFlags::AT_SYMLINK_NOFOLLOW);

/// What [`open_created`] fails with when the entry is not the one created.
const ENTRY_REPLACED: &str = "entry replaced during the copy:";

/// Opens (`O_PATH`, not following a symlink) the entry `name` the copy has
/// just created in `dir` as a `kind` (symlink or special file), so that its
/// metadata is set through the descriptor and never by name: a process
/// writing in the destination may have renamed another inode over the name
/// meanwhile, a hard link of an outside file say, which `NOFOLLOW` does not
/// stop. Fails with `ESTALE` unless the entry is a `kind` with one link (a
/// fresh inode).
pub(super) fn open_created(
    dir: BorrowedFd<'_>,
    name: &CStr,
    kind: u32,
) -> Result<OwnedFd, Failure> {
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(dir, name, flags, Mode::empty()).map_err(on_dst("open created"))?;
    let st = fstatx(fd.as_fd()).map_err(on_dst("stat created"))?;
    if st.kind() != kind || st.nlink != 1 {
        return Err(on_dst(ENTRY_REPLACED)(REPLACED));
    }
    Ok(fd)
}

impl Copier<'_> {
    /// True when an inode created in `node`'s copy already has the owner
    /// `st` asks for (see [`DirData::plain`](super::DirData::plain)).
    pub(super) fn owned_as_created(&self, node: &DirNode, st: &Stat) -> bool {
        node.data.plain && (self.hooks.caller_owns || (st.uid, st.gid) == self.owner)
    }

    /// Owner, xattrs, mode, times, in that order (see the [module
    /// doc](super)), leaving out what `plain` says the inode has already.
    pub(super) fn apply_metadata(
        &self,
        scratch: &mut Scratch,
        src: XattrTarget<'_>,
        dst: Dest<'_>,
        dst_xattrs: XattrTarget<'_>,
        st: &Stat,
        plain: Plain,
    ) -> std::result::Result<(), Failure> {
        let mut mode = st.mode & 0o7777;
        let chown = if plain.owner || self.hooks.caller_owns {
            Ok(())
        } else {
            dst.chown(st.uid, st.gid)
        };
        if self.hooks.caller_owns && (st.uid, st.gid) != self.owner {
            // The copy is the caller's: no set-id rights of another owner.
            mode &= !(libc::S_ISUID | libc::S_ISGID);
        }
        if let Err(e) = chown {
            if self.privileged || !matches!(e, Errno::EPERM | Errno::EINVAL) {
                return Err(on_dst("set owner of")(e));
            }
            // Like cp: an unprivileged copy keeps the caller as owner, and
            // must not grant set-id rights in the caller's name.
            mode &= !(libc::S_ISUID | libc::S_ISGID);
        }
        let xattrs_set = copy_xattrs(src, dst_xattrs, &mut scratch.xattr).map_err(|e| Failure {
            what: Cow::Owned(e.what),
            side: if e.source { Side::Src } else { Side::Dst },
            errno: e.errno,
        })?;
        // The mode is right already when the file was created with it, the
        // umask took nothing away and no xattr (an ACL) changed it since.
        let mode_as_created = plain.created_mode == Some(mode)
            && !xattrs_set
            && self.umask().is_some_and(|umask| mode & umask == 0);
        if st.kind() != libc::S_IFLNK && !mode_as_created {
            dst.chmod(mode).map_err(on_dst("set mode of"))?;
        }
        let (atime, mtime) = match self.tally.and_then(|t| t.clamp) {
            Some(c) if st.mtime.sec >= c.since => {
                let epoch = Time {
                    sec: c.epoch,
                    nsec: 0,
                };
                (epoch, epoch)
            }
            _ => (st.atime, st.mtime),
        };
        dst.set_times(atime, mtime)
            .map_err(on_dst("set times of"))?;
        self.count_created(dst)
    }

    /// With a tally, counts the inode `dst` now that it is complete.
    fn count_created(&self, dst: Dest<'_>) -> std::result::Result<(), Failure> {
        let Some(tally) = self.tally else {
            return Ok(());
        };
        let (Dest::Fd(fd) | Dest::Path(fd, _)) = dst;
        let st = fstatx(fd).map_err(on_dst("stat"))?;
        tally.bytes.fetch_add(st.blocks * 512, Ordering::Relaxed);
        tally.entries.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// With a tally, counts one more link to an inode counted already.
    pub(super) fn count_link(&self) {
        if let Some(tally) = self.tally {
            tally.entries.fetch_add(1, Ordering::Relaxed);
        }
    }
}
