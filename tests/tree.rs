//! Tests of the tree engines: copy_tree, remove_tree, compare_trees.
//!
//! Most need root (chown, mknod, trusted xattrs, chattr). The mount tests
//! also need a private mount namespace:
//! `unshare --mount --propagation private cargo test --test tree`.

mod common;
#[path = "common/tree_fixture.rs"]
mod tree_fixture;

use common::{is_root, skip_without_private_mounts};

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use osstore::tree::{Difference, compare_trees, copy_tree, remove_tree};
use tree_fixture::*;

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    println!("SKIP {test}: needs root");
    true
}

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("osstore-tree-")
        .tempdir()
        .expect("tempdir")
}

/// `src` and an empty `dst` in a fresh temporary directory.
fn src_dst(tmp: &Path) -> (PathBuf, PathBuf) {
    let (src, dst) = (tmp.join("src"), tmp.join("dst"));
    fs::create_dir(&src).expect("mkdir");
    fs::create_dir(&dst).expect("mkdir");
    (src, dst)
}

fn assert_identical(a: &Path, b: &Path) {
    let diffs = compare_trees(a, b).expect("compare");
    let text: Vec<String> = diffs.iter().map(Difference::to_string).collect();
    assert!(diffs.is_empty(), "trees differ:\n{}", text.join("\n"));
}

#[test]
fn copy_of_full_fixture_is_faithful() {
    if skip_unless_root("copy_of_full_fixture_is_faithful") {
        return;
    }
    let tmp = tmp();
    let (src, dst) = src_dst(tmp.path());
    build_full(&src);
    copy_tree(&src, &dst).expect("copy");
    assert_identical(&src, &dst);

    // Properties compare_trees covers, checked directly too.
    let ino = |root: &Path, rel: &str| fs::symlink_metadata(root.join(rel)).expect("stat").ino();
    let group: Vec<u64> = HARD_LINKS.iter().map(|h| ino(&dst, h)).collect();
    assert!(
        group.iter().all(|&i| i == group[0]),
        "hard links split: {group:?}"
    );
    assert_ne!(
        group[0],
        ino(&src, HARD_LINKS[0]),
        "copy shares the source inode"
    );
    assert_eq!(
        fs::metadata(dst.join(HARD_LINKS[0])).expect("stat").nlink(),
        3
    );

    let sparse = fs::metadata(dst.join(SPARSE)).expect("stat");
    assert_eq!(sparse.len(), SPARSE_SIZE);
    assert!(
        sparse.blocks() * 512 < SPARSE_SIZE / 4,
        "sparse copy allocates {} of {} bytes",
        sparse.blocks() * 512,
        SPARSE_SIZE
    );

    let mode = |rel: &str| fs::symlink_metadata(dst.join(rel)).expect("stat").mode() & 0o7777;
    assert_eq!(mode(SETUID), 0o4755);
    assert_eq!(mode(SETGID_DIR), 0o2775);
    assert_eq!(mode("modes/sticky-dir"), 0o1777);
    assert_eq!(mode(LOCKED_DIR), 0o000);
    let owned = fs::symlink_metadata(dst.join("owned/link")).expect("stat");
    assert_eq!((owned.uid(), owned.gid()), (1234, 5678));
    let file = fs::symlink_metadata(dst.join(XATTR_FILE)).expect("stat");
    assert_eq!(
        (file.mtime(), file.mtime_nsec()),
        (1_600_000_000, 123_456_789)
    );
    let root = fs::metadata(&dst).expect("stat");
    assert_eq!((root.mtime(), root.mtime_nsec()), (1_300_000_000, 1));
    assert_eq!(
        get_xattr(&dst, "user.root").as_deref(),
        Some(&b"the root"[..])
    );
    assert_eq!(
        get_xattr(&dst.join(XATTR_FILE), "user.greeting").as_deref(),
        Some(&b"hi"[..])
    );
    assert_eq!(
        get_xattr(&dst.join(XATTR_SYMLINK), "trusted.link"),
        get_xattr(&src.join(XATTR_SYMLINK), "trusted.link")
    );
    assert_eq!(
        fs::symlink_metadata(dst.join("special/null"))
            .expect("stat")
            .rdev(),
        nix::sys::stat::makedev(1, 3)
    );
    assert_eq!(
        fs::read_link(dst.join("links/dangling")).expect("readlink"),
        Path::new("../nowhere/at/all")
    );

    // The copy is as removable as a build's leftovers.
    remove_tree(&dst).expect("remove copy");
    remove_tree(&src).expect("remove source");
}

