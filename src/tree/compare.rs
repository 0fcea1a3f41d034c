//! `compare_trees`: an entry-by-entry comparison of two trees, to prove that
//! a copy is faithful. Not on any hot path: sequential, one directory at a
//! time, but walked as the copy and the removal walk (see [`super::pool`]):
//! each directory opened by name in its open parent and checked by device
//! and inode, so it stays inside both trees and works at any depth.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{CStr, CString, OsStr};
use std::fmt;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, openat, readlinkat};
use nix::sys::stat::Mode;

use super::pool::{self, Node, Walker};
use super::sys::{
    Stat, XattrTarget, fd_path, fstatx, lstatx, open_dir_checked, read_names, walk_what,
};
use super::xattr::{XattrBufs, read_all};
use crate::error::{Error, Result};

/// One difference between two trees. Displays as `<path>: <what>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The entry's path relative to the roots (empty for the roots).
    pub path: PathBuf,
    /// What differs, e.g. `mode 644 != 755` (the first tree's value first).
    pub what: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &self.path
        };
        write!(f, "{}: {}", path.display(), self.what)
    }
}

/// Compares two trees entry by entry: type, mode (incl. set-id/sticky),
/// uid/gid, size, content of regular files, symlink targets, device numbers,
/// mtime (ns), xattrs, and hard-link structure (which entries of the tree
/// share an inode). Returns every difference found (empty = identical). The
/// roots themselves are compared too, except for their names.
pub fn compare_trees(a: &Path, b: &Path) -> Result<Vec<Difference>> {
    let roots = [a, b];
    let open = |path: &Path| {
        openat(
            AT_FDCWD,
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::sys(format_args!("open directory {}", path.display()), e))
    };
    let dirs = [open(a)?, open(b)?];
    let stat = |i: usize| {
        fstatx(dirs[i].as_fd())
            .map_err(|e| Error::sys(format_args!("stat {}", roots[i].display()), e))
    };
    let st = [stat(0)?, stat(1)?];
    let c = Comparer {
        roots,
        links: Mutex::new([HashMap::new(), HashMap::new()]),
        diffs: Mutex::new(Vec::new()),
    };
    let targets = [
        XattrTarget::Fd(dirs[0].as_fd()),
        XattrTarget::Fd(dirs[1].as_fd()),
    ];
    c.metadata(Path::new(""), &st, targets)?;
    pool::run(&c, dirs, [st[0].inode(), st[1].inode()], 1)?;
    Ok(c.diffs.into_inner().unwrap_or_else(|p| p.into_inner()))
}

/// A directory of the walk: its (device, inode) in each tree.
type DirNode = Node<[(u64, u64); 2], [OwnedFd; 2]>;

struct Comparer<'a> {
    roots: [&'a Path; 2],
    /// Per tree: inode -> first path met with it (entries with links only).
    links: Mutex<[HashMap<(u64, u64), PathBuf>; 2]>,
    diffs: Mutex<Vec<Difference>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Walker for Comparer<'_> {
    type Data = [(u64, u64); 2];
    type Dir = [OwnedFd; 2];
    type Scratch = (Vec<(CString, Option<nix::dir::Type>)>, Vec<u8>);

    fn scratch(&self) -> Self::Scratch {
        (Vec::new(), Vec::new())
    }

    fn open(&self, parent: &[OwnedFd; 2], node: &DirNode) -> Result<[OwnedFd; 2]> {
        self.open_pair(parent, &node.name, node)
    }

    fn open_parent(&self, child: &[OwnedFd; 2], parent: &DirNode) -> Result<[OwnedFd; 2]> {
        self.open_pair(child, c"..", parent)
    }

    fn visit(
        &self,
        (names, dirents): &mut Self::Scratch,
        node: &DirNode,
        dirs: &[OwnedFd; 2],
        children: &mut Vec<(CString, [(u64, u64); 2])>,
    ) -> Result<()> {
        let rel = node.rel();
        let mut sets: [BTreeSet<CString>; 2] = Default::default();
        for i in 0..2 {
            read_names(dirs[i].as_fd(), names, dirents)
                .map_err(|e| self.error(i, "read directory", &rel, e))?;
            sets[i] = names.drain(..).map(|(n, _)| n).collect();
        }
        let join = |name: &CStr| rel.join(OsStr::from_bytes(name.to_bytes()));
        for name in sets[0].difference(&sets[1]) {
            self.differ(&join(name), "only in first tree".into());
        }
        for name in sets[1].difference(&sets[0]) {
            self.differ(&join(name), "only in second tree".into());
        }
        for name in sets[0].intersection(&sets[1]) {
            self.entry(dirs, &join(name), name, children)?;
        }
        Ok(())
    }

    fn leave(
        &self,
        _: &mut Self::Scratch,
        _: &DirNode,
        _: Arc<[OwnedFd; 2]>,
        _: Option<&[OwnedFd; 2]>,
    ) -> Result<()> {
        Ok(())
    }
}

