//! The store's behaviour (docs/store.md) through the Rust core.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use osstore::{Mode, Store};

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("scratch dir")
}

#[test]
fn open_creates_the_layout_and_keeps_what_is_there() {
    let dir = scratch();
    let root = dir.path().join("s");
    let store = common::quick(&root);
    for sub in ["objects", "refs", "tmp"] {
        assert!(root.join(sub).is_dir(), "{sub}");
    }
    let mut obj = store.new_object("keep").unwrap();
    fs::write(obj.tree().join("f"), "x").unwrap();
    let name = store.commit(&mut obj, "keep").unwrap();
    drop(obj);
    drop(store);
    let store = Store::open(&root).unwrap();
    assert!(store.contains("keep").unwrap());
    assert_eq!(
        fs::read_link(root.join("refs/keep")).unwrap(),
        Path::new("../objects").join(&name)
    );
    assert_eq!(fs::read(root.join("refs/keep/f")).unwrap(), b"x");
}

#[test]
fn work_dirs_are_named_after_the_id() {
    let dir = scratch();
    let store = common::quick(dir.path());
    let obj = store.new_object("0123456789abcdef").unwrap();
    let tree = obj.tree().to_str().unwrap().to_owned();
    let tmp = dir.path().join("tmp/object-0123456-");
    assert!(tree.starts_with(tmp.to_str().unwrap()), "{tree}");
    assert!(tree.ends_with("-workdir/object"), "{tree}");
    let random = &tree[tmp.to_str().unwrap().len()..tree.len() - "-workdir/object".len()];
    // 8 random characters and their 6-character check.
    assert_eq!(random.len(), 14, "{random}");
    assert!(
        osstore::tempdir::is_generated(random.as_bytes()),
        "{random}"
    );
    assert_eq!(obj.mode(), Mode::Write);
    assert_eq!(fs::read_dir(obj.tree()).unwrap().count(), 0);
}

#[test]
fn commit_with_own_id_moves_and_keeps_inodes() {
    let dir = scratch();
    let store = common::quick(dir.path());
    let mut obj = store.new_object("move").unwrap();
    fs::write(obj.tree().join("f"), "data").unwrap();
    let inode = fs::metadata(obj.tree().join("f")).unwrap().ino();
    let workdir = obj.tree().parent().unwrap().to_path_buf();
    let name = store.commit(&mut obj, "move").unwrap();
    assert_eq!(obj.mode(), Mode::Read);
    assert_eq!(obj.tree(), dir.path().join("objects").join(&name));
    assert_eq!(fs::metadata(obj.tree().join("f")).unwrap().ino(), inode);
    assert!(!workdir.exists());
    assert!(uuid::Uuid::parse_str(&name).is_ok());
    // A second commit of the same (now committed) object under its id is refused.
    assert_eq!(
        store.commit(&mut obj, "move").unwrap_err().errno(),
        libc::EINVAL
    );
}

#[test]
fn commit_with_other_id_is_a_snapshot() {
    let dir = scratch();
    let store = common::quick(dir.path());
    let mut obj = store.new_object("work").unwrap();
    fs::write(obj.tree().join("a"), "1").unwrap();
    let inode = fs::metadata(obj.tree().join("a")).unwrap().ino();
    store.commit(&mut obj, "snap-a").unwrap();
    assert_eq!(obj.mode(), Mode::Write);
    fs::write(obj.tree().join("b"), "2").unwrap();
    store.commit(&mut obj, "snap-b").unwrap();

    let a = store.get("snap-a").unwrap().unwrap();
    let b = store.get("snap-b").unwrap().unwrap();
    assert!(a.tree().join("a").exists() && !a.tree().join("b").exists());
    assert!(b.tree().join("b").exists());
    assert_ne!(fs::metadata(a.tree().join("a")).unwrap().ino(), inode);
    assert!(!store.contains("work").unwrap());
}

