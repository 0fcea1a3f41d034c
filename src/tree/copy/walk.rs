//! The copy as a [`Walker`] of the pool: opening each directory pair,
//! copying each entry (files, symlinks, special files, hard links; a
//! subdirectory is created and walked later), and finishing each directory
//! post-order.

use std::borrow::Cow;
use std::ffi::{CStr, CString, OsStr};
use std::mem;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use nix::dir::Type;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{Mode, SFlag, mkdirat, mknodat};
use nix::unistd::{UnlinkatFlags, linkat, symlinkat, unlinkat};

use super::meta::{Dest, Plain, open_created};
use super::{Copier, DirData, DirNode, DirPair, Failure, Scratch, Side, on_dst, on_src};
use crate::error::Result;
use crate::tree::data::DataError;
use crate::tree::links::Claim;
use crate::tree::pool::Walker;
use crate::tree::sys::{
    Stat, XattrTarget, fd_path, fstatx, lstatx, open_beneath, open_dir_checked, read_names,
    walk_what,
};
use crate::tree::xattr::XattrBufs;

impl Walker for Copier<'_> {
    /// The source directory's metadata, applied to its copy post-order.
    type Data = DirData;
    type Dir = DirPair;
    type Scratch = Scratch;

    fn scratch(&self) -> Scratch {
        Scratch {
            names: Vec::new(),
            dirents: Vec::new(),
            xattr: XattrBufs::new(),
            data: Vec::new(),
        }
    }

    fn open(&self, parent: &DirPair, node: &DirNode) -> Result<DirPair> {
        self.open_pair(parent, &node.name, node)
            .map_err(|f| self.error(f, node, None))
    }

    fn open_parent(&self, child: &DirPair, parent: &DirNode) -> Result<DirPair> {
        self.open_pair(child, c"..", parent)
            .map_err(|f| self.error(f, parent, None))
    }

    fn visit(
        &self,
        scratch: &mut Scratch,
        node: &DirNode,
        dirs: &DirPair,
        children: &mut Vec<(CString, DirData)>,
    ) -> Result<()> {
        let mut names = mem::take(&mut scratch.names);
        let read = read_names(dirs.src.as_fd(), &mut names, &mut scratch.dirents);
        read.map_err(|e| self.error(on_src("read directory")(e), node, None))?;
        let copied = names.iter().try_for_each(|(name, kind)| {
            self.copy_entry(scratch, dirs, node, name, *kind, children)
                .map_err(|f| self.error(f, node, Some(name)))
        });
        scratch.names = names;
        copied
    }

    fn leave(
        &self,
        scratch: &mut Scratch,
        node: &DirNode,
        dirs: Arc<DirPair>,
        _: Option<&DirPair>,
    ) -> Result<()> {
        self.finish_dir(scratch, &dirs, node)
            .map_err(|f| self.error(f, node, None))
    }
}

