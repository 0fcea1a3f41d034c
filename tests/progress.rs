//! Tests of tree copies with progress reports, cancellation and caller
//! ownership (`osstore::tree::copy_tree_with`, `Object::init_with`,
//! `Object::export_with`). Root only (the fixture chowns and mknods).

mod common;
#[path = "common/tree_fixture.rs"]
#[allow(dead_code)] // the fixture serves tests/tree.rs too
mod tree_fixture;

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use osstore::tree::{
    CopyOptions, Difference, Progress, Totals, compare_trees, copy_tree, copy_tree_with,
};
use tree_fixture::{SETGID_DIR, SETUID, build_full};

fn skip_unless_root(test: &str) -> bool {
    if common::is_root() {
        return false;
    }
    println!("SKIP {test}: needs root");
    true
}

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("osstore-progress-")
        .tempdir()
        .expect("tempdir")
}

fn assert_identical(a: &Path, b: &Path) {
    let diffs = compare_trees(a, b).expect("compare");
    let text: Vec<String> = diffs.iter().map(Difference::to_string).collect();
    assert!(diffs.is_empty(), "trees differ:\n{}", text.join("\n"));
}

/// Entries below `root` and bytes of its regular files (each inode once).
fn count(root: &Path) -> (u64, u64) {
    let (mut files, mut bytes, mut seen) = (0, 0, HashSet::new());
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let meta = fs::symlink_metadata(&path).expect("lstat");
            files += 1;
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() && seen.insert(meta.ino()) {
                bytes += meta.len();
            }
        }
    }
    (files, bytes)
}

/// The full fixture plus `extra` small files in 16 directories.
fn build_source(src: &Path, extra: usize) {
    build_full(src);
    for i in 0..extra {
        let dir = src.join(format!("bulk/d{}", i % 16));
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join(format!("f{i}")), format!("file {i}\n")).expect("write");
    }
}

/// Runs a copy whose callback records every report and answers with
/// `answer(call number from 1, progress)` (true: go on).
fn copy_recording(
    src: &Path,
    dst: &Path,
    mut answer: impl FnMut(usize, &Progress) -> bool,
) -> (osstore::Result<()>, Vec<Progress>) {
    let mut seen = Vec::new();
    let mut report = |p: &Progress| {
        seen.push(*p);
        answer(seen.len(), p)
    };
    let options = CopyOptions {
        progress: Some(&mut report),
        caller_owns: false,
    };
    let result = copy_tree_with(src, dst, options, Totals::default());
    (result, seen)
}

fn assert_monotonic(seen: &[Progress]) {
    for pair in seen.windows(2) {
        assert!(
            pair[1].files_done >= pair[0].files_done && pair[1].bytes_done >= pair[0].bytes_done,
            "progress went back: {pair:?}"
        );
    }
}

/// A callback slower than the copy changes nothing in the result; reports
/// are monotonic, the first comes before anything is copied and the last
/// has the full counts.
#[test]
fn progress_slow_callback_gives_identical_copy() {
    if skip_unless_root("progress_slow_callback_gives_identical_copy") {
        return;
    }
    let tmp = tmp();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).expect("mkdir");
    fs::create_dir(&dst).expect("mkdir");
    build_source(&src, 3000);
    let (result, seen) = copy_recording(&src, &dst, |_, _| {
        std::thread::sleep(Duration::from_millis(150));
        true
    });
    result.expect("copy");
    assert_identical(&src, &dst);
    assert_monotonic(&seen);
    assert!(seen.len() >= 2, "a first and a final report: {seen:?}");
    assert_eq!(seen[0], Progress::default(), "first report before any work");
    let (files, bytes) = count(&src);
    let last = seen[seen.len() - 1];
    assert_eq!((last.files_done, last.bytes_done), (files, bytes));
    assert_eq!(
        (last.files_total, last.bytes_total),
        (0, 0),
        "totals unknown"
    );
}

/// Where a cancellation happens.
#[derive(Debug, Clone, Copy)]
enum At {
    First,
    Middle,
    Last,
}