#[test]
fn refs_are_replaced_and_old_objects_kept() {
    let dir = scratch();
    let store = common::quick(dir.path());
    let mut first = store.new_object("id").unwrap();
    let n1 = store.commit(&mut first, "id").unwrap();
    let mut second = store.new_object("id").unwrap();
    fs::write(second.tree().join("new"), "").unwrap();
    let n2 = store.commit(&mut second, "id").unwrap();
    assert_ne!(n1, n2);
    assert!(
        dir.path().join("objects").join(&n1).is_dir(),
        "old object left in place"
    );
    assert!(
        store
            .get("id")
            .unwrap()
            .unwrap()
            .tree()
            .join("new")
            .exists()
    );
    // Nothing left in tmp/: the work dirs went with the moves (the
    // replacing link is made in the work dir and renamed over the ref).
    let leftovers: Vec<_> = fs::read_dir(dir.path().join("tmp")).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn lookups_follow_the_spec() {
    let dir = scratch();
    let store = common::quick(dir.path());
    assert!(!store.contains("").unwrap());
    assert!(!store.contains("absent").unwrap());
    assert!(store.get("absent").unwrap().is_none());
    assert_eq!(
        store.resolve_ref("absent").unwrap(),
        dir.path().join("refs/absent")
    );
    for bad in ["", ".", "..", "a/b", "/etc", "../x"] {
        assert_eq!(
            store.resolve_ref(bad).unwrap_err().errno(),
            libc::EINVAL,
            "{bad:?}"
        );
        assert_eq!(
            store.new_object(bad).unwrap_err().errno(),
            libc::EINVAL,
            "{bad:?}"
        );
        assert!(store.get(bad).is_err(), "{bad:?}");
    }
    // A dangling ref is not contained.
    std::os::unix::fs::symlink("../objects/gone", dir.path().join("refs/dangling")).unwrap();
    assert!(!store.contains("dangling").unwrap());
    assert!(store.get("dangling").unwrap().is_none());
}

/// The store, not its callers, refuses an object of another store, even
/// one of the same directory opened twice: nothing moves, nothing is named.
#[test]
fn commit_refuses_an_object_of_another_store() {
    let dir = scratch();
    let store = common::quick(dir.path());
    let other = common::quick(dir.path());
    for (what, new_id) in [("its own id", "foreign"), ("another id", "copy")] {
        let mut obj = other.new_object("foreign").unwrap();
        fs::write(obj.tree().join("f"), "1").unwrap();
        let e = store.commit(&mut obj, new_id).unwrap_err();
        assert_eq!(e.errno(), libc::EINVAL, "{what}: {e}");
        assert!(e.to_string().contains("another store"), "{what}: {e}");
        assert_eq!(obj.mode(), Mode::Write, "{what}");
        assert!(obj.tree().join("f").exists(), "{what}");
        assert!(!store.contains(new_id).unwrap(), "{what}");
        other.commit(&mut obj, new_id).unwrap();
    }
    assert!(store.contains("foreign").unwrap() && store.contains("copy").unwrap());
}

/// Ids are checked once, where they enter: an `ObjectId` made from a string
/// is accepted everywhere as is, and an invalid string is refused by every
/// method that takes one.
#[test]
fn ids_are_validated_where_they_enter() {
    let dir = scratch();
    let store = common::quick(dir.path());
    let id = osstore::ObjectId::new("checked").unwrap();
    let mut obj = store.new_object(&id).unwrap();
    assert_eq!(obj.id(), id);
    store.commit(&mut obj, &id).unwrap();
    assert!(store.contains(&id).unwrap());
    assert!(store.get(&id).unwrap().is_some());
    assert_eq!(
        store.resolve_ref(&id).unwrap(),
        dir.path().join("refs/checked")
    );
    for bad in ["..", "a/b", "a\0b"] {
        assert_eq!(
            osstore::ObjectId::new(bad).unwrap_err().errno(),
            libc::EINVAL
        );
        assert_eq!(store.new_object(bad).unwrap_err().errno(), libc::EINVAL);
        assert_eq!(store.contains(bad).unwrap_err().errno(), libc::EINVAL);
        assert_eq!(store.get(bad).unwrap_err().errno(), libc::EINVAL);
        assert_eq!(store.resolve_ref(bad).unwrap_err().errno(), libc::EINVAL);
        assert_eq!(
            store.commit(&mut obj, bad).unwrap_err().errno(),
            libc::EINVAL
        );
    }
    assert!(
        !store.contains("").unwrap(),
        "an empty id is never contained"
    );
}

#[test]
fn floating_objects_are_found_first() {
    let dir = scratch();
    let store = common::quick(dir.path());
    let mut committed = store.new_object("x").unwrap();
    let name = store.commit(&mut committed, "x").unwrap();
    let object = dir.path().join("objects").join(&name);
    let tree_of = |id| store.get(id).unwrap().unwrap().tree().to_path_buf();
    // cache.md: a get names the object itself, not the ref.
    assert_eq!(tree_of("x"), object);

    let mut floating = store.new_object("x").unwrap();
    fs::write(floating.tree().join("float"), "").unwrap();
    assert_eq!(tree_of("x"), object);
    floating.finalize().unwrap();
    assert_eq!(floating.mode(), Mode::Read);
    let view = store.get("x").unwrap().unwrap();
    assert_eq!(view.tree(), floating.tree());
    assert_eq!(tree_of("x"), floating.tree());
    drop(view);
    drop(floating);
    assert_eq!(tree_of("x"), object);
}

#[test]
fn init_and_export_copy_the_tree() {
    let dir = scratch();
    let store = common::quick(dir.path());
    let mut base = store.new_object("base").unwrap();
    fs::create_dir(base.tree().join("d")).unwrap();
    fs::write(base.tree().join("d/f"), "content").unwrap();
    std::os::unix::fs::symlink("d/f", base.tree().join("l")).unwrap();
    base.finalize().unwrap();
    let mut derived = store.new_object("derived").unwrap();
    derived.init(&base).unwrap();
    assert_eq!(fs::read(derived.tree().join("d/f")).unwrap(), b"content");
    assert_eq!(
        fs::read_link(derived.tree().join("l")).unwrap(),
        Path::new("d/f")
    );
    assert_eq!(
        base.init(&derived).unwrap_err().errno(),
        libc::EINVAL,
        "READ objects refuse init"
    );

    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    derived.export(&out).unwrap();
    assert_eq!(fs::read(out.join("d/f")).unwrap(), b"content");
    assert_eq!(
        derived
            .export(&dir.path().join("missing"))
            .unwrap_err()
            .errno(),
        libc::ENOENT
    );
}

#[test]
fn release_removes_hard_to_delete_work_dirs() {
    if !common::is_root() {
        println!("SKIP release_removes_hard_to_delete_work_dirs: chattr +i needs root");
        return;
    }
    let dir = scratch();
    let store = common::quick(dir.path());
    let obj = store.new_object("hard").unwrap();
    let workdir = obj.tree().parent().unwrap().to_path_buf();
    let locked = obj.tree().join("locked");
    fs::create_dir(&locked).unwrap();
    fs::write(locked.join("f"), "").unwrap();
    let status = std::process::Command::new("chattr")
        .arg("+i")
        .arg(locked.join("f"))
        .status();
    assert!(
        status.map(|s| s.success()).unwrap_or(false),
        "chattr +i works here"
    );
    fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o0)).unwrap();
    drop(obj);
    assert!(!workdir.exists());
}

