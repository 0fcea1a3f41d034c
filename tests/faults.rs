//! Faults: a full disk, permission errors, a read-only store filesystem, a
//! store removed under a live handle, over-long and odd inputs. Each gives a
//! clear error (the right errno, a message naming the path or the
//! operation), leaves nothing half-done in the store, and the store works
//! again once the cause is gone.
//!
//! Tests that mount (a small tmpfs) need root in a private mount namespace
//! (tests/in-private-ns.sh) and print a SKIP line otherwise.

mod common;
#[path = "common/reliability.rs"]
mod reliability;

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use osstore::{Error, Mode, Store};
use reliability::{Rng, check_refs, check_tree, env_path, fill_tree, helper, names};

const STORE_VAR: &str = "OSSTORE_FAULTS_STORE";

/// A mount made by a test, detached when the test ends.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

/// Mounts a tmpfs with `options` at `dir` (created), or `None` (after a
/// SKIP line) when this process cannot mount privately.
fn tmpfs(test: &str, dir: &Path, options: &str) -> Option<Mounted> {
    if common::skip_without_private_mounts(test) {
        return None;
    }
    fs::create_dir_all(dir).unwrap();
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::empty(),
        Some(options),
    )
    .expect("mount tmpfs");
    Some(Mounted(dir.to_path_buf()))
}

fn remount(dir: &Path, flags: MsFlags) {
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_REMOUNT | flags,
        None::<&str>,
    )
    .expect("remount");
}

fn expect_errno<T: std::fmt::Debug>(result: osstore::Result<T>, errno: i32, what: &str) -> Error {
    let e = result.expect_err(what);
    assert_eq!(e.errno(), errno, "{what}: {e}");
    println!("{what}: {e}");
    e
}

/// Names in `tmp/`, `objects/` and the refs with their targets.
fn snapshot(root: &Path) -> (Vec<String>, Vec<String>, Vec<(String, PathBuf)>) {
    let refs = names(&root.join("refs"))
        .into_iter()
        .map(|r| {
            let target = fs::read_link(root.join("refs").join(&r)).unwrap();
            (r, target)
        })
        .collect();
    (names(&root.join("tmp")), names(&root.join("objects")), refs)
}

