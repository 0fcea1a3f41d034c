//! `compare_trees`: an entry-by-entry comparison of two trees, to prove that
//! a copy is faithful. Not on any hot path: plain, sequential and by path.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{CString, OsString};
use std::fmt;
use std::fs::{self, File};
use std::io::{ErrorKind, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::sys::{XattrTarget, get_xattr, list_xattrs};
use super::xattr::fill;
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
    let mut c = Comparer {
        roots: [a, b],
        links: [HashMap::new(), HashMap::new()],
        diffs: Vec::new(),
    };
    c.entry(Path::new(""))?;
    Ok(c.diffs)
}

struct Comparer<'a> {
    roots: [&'a Path; 2],
    /// Per tree: inode -> first path met with it (entries with links only).
    links: [HashMap<(u64, u64), PathBuf>; 2],
    diffs: Vec<Difference>,
}

impl Comparer<'_> {
    fn differ(&mut self, rel: &Path, what: String) {
        self.diffs.push(Difference {
            path: rel.to_path_buf(),
            what,
        });
    }

    /// Compares the entry `rel` of both trees, and what is below it.
    fn entry(&mut self, rel: &Path) -> Result<()> {
        let paths = self.roots.map(|r| r.join(rel));
        let [ma, mb] = [0, 1].map(|i| fs::symlink_metadata(&paths[i]));
        let ma = ma.map_err(|e| Error::path("stat", &paths[0], e))?;
        let mb = mb.map_err(|e| Error::path("stat", &paths[1], e))?;
        let (ta, tb) = (ma.mode() & libc::S_IFMT, mb.mode() & libc::S_IFMT);
        if ta != tb {
            self.differ(rel, format!("type {} != {}", type_name(ta), type_name(tb)));
            return Ok(());
        }
        if ma.mode() & 0o7777 != mb.mode() & 0o7777 {
            self.differ(
                rel,
                format!(
                    "mode 0{:o} != 0{:o}",
                    ma.mode() & 0o7777,
                    mb.mode() & 0o7777
                ),
            );
        }
        if (ma.uid(), ma.gid()) != (mb.uid(), mb.gid()) {
            let what = format!(
                "owner {}:{} != {}:{}",
                ma.uid(),
                ma.gid(),
                mb.uid(),
                mb.gid()
            );
            self.differ(rel, what);
        }
        if (ma.mtime(), ma.mtime_nsec()) != (mb.mtime(), mb.mtime_nsec()) {
            let what = format!(
                "mtime {}.{:09} != {}.{:09}",
                ma.mtime(),
                ma.mtime_nsec(),
                mb.mtime(),
                mb.mtime_nsec()
            );
            self.differ(rel, what);
        }
        self.compare_xattrs(rel, &paths)?;
        if ta == libc::S_IFDIR {
            return self.children(rel, &paths);
        }
        let [la, lb] = [(0, &ma), (1, &mb)].map(|(i, m)| self.link_group(i, m, rel));
        if la != lb {
            let what = format!(
                "hard link: same inode as {} != {}",
                la.display(),
                lb.display()
            );
            self.differ(rel, what);
        }
        match ta {
            libc::S_IFREG if ma.size() != mb.size() => {
                self.differ(rel, format!("size {} != {}", ma.size(), mb.size()));
            }
            libc::S_IFREG => {
                if let Some(at) = first_difference(&paths)? {
                    self.differ(rel, format!("content differs at byte {at}"));
                }
            }
            libc::S_IFLNK => {
                let [la, lb] = [0, 1].map(|i| fs::read_link(&paths[i]));
                let la = la.map_err(|e| Error::path("read symlink", &paths[0], e))?;
                let lb = lb.map_err(|e| Error::path("read symlink", &paths[1], e))?;
                if la != lb {
                    self.differ(
                        rel,
                        format!("symlink target {} != {}", la.display(), lb.display()),
                    );
                }
            }
            libc::S_IFCHR | libc::S_IFBLK if ma.rdev() != mb.rdev() => {
                self.differ(rel, format!("device {:#x} != {:#x}", ma.rdev(), mb.rdev()));
            }
            _ => {}
        }
        Ok(())
    }

    /// The first path of tree `i` met with the same inode as `rel` (`rel`
    /// itself when it is the first, or has a single link).
    fn link_group(&mut self, i: usize, m: &fs::Metadata, rel: &Path) -> PathBuf {
        if m.nlink() < 2 {
            return rel.to_path_buf();
        }
        self.links[i]
            .entry((m.dev(), m.ino()))
            .or_insert_with(|| rel.to_path_buf())
            .clone()
    }

    fn compare_xattrs(&mut self, rel: &Path, paths: &[PathBuf; 2]) -> Result<()> {
        let xa = xattrs(&paths[0])?;
        let xb = xattrs(&paths[1])?;
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

    /// Compares the entries of two directories, then each common entry.
    fn children(&mut self, rel: &Path, paths: &[PathBuf; 2]) -> Result<()> {
        let na = names(&paths[0])?;
        let nb = names(&paths[1])?;
        for name in na.difference(&nb) {
            self.differ(&rel.join(name), "only in first tree".into());
        }
        for name in nb.difference(&na) {
            self.differ(&rel.join(name), "only in second tree".into());
        }
        for name in na.intersection(&nb) {
            self.entry(&rel.join(name))?;
        }
        Ok(())
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

/// The sorted names of a directory.
fn names(dir: &Path) -> Result<BTreeSet<OsString>> {
    let read = |e| Error::path("read directory", dir, e);
    fs::read_dir(dir)
        .map_err(read)?
        .map(|e| e.map(|e| e.file_name()).map_err(read))
        .collect()
}

/// The extended attributes of a path (not following a final symlink).
fn xattrs(path: &Path) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let fail = |what: &str, e: Errno| Error::sys(format_args!("{what} {}", path.display()), e);
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("NUL byte in {}", path.display())))?;
    let target = XattrTarget::Path(&cpath);
    let mut names = vec![0; 1024];
    let len = match fill(&mut names, |b| list_xattrs(target, b)) {
        Err(Errno::EOPNOTSUPP) => 0,
        other => other.map_err(|e| fail("list xattrs of", e))?,
    };
    let mut out = BTreeMap::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).map_err(|_| Error::invalid("bad xattr name"))?;
        let mut value = vec![0; 256];
        let n = fill(&mut value, |b| get_xattr(target, &cname, b))
            .map_err(|e| fail(&format!("read xattr {} of", cname.to_string_lossy()), e))?;
        value.truncate(n);
        out.insert(name.to_vec(), value);
    }
    Ok(out)
}

/// The offset of the first differing byte of two files of equal size.
fn first_difference(paths: &[PathBuf; 2]) -> Result<Option<u64>> {
    let open = |p: &Path| File::open(p).map_err(|e| Error::path("open", p, e));
    let mut files = [open(&paths[0])?, open(&paths[1])?];
    let mut bufs = [vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]];
    let mut offset = 0u64;
    loop {
        let mut lens = [0; 2];
        for i in 0..2 {
            lens[i] = read_full(&mut files[i], &mut bufs[i])
                .map_err(|e| Error::path("read", &paths[i], e))?;
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