/// Cancelling at the first report, at one in the middle and at the last
/// leaves the destination exactly as it was: what the copy created is gone,
/// what was there before (a file, a directory the copy merges into, their
/// modes and times) is as it was.
#[test]
fn progress_cancel_leaves_destination_as_before() {
    if skip_unless_root("progress_cancel_leaves_destination_as_before") {
        return;
    }
    let tmp = tmp();
    let (src, dst, before) = (
        tmp.path().join("src"),
        tmp.path().join("dst"),
        tmp.path().join("before"),
    );
    for d in [&src, &dst, &before] {
        fs::create_dir(d).expect("mkdir");
    }
    // What the destination has before: a file of its own, and a directory
    // the copy merges into (with a file of its own and an odd mode).
    fs::create_dir_all(dst.join("dir/nested")).expect("mkdir");
    fs::write(dst.join("mine.txt"), b"mine").expect("write");
    fs::write(dst.join("dir/nested/mine.txt"), b"mine too").expect("write");
    fs::set_permissions(dst.join("dir"), fs::Permissions::from_mode(0o711)).expect("chmod");
    fs::set_permissions(&dst, fs::Permissions::from_mode(0o750)).expect("chmod");
    copy_tree(&dst, &before).expect("copy of the destination as it was");
    let mut extra = 2000;
    build_source(&src, extra);
    for at in [At::First, At::Middle, At::Last] {
        loop {
            let (files, _) = count(&src);
            let (result, seen) = copy_recording(&src, &dst, |n, p| match at {
                At::First => n > 1,
                At::Middle => !(p.files_done > 0 && p.files_done < files),
                At::Last => p.files_done < files,
            });
            assert_monotonic(&seen);
            let cancelled =
                result.as_ref().err().map(osstore::Error::errno) == Some(libc::ECANCELED);
            if !cancelled && matches!(at, At::Middle) && result.is_ok() {
                // The copy ended before a report fell in its middle: a
                // bigger tree takes longer.
                assert!(
                    extra < 200_000,
                    "no report in the middle of a copy of {extra} files"
                );
                fs::remove_dir_all(&dst).expect("rm");
                fs::create_dir(&dst).expect("mkdir");
                copy_tree(&before, &dst).expect("restore");
                build_source_more(&src, extra);
                extra *= 2;
                continue;
            }
            assert!(cancelled, "{at:?}: {result:?}");
            assert_identical(&before, &dst);
            break;
        }
    }
}

/// Doubles the bulk files of [`build_source`] (from `extra` to `2 * extra`).
fn build_source_more(src: &Path, extra: usize) {
    for i in extra..2 * extra {
        let dir = src.join(format!("bulk/d{}", i % 16));
        fs::write(dir.join(format!("f{i}")), format!("file {i}\n")).expect("write");
    }
}

/// With `caller_owns`, exported entries belong to the caller and lose the
/// set-id bits of another owner; everything else is copied as always.
#[test]
fn progress_export_caller_owns() {
    if skip_unless_root("progress_export_caller_owns") {
        return;
    }
    let tmp = tmp();
    let store = common::quick(&tmp.path().join("store"));
    let mut obj = store.new_object("owned").expect("new");
    build_full(obj.tree());
    let dst = tmp.path().join("out");
    fs::create_dir(&dst).expect("mkdir");
    let options = CopyOptions {
        progress: None,
        caller_owns: true,
    };
    obj.export_with(&dst, options).expect("export");
    let differences = compare_trees(obj.tree(), &dst).expect("compare");
    // Only owners differ, and the modes of the set-id entries of uid 1234.
    for d in &differences {
        let set_id = [SETUID, SETGID_DIR].iter().any(|p| d.path == Path::new(p));
        assert!(
            d.what.starts_with("owner") || (set_id && d.what.starts_with("mode")),
            "{d}"
        );
    }
    assert!(
        !differences.is_empty(),
        "the fixture has entries of other owners"
    );
    let mut stack = vec![dst.clone()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read_dir") {
            let path: PathBuf = entry.expect("entry").path();
            let meta = fs::symlink_metadata(&path).expect("lstat");
            assert_eq!((meta.uid(), meta.gid()), (0, 0), "{}", path.display());
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    let mode = |p: &str| fs::metadata(dst.join(p)).expect("stat").mode() & 0o7777;
    assert_eq!(mode(SETUID), 0o755, "set-uid of uid 1234 dropped");
    assert_eq!(mode(SETGID_DIR), 0o775, "set-gid of gid 5678 dropped");
    assert_eq!(
        mode("modes/setgid"),
        0o2755,
        "set-gid of the caller's file kept"
    );
    obj.finalize();
}
