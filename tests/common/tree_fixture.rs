//! Helpers for tests/tree.rs: a fixture tree with every kind of entry, and
//! the syscalls std does not offer (xattrs, inode flags, FIEMAP, mounts).

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, chown, lchown, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::fcntl::AT_FDCWD;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags, makedev, mknod, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::mkfifo;

/// `FS_IMMUTABLE_FL` (`chattr +i`).
pub const IMMUTABLE: libc::c_int = 0x10;
/// `FS_APPEND_FL` (`chattr +a`).
pub const APPEND: libc::c_int = 0x20;

/// Paths in the full fixture, relative to its root.
pub const HARD_LINKS: [&str; 3] = ["hl/a/h1", "hl/b/h2", "hl/b/c/h3"];
/// The sparse file: 64 KiB of data, a hole of 8 MiB, 64 KiB of data, and a
/// trailing hole of 1 MiB.
pub const SPARSE: &str = "sparse.bin";
/// Size of [`SPARSE`].
pub const SPARSE_SIZE: u64 = (64 + 8192 + 64 + 1024) * 1024;
/// Setuid file, mode 04755, owned by 1234:5678.
pub const SETUID: &str = "modes/setuid";
/// Setgid directory, mode 02775.
pub const SETGID_DIR: &str = "modes/setgid-dir";
/// A directory with mode 0 (and a file in it).
pub const LOCKED_DIR: &str = "locked";
/// A file with a user xattr and an mtime with nanoseconds.
pub const XATTR_FILE: &str = "dir/nested/deeper/file.txt";
/// A symlink that gets a trusted xattr when the filesystem allows it.
pub const XATTR_SYMLINK: &str = "links/rel";

fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("no NUL in test paths")
}

/// `lsetxattr`.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let (p, n) = (cpath(path), CString::new(name).expect("xattr name"));
    // SAFETY: both strings are NUL-terminated; value is valid for its length.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `lgetxattr`, `None` when the attribute does not exist.
pub fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let (p, n) = (cpath(path), CString::new(name).expect("xattr name"));
    let mut buf = vec![0u8; 4096];
    // SAFETY: both strings are NUL-terminated; buf is valid for its length.
    let rc = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let len = usize::try_from(rc).ok()?;
    buf.truncate(len);
    Some(buf)
}

