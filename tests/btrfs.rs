//! Trees as btrfs subvolumes: a store on a btrfs made on a loop file, whose
//! trees are subvolumes, snapshotted by `init` and commit by copy and
//! deleted as a whole; and the per-file fallbacks, which must give the same
//! trees. Root only, in a private mount namespace (tests/in-private-ns.sh).

#[path = "common/mod.rs"]
mod common;
#[path = "common/tree_fixture.rs"]
#[allow(dead_code)] // shared with tests/tree.rs, which uses all of it
mod tree_fixture;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::{quick, skip_without_private_mounts};
use osstore::tree::{Difference, compare_trees, copy_tree, remove_tree};
use osstore::{Object, Store};
use tree_fixture::*;

/// A btrfs mounted for one test, in its own temporary directory.
struct Btrfs {
    mnt: PathBuf,
    _mounted: Mounted,
    _tmp: tempfile::TempDir,
}

/// Mounts a fresh btrfs, or prints why the test `test` skips.
fn btrfs(test: &str) -> Option<Btrfs> {
    if skip_without_private_mounts(test) {
        return None;
    }
    if !Path::new("/dev/loop-control").exists() {
        println!("SKIP {test}: no /dev/loop-control (no loop devices)");
        return None;
    }
    let tmp = tempfile::Builder::new()
        .prefix("osstore-btrfs-")
        .tempdir()
        .expect("tempdir");
    let mnt = tmp.path().join("mnt");
    match mount_loop_image(tmp.path(), &mnt, &["mkfs.btrfs", "-q"]) {
        Ok(mounted) => Some(Btrfs {
            mnt,
            _mounted: mounted,
            _tmp: tmp,
        }),
        Err(why) => {
            println!(
                "SKIP {test}: cannot make and mount a btrfs (apt-get install btrfs-progs): {why}"
            );
            None
        }
    }
}