#[test]
fn tempdirs_are_named_and_removed() {
    let dir = scratch();
    let store = common::quick(dir.path());
    let t = store.tempdir(b"pre-", b"-suf").unwrap();
    let name = t.path().file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        name.starts_with("pre-") && name.ends_with("-suf") && name.len() == 22,
        "{name}"
    );
    assert_eq!(t.path().parent().unwrap(), dir.path().join("tmp"));
    let path = t.path().to_path_buf();
    drop(t);
    assert!(!path.exists());
    assert!(store.tempdir(b"a/b", b"").is_err());
    assert!(store.tempdir(b"", b"x\0").is_err());
}

#[test]
fn gc_spares_live_work_and_reclaims_the_rest() {
    let dir = scratch();
    let store = common::quick(dir.path());
    let live = store.new_object("live").unwrap();
    // Leftovers of a "dead" owner: a dir nobody locks, named as osstore
    // names them; a stranger's link (osstore makes no files in tmp/) and a
    // stranger's unlocked directory with a name like earlier versions': both
    // stay.
    let dead = osstore::tempdir::fresh_name(b"object-dead-", b"-workdir").unwrap();
    let dead = dir.path().join("tmp").join(dead.to_str().unwrap());
    fs::create_dir_all(dead.join("object")).unwrap();
    fs::create_dir_all(dir.path().join("tmp/object-dead-xxxxxxxx-workdir/object")).unwrap();
    std::os::unix::fs::symlink("../objects/x", dir.path().join("tmp/.ref-stale")).unwrap();
    // An object no ref names, and one named and held.
    fs::create_dir(
        dir.path()
            .join("objects/0e1f2a3b-0000-4000-8000-00000000abcd"),
    )
    .unwrap();
    let mut kept = store.new_object("kept").unwrap();
    let kept_name = store.commit(&mut kept, "kept").unwrap();
    // A replaced object still held by a handle.
    let mut old = store.new_object("replaced").unwrap();
    let old_name = store.commit(&mut old, "replaced").unwrap();
    let mut new = store.new_object("replaced").unwrap();
    store.commit(&mut new, "replaced").unwrap();

    let report = store.gc().unwrap();
    assert_eq!(report.removed, 2, "dead work dir, orphan");
    assert!(!dead.exists());
    assert!(dir.path().join("tmp/.ref-stale").symlink_metadata().is_ok());
    assert!(
        dir.path()
            .join("tmp/object-dead-xxxxxxxx-workdir/object")
            .is_dir()
    );
    assert!(live.tree().is_dir());
    assert!(dir.path().join("objects").join(&kept_name).is_dir());
    assert!(
        dir.path().join("objects").join(&old_name).is_dir(),
        "held by `old`"
    );
    drop(old);
    assert_eq!(store.gc().unwrap().removed, 1);
    assert!(!dir.path().join("objects").join(&old_name).exists());
}

