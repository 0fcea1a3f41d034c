//! Applying layers to a tree, confined to it.
//!
//! Every entry is created relative to a descriptor of its parent directory,
//! which is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`
//! from the tree's root: a name with `..` or a leading `/` is refused
//! outright, and a path through a symlink that leads out of the tree fails
//! to open. The last component is never followed (`O_NOFOLLOW`, `*at` calls
//! with `AT_SYMLINK_NOFOLLOW`, `linkat` without `AT_SYMLINK_FOLLOW`), so no
//! entry, link or whiteout acts outside the tree. Directory modes and times
//! are applied once all layers are in (a later entry inside would change the
//! time; a mode without `w` would stop root-less pulls from filling it).

use std::collections::{BTreeMap, HashSet};
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, futimens, mkdirat, mknodat,
    utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, symlinkat, unlinkat};
use tar::EntryType;

use super::holes::{DATA_BUF, write_data, write_segments};
use super::tarread::{self, Item, refuse};
use crate::error::{Error, Result};
use crate::tree::sys::{XattrTarget, lstatx, set_xattr};

/// A sparse entry claiming more than this many bytes...
const SPARSE_CLAIM_FLOOR: u64 = 1 << 30;
/// ... and more than this many times the data it carries is refused.
const SPARSE_CLAIM_RATIO: u64 = 64;

/// Applies layers, in order, to the tree at a directory.
pub(crate) struct Extractor {
    root: OwnedFd,
    root_path: PathBuf,
    /// Directory -> (mode, mtime), applied by [`Extractor::finish`].
    dirs: BTreeMap<Vec<u8>, (u32, TimeSpec)>,
    /// Paths written by the current layer (whiteouts spare them).
    in_layer: HashSet<Vec<u8>>,
    is_root: bool,
    /// The buffer every file's data passes through (one per extraction).
    buf: Vec<u8>,
}

fn cstr(bytes: &[u8]) -> Result<CString> {
    CString::new(bytes).map_err(|_| refuse("a name with a NUL byte"))
}