impl Copier<'_> {
    /// Opens `name` (the directory `node`, or `..` for it) in both trees of
    /// `dirs`, checking each is the directory seen before.
    fn open_pair(
        &self,
        dirs: &DirPair,
        name: &CStr,
        node: &DirNode,
    ) -> std::result::Result<DirPair, Failure> {
        let open = |dir: &OwnedFd, key, side: Side| {
            open_dir_checked(dir.as_fd(), name, key)
                .map(|(fd, _)| fd)
                .map_err(|errno| Failure {
                    what: Cow::Borrowed(walk_what("open directory", errno)),
                    side,
                    errno,
                })
        };
        Ok(DirPair {
            src: open(&dirs.src, node.data.st.inode(), Side::Src)?,
            dst: open(&dirs.dst, node.data.dst_key, Side::Dst)?,
        })
    }

    /// Copies the entry `name` of the directory `node`, of the type `kind`
    /// its listing gives. A subdirectory is only created, and pushed to
    /// `children` to be walked.
    fn copy_entry(
        &self,
        scratch: &mut Scratch,
        dirs: &DirPair,
        node: &DirNode,
        name: &CStr,
        kind: Option<Type>,
        children: &mut Vec<(CString, DirData)>,
    ) -> std::result::Result<(), Failure> {
        self.hooks.entry().map_err(on_dst("copy stopped before"))?;
        let (st, opened) = match self.open_listed_file(dirs.src.as_fd(), name, kind)? {
            Some((st, fd)) => (st, Some(fd)),
            None => (
                lstatx(dirs.src.as_fd(), name).map_err(on_src("stat"))?,
                None,
            ),
        };
        let rel = || node.rel().join(OsStr::from_bytes(name.to_bytes()));
        if st.is_dir() {
            if st.inode() == self.dst_key {
                return Err(on_src("cannot copy a directory into itself:")(
                    Errno::EINVAL,
                ));
            }
            let (created, dst_key) = make_dir(dirs.dst.as_fd(), name)?;
            let plain = created && node.data.plain;
            let data = DirData { st, plain, dst_key };
            children.push((name.to_owned(), data));
            return Ok(());
        }
        if st.nlink < 2 {
            return self.copy_inode(scratch, dirs, node, name, &st, opened);
        }
        match self.links.claim(st.inode(), st.nlink) {
            Claim::First(first) => {
                self.copy_inode(scratch, dirs, node, name, &st, opened)?;
                first.done(rel());
                Ok(())
            }
            Claim::LinkTo(target) => {
                // The first copy is reached from the destination root
                // without leaving it (no symlink, no mount, no `..`).
                let (dir, file) = match (target.parent(), target.file_name()) {
                    (Some(dir), Some(file)) => (dir, file),
                    _ => return Err(on_dst("create hard link")(Errno::EINVAL)),
                };
                let dir = open_beneath(self.dst_root.as_fd(), dir)
                    .map_err(on_dst("open directory of hard link target"))?;
                replacing(dirs.dst.as_fd(), name, || {
                    linkat(&dir, file, dirs.dst.as_fd(), name, AtFlags::empty())
                })
                .map_err(on_dst("create hard link"))?;
                self.count_link();
                Ok(())
            }
            // The first copy failed and the whole copy with it; whoever
            // failed reports why. Copying on gives this thread's own error,
            // if any, rather than a made-up one.
            Claim::Failed => self.copy_inode(scratch, dirs, node, name, &st, opened),
        }
    }

    /// Copies a non-directory; `opened` is the source file when it is open
    /// already.
    fn copy_inode(
        &self,
        scratch: &mut Scratch,
        dirs: &DirPair,
        node: &DirNode,
        name: &CStr,
        st: &Stat,
        opened: Option<OwnedFd>,
    ) -> std::result::Result<(), Failure> {
        let dst_dir = dirs.dst.as_fd();
        match st.kind() {
            libc::S_IFREG => return self.copy_file(scratch, dirs, node, name, st, opened),
            libc::S_IFLNK => {
                let target = readlinkat(dirs.src.as_fd(), name).map_err(on_src("read symlink"))?;
                replacing(dst_dir, name, || {
                    symlinkat(target.as_os_str(), dst_dir, name)
                })
                .map_err(on_dst("create symlink"))?;
            }
            kind @ (libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO | libc::S_IFSOCK) => {
                let kind = SFlag::from_bits_truncate(kind);
                let perm = Mode::from_bits_truncate(0o600);
                replacing(dst_dir, name, || {
                    mknodat(dst_dir, name, kind, perm, st.rdev)
                })
                .map_err(on_dst("create"))?;
            }
            _ => return Err(on_src("unknown file type of")(Errno::EINVAL)),
        }
        let created = open_created(dst_dir, name, st.kind())?;
        let src_path = fd_path(dirs.src.as_fd(), name);
        let proc = fd_path(created.as_fd(), c"");
        // A symlink cannot be reached through the magic link (it would be
        // followed) and the kernel takes no O_PATH descriptor for xattrs:
        // its xattrs (only security.* and trusted.* exist on symlinks) go by
        // name, the one step still done by name.
        let dst_path;
        let dst_xattrs = if st.kind() == libc::S_IFLNK {
            dst_path = fd_path(dst_dir, name);
            XattrTarget::Path(&dst_path)
        } else {
            XattrTarget::Follow(&proc)
        };
        let plain = Plain {
            owner: self.owned_as_created(node, st),
            created_mode: None,
        };
        self.apply_metadata(
            scratch,
            XattrTarget::Path(&src_path),
            Dest::Path(created.as_fd(), &proc),
            dst_xattrs,
            st,
            plain,
        )
    }

    /// Copies a regular file (`opened`, when open already): contents, then
    /// metadata.
    fn copy_file(
        &self,
        scratch: &mut Scratch,
        dirs: &DirPair,
        node: &DirNode,
        name: &CStr,
        st: &Stat,
        opened: Option<OwnedFd>,
    ) -> std::result::Result<(), Failure> {
        let src = match opened {
            Some(fd) => fd,
            None => self.open_source(dirs.src.as_fd(), name)?,
        };
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        // Created with its final permission bits when nobody else can get
        // at it meanwhile: it is the caller's, as it is to be. Otherwise
        // 0600 until owner and mode are set.
        let owner = self.owned_as_created(node, st);
        let mode = st.mode & 0o7777;
        let created_mode = (owner && mode & 0o7000 == 0).then_some(mode);
        let create_mode = Mode::from_bits_truncate(created_mode.unwrap_or(0o600) as libc::mode_t);
        let dst = replacing(dirs.dst.as_fd(), name, || {
            openat(dirs.dst.as_fd(), name, flags, create_mode)
        })
        .map_err(on_dst("create"))?;
        // Only files that really exist count (a hard link is no new file).
        self.count_file();
        self.methods
            .copy(src.as_fd(), dst.as_fd(), st, &mut scratch.data)
            .map_err(|e| match e {
                DataError::Read(e) => on_src("read")(e),
                DataError::Write(e) => on_dst("write")(e),
            })?;
        self.hooks.bytes(st.size);
        let (src, dst) = (src.as_fd(), dst.as_fd());
        self.apply_metadata(
            scratch,
            XattrTarget::Fd(src),
            Dest::Fd(dst),
            XattrTarget::Fd(dst),
            st,
            Plain {
                owner,
                created_mode,
            },
        )
    }

    /// Opens the entry `name` of `dir` when its listing says it is a regular
    /// file, and stats the open file: one path lookup instead of two (stat
    /// by name, then open). `None` when the listing gives another type or
    /// none, or the entry is no longer a regular file (replaced since the
    /// listing): the caller then stats it by name.
    fn open_listed_file(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        kind: Option<Type>,
    ) -> std::result::Result<Option<(Stat, OwnedFd)>, Failure> {
        if kind != Some(Type::File) {
            return Ok(None);
        }
        let fd = match self.open_source(dir, name) {
            Ok(fd) => fd,
            // O_NOFOLLOW met a symlink.
            Err(f) if f.errno == Errno::ELOOP => return Ok(None),
            Err(f) => return Err(f),
        };
        let st = fstatx(fd.as_fd()).map_err(on_src("stat"))?;
        Ok((st.kind() == libc::S_IFREG).then_some((st, fd)))
    }

    /// Opens a source file for reading, without touching its atime when the
    /// kernel lets us (`O_NOATIME` needs ownership or `CAP_FOWNER`).
    fn open_source(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
    ) -> std::result::Result<OwnedFd, Failure> {
        // O_NONBLOCK: a fifo swapped in since the listing or the stat opens
        // at once (and is then found not to be a regular file) instead of
        // waiting for a writer; reading a regular file ignores it. A file
        // under a lease refuses it (EWOULDBLOCK): opened again waiting for
        // the lease to be broken, as `cp` does.
        let mut flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY
            | OFlag::O_NONBLOCK;
        if self.noatime.load(Ordering::Relaxed) {
            flags |= OFlag::O_NOATIME;
        }
        let mut opened = openat(dir, name, flags, Mode::empty());
        if matches!(opened, Err(Errno::EPERM)) && flags.contains(OFlag::O_NOATIME) {
            self.noatime.store(false, Ordering::Relaxed);
            flags -= OFlag::O_NOATIME;
            opened = openat(dir, name, flags, Mode::empty());
        }
        if matches!(opened, Err(Errno::EWOULDBLOCK)) {
            opened = openat(dir, name, flags - OFlag::O_NONBLOCK, Mode::empty());
        }
        opened.map_err(on_src("open"))
    }

    /// Applies the source directory's metadata to its copy.
    fn finish_dir(
        &self,
        scratch: &mut Scratch,
        dirs: &DirPair,
        node: &DirNode,
    ) -> std::result::Result<(), Failure> {
        let st = &node.data.st;
        // The root was not created by this copy: its owner is always set.
        let plain = Plain {
            owner: !node.is_root() && self.owned_as_created(node, st),
            created_mode: None,
        };
        self.apply_metadata(
            scratch,
            XattrTarget::Fd(dirs.src.as_fd()),
            Dest::Fd(dirs.dst.as_fd()),
            XattrTarget::Fd(dirs.dst.as_fd()),
            st,
            plain,
        )
    }
}