#[test]
fn gc_in_another_process_spares_this_ones_work() {
    let dir = scratch();
    let store = common::quick(dir.path());
    let live = store.new_object("live").unwrap();
    let tmpdir = store.tempdir(b"mine-", b"").unwrap();
    // A second process opens the store (which sweeps) and runs gc.
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "gc_child_process", "--nocapture", "--ignored"])
        .env("OSSTORE_GC_CHILD_STORE", dir.path())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(live.tree().is_dir());
    assert!(tmpdir.path().is_dir());
}

/// Run by `gc_in_another_process_spares_this_ones_work` in a child process.
#[test]
#[ignore = "helper process of gc_in_another_process_spares_this_ones_work"]
fn gc_child_process() {
    let Ok(path) = std::env::var("OSSTORE_GC_CHILD_STORE") else {
        return;
    };
    let store = Store::open(&path).unwrap();
    store.gc().unwrap();
}

#[test]
fn durable_commit_works() {
    let dir = scratch();
    let store = Store::open(dir.path()).unwrap();
    assert!(store.options().durable);
    let mut obj = store.new_object("d").unwrap();
    fs::write(obj.tree().join("f"), "x").unwrap();
    store.commit(&mut obj, "d").unwrap();
    assert!(store.contains("d").unwrap());
}

#[test]
fn threads_share_a_store() {
    let dir = scratch();
    let store = common::quick(dir.path());
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let id = format!("t{t}-{}", i % 5);
                    let mut obj = store.new_object(&id).unwrap();
                    fs::write(obj.tree().join("who"), format!("{t} {i}")).unwrap();
                    store.commit(&mut obj, &id).unwrap();
                    assert!(store.contains(&id).unwrap());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for t in 0..4 {
        for i in 0..5 {
            let obj = store.get(&format!("t{t}-{i}")).unwrap().unwrap();
            let who = fs::read_to_string(obj.tree().join("who")).unwrap();
            assert!(who.starts_with(&format!("{t} ")), "{who}");
        }
    }
}

#[test]
fn host_tree_is_read_only_and_cleaned_up() {
    if common::skip_without_private_mounts("host_tree_is_read_only_and_cleaned_up") {
        return;
    }
    let dir = scratch();
    let store = common::quick(dir.path());
    let tree = store.host_tree().unwrap();
    assert_eq!(store.host_tree().unwrap(), tree, "made once");
    assert!(tree.join("usr/bin").is_dir());
    let err = fs::write(tree.join("x"), "").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    let err = fs::write(tree.join("usr/x"), "").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    drop(store);
    assert!(!tree.exists());
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(tree.to_str().unwrap()), "unmounted");
}
