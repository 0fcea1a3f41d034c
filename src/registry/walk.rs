//! What goes into a layer: a whole tree, or what changed in a tree against
//! the tree of its base.
//!
//! Finding changes reads no file contents. An `init` copy keeps every
//! entry's mode, owner, size, nanosecond mtime and xattrs, and writing a
//! file changes its mtime, so an entry whose type, mode, owner, size, mtime
//! (to the nanosecond), xattrs (and link target or device number) equal the
//! base's is the base's entry (the "quick check" of rsync and git, at
//! nanosecond precision). Each side is `lstat`ed once and only the changed
//! files are read, once, to be written into the layer. For regular files
//! the link count must match too: all links of an inode share its status,
//! so a hard-link group is written whole (every link) or not at all, and a
//! link added to or taken from a group changes the count of all its links.
//! What this cannot see: a rewrite that keeps the size and then puts the old
//! mtime back to the nanosecond.

use std::ffi::OsString;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::layer::{LayerWriter, xattrs_of};
use crate::error::{Error, Result};
use crate::tree::xattr::XattrBufs;

fn lstat(path: &Path) -> Result<Metadata> {
    std::fs::symlink_metadata(path).map_err(|e| Error::path("cannot stat", path, e))
}

/// The names in `dir`, sorted by bytes.
fn sorted_names(dir: &Path) -> Result<Vec<OsString>> {
    let mut names = std::fs::read_dir(dir)
        .and_then(|it| {
            it.map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .map_err(|e| Error::path("cannot read directory", dir, e))?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

fn join(rel: &[u8], name: &OsString) -> Vec<u8> {
    if rel.is_empty() {
        name.as_bytes().to_vec()
    } else {
        [rel, b"/", name.as_bytes()].concat()
    }
}

/// Writes the whole tree at `root`, the root directory first.
pub(crate) fn write_tree(w: &mut LayerWriter, root: &Path) -> Result<()> {
    w.entry(root, b"", &lstat(root)?)?;
    write_below(w, root, b"")
}

fn write_below(w: &mut LayerWriter, dir: &Path, rel: &[u8]) -> Result<()> {
    for name in sorted_names(dir)? {
        let path = dir.join(&name);
        let meta = lstat(&path)?;
        let rel = join(rel, &name);
        w.entry(&path, &rel, &meta)?;
        if meta.is_dir() {
            write_below(w, &path, &rel)?;
        }
    }
    Ok(())
}

/// Writes what differs in `tree` from `base`: changed and added entries,
/// and a whiteout for each entry of `base` that `tree` lacks.
pub(crate) fn write_changes(w: &mut LayerWriter, base: &Path, tree: &Path) -> Result<()> {
    let mut bufs = XattrBufs::new();
    let (bm, tm) = (lstat(base)?, lstat(tree)?);
    if !same(&bm, &tm, base, tree, &mut bufs)? {
        w.entry(tree, b"", &tm)?;
    }
    changes_below(w, base, tree, b"", &mut bufs)
}

fn changes_below(
    w: &mut LayerWriter,
    base: &Path,
    tree: &Path,
    rel: &[u8],
    bufs: &mut XattrBufs,
) -> Result<()> {
    let (old, new) = (sorted_names(base)?, sorted_names(tree)?);
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        let order = match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                w.whiteout(&join(rel, &old[i]))?;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                let path = tree.join(&new[j]);
                let meta = lstat(&path)?;
                let name = join(rel, &new[j]);
                w.entry(&path, &name, &meta)?;
                if meta.is_dir() {
                    write_below(w, &path, &name)?;
                }
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (bp, tp) = (base.join(&old[i]), tree.join(&new[j]));
                let (bm, tm) = (lstat(&bp)?, lstat(&tp)?);
                let name = join(rel, &new[j]);
                let same_kind = bm.mode() & libc::S_IFMT == tm.mode() & libc::S_IFMT;
                if !same_kind || !same(&bm, &tm, &bp, &tp, bufs)? {
                    w.entry(&tp, &name, &tm)?;
                }
                if tm.is_dir() {
                    if same_kind {
                        changes_below(w, &bp, &tp, &name, bufs)?;
                    } else {
                        write_below(w, &tp, &name)?;
                    }
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

/// Whether the entry `t` is the base's entry `b` as far as metadata tell.
fn same(b: &Metadata, t: &Metadata, bp: &Path, tp: &Path, bufs: &mut XattrBufs) -> Result<bool> {
    let stat_same = b.mode() == t.mode()
        && b.uid() == t.uid()
        && b.gid() == t.gid()
        && b.mtime() == t.mtime()
        && b.mtime_nsec() == t.mtime_nsec()
        && b.rdev() == t.rdev()
        && (t.is_dir() || b.size() == t.size())
        && (!t.is_file() || b.nlink() == t.nlink());
    if !stat_same {
        return Ok(false);
    }
    if t.file_type().is_symlink() {
        let read =
            |p: &Path| std::fs::read_link(p).map_err(|e| Error::path("cannot read link", p, e));
        if read(bp)? != read(tp)? {
            return Ok(false);
        }
    }
    Ok(xattrs_of(bp, bufs)? == xattrs_of(tp, bufs)?)
}