/// The components of an entry name: `./` prefixes and empty or `.`
/// components dropped; `..` and absolute names refused.
fn components(raw: &[u8]) -> Result<Vec<&[u8]>> {
    let shown = String::from_utf8_lossy(raw);
    if raw.starts_with(b"/") {
        return Err(refuse(format_args!("{shown:?} is an absolute path")));
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(refuse(format_args!("{shown:?} goes up with '..'"))),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn beneath() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

fn dir_how() -> OpenHow {
    OpenHow::new()
        .flags(OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(beneath())
}

impl Extractor {
    /// An extractor into the directory `root` (usually empty).
    pub(crate) fn new(root: &Path) -> Result<Extractor> {
        let fd = nix::fcntl::open(
            root,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::sys(format_args!("cannot open {}", root.display()), e))?;
        Ok(Extractor {
            root: fd,
            root_path: root.to_path_buf(),
            dirs: BTreeMap::new(),
            in_layer: HashSet::new(),
            is_root: nix::unistd::geteuid().is_root(),
            buf: vec![0; DATA_BUF],
        })
    }

    /// Applies one uncompressed layer.
    pub(crate) fn layer(&mut self, reader: impl Read) -> Result<()> {
        self.in_layer.clear();
        tarread::for_each(reader, |item, data| self.entry(item, data))
    }

    fn entry(&mut self, item: Item, data: &mut dyn Read) -> Result<()> {
        let shown = String::from_utf8_lossy(&item.path).into_owned();
        let comps = components(&item.path)?;
        let kind = item.kind;
        let Some((name, parent)) = comps.split_last() else {
            if kind != EntryType::Directory {
                return Err(refuse(format_args!(
                    "{shown:?} names the root but is not a directory"
                )));
            }
            self.owner_and_xattrs(&self.root, c"", &item, true)?;
            self.dirs.insert(Vec::new(), (item.mode, item.mtime));
            return Ok(());
        };
        let key = comps.join(&b'/');
        if let Some(target) = name.strip_prefix(b".wh.") {
            return self.whiteout(parent, target, &shown);
        }
        let dir = self.parent(parent, &shown)?;
        self.keep_times(parent, &dir)?;
        let cname = cstr(name)?;
        self.in_layer.insert(key.clone());
        let fail = |e: Errno| {
            Error::sys(
                format_args!("cannot create {shown:?} in {}", self.root_path.display()),
                e,
            )
        };
        let target = || {
            item.link
                .clone()
                .ok_or_else(|| refuse(format_args!("link {shown:?} without a target")))
        };
        match kind {
            EntryType::Directory => {
                match lstatx(dir.as_fd(), &cname) {
                    Ok(st) if st.is_dir() => {}
                    Ok(_) => {
                        self.remove(&dir, &cname)?;
                        mkdirat(&dir, cname.as_c_str(), Mode::from_bits_truncate(0o700))
                            .map_err(fail)?;
                    }
                    Err(Errno::ENOENT) => {
                        mkdirat(&dir, cname.as_c_str(), Mode::from_bits_truncate(0o700))
                            .map_err(fail)?
                    }
                    Err(e) => return Err(fail(e)),
                }
                self.owner_and_xattrs(&dir, &cname, &item, true)?;
                self.dirs.insert(key, (item.mode, item.mtime));
                return Ok(());
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                if let Some((real, segments)) = &item.sparse {
                    let data_len: u64 = segments.iter().map(|s| s.1).sum();
                    if *real > SPARSE_CLAIM_FLOOR && real / SPARSE_CLAIM_RATIO > data_len {
                        return Err(refuse(format_args!(
                            "{shown:?} claims a sparse size of {real} bytes for {data_len} bytes of data"
                        )));
                    }
                }
                self.remove(&dir, &cname)?;
                let fd = openat2(
                    &dir,
                    cname.as_c_str(),
                    OpenHow::new()
                        .flags(
                            OFlag::O_WRONLY
                                | OFlag::O_CREAT
                                | OFlag::O_EXCL
                                | OFlag::O_NOFOLLOW
                                | OFlag::O_CLOEXEC,
                        )
                        .mode(Mode::from_bits_truncate(0o600))
                        .resolve(beneath()),
                )
                .map_err(fail)?;
                let file = File::from(fd);
                let written = match &item.sparse {
                    Some((real, segments)) => {
                        write_segments(&file, data, segments, *real, &mut self.buf)
                    }
                    None => write_data(&file, data, &mut self.buf),
                };
                written.map_err(|e| Error::io(format_args!("cannot write {shown:?}"), e))?;
            }
            EntryType::Symlink => {
                let target = target()?;
                self.remove(&dir, &cname)?;
                symlinkat(cstr(&target)?.as_c_str(), &dir, cname.as_c_str()).map_err(fail)?;
            }
            EntryType::Link => {
                let target = target()?;
                let tcomps = components(&target)?;
                let Some((tname, tparent)) = tcomps.split_last() else {
                    return Err(refuse(format_args!("hard link {shown:?} to the root")));
                };
                if tcomps == comps {
                    return Ok(());
                }
                let tdir = self
                    .open_dir(tparent)
                    .map_err(|e| e.context(format!("hard link {shown:?}")))?;
                self.remove(&dir, &cname)?;
                linkat(
                    &tdir,
                    cstr(tname)?.as_c_str(),
                    &dir,
                    cname.as_c_str(),
                    AtFlags::empty(),
                )
                .map_err(fail)?;
                // The inode carries the metadata of the entry it links to.
                return Ok(());
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let sflag = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                self.remove(&dir, &cname)?;
                mknodat(
                    &dir,
                    cname.as_c_str(),
                    sflag,
                    Mode::from_bits_truncate(0o600),
                    item.rdev,
                )
                .map_err(fail)?;
            }
            other => {
                return Err(refuse(format_args!(
                    "{shown:?} has the unsupported tar type {other:?}"
                )));
            }
        }
        self.owner_and_xattrs(&dir, &cname, &item, false)?;
        if kind != EntryType::Symlink {
            fchmodat(
                &dir,
                cname.as_c_str(),
                Mode::from_bits_truncate(item.mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(fail)?;
        }
        utimensat(
            &dir,
            cname.as_c_str(),
            &item.mtime,
            &item.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(fail)
    }

    fn owner_and_xattrs(
        &self,
        dir: &OwnedFd,
        name: &CStr,
        meta: &Item,
        is_dir: bool,
    ) -> Result<()> {
        let flags = if name.is_empty() {
            AtFlags::AT_EMPTY_PATH
        } else {
            AtFlags::AT_SYMLINK_NOFOLLOW
        };
        let ids = (u32::try_from(meta.uid), u32::try_from(meta.gid));
        let (Ok(uid), Ok(gid)) = ids else {
            return Err(refuse(format_args!(
                "owner {}:{} out of range",
                meta.uid, meta.gid
            )));
        };
        match fchownat(
            dir,
            name,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            flags,
        ) {
            Ok(()) => {}
            Err(Errno::EPERM) if !self.is_root => {}
            Err(e) => {
                return Err(Error::sys(
                    format_args!("cannot set the owner of {name:?}"),
                    e,
                ));
            }
        }
        if meta.xattrs.is_empty() {
            return Ok(());
        }
        // The root through its descriptor; others by a path through the
        // descriptor of their directory, not following the last component.
        let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
        path.extend_from_slice(name.to_bytes());
        let path = cstr(&path)?;
        let target = if name.is_empty() {
            XattrTarget::Fd(dir.as_fd())
        } else {
            XattrTarget::Path(&path)
        };
        for (key, value) in &meta.xattrs {
            let optional =
                key.to_bytes().starts_with(b"security.") || key.to_bytes().starts_with(b"trusted.");
            match set_xattr(target, key, value) {
                Ok(()) => {}
                Err(Errno::EPERM | Errno::EOPNOTSUPP) if optional || (!self.is_root && is_dir) => {}
                Err(e) => {
                    return Err(Error::sys(
                        format_args!("cannot set xattr {key:?} on {name:?}"),
                        e,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Opens the directory `comps` below the root, refusing paths that leave
    /// the tree.
    fn open_dir(&self, comps: &[&[u8]]) -> Result<OwnedFd> {
        let joined = if comps.is_empty() {
            b".".to_vec()
        } else {
            comps.join(&b'/')
        };
        let shown = String::from_utf8_lossy(&joined).into_owned();
        openat2(&self.root, cstr(&joined)?.as_c_str(), dir_how()).map_err(|e| match e {
            Errno::EXDEV | Errno::ELOOP => refuse(format_args!("{shown:?} leads out of the tree")),
            e => Error::sys(
                format_args!("cannot open directory {shown:?} of the layer"),
                e,
            ),
        })
    }

    /// The parent directory of an entry, created (mode 0755) where missing.
    fn parent(&self, comps: &[&[u8]], shown: &str) -> Result<OwnedFd> {
        match self.open_dir(comps) {
            Err(e) if e.errno() == libc::ENOENT => {}
            other => return other.map_err(|e| e.context(format!("layer entry {shown:?}"))),
        }
        let mut fd = self.open_dir(&[])?;
        for c in comps {
            let c = cstr(c)?;
            match mkdirat(&fd, c.as_c_str(), Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => {
                    return Err(Error::sys(
                        format_args!("cannot create the parent of {shown:?}"),
                        e,
                    ));
                }
            }
            fd = openat2(&fd, c.as_c_str(), dir_how()).map_err(|e| match e {
                Errno::EXDEV | Errno::ELOOP => {
                    refuse(format_args!("{shown:?} leads out of the tree"))
                }
                e => Error::sys(format_args!("cannot open the parent of {shown:?}"), e),
            })?;
        }
        Ok(fd)
    }

    /// Removes `name` in `dir`, whatever it is; nothing if absent.
    fn remove(&self, dir: &OwnedFd, name: &CStr) -> Result<()> {
        match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(Errno::EISDIR) => {
                let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
                path.extend_from_slice(name.to_bytes());
                crate::tree::remove_tree(Path::new(std::ffi::OsStr::from_bytes(&path)))
            }
            Err(e) => Err(Error::sys(format_args!("cannot replace {name:?}"), e)),
        }
    }

    /// Applies `.wh.<target>` (or the opaque `.wh..wh..opq`) found in the
    /// directory `parent`: removes what lower layers put there.
    fn whiteout(&mut self, parent: &[&[u8]], target: &[u8], shown: &str) -> Result<()> {
        if matches!(target, b"" | b"." | b"..") {
            return Err(refuse(format_args!(
                "whiteout {shown:?} names no entry of its directory"
            )));
        }
        let dir = match self.open_dir(parent) {
            Err(e) if e.errno() == libc::ENOENT => return Ok(()),
            other => other?,
        };
        self.keep_times(parent, &dir)?;
        let prefix = parent.join(&b'/');
        let key = |n: &[u8]| {
            if prefix.is_empty() {
                n.to_vec()
            } else {
                [&prefix[..], b"/", n].concat()
            }
        };
        if target == b".wh..opq" {
            let mut names = Vec::new();
            crate::tree::sys::read_names(dir.as_fd(), &mut names, &mut Vec::new()).map_err(
                |e| Error::sys(format_args!("cannot list the directory of {shown:?}"), e),
            )?;
            for (name, _) in names {
                if !self.in_layer.contains(&key(name.to_bytes())) {
                    self.remove(&dir, &name)?;
                }
            }
            return Ok(());
        }
        if self.in_layer.contains(&key(target)) {
            return Ok(());
        }
        self.remove(&dir, &cstr(target)?)
    }

    /// Remembers the mode and time of the directory `comps` (open as `dir`)
    /// before this extraction changes its entries, unless a layer set them:
    /// a directory the layers do not list keeps its time.
    fn keep_times(&mut self, comps: &[&[u8]], dir: &OwnedFd) -> Result<()> {
        if let std::collections::btree_map::Entry::Vacant(slot) = self.dirs.entry(comps.join(&b'/'))
        {
            let st = crate::tree::sys::fstatx(dir.as_fd())
                .map_err(|e| Error::sys("cannot stat a directory of the layer", e))?;
            let mtime = TimeSpec::new(st.mtime.sec, i64::from(st.mtime.nsec));
            slot.insert((st.mode & 0o7777, mtime));
        }
        Ok(())
    }

    /// Applies the directories' modes and times, deepest first.
    pub(crate) fn finish(self) -> Result<()> {
        for (key, (mode, mtime)) in self.dirs.iter().rev() {
            let comps: Vec<&[u8]> = key
                .split(|&b| b == b'/')
                .filter(|c| !c.is_empty())
                .collect();
            let fd = match self.open_dir(&comps) {
                Err(e) if e.errno() == libc::ENOENT || e.errno() == libc::ENOTDIR => continue,
                other => other?,
            };
            let shown = String::from_utf8_lossy(key);
            fchmod(&fd, Mode::from_bits_truncate(*mode))
                .map_err(|e| Error::sys(format_args!("cannot set the mode of {shown:?}"), e))?;
            futimens(&fd, mtime, mtime)
                .map_err(|e| Error::sys(format_args!("cannot set the time of {shown:?}"), e))?;
        }
        Ok(())
    }
}
