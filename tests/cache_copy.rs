//! Commit by copy (`Store::commit` under another id): the copy is measured
//! (and clamped to the source epoch) as it is made, and what its sidecar
//! records is what a fresh measurement of the committed tree finds, on
//! tmpfs, on a loop-mounted ext4 and on the test's own filesystem.

mod common;
#[path = "common/tree_fixture.rs"]
#[allow(dead_code)] // this crate uses a few of its helpers
mod tree_fixture;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use osstore::tree::measure_tree;
use tree_fixture::{build_full, mount_loop_image, mount_tmpfs, set_times};

/// Size and entry count the sidecar of `objects/<name>` records.
fn recorded(store: &Path, name: &str) -> (u64, u64) {
    let text = fs::read(store.join("meta").join(name).join("info")).unwrap();
    let info: serde_json::Value = serde_json::from_slice(&text).unwrap();
    (
        info["size"].as_u64().unwrap(),
        info["files"].as_u64().unwrap(),
    )
}

/// Commits a copy of the full fixture (hard links, a sparse file, xattrs
/// of every size, special files, a mode-0 directory) made in a store at
/// `dir`, with and without a source epoch, and checks each sidecar against
/// a fresh measurement (and an independent one) of the committed tree.
fn copies_record_their_fresh_measure(dir: &Path) {
    let root = dir.join("store");
    let store = common::quick(&root);
    let mut src = store.new_object("src").unwrap();
    build_full(src.tree());
    // A file written after the object was created but dated before: the
    // clamp leaves it alone.
    fs::write(src.tree().join("old"), b"old").unwrap();
    set_times(&src.tree().join("old"), 86_400, 0);

    let name = store.commit(&mut src, "plain-copy").unwrap();
    let tree = root.join("objects").join(&name);
    let fresh = measure_tree(&tree, None).unwrap();
    assert_eq!(recorded(&root, &name), (fresh.bytes, fresh.entries));
    assert_eq!(fresh.bytes, common::du(&tree));

    src.set_source_epoch(1_000_000).unwrap();
    let name = store.commit(&mut src, "clamped-copy").unwrap();
    let tree = root.join("objects").join(&name);
    let fresh = measure_tree(&tree, None).unwrap();
    assert_eq!(recorded(&root, &name), (fresh.bytes, fresh.entries));
    assert_eq!(fresh.bytes, common::du(&tree));
    // Clamped as a commit by move clamps: what is new, not what is older
    // than the object; the source is left as it was.
    // (Only mtimes: reading a directory or file since may have set its
    // atime again.)
    for p in ["", "large.bin", "hl/b/h2", "special/fifo", "links/abs"] {
        let m = fs::symlink_metadata(tree.join(p)).unwrap();
        assert_eq!(m.mtime(), 1_000_000, "{p:?}");
    }
    assert_eq!(fs::metadata(tree.join("old")).unwrap().mtime(), 86_400);
    assert_ne!(
        fs::metadata(src.tree().join("large.bin")).unwrap().mtime(),
        1_000_000
    );

    // The same tree committed by move measures the same.
    let moved = store.commit(&mut src, "src").unwrap();
    let (bytes, _) = recorded(&root, &moved);
    assert_eq!(bytes, common::du(&root.join("objects").join(&moved)));
}

#[test]
fn commit_by_copy_records_a_fresh_measure_here() {
    if !common::is_root() {
        println!("SKIP commit_by_copy_records_a_fresh_measure_here: the fixture needs root");
        return;
    }
    copies_record_their_fresh_measure(tempfile::tempdir().unwrap().path());
}

#[test]
fn commit_by_copy_records_a_fresh_measure_on_tmpfs() {
    let test = "commit_by_copy_records_a_fresh_measure_on_tmpfs";
    if common::skip_without_private_mounts(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _mounted = mount_tmpfs(dir.path(), "size=256m");
    copies_record_their_fresh_measure(dir.path());
}

#[test]
fn commit_by_copy_records_a_fresh_measure_on_ext4() {
    let test = "commit_by_copy_records_a_fresh_measure_on_ext4";
    if common::skip_without_private_mounts(test) {
        return;
    }
    if !Path::new("/dev/loop-control").exists() {
        println!("SKIP {test}: no /dev/loop-control (no loop devices)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("ext4");
    let _mounted = match mount_loop_image(dir.path(), &mnt, &["mkfs.ext4", "-q", "-F"]) {
        Ok(m) => m,
        Err(why) => {
            println!("SKIP {test}: cannot mount an ext4 image: {why}");
            return;
        }
    };
    copies_record_their_fresh_measure(&mnt);
}