impl Comparer<'_> {
    fn differ(&self, rel: &Path, what: String) {
        lock(&self.diffs).push(Difference {
            path: rel.to_path_buf(),
            what,
        });
    }

    /// The error for `what` failing on `rel` in tree `i`.
    fn error(&self, i: usize, what: &str, rel: &Path, errno: Errno) -> Error {
        Error::sys(
            format_args!("{what} {}", self.roots[i].join(rel).display()),
            errno,
        )
    }

    /// Opens `name` (the directory `node`, or `..` for it) in both trees,
    /// checking each is the directory seen before.
    fn open_pair(&self, dirs: &[OwnedFd; 2], name: &CStr, node: &DirNode) -> Result<[OwnedFd; 2]> {
        let open = |i: usize| {
            open_dir_checked(dirs[i].as_fd(), name, node.data[i])
                .map(|(fd, _)| fd)
                .map_err(|e| self.error(i, walk_what("open directory", e), &node.rel(), e))
        };
        Ok([open(0)?, open(1)?])
    }

    /// Compares the entry `name` (at `rel`) of both open directories; a
    /// directory in both is pushed to `children` to be walked.
    fn entry(
        &self,
        dirs: &[OwnedFd; 2],
        rel: &Path,
        name: &CStr,
        children: &mut Vec<(CString, [(u64, u64); 2])>,
    ) -> Result<()> {
        let stat =
            |i: usize| lstatx(dirs[i].as_fd(), name).map_err(|e| self.error(i, "stat", rel, e));
        let st = [stat(0)?, stat(1)?];
        let (ta, tb) = (st[0].kind(), st[1].kind());
        if ta != tb {
            self.differ(rel, format!("type {} != {}", type_name(ta), type_name(tb)));
            return Ok(());
        }
        let paths = [
            fd_path(dirs[0].as_fd(), name),
            fd_path(dirs[1].as_fd(), name),
        ];
        self.metadata(
            rel,
            &st,
            [XattrTarget::Path(&paths[0]), XattrTarget::Path(&paths[1])],
        )?;
        if ta == libc::S_IFDIR {
            children.push((name.to_owned(), [st[0].inode(), st[1].inode()]));
            return Ok(());
        }
        let [la, lb] = [0, 1].map(|i| self.link_group(i, &st[i], rel));
        if la != lb {
            let what = format!(
                "hard link: same inode as {} != {}",
                la.display(),
                lb.display()
            );
            self.differ(rel, what);
        }
        match ta {
            libc::S_IFREG if st[0].size != st[1].size => {
                self.differ(rel, format!("size {} != {}", st[0].size, st[1].size));
            }
            libc::S_IFREG => {
                if let Some(at) = self.first_difference(dirs, rel, name)? {
                    self.differ(rel, format!("content differs at byte {at}"));
                }
            }
            libc::S_IFLNK => {
                let read = |i: usize| {
                    readlinkat(dirs[i].as_fd(), name)
                        .map_err(|e| self.error(i, "read symlink", rel, e))
                };
                let (la, lb) = (read(0)?, read(1)?);
                if la != lb {
                    let (la, lb) = (Path::new(&la), Path::new(&lb));
                    self.differ(
                        rel,
                        format!("symlink target {} != {}", la.display(), lb.display()),
                    );
                }
            }
            libc::S_IFCHR | libc::S_IFBLK if st[0].rdev != st[1].rdev => {
                let what = format!("device {:#x} != {:#x}", st[0].rdev, st[1].rdev);
                self.differ(rel, what);
            }
            _ => {}
        }
        Ok(())
    }

    /// Compares what every type has: mode, owner, mtime, xattrs.
    fn metadata(&self, rel: &Path, st: &[Stat; 2], xattrs: [XattrTarget<'_>; 2]) -> Result<()> {
        let (ma, mb) = (&st[0], &st[1]);
        if ma.mode & 0o7777 != mb.mode & 0o7777 {
            self.differ(
                rel,
                format!("mode 0{:o} != 0{:o}", ma.mode & 0o7777, mb.mode & 0o7777),
            );
        }
        if (ma.uid, ma.gid) != (mb.uid, mb.gid) {
            let what = format!("owner {}:{} != {}:{}", ma.uid, ma.gid, mb.uid, mb.gid);
            self.differ(rel, what);
        }
        if ma.mtime != mb.mtime {
            let what = format!(
                "mtime {}.{:09} != {}.{:09}",
                ma.mtime.sec, ma.mtime.nsec, mb.mtime.sec, mb.mtime.nsec
            );
            self.differ(rel, what);
        }
        let xa = self.xattrs(0, rel, xattrs[0])?;
        let xb = self.xattrs(1, rel, xattrs[1])?;
        for (name, value) in &xa {
            let name_s = String::from_utf8_lossy(name);
            match xb.get(name) {
                None => self.differ(rel, format!("xattr {name_s} only in first tree")),
                Some(v) if v != value => self.differ(rel, format!("xattr {name_s} value differs")),
                Some(_) => {}
            }
        }
        for name in xb.keys().filter(|n| !xa.contains_key(*n)) {
            let what = format!(
                "xattr {} only in second tree",
                String::from_utf8_lossy(name)
            );
            self.differ(rel, what);
        }
        Ok(())
    }

    /// The first path of tree `i` met with the same inode as `rel` (`rel`
    /// itself when it is the first, or has a single link).
    fn link_group(&self, i: usize, st: &Stat, rel: &Path) -> PathBuf {
        if st.nlink < 2 {
            return rel.to_path_buf();
        }
        lock(&self.links)[i]
            .entry(st.inode())
            .or_insert_with(|| rel.to_path_buf())
            .clone()
    }

    /// The extended attributes of `target` (of `rel` in tree `i`).
    fn xattrs(
        &self,
        i: usize,
        rel: &Path,
        target: XattrTarget<'_>,
    ) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
        let all = read_all(target, &mut XattrBufs::new())
            .map_err(|e| self.error(i, &e.what, rel, e.errno))?;
        Ok(all
            .into_iter()
            .map(|(name, value)| (name.into_bytes(), value))
            .collect())
    }

    /// The offset of the first differing byte of two files of equal size.
    fn first_difference(
        &self,
        dirs: &[OwnedFd; 2],
        rel: &Path,
        name: &CStr,
    ) -> Result<Option<u64>> {
        let open = |i: usize| {
            let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
            openat(dirs[i].as_fd(), name, flags, Mode::empty())
                .map(File::from)
                .map_err(|e| self.error(i, "open", rel, e))
        };
        let mut files = [open(0)?, open(1)?];
        let mut bufs = [vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]];
        let mut offset = 0u64;
        loop {
            let mut lens = [0; 2];
            for i in 0..2 {
                lens[i] = read_full(&mut files[i], &mut bufs[i]).map_err(|e| {
                    let errno = Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
                    self.error(i, "read", rel, errno)
                })?;
            }
            let n = lens[0].min(lens[1]);
            if let Some(i) = (0..n).find(|&i| bufs[0][i] != bufs[1][i]) {
                return Ok(Some(offset + i as u64));
            }
            if lens[0] != lens[1] {
                return Ok(Some(offset + n as u64));
            }
            if n == 0 {
                return Ok(None);
            }
            offset += n as u64;
        }
    }
}