/// Adds inode flags (`chattr +i` / `+a`) to a file or directory.
pub fn chattr_add(path: &Path, add: libc::c_int) -> io::Result<()> {
    let f = fs::File::open(path)?;
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int to a valid pointer.
    if unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    flags |= add;
    // SAFETY: FS_IOC_SETFLAGS reads one int from a valid pointer.
    if unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets atime and mtime (seconds, nanoseconds), not following symlinks.
pub fn set_times(path: &Path, sec: i64, nsec: i64) {
    let t = TimeSpec::new(sec, nsec);
    let a = TimeSpec::new(sec - 1000, nsec / 2);
    utimensat(AT_FDCWD, path, &a, &t, UtimensatFlags::NoFollowSymlink).expect("utimensat");
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Deterministic pseudo-random bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn write(root: &Path, rel: &str, data: &[u8]) -> PathBuf {
    let p = root.join(rel);
    fs::write(&p, data).expect("write");
    p
}

/// Builds the full fixture in the empty directory `root` (root only: it
/// needs chown, mknod and trusted xattrs).
pub fn build_full(root: &Path) {
    for d in [
        "dir/nested/deeper",
        "empty_dir",
        "links",
        "hl/a",
        "hl/b/c",
        "special",
        "modes/sticky-dir",
        SETGID_DIR,
        "owned",
        LOCKED_DIR,
    ] {
        fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    write(root, "empty_file", b"");
    write(root, XATTR_FILE, b"hello\n");
    write(root, "large.bin", &noise(8 << 20, 7));
    write(root, "locked/inside", b"can root read me?");
    let sparse = fs::File::create(root.join(SPARSE)).expect("create");
    let chunk = noise(64 * 1024, 3);
    nix::sys::uio::pwrite(&sparse, &chunk, 0).expect("pwrite");
    nix::sys::uio::pwrite(&sparse, &chunk, (64 + 8192) * 1024).expect("pwrite");
    sparse.set_len(SPARSE_SIZE).expect("truncate");
    drop(sparse);

    symlink("/etc/passwd", root.join("links/abs")).expect("symlink");
    symlink("../dir/nested/deeper/file.txt", root.join(XATTR_SYMLINK)).expect("symlink");
    symlink("../nowhere/at/all", root.join("links/dangling")).expect("symlink");

    let h1 = write(root, HARD_LINKS[0], b"linked three times");
    for h in &HARD_LINKS[1..] {
        fs::hard_link(&h1, root.join(h)).expect("link");
    }

    mkfifo(&root.join("special/fifo"), Mode::from_bits_truncate(0o640)).expect("mkfifo");
    let dev = |kind, major, minor, name: &str| {
        mknod(
            &root.join(name),
            kind,
            Mode::from_bits_truncate(0o620),
            makedev(major, minor),
        )
        .expect("mknod");
    };
    dev(SFlag::S_IFCHR, 1, 3, "special/null");
    dev(SFlag::S_IFBLK, 7, 200, "special/block");
    drop(std::os::unix::net::UnixListener::bind(root.join("special/socket")).expect("bind"));

    // Non-UTF-8 names, a file and a directory.
    let odd = root.join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    fs::write(&odd, b"latin-1").expect("write");
    fs::create_dir(root.join(std::ffi::OsStr::from_bytes(b"\xff\xfe-dir"))).expect("mkdir");

    // Owners first, then modes: chown clears set-id bits.
    let setuid = write(root, SETUID, b"#!/bin/sh\n");
    write(root, "modes/setgid", b"#!/bin/sh\n");
    for p in [SETUID, "owned", SETGID_DIR] {
        chown(root.join(p), Some(1234), Some(5678)).expect("chown");
    }
    write(root, "owned/file", b"owned by 1234");
    chown(root.join("owned/file"), Some(1234), Some(5678)).expect("chown");
    symlink("file", root.join("owned/link")).expect("symlink");
    lchown(root.join("owned/link"), Some(1234), Some(5678)).expect("lchown");
    chmod(&setuid, 0o4755);
    chmod(&root.join("modes/setgid"), 0o2755);
    chmod(&root.join(SETGID_DIR), 0o2775);
    chmod(&root.join("modes/sticky-dir"), 0o1777);
    chmod(&root.join("owned/file"), 0o640);

    set_xattr(&root.join(XATTR_FILE), "user.greeting", b"hi").expect("user xattr on file");
    set_xattr(&root.join("dir"), "user.dir", b"a directory").expect("user xattr on dir");
    set_xattr(&root.join(SETUID), "user.big", &noise(3000, 9)).expect("big user xattr");
    set_xattr(root, "user.root", b"the root").expect("user xattr on root");
    if let Err(e) = set_xattr(&root.join(XATTR_SYMLINK), "trusted.link", b"t") {
        println!("note: no trusted xattr on a symlink here: {e}");
    }
    if let Err(e) = set_xattr(&root.join("empty_file"), "security.osstore-test", b"s") {
        println!("note: no security.* xattr here: {e}");
    }

    // Timestamps last, deepest first, so that nothing changes them after.
    set_times(&root.join(XATTR_FILE), 1_600_000_000, 123_456_789);
    set_times(&root.join(XATTR_SYMLINK), 1_500_000_000, 987_654_321);
    for d in [
        "dir/nested/deeper",
        "dir/nested",
        "dir",
        "hl/b/c",
        "empty_dir",
    ] {
        set_times(&root.join(d), 1_400_000_000, 555_555_555);
    }
    chmod(&root.join(LOCKED_DIR), 0o000);
    set_times(root, 1_300_000_000, 1);
}

/// A mount that is detached when dropped.
pub struct Mounted(pub PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = umount2(&self.0, MntFlags::MNT_DETACH) {
            eprintln!("umount {}: {e}", self.0.display());
        }
    }
}

/// Mounts a tmpfs with `options` at `at`.
pub fn mount_tmpfs(at: &Path, options: &str) -> Mounted {
    mount(
        Some("tmpfs"),
        at,
        Some("tmpfs"),
        MsFlags::empty(),
        Some(options),
    )
    .expect("mount tmpfs");
    Mounted(at.to_path_buf())
}

/// Makes a 512 MiB XFS image with reflink support in `dir` and loop-mounts it
/// at `at`; `Err` says why not.
pub fn mount_reflink_xfs(dir: &Path, at: &Path) -> Result<Mounted, String> {
    mount_loop_image(dir, at, &["mkfs.xfs", "-q", "-m", "reflink=1"])
}

/// Makes a 512 MiB sparse image in `dir`, formats it with the command
/// `mkfs` (the image's path appended) and loop-mounts it at `at`; `Err` says
/// why not.
pub fn mount_loop_image(dir: &Path, at: &Path, mkfs: &[&str]) -> Result<Mounted, String> {
    let image = dir.join(format!("{}.img", mkfs[0]));
    fs::File::create(&image)
        .and_then(|f| f.set_len(512 << 20))
        .map_err(|e| format!("create image: {e}"))?;
    let run = |cmd: &mut Command| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    run(Command::new(mkfs[0]).args(&mkfs[1..]).arg(&image))?;
    fs::create_dir_all(at).map_err(|e| format!("mkdir: {e}"))?;
    run(Command::new("mount")
        .args(["-o", "loop"])
        .arg(&image)
        .arg(at))?;
    Ok(Mounted(at.to_path_buf()))
}

/// `FS_IOC_FIEMAP`: `_IOWR('f', 11, struct fiemap)`.
const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
const FIEMAP_FLAG_SYNC: u32 = 1;
const FIEMAP_EXTENT_SHARED: u32 = 0x2000;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapExtent {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

#[repr(C)]
struct Fiemap {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
    extents: [FiemapExtent; 64],
}

/// (bytes in extents, bytes in extents marked shared) of a file.
pub fn extent_sharing(path: &Path) -> io::Result<(u64, u64)> {
    let f = fs::File::open(path)?;
    let mut map = Fiemap {
        start: 0,
        length: u64::MAX,
        flags: FIEMAP_FLAG_SYNC,
        mapped_extents: 0,
        extent_count: 64,
        reserved: 0,
        extents: [FiemapExtent::default(); 64],
    };
    // SAFETY: the struct has the kernel's layout with room for the 64
    // extents it announces; the kernel writes at most that many.
    if unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FIEMAP, &mut map) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let n = (map.mapped_extents as usize).min(64);
    let total = map.extents[..n].iter().map(|e| e.length).sum();
    let shared = map.extents[..n]
        .iter()
        .filter(|e| e.flags & FIEMAP_EXTENT_SHARED != 0)
        .map(|e| e.length)
        .sum();
    Ok((total, shared))
}
