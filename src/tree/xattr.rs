//! Copying extended attributes from one inode to another.
//!
//! One `listxattr` per inode; nothing more when the list is empty, which is
//! the common case. `user.*` and `system.*` (ACLs) must copy. `security.*`
//! and `trusted.*` are copied where the kernel allows it: refusals (`EPERM`,
//! `EOPNOTSUPP`) are skipped, as a destination filesystem or an unprivileged
//! caller may legitimately not support them.

use std::ffi::{CStr, CString};

use nix::errno::Errno;

use super::sys::{XattrTarget, get_xattr, list_xattrs, set_xattr};

/// Per-thread buffers for names and values.
pub(crate) struct XattrBufs {
    names: Vec<u8>,
    value: Vec<u8>,
}

/// A failed attribute copy: what was being done, and how it failed.
pub(crate) struct XattrError {
    /// "list xattrs of", "read xattr <name> of", "set xattr <name> on"...
    pub(crate) what: String,
    /// True when the source failed, false for the destination.
    pub(crate) source: bool,
    pub(crate) errno: Errno,
}

impl XattrBufs {
    /// Buffers sized for the usual case.
    pub(crate) fn new() -> Self {
        XattrBufs {
            names: vec![0; 1024],
            value: vec![0; 4096],
        }
    }
}

/// Copies every extended attribute of `src` to `dst`. True when any was set.
pub(crate) fn copy_xattrs(
    src: XattrTarget<'_>,
    dst: XattrTarget<'_>,
    bufs: &mut XattrBufs,
) -> Result<bool, XattrError> {
    let mut set = false;
    each_xattr(src, bufs, |name, value| match set_xattr(dst, name, value) {
        Ok(()) => {
            set = true;
            Ok(())
        }
        Err(Errno::EPERM | Errno::EOPNOTSUPP) if optional(name) => Ok(()),
        Err(errno) => Err(XattrError {
            what: format!("set xattr {} on", name.to_string_lossy()),
            source: false,
            errno,
        }),
    })?;
    Ok(set)
}

/// Every extended attribute of `target` as (name, value) pairs, in the
/// order listed (see [`each_xattr`]).
pub(crate) fn read_all(
    target: XattrTarget<'_>,
    bufs: &mut XattrBufs,
) -> Result<Vec<(CString, Vec<u8>)>, XattrError> {
    let mut out = Vec::new();
    each_xattr(target, bufs, |name, value| {
        out.push((name.to_owned(), value.to_vec()));
        Ok(())
    })?;
    Ok(out)
}

/// Calls `f` with the name and value of every extended attribute of
/// `target`, in the order listed: none on a filesystem without xattrs, and
/// one removed since it was listed is left out. One `listxattr` when there
/// are none. Stops at the first error.
fn each_xattr(
    target: XattrTarget<'_>,
    bufs: &mut XattrBufs,
    mut f: impl FnMut(&CStr, &[u8]) -> Result<(), XattrError>,
) -> Result<(), XattrError> {
    let XattrBufs { names, value } = bufs;
    let len = match fill(names, |b| list_xattrs(target, b)) {
        Ok(n) => n,
        Err(Errno::EOPNOTSUPP) => 0,
        Err(errno) => {
            return Err(XattrError {
                what: "list xattrs of".into(),
                source: true,
                errno,
            });
        }
    };
    for name in names[..len].split_inclusive(|&b| b == 0) {
        let Ok(name) = CStr::from_bytes_with_nul(name) else {
            continue;
        };
        match fill(value, |b| get_xattr(target, name, b)) {
            Ok(n) => f(name, &value[..n])?,
            Err(Errno::ENODATA) => {}
            Err(errno) => {
                return Err(XattrError {
                    what: format!("read xattr {} of", name.to_string_lossy()),
                    source: true,
                    errno,
                });
            }
        }
    }
    Ok(())
}

/// Namespaces whose copy is best-effort.
fn optional(name: &CStr) -> bool {
    let n = name.to_bytes();
    n.starts_with(b"security.") || n.starts_with(b"trusted.")
}

/// Runs a `*xattr` call that fills `buf`, growing `buf` when it is too small
/// (`ERANGE`) until the call fits. Returns the length filled in.
pub(crate) fn fill(
    buf: &mut Vec<u8>,
    mut call: impl FnMut(&mut [u8]) -> nix::Result<usize>,
) -> nix::Result<usize> {
    loop {
        match call(buf) {
            Err(Errno::ERANGE) => {
                // Ask for the size; it may change again before the next try.
                let need = call(&mut [])?;
                buf.resize(need.max(buf.len() * 2), 0);
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_xattr_fill_grows_buffer() {
        let mut buf = vec![0u8; 4];
        let data = [7u8; 100];
        let n = fill(&mut buf, |b| {
            if b.is_empty() {
                Ok(data.len())
            } else if b.len() < data.len() {
                Err(Errno::ERANGE)
            } else {
                b[..data.len()].copy_from_slice(&data);
                Ok(data.len())
            }
        })
        .expect("fill");
        assert_eq!(&buf[..n], &data[..]);
    }

    #[test]
    fn tree_xattr_optional_namespaces() {
        assert!(optional(c"security.selinux"));
        assert!(optional(c"trusted.overlay.opaque"));
        assert!(!optional(c"user.foo"));
        assert!(!optional(c"system.posix_acl_access"));
    }
}