fn type_name(kind: u32) -> &'static str {
    match kind {
        libc::S_IFREG => "file",
        libc::S_IFDIR => "directory",
        libc::S_IFLNK => "symlink",
        libc::S_IFCHR => "char device",
        libc::S_IFBLK => "block device",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        _ => "unknown",
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn tree_compare_display() {
        let d = Difference {
            path: PathBuf::new(),
            what: "mode 755 != 700".into(),
        };
        assert_eq!(d.to_string(), ".: mode 755 != 700");
        let d = Difference {
            path: PathBuf::from("a/b"),
            what: "only in first tree".into(),
        };
        assert_eq!(d.to_string(), "a/b: only in first tree");
    }

    #[test]
    fn tree_compare_detects_content_and_size() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        for d in [&a, &b] {
            fs::create_dir(d).expect("mkdir");
        }
        fs::write(a.join("f"), b"hello").expect("write");
        fs::write(b.join("f"), b"hellO").expect("write");
        fs::write(a.join("g"), b"x").expect("write");
        fs::write(b.join("g"), b"xy").expect("write");
        let diffs = compare_trees(&a, &b).expect("compare");
        let text: Vec<String> = diffs.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|t| t == "f: content differs at byte 4"),
            "{text:?}"
        );
        assert!(text.iter().any(|t| t == "g: size 1 != 2"), "{text:?}");
    }
}