/// Creates the directory `name` in `dir`, or accepts an existing one (the
/// copy merges into it, as cp does). Returns whether it was created, and its
/// (device, inode).
fn make_dir(dir: BorrowedFd<'_>, name: &CStr) -> std::result::Result<(bool, (u64, u64)), Failure> {
    let created = match mkdirat(dir, name, Mode::from_bits_truncate(0o700)) {
        Ok(()) => true,
        Err(Errno::EEXIST) => false,
        Err(e) => return Err(on_dst("create directory")(e)),
    };
    match lstatx(dir, name) {
        Ok(st) if st.is_dir() => Ok((created, st.inode())),
        Ok(_) => Err(on_dst("create directory")(Errno::EEXIST)),
        Err(e) => Err(on_dst("stat")(e)),
    }
}

/// Runs `make`, which creates the non-directory `name` in `dir`; if `name`
/// exists and is not a directory, removes it and runs `make` again.
fn replacing<T>(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mut make: impl FnMut() -> nix::Result<T>,
) -> nix::Result<T> {
    match make() {
        Err(Errno::EEXIST) => {
            if lstatx(dir, name).is_ok_and(|st| st.is_dir()) {
                return Err(Errno::EEXIST);
            }
            unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?;
            make()
        }
        other => other,
    }
}