/// A small tree for the compare tests: a file, a directory with an xattr,
/// and a pair of hard links.
fn small_fixture(root: &Path) {
    fs::create_dir_all(root.join("d/e")).expect("mkdir");
    fs::write(root.join("f"), b"some content").expect("write");
    fs::write(root.join("d/e/g"), b"more").expect("write");
    fs::write(root.join("d/h1"), b"linked").expect("write");
    fs::hard_link(root.join("d/h1"), root.join("d/e/h2")).expect("link");
    set_xattr(&root.join("d"), "user.k", b"v").expect("xattr");
    set_times(&root.join("f"), 1_000_000_000, 42);
}

/// Copies the small fixture, applies `change` to the copy, and returns what
/// compare_trees reports.
fn diffs_after(change: impl FnOnce(&Path)) -> Vec<Difference> {
    let tmp = tmp();
    let (src, dst) = src_dst(tmp.path());
    small_fixture(&src);
    copy_tree(&src, &dst).expect("copy");
    assert_identical(&src, &dst);
    change(&dst);
    compare_trees(&src, &dst).expect("compare")
}

fn assert_reported(diffs: &[Difference], path: &str, what: &str) {
    assert!(
        diffs
            .iter()
            .any(|d| d.path == Path::new(path) && d.what.contains(what)),
        "expected '{what}' at {path}, got {diffs:?}"
    );
}

#[test]
fn compare_detects_every_kind_of_difference() {
    if skip_unless_root("compare_detects_every_kind_of_difference") {
        return;
    }
    // Each change keeps the mtime, so that only the intended property differs.
    let keep_mtime = |p: &Path, f: &dyn Fn(&Path)| {
        let m = fs::symlink_metadata(p).expect("stat");
        f(p);
        set_times(p, m.mtime(), m.mtime_nsec());
    };

    let d = diffs_after(|dst| {
        keep_mtime(&dst.join("f"), &|p| {
            let mut data = fs::read(p).expect("read");
            data[5] ^= 1;
            fs::write(p, data).expect("write");
        })
    });
    assert_eq!(d.len(), 1, "{d:?}");
    assert_reported(&d, "f", "content differs at byte 5");

    let d = diffs_after(|dst| {
        fs::set_permissions(dst.join("f"), fs::Permissions::from_mode(0o600)).expect("chmod")
    });
    assert_eq!(d.len(), 1, "{d:?}");
    assert_reported(&d, "f", "mode");

    let d = diffs_after(|dst| chown(dst.join("d/e/g"), Some(1), Some(1)).expect("chown"));
    assert_eq!(d.len(), 1, "{d:?}");
    assert_reported(&d, "d/e/g", "owner");

    let d = diffs_after(|dst| set_times(&dst.join("f"), 1_000_000_000, 43));
    assert_eq!(d.len(), 1, "{d:?}");
    assert_reported(&d, "f", "mtime");

    let d = diffs_after(|dst| set_xattr(&dst.join("d"), "user.k", b"w").expect("xattr"));
    assert_eq!(d.len(), 1, "{d:?}");
    assert_reported(&d, "d", "xattr user.k");

    // Same content, owner, mode and mtime, but no longer the same inode.
    let d = diffs_after(|dst| {
        let dir = dst.join("d/e");
        keep_mtime(&dir, &|dir| {
            let h2 = dir.join("h2");
            let m = fs::metadata(&h2).expect("stat");
            fs::remove_file(&h2).expect("unlink");
            fs::write(&h2, b"linked").expect("write");
            set_times(&h2, m.mtime(), m.mtime_nsec());
        })
    });
    // Reported where the trees' link groups part: at the second link the
    // walk meets ("d/h1" is seen with its directory, before "d/e" is walked).
    assert_eq!(d.len(), 1, "{d:?}");
    assert_reported(&d, "d/e/h2", "hard link");

    let d = diffs_after(|dst| {
        keep_mtime(&dst.join("d/e"), &|dir| {
            fs::remove_file(dir.join("g")).expect("rm")
        })
    });
    assert_eq!(d.len(), 1, "{d:?}");
    assert_reported(&d, "d/e/g", "only in first tree");

    let d = diffs_after(|dst| {
        keep_mtime(&dst.join("d"), &|dir| {
            fs::write(dir.join("new"), b"").expect("write")
        })
    });
    assert_eq!(d.len(), 1, "{d:?}");
    assert_reported(&d, "d/new", "only in second tree");
}