/// Writes `path` until the filesystem is full; returns how much it wrote.
fn fill_blocks(path: &Path) -> u64 {
    let mut file = fs::File::create(path).unwrap();
    let chunk = vec![0x5a; 16 << 10];
    let mut written = 0;
    loop {
        match file.write(&chunk) {
            Ok(n) if n > 0 => written += n as u64,
            Ok(_) => return written,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return written,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
}

/// Creates empty files in `dir` until no inode is left; returns them.
fn fill_inodes(dir: &Path) -> Vec<PathBuf> {
    fs::create_dir(dir).unwrap();
    let mut files = Vec::new();
    loop {
        let path = dir.join(files.len().to_string());
        match fs::File::create(&path) {
            Ok(_) => files.push(path),
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return files,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
}

#[test]
fn full_disk_fails_cleanly_and_recovers() {
    const TEST: &str = "full_disk_fails_cleanly_and_recovers";
    let dir = tempfile::tempdir().unwrap();
    let Some(mounted) = tmpfs(
        TEST,
        &dir.path().join("fs"),
        "size=2m,nr_inodes=400,mode=0755",
    ) else {
        return;
    };
    let fsroot = mounted.0.clone();
    let root = fsroot.join("store");
    let store = Store::open(&root).unwrap();
    let mut rng = Rng::new(11);
    // A committed base of some size, a writable object with data in it.
    let mut base = store.new_object("base").unwrap();
    fill_tree(base.tree(), "base", &mut rng, 4096).unwrap();
    add_big_file(base.tree(), 1, 256 << 10);
    store.commit(&mut base, "base").unwrap();
    let mut work = store.new_object("work").unwrap();
    fill_tree(work.tree(), "work", &mut rng, 4096).unwrap();
    add_big_file(work.tree(), 2, 128 << 10);
    let export = fsroot.join("export");
    fs::create_dir(&export).unwrap();

    // No space for data.
    let filler = fsroot.join("filler");
    assert!(fill_blocks(&filler) > 0);
    let before = snapshot(&root);

    let mut copy = store.new_object("copy").unwrap();
    let e = expect_errno(copy.init(&base), libc::ENOSPC, "init on a full disk");
    assert!(
        e.message()
            .contains("cannot initialise \"copy\" from \"base\""),
        "{e}"
    );
    drop(copy);

    let e = expect_errno(base.export(&export), libc::ENOSPC, "export on a full disk");
    assert!(e.message().contains(export.to_str().unwrap()), "{e}");

    let e = expect_errno(
        store.commit(&mut work, "snap"),
        libc::ENOSPC,
        "commit of a copy on a full disk",
    );
    assert!(
        e.message()
            .contains("cannot commit a copy of object \"work\" as \"snap\""),
        "{e}"
    );
    assert_eq!(
        snapshot(&root),
        before,
        "the failed copy left nothing behind"
    );
    assert_eq!(work.mode(), Mode::Write);
    check_tree(work.tree(), "work").unwrap();

    // No inode either.
    let inodes = fill_inodes(&fsroot.join("inodes"));
    let e = expect_errno(store.new_object("new"), libc::ENOSPC, "new on a full disk");
    assert!(
        e.message().contains("cannot create object \"new\"")
            && e.message().contains("tmp/object-new-"),
        "{e}"
    );
    let e = expect_errno(
        store.tempdir(b"t-", b""),
        libc::ENOSPC,
        "tempdir on a full disk",
    );
    assert!(
        e.message().contains(root.join("tmp/t-").to_str().unwrap()),
        "{e}"
    );
    let e = expect_errno(
        store.commit(&mut work, "work"),
        libc::ENOSPC,
        "commit on a full disk",
    );
    assert!(e.message().contains("cannot commit object \"work\""), "{e}");
    assert_eq!(
        work.mode(),
        Mode::Write,
        "the failed commit left the object as it was"
    );
    check_tree(work.tree(), "work").unwrap();
    let e = expect_errno(
        Store::open(fsroot.join("other")),
        libc::ENOSPC,
        "opening a new store on a full disk",
    );
    assert!(
        e.message().contains(fsroot.join("other").to_str().unwrap()),
        "{e}"
    );
    assert_eq!(
        snapshot(&root),
        before,
        "no ref changed, no object or leftover added"
    );
    check_refs_of(&root);

    // Space again: everything works, nothing was lost.
    for f in inodes {
        fs::remove_file(f).unwrap();
    }
    fs::remove_file(&filler).unwrap();
    let mut copy = store.new_object("copy").unwrap();
    copy.init(&base).unwrap();
    assert_eq!(
        fs::read(copy.tree().join("big")).unwrap(),
        vec![1u8; 256 << 10]
    );
    base.export(&export).unwrap();
    store.commit(&mut work, "snap").unwrap();
    store.commit(&mut work, "work").unwrap();
    check_tree(store.get("snap").unwrap().unwrap().tree(), "work").unwrap();
    check_tree(store.get("work").unwrap().unwrap().tree(), "work").unwrap();
    store.gc().unwrap();
    check_refs_of(&root);
}

/// Adds a file `big` of `len` bytes to a tree made by `fill_tree`, and to
/// its manifest.
fn add_big_file(tree: &Path, byte: u8, len: usize) {
    let data = vec![byte; len];
    fs::write(tree.join("big"), &data).unwrap();
    let mut manifest = fs::OpenOptions::new()
        .append(true)
        .open(tree.join(reliability::MANIFEST))
        .unwrap();
    writeln!(
        manifest,
        "file big {len} {:016x}",
        reliability::fnv64(&data)
    )
    .unwrap();
}

/// Every ref names a complete tree (`snap` is a snapshot of `work`).
fn check_refs_of(root: &Path) {
    reliability::check_refs_with(root, |id| {
        if id == "snap" {
            "work".into()
        } else {
            id.into()
        }
    })
    .unwrap();
}

#[test]
fn store_filesystem_turned_read_only() {
    const TEST: &str = "store_filesystem_turned_read_only";
    let dir = tempfile::tempdir().unwrap();
    let Some(mounted) = tmpfs(TEST, &dir.path().join("fs"), "size=8m,mode=0755") else {
        return;
    };
    let fsroot = mounted.0.clone();
    let root = fsroot.join("store");
    let store = Store::open(&root).unwrap();
    let mut rng = Rng::new(12);
    let mut committed = store.new_object("a").unwrap();
    fill_tree(committed.tree(), "a", &mut rng, 4096).unwrap();
    store.commit(&mut committed, "a").unwrap();
    let mut work = store.new_object("w").unwrap();
    fill_tree(work.tree(), "w", &mut rng, 4096).unwrap();
    let doomed = store.new_object("doomed").unwrap();
    let doomed_dir = doomed.tree().parent().unwrap().to_path_buf();
    let export = fsroot.join("export");
    fs::create_dir(&export).unwrap();

    remount(&fsroot, MsFlags::MS_RDONLY);
    let before = snapshot(&root);
    let e = expect_errno(
        store.new_object("n"),
        libc::EROFS,
        "new on a read-only store",
    );
    assert!(
        e.message()
            .contains(root.join("tmp/object-n-").to_str().unwrap()),
        "{e}"
    );
    let e = expect_errno(
        store.commit(&mut work, "w"),
        libc::EROFS,
        "commit on a read-only store",
    );
    assert!(
        e.message().contains("cannot commit object \"w\"") && e.message().contains("objects/"),
        "{e}"
    );
    assert_eq!(work.mode(), Mode::Write);
    expect_errno(
        store.commit(&mut work, "copy"),
        libc::EROFS,
        "commit of a copy on a read-only store",
    );
    let e = expect_errno(
        committed.export(&export),
        libc::EROFS,
        "export into a read-only directory",
    );
    assert!(e.message().contains(export.to_str().unwrap()), "{e}");
    expect_errno(
        store.tempdir(b"", b""),
        libc::EROFS,
        "tempdir on a read-only store",
    );
    // Look-ups work; releasing cannot remove the work dir, which stays for
    // a later collection.
    assert!(store.contains("a").unwrap());
    check_tree(store.get("a").unwrap().unwrap().tree(), "a").unwrap();
    drop(doomed);
    assert!(doomed_dir.is_dir());
    // A collection with something to remove reports the failure, naming it.
    let e = expect_errno(store.gc(), libc::EROFS, "gc on a read-only store");
    assert!(e.message().contains(doomed_dir.to_str().unwrap()), "{e}");
    // Opening the read-only store works (its sweep is best effort).
    let reader = Store::open(&root).unwrap();
    assert!(reader.contains("a").unwrap());
    assert_eq!(snapshot(&root), before);

    remount(&fsroot, MsFlags::empty());
    assert_eq!(store.gc().unwrap().removed, 1, "the released work dir");
    assert!(!doomed_dir.exists());
    store.commit(&mut work, "w").unwrap();
    committed.export(&export).unwrap();
    check_refs(&root).unwrap();
}

#[test]
fn read_only_bind_mount_of_the_store() {
    const TEST: &str = "read_only_bind_mount_of_the_store";
    if common::skip_without_private_mounts(TEST) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = Store::open(&root).unwrap();
    let mut obj = store.new_object("a").unwrap();
    fill_tree(obj.tree(), "a", &mut Rng::new(13), 4096).unwrap();
    store.commit(&mut obj, "a").unwrap();
    // A leftover that the read-only view cannot remove.
    let dead = dead_work_dir(&root);
    let view = dir.path().join("view");
    fs::create_dir(&view).unwrap();
    mount(
        Some(&root),
        &view,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    let _mounted = Mounted(view.clone());
    mount(
        None::<&str>,
        &view,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .unwrap();
    let ro = Store::open(&view).expect("a read-only store opens for reading");
    check_tree(ro.get("a").unwrap().unwrap().tree(), "a").unwrap();
    let e = expect_errno(ro.new_object("b"), libc::EROFS, "new in a read-only store");
    assert!(
        e.message().contains(view.join("tmp").to_str().unwrap()),
        "{e}"
    );
    let e = expect_errno(ro.gc(), libc::EROFS, "gc in a read-only store");
    let dead_name = dead.file_name().unwrap().to_str().unwrap();
    assert!(e.message().contains(dead_name), "{e}");
    assert!(dead.is_dir());
    assert_eq!(
        store.gc().unwrap().removed,
        1,
        "the writable view collects it"
    );
}

#[test]
fn unprivileged_process_gets_clear_errors() {
    const TEST: &str = "unprivileged_process_gets_clear_errors";
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP {TEST}: needs root to run a helper as nobody");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path().join("store");
    let store = Store::open(&root).unwrap();
    let mut obj = store.new_object("a").unwrap();
    fill_tree(obj.tree(), "a", &mut Rng::new(14), 4096).unwrap();
    store.commit(&mut obj, "a").unwrap();
    // A live work dir of root's (mode 0700) and a dead one.
    let live = store.new_object("live").unwrap();
    let dead = dead_work_dir(&root);
    fs::set_permissions(&dead, fs::Permissions::from_mode(0o700)).unwrap();

    let out = helper("as_nobody")
        .env(STORE_VAR, &root)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{stderr}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(live.tree().is_dir());
    check_tree(store.get("a").unwrap().unwrap().tree(), "a").unwrap();
}

/// A dead builder's work dir in `root`'s `tmp/`, named as osstore names
/// them (so a collection recognises it), with its tree inside.
fn dead_work_dir(root: &Path) -> PathBuf {
    let name = osstore::tempdir::fresh_name(b"object-dead-", b"-workdir").unwrap();
    let dead = root.join("tmp").join(name.to_str().unwrap());
    fs::create_dir_all(dead.join("object")).unwrap();
    dead
}

/// Run as nobody on root's store: reading works, writing fails with EACCES
/// naming the path.
#[test]
#[ignore = "helper process of unprivileged_process_gets_clear_errors"]
fn as_nobody() {
    let Some(root) = env_path(STORE_VAR) else {
        return;
    };
    let store = Store::open(&root).expect("open for reading");
    assert!(store.contains("a").unwrap());
    check_tree(store.get("a").unwrap().unwrap().tree(), "a").unwrap();
    let e = expect_errno(store.new_object("b"), libc::EACCES, "new");
    assert!(
        e.message()
            .contains(root.join("tmp/object-b-").to_str().unwrap()),
        "{e}"
    );
    let e = expect_errno(store.tempdir(b"x", b""), libc::EACCES, "tempdir");
    assert!(
        e.message().contains(root.join("tmp").to_str().unwrap()),
        "{e}"
    );
    let e = expect_errno(store.gc(), libc::EACCES, "gc");
    assert!(e.message().contains(root.to_str().unwrap()), "{e}");
    let e = expect_errno(
        Store::open(root.join("objects/new-store")),
        libc::EACCES,
        "open",
    );
    assert!(e.message().contains("objects/new-store"), "{e}");
}

#[test]
fn store_removed_under_a_live_handle() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = Store::open(&root).unwrap();
    let mut rng = Rng::new(15);
    let mut committed = store.new_object("a").unwrap();
    fill_tree(committed.tree(), "a", &mut rng, 4096).unwrap();
    store.commit(&mut committed, "a").unwrap();
    let mut work = store.new_object("w").unwrap();
    fill_tree(work.tree(), "w", &mut rng, 4096).unwrap();
    let held = store.get("a").unwrap().unwrap();
    let tempdir = store.tempdir(b"t", b"").unwrap();
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();

    fs::remove_dir_all(&root).unwrap();
    let tmp = root.join("tmp");
    let e = expect_errno(store.new_object("n"), libc::ENOENT, "new");
    assert!(e.message().contains(tmp.to_str().unwrap()), "{e}");
    let e = expect_errno(store.commit(&mut work, "w"), libc::ENOENT, "commit");
    assert!(e.message().contains("cannot commit object \"w\""), "{e}");
    expect_errno(
        store.commit(&mut work, "x"),
        libc::ENOENT,
        "commit of a copy",
    );
    let e = expect_errno(store.tempdir(b"", b""), libc::ENOENT, "tempdir");
    assert!(e.message().contains(tmp.to_str().unwrap()), "{e}");
    let e = expect_errno(store.gc(), libc::ENOENT, "gc");
    assert!(e.message().contains(tmp.to_str().unwrap()), "{e}");
    let e = expect_errno(held.export(&out), libc::ENOENT, "export");
    assert!(e.message().contains(root.to_str().unwrap()), "{e}");
    assert!(!store.contains("a").unwrap());
    assert!(
        store.get("a").unwrap().is_none(),
        "a removed store has no objects"
    );
    drop((work, held, tempdir, committed));
    // Opening it again makes a new, working store.
    drop(store);
    let store = Store::open(&root).unwrap();
    let mut obj = store.new_object("again").unwrap();
    store.commit(&mut obj, "again").unwrap();
    assert!(store.contains("again").unwrap());
}

#[test]
fn over_long_and_odd_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::quick(&dir.path().join("store"));
    let long = "x".repeat(256);
    for bad in [long.as_str(), "", ".", "..", "a/b", "nul\0", "/abs"] {
        expect_errno(store.new_object(bad), libc::EINVAL, "bad id");
        expect_errno(store.get(bad), libc::EINVAL, "bad id");
        expect_errno(store.resolve_ref(bad), libc::EINVAL, "bad id");
        if !bad.is_empty() {
            expect_errno(store.contains(bad), libc::EINVAL, "bad id");
        }
        let mut obj = store.new_object("ok").unwrap();
        expect_errno(store.commit(&mut obj, bad), libc::EINVAL, "bad id");
    }
    let e = expect_errno(store.new_object(&long), libc::EINVAL, "long id");
    assert!(e.message().contains("256 bytes"), "{e}");
    // 255 bytes is fine, and so is the ref of that name.
    let mut max = store.new_object(&"y".repeat(255)).unwrap();
    store.commit(&mut max, &"y".repeat(255)).unwrap();

    // Prefix and suffix: each up to 255 bytes without '/' or NUL, but
    // together the name must still fit in one path component.
    expect_errno(
        store.tempdir(&[b'p'; 256], b""),
        libc::EINVAL,
        "long prefix",
    );
    expect_errno(store.tempdir(b"", b"s/x"), libc::EINVAL, "suffix with /");
    let e = expect_errno(
        store.tempdir(&[b'p'; 200], &[b's'; 100]),
        libc::ENAMETOOLONG,
        "long name",
    );
    assert!(
        e.message()
            .contains(dir.path().join("store/tmp/ppp").to_str().unwrap()),
        "{e}"
    );
    // Bytes that are not UTF-8 are fine in paths.
    let t = store.tempdir(b"\xff\xfe-", b"").unwrap();
    assert!(
        t.path()
            .file_name()
            .unwrap()
            .as_bytes()
            .starts_with(b"\xff\xfe-")
    );
    let odd = dir.path().join(OsStr::from_bytes(b"odd-\xff"));
    let odd_store = Store::open(&odd).unwrap();
    let mut obj = odd_store.new_object("o").unwrap();
    fs::write(obj.tree().join("f"), "x").unwrap();
    odd_store.commit(&mut obj, "o").unwrap();
    let export = dir.path().join(OsStr::from_bytes(b"export-\xfe"));
    fs::create_dir(&export).unwrap();
    obj.export(&export).unwrap();
    assert_eq!(fs::read(export.join("f")).unwrap(), b"x");

    // A work dir is named after the first 7 characters of a non-ASCII id,
    // never a split character.
    let id = "éééééééééé";
    let obj = store.new_object(id).unwrap();
    let workdir = obj.tree().parent().unwrap().file_name().unwrap();
    let workdir = workdir.to_str().expect("valid UTF-8");
    assert!(workdir.starts_with("object-ééééééé-"), "{workdir}");

    // A store path beyond PATH_MAX.
    let deep = dir.path().join("d".repeat(250)).join("e".repeat(250));
    let mut too_long = deep.clone();
    for _ in 0..20 {
        too_long = too_long.join("f".repeat(250));
    }
    let e = expect_errno(
        Store::open(&too_long),
        libc::ENAMETOOLONG,
        "store path beyond PATH_MAX",
    );
    assert!(e.message().contains("cannot create store directory"), "{e}");
}