/// Runs `btrfs args...` and returns its standard output.
fn btrfs_cmd<S: AsRef<OsStr>>(args: &[S]) -> String {
    let out = Command::new("btrfs")
        .args(args)
        .output()
        .expect("run btrfs");
    let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
    assert!(
        out.status.success(),
        "btrfs {shown:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// True when `path` is the root of a subvolume.
fn is_subvolume(path: &Path) -> bool {
    let st = fs::symlink_metadata(path).expect("stat");
    let parent = fs::metadata(path.parent().expect("parent")).expect("stat");
    st.is_dir() && st.ino() == 256 && st.dev() != parent.dev()
}

/// True when the subvolume `path` is a snapshot (has a parent subvolume).
fn is_snapshot(path: &Path) -> bool {
    let show = btrfs_cmd(&[OsStr::new("subvolume"), "show".as_ref(), path.as_os_str()]);
    let parent = show
        .lines()
        .find_map(|l| l.trim().strip_prefix("Parent UUID:"))
        .expect("Parent UUID line");
    parent.trim() != "-"
}

/// Paths (relative to the filesystem's top `mnt`) of its subvolumes.
fn subvolumes(mnt: &Path) -> Vec<PathBuf> {
    btrfs_cmd(&[OsStr::new("subvolume"), "list".as_ref(), mnt.as_os_str()])
        .lines()
        .filter_map(|l| l.split(" path ").nth(1).map(PathBuf::from))
        .collect()
}

/// Runs `btrfs subvolume <verb> <paths>`.
fn subvolume(verb: &str, paths: &[&Path]) {
    let mut args = vec![OsStr::new("subvolume"), verb.as_ref()];
    args.extend(paths.iter().map(|p| p.as_os_str()));
    btrfs_cmd(&args);
}

fn assert_identical(a: &Path, b: &Path) {
    let diffs = compare_trees(a, b).expect("compare");
    let text: Vec<String> = diffs.iter().map(Difference::to_string).collect();
    assert!(diffs.is_empty(), "trees differ:\n{}", text.join("\n"));
}

/// The real path of an object's tree (a committed one's is `refs/<id>`).
fn tree_of(object: &Object) -> PathBuf {
    fs::canonicalize(object.tree()).expect("canonicalize")
}

/// Commits a fresh object `id` holding the full fixture; returns it.
fn committed_fixture(store: &Store, id: &str) -> Object {
    let mut base = store.new_object(id).expect("new object");
    assert!(is_subvolume(base.tree()), "a new tree is not a subvolume");
    build_full(base.tree());
    store.commit(&mut base, id).expect("commit");
    assert!(is_subvolume(&tree_of(&base)));
    base
}

/// Points the ref `id` at a new, empty tree: the old one is garbage.
fn unreference(store: &Store, id: &str) {
    let mut again = store.new_object(id).expect("new object");
    store.commit(&mut again, id).expect("replace the ref");
}

/// Writing to one tree leaves the other as it was, both ways.
fn assert_independent(a: &Path, b: &Path) {
    let read = |p: PathBuf| fs::read(p).expect("read");
    for (from, to) in [(a, b), (b, a)] {
        let (file, link) = (to.join(XATTR_FILE), to.join(HARD_LINKS[1]));
        let (before, linked) = (read(file.clone()), read(link.clone()));
        fs::write(from.join(XATTR_FILE), b"changed").expect("write");
        fs::write(from.join(HARD_LINKS[0]), b"changed").expect("write");
        fs::write(from.join("new-file"), b"new").expect("write");
        assert_eq!(read(file), before, "{} changed", to.display());
        assert_eq!(read(link), linked, "{} changed", to.display());
        assert!(!to.join("new-file").exists(), "{} changed", to.display());
        fs::remove_file(from.join("new-file")).expect("remove");
    }
}

#[test]
fn btrfs_init_and_commit_by_copy_are_faithful_independent_snapshots() {
    let Some(fs) = btrfs("btrfs_init_and_commit_by_copy_are_faithful_independent_snapshots") else {
        return;
    };
    let store = quick(&fs.mnt.join("store"));
    let mut base = committed_fixture(&store, "base");

    let mut copy = store.new_object("copy").expect("new object");
    copy.init(&base).expect("init");
    assert!(is_subvolume(copy.tree()) && is_snapshot(copy.tree()));
    assert_identical(&tree_of(&base), copy.tree());

    store.commit(&mut base, "by-copy").expect("commit by copy");
    let by_copy = store.get("by-copy").expect("get").expect("committed");
    let by_copy = tree_of(&by_copy);
    assert!(is_subvolume(&by_copy) && is_snapshot(&by_copy));
    assert_ne!(by_copy, tree_of(&base));
    assert_identical(&tree_of(&base), &by_copy);

    assert_identical(copy.tree(), &by_copy);
    assert_independent(&tree_of(&base), copy.tree());
    assert_independent(&by_copy, &tree_of(&base));
}

#[test]
fn btrfs_fallbacks_give_the_fast_paths_tree() {
    let Some(fs) = btrfs("btrfs_fallbacks_give_the_fast_paths_tree") else {
        return;
    };
    let store = quick(&fs.mnt.join("store"));
    let base = committed_fixture(&store, "base");
    let mut fast = store.new_object("fast").expect("new object");
    fast.init(&base).expect("init");
    assert!(is_snapshot(fast.tree()));

    // A tree made before trees were subvolumes (a plain directory), beside
    // subvolume trees in the same store.
    let mut plain = store.new_object("plain").expect("new object");
    copy_tree(&tree_of(&base), plain.tree()).expect("copy");
    store.commit(&mut plain, "plain").expect("commit");
    let plain_tree = tree_of(&plain);
    drop(plain);
    let staging = fs.mnt.join("staging");
    fs::create_dir(&staging).expect("mkdir");
    copy_tree(&plain_tree, &staging).expect("copy");
    remove_tree(&plain_tree).expect("remove");
    fs::rename(&staging, &plain_tree).expect("rename");
    assert!(!is_subvolume(&plain_tree));
    let plain = store.get("plain").expect("get").expect("committed");

    let logged = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&logged);
    osstore::log::set_sink(
        Some(Arc::new(move |_, message: &str| {
            sink.lock().unwrap().push(message.to_owned())
        })),
        Some(osstore::log::Level::Debug),
    );
    let mut from_plain = store.new_object("from-plain").expect("new object");
    from_plain
        .init(&plain)
        .expect("init from a plain directory");
    osstore::log::set_sink(None, None);
    let logged = logged.lock().unwrap();
    assert!(
        logged
            .iter()
            .any(|m| m.contains("\"from-plain\"") && m.contains("no snapshot")),
        "the fallback is not logged: {logged:?}"
    );
    assert!(is_subvolume(from_plain.tree()) && !is_snapshot(from_plain.tree()));
    assert_identical(fast.tree(), from_plain.tree());

    // A target that is not empty: merged into by the per-file copy.
    let mut busy = store.new_object("busy").expect("new object");
    fs::write(busy.tree().join("extra"), b"was here first").expect("write");
    busy.init(&base).expect("init into a non-empty tree");
    assert!(!is_snapshot(busy.tree()));
    let diffs = compare_trees(fast.tree(), busy.tree()).expect("compare");
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert_eq!(diffs[0].path, Path::new("extra"));

    // Commit by copy from the plain tree falls back too, and gc takes both
    // kinds of tree.
    let mut plain = plain;
    store
        .commit(&mut plain, "plain-copy")
        .expect("commit by copy");
    let plain_copy = tree_of(&store.get("plain-copy").expect("get").expect("committed"));
    assert!(!is_snapshot(&plain_copy));
    assert_identical(&plain_tree, &plain_copy);
    drop((plain, base));
    for id in ["plain", "base"] {
        unreference(&store, id);
    }
    let before = subvolumes(&fs.mnt);
    store.gc().expect("gc");
    assert!(!plain_tree.exists(), "gc left the plain tree");
    let after = subvolumes(&fs.mnt);
    assert_eq!(after.len() + 1, before.len(), "{before:?} -> {after:?}");
}

#[test]
fn btrfs_removal_and_gc_delete_subvolumes() {
    let Some(fs) = btrfs("btrfs_removal_and_gc_delete_subvolumes") else {
        return;
    };
    let store = quick(&fs.mnt.join("store"));
    let base = committed_fixture(&store, "base");
    let base_tree = tree_of(&base);
    let mut copy = store.new_object("copy").expect("new object");
    copy.init(&base).expect("init");
    let copy_tree_path = copy.tree().to_path_buf();
    let listed = |path: &Path| {
        let rel = path.strip_prefix(&fs.mnt).expect("below the mount");
        subvolumes(&fs.mnt).iter().any(|p| p == rel)
    };
    assert!(listed(&base_tree) && listed(&copy_tree_path));

    // Releasing a work tree deletes its subvolume.
    drop(copy);
    assert!(!copy_tree_path.exists());
    assert!(!listed(&copy_tree_path));

    // A locked-down tree: immutable files and root, a read-only snapshot.
    chattr_add(&base_tree.join("empty_file"), IMMUTABLE).expect("chattr");
    chattr_add(&base_tree.join("dir"), APPEND).expect("chattr");
    chattr_add(&base_tree, IMMUTABLE).expect("chattr");
    btrfs_cmd(&[
        OsStr::new("property"),
        "set".as_ref(),
        "-ts".as_ref(),
        base_tree.as_os_str(),
        "ro".as_ref(),
        "true".as_ref(),
    ]);
    drop(base);
    unreference(&store, "base");
    store.gc().expect("gc");
    assert!(!base_tree.exists(), "gc left the tree");
    assert!(!listed(&base_tree), "gc left the subvolume");
}

#[test]
fn btrfs_nested_and_read_only_subvolumes_are_copied_and_removed() {
    let Some(fs) = btrfs("btrfs_nested_and_read_only_subvolumes_are_copied_and_removed") else {
        return;
    };
    let store = quick(&fs.mnt.join("store"));
    let mut outer = store.new_object("outer").expect("new object");
    let tree = outer.tree().to_path_buf();
    build_full(&tree);
    subvolume("create", &[&tree.join("dir/nested-sub")]);
    fs::create_dir(tree.join("dir/nested-sub/inside")).expect("mkdir");
    fs::write(
        tree.join("dir/nested-sub/inside/f"),
        b"in a nested subvolume",
    )
    .expect("write");
    subvolume("create", &[&tree.join("dir/nested-sub/deeper-sub")]);
    fs::write(tree.join("dir/nested-sub/deeper-sub/g"), b"deeper").expect("write");
    btrfs_cmd(&[
        OsStr::new("subvolume"),
        "snapshot".as_ref(),
        "-r".as_ref(),
        tree.join("dir/nested-sub/deeper-sub").as_os_str(),
        tree.join("read-only").as_os_str(),
    ]);
    assert!(
        fs::write(tree.join("read-only/new"), b"x").is_err(),
        "not read-only"
    );
    store.commit(&mut outer, "outer").expect("commit");
    let outer_tree = tree_of(&outer);

    // Copied entry by entry (a snapshot would show them empty), as
    // directories.
    let mut copy = store.new_object("copy").expect("new object");
    copy.init(&outer).expect("init");
    assert!(!is_snapshot(copy.tree()));
    assert_identical(&outer_tree, copy.tree());
    assert!(!is_subvolume(&copy.tree().join("dir/nested-sub")));
    assert!(!is_subvolume(&copy.tree().join("read-only")));
    let export = fs.mnt.join("export");
    fs::create_dir(&export).expect("mkdir");
    outer.export(&export).expect("export");
    assert_identical(&outer_tree, &export);

    // Removed, read-only snapshot included, by gc and by remove_tree.
    let copy_tree_path = copy.tree().to_path_buf();
    drop(copy);
    assert!(!copy_tree_path.exists());
    drop(outer);
    unreference(&store, "outer");
    store.gc().expect("gc");
    assert!(!outer_tree.exists(), "gc left the tree");
    let left: Vec<PathBuf> = subvolumes(&fs.mnt)
        .into_iter()
        .filter(|p| p.starts_with(outer_tree.strip_prefix(&fs.mnt).expect("below")))
        .collect();
    assert!(left.is_empty(), "subvolumes left: {left:?}");
    remove_tree(&export).expect("remove export");
}