/// A tree a build could leave: immutable and append-only files and
/// directories, directories without permissions nested 3 deep.
fn locked_tree(root: &Path) {
    fs::create_dir_all(root.join("a/b/c")).expect("mkdir");
    fs::write(root.join("a/b/c/deep"), b"x").expect("write");
    fs::create_dir_all(root.join("imm-dir/sub")).expect("mkdir");
    fs::write(root.join("imm-dir/f"), b"x").expect("write");
    fs::write(root.join("imm-dir/sub/f"), b"x").expect("write");
    fs::write(root.join("imm-file"), b"x").expect("write");
    fs::write(root.join("a/b/imm-file"), b"x").expect("write");
    fs::create_dir(root.join("app-dir")).expect("mkdir");
    fs::write(root.join("app-dir/f"), b"x").expect("write");
    fs::write(root.join("app-file"), b"x").expect("write");
    fs::create_dir(root.join("imm-empty")).expect("mkdir");
    for (p, flag) in [
        ("imm-dir/sub/f", IMMUTABLE),
        ("imm-dir/sub", IMMUTABLE),
        ("imm-dir", IMMUTABLE),
        ("imm-file", IMMUTABLE),
        ("a/b/imm-file", IMMUTABLE | APPEND),
        ("app-dir", APPEND),
        ("app-file", APPEND),
        ("imm-empty", IMMUTABLE),
    ] {
        chattr_add(&root.join(p), flag).expect("chattr");
    }
    for p in ["a/b/c", "a/b", "a"] {
        fs::set_permissions(root.join(p), fs::Permissions::from_mode(0o000)).expect("chmod");
    }
}

#[test]
fn remove_clears_immutable_append_only_and_permissions() {
    if skip_unless_root("remove_clears_immutable_append_only_and_permissions") {
        return;
    }
    let tmp = tmp();
    let victim = tmp.path().join("victim");
    fs::create_dir(&victim).expect("mkdir");
    locked_tree(&victim);
    assert!(
        fs::remove_dir_all(&victim).is_err(),
        "the fixture is not locked"
    );
    remove_tree(&victim).expect("remove");
    assert!(!victim.exists());

    // An immutable root, and a lone immutable file.
    fs::create_dir(&victim).expect("mkdir");
    chattr_add(&victim, IMMUTABLE).expect("chattr");
    remove_tree(&victim).expect("remove immutable root");
    let file = tmp.path().join("file");
    fs::write(&file, b"x").expect("write");
    chattr_add(&file, IMMUTABLE).expect("chattr");
    remove_tree(&file).expect("remove immutable file");
    assert!(!file.exists());
}

#[test]
fn remove_missing_path_is_ok() {
    let tmp = tmp();
    remove_tree(&tmp.path().join("not-there")).expect("missing");
}

/// Env var through which `remove_as_owner_helper` gets its path.
const HELPER_ENV: &str = "OSSTORE_TREE_REMOVE_AS_OWNER";

#[test]
fn remove_as_unprivileged_owner_fixes_permissions() {
    if skip_unless_root("remove_as_unprivileged_owner_fixes_permissions") {
        return;
    }
    let tmp = tmp();
    let victim = tmp.path().join("victim");
    for p in ["a/b/c", "r-x/x", "r--/y", "-wx/z"] {
        fs::create_dir_all(victim.join(p)).expect("mkdir");
    }
    fs::write(victim.join("a/b/c/f"), b"x").expect("write");
    fs::write(victim.join("r--/y/f"), b"x").expect("write");
    // Everything owned by an ordinary user, then locked bottom-up.
    let status = Command::new("chown")
        .args(["-R", "1234:5678"])
        .arg(tmp.path())
        .status()
        .expect("chown");
    assert!(status.success());
    for (p, mode) in [
        ("a/b/c", 0),
        ("a/b", 0),
        ("a", 0),
        ("r-x", 0o500),
        ("r--", 0o400),
        ("-wx", 0o300),
    ] {
        fs::set_permissions(victim.join(p), fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .args([
            "--exact",
            "remove_as_owner_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, &victim)
        .uid(1234)
        .gid(5678)
        .output()
        .expect("run helper");
    assert!(
        out.status.success(),
        "helper failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!victim.exists());
}

/// Runs as uid 1234 under `remove_as_unprivileged_owner_fixes_permissions`;
/// does nothing on its own.
#[test]
fn remove_as_owner_helper() {
    if let Some(path) = std::env::var_os(HELPER_ENV) {
        assert!(!is_root());
        remove_tree(Path::new(&path)).expect("remove as owner");
    }
}

#[test]
fn remove_does_not_cross_mount_points() {
    if skip_without_private_mounts("remove_does_not_cross_mount_points") {
        return;
    }
    let tmp = tmp();
    let victim = tmp.path().join("victim");
    let mnt = victim.join("a/b/mnt");
    fs::create_dir_all(&mnt).expect("mkdir");
    fs::write(victim.join("a/file"), b"x").expect("write");
    let mounted = mount_tmpfs(&mnt, "size=1m");
    fs::write(mnt.join("precious"), b"keep me").expect("write");

    let err = remove_tree(&victim).expect_err("must refuse to cross the mount");
    assert_eq!(err.errno(), libc::EBUSY, "{err}");
    assert!(err.message().contains("mnt"), "{err}");
    assert!(
        mnt.join("precious").exists(),
        "deleted inside another filesystem"
    );

    let err = remove_tree(&mnt).expect_err("must refuse a mount point");
    assert_eq!(err.errno(), libc::EBUSY, "{err}");
    assert!(mnt.join("precious").exists());

    drop(mounted);
    remove_tree(&victim).expect("remove after unmount");
    assert!(!victim.exists());
}

#[test]
fn copy_into_tmpfs() {
    if skip_without_private_mounts("copy_into_tmpfs") {
        return;
    }
    let tmp = tmp();
    let (src, dst) = src_dst(tmp.path());
    build_full(&src);
    let _mounted = mount_tmpfs(&dst, "size=64m");
    match copy_tree(&src, &dst) {
        Ok(()) => {
            let diffs = compare_trees(&src, &dst).expect("compare");
            // Only optional xattr namespaces may be missing on tmpfs.
            for d in &diffs {
                let optional =
                    d.what.starts_with("xattr security.") || d.what.starts_with("xattr trusted.");
                assert!(optional, "unexpected difference on tmpfs: {d}");
                println!("note: tmpfs lacks {d}");
            }
        }
        // A kernel whose tmpfs has no user xattrs: a clear error, not a panic.
        Err(e) => {
            assert_eq!(e.errno(), libc::EOPNOTSUPP, "{e}");
            assert!(e.message().contains("user."), "{e}");
            println!("note: tmpfs refuses user xattrs: {e}");
        }
    }
    remove_tree(&src).expect("remove");
}

#[test]
fn copy_reports_enospc_with_the_path() {
    if skip_without_private_mounts("copy_reports_enospc_with_the_path") {
        return;
    }
    let tmp = tmp();
    let (src, dst) = src_dst(tmp.path());
    fs::write(src.join("big"), noise(4 << 20, 1)).expect("write");
    let _mounted = mount_tmpfs(&dst, "size=1m");
    let err = copy_tree(&src, &dst).expect_err("must not fit");
    assert_eq!(err.errno(), libc::ENOSPC, "{err}");
    assert!(
        err.message()
            .contains(&dst.join("big").display().to_string()),
        "{err}"
    );
}

#[test]
fn copy_reflinks_on_xfs() {
    let test = "copy_reflinks_on_xfs";
    if skip_without_private_mounts(test) {
        return;
    }
    let have_mkfs = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("mkfs.xfs").exists()));
    if !have_mkfs {
        println!("SKIP {test}: mkfs.xfs not found (apt-get install xfsprogs)");
        return;
    }
    if !Path::new("/dev/loop-control").exists() {
        println!("SKIP {test}: no /dev/loop-control (no loop devices)");
        return;
    }
    let tmp = tmp();
    let mnt = tmp.path().join("xfs");
    let _mounted = match mount_reflink_xfs(tmp.path(), &mnt) {
        Ok(m) => m,
        Err(why) => {
            println!("SKIP {test}: cannot mount an XFS image: {why}");
            return;
        }
    };
    let (src, dst) = src_dst(&mnt);
    fs::write(src.join("four-mib"), noise(4 << 20, 5)).expect("write");
    fs::write(src.join("small"), b"tiny").expect("write");
    copy_tree(&src, &dst).expect("copy");
    assert_identical(&src, &dst);
    let (total, shared) = extent_sharing(&dst.join("four-mib")).expect("fiemap");
    assert!(total >= 4 << 20, "extents cover {total} bytes");
    assert_eq!(
        shared, total,
        "copy does not share its extents (no reflink)"
    );
}
