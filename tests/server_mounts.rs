//! The store server, driven with raw `SOCK_SEQPACKET` packets: `read-tree-at`
//! and `open-tree` mounts.
//!
//! Tests that mount need root in a private mount namespace
//! (`tests/in-private-ns.sh cargo test --test <this file>`); elsewhere they
//! print a SKIP line and pass.

mod common;

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use common::server::*;

// ---------------------------------------------------------------------------
// read-tree-at and open-tree (mounts)

/// An object whose tree has escape bait: links to `/` and up and out.
fn bait_tree(fx: &Fixture, id: &str) {
    let mut obj = fx.store.new_object(id).unwrap();
    fill(
        &obj,
        &[
            ("marker", "tree root"),
            ("etc/hostname", "in-tree"),
            ("sub/file", "file contents"),
            ("sub/inner/deep", "deep"),
        ],
    );
    let tree = obj.tree().to_path_buf();
    std::os::unix::fs::symlink("/", tree.join("abs")).unwrap();
    std::os::unix::fs::symlink("../../..", tree.join("up")).unwrap();
    std::os::unix::fs::symlink("/etc", tree.join("abs-etc")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../etc", tree.join("sub/up-etc")).unwrap();
    fx.store.commit(&mut obj, id).unwrap();
}

fn read_tree_at(id: &str, target: &Path, subtree: &str) -> Value {
    json!({"method": "read-tree-at", "object-id": id, "target": target.to_str().unwrap(), "subtree": subtree})
}

#[test]
fn read_tree_at_mounts_read_only_and_stop_unmounts() {
    if common::skip_without_private_mounts("read_tree_at_mounts_read_only_and_stop_unmounts") {
        return;
    }
    let mut fx = Fixture::new();
    bait_tree(&fx, "tree");
    let client = fx.client();
    let targets = fx.dir.path().join("targets");
    fs::create_dir(&targets).unwrap();
    let new_dir = |name: &str| {
        let p = targets.join(name);
        fs::create_dir(&p).unwrap();
        p
    };

    // A directory onto a directory: read-only, reply bytes as the reference.
    let whole = new_dir("whole");
    let reply = client.call(read_tree_at("tree", &whole, "/").to_string().as_bytes());
    assert_eq!(
        text(&reply),
        format!(r#"{{"path": "{}"}}"#, whole.display())
    );
    assert_eq!(
        fs::read_to_string(whole.join("marker")).unwrap(),
        "tree root"
    );
    assert_eq!(
        errno_of(fs::write(whole.join("new"), "x")),
        Some(libc::EROFS)
    );
    assert_eq!(
        errno_of(fs::write(whole.join("marker"), "x")),
        Some(libc::EROFS)
    );
    assert_eq!(errno_of(fs::create_dir(whole.join("d"))), Some(libc::EROFS));

    // A subdirectory.
    let sub = new_dir("sub");
    client.call_json(&read_tree_at("tree", &sub, "sub"))["path"]
        .as_str()
        .expect("mounted");
    assert_eq!(fs::read_to_string(sub.join("inner/deep")).unwrap(), "deep");
    assert_eq!(
        errno_of(fs::write(sub.join("inner/new"), "x")),
        Some(libc::EROFS)
    );

    // A file onto a file.
    let file = targets.join("file");
    fs::write(&file, "placeholder").unwrap();
    client.call_json(&read_tree_at("tree", &file, "/sub/file"))["path"]
        .as_str()
        .expect("mounted");
    assert_eq!(fs::read_to_string(&file).unwrap(), "file contents");
    let opened = fs::OpenOptions::new().write(true).open(&file).map(|_| ());
    assert_eq!(errno_of(opened), Some(libc::EROFS));

    // Escapes resolve inside the tree: its root, or its own etc.
    for subtree in [
        "../../..",
        "/../..",
        "/..",
        "abs",
        "up",
        "up/../..",
        "/abs/up/abs",
    ] {
        let target = new_dir(&format!("escape-{}", subtree.replace('/', "_")));
        let reply = client.call_json(&read_tree_at("tree", &target, subtree));
        if reply["path"].is_string() {
            assert_eq!(
                fs::read_to_string(target.join("marker")).unwrap(),
                "tree root",
                "{subtree} must be the tree's root"
            );
        } else {
            assert_error(&reply, subtree);
        }
    }
    for subtree in ["abs-etc", "abs/etc", "up/etc", "sub/up-etc", "../etc"] {
        let target = new_dir(&format!("etc-{}", subtree.replace('/', "_")));
        let reply = client.call_json(&read_tree_at("tree", &target, subtree));
        if reply["path"].is_string() {
            let names: Vec<_> = fs::read_dir(&target)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["hostname"], "{subtree} must be the tree's etc");
            assert_eq!(
                fs::read_to_string(target.join("hostname")).unwrap(),
                "in-tree"
            );
        } else {
            assert_error(&reply, subtree);
        }
    }
    // Things the tree does not have are errors, not the host's.
    for subtree in [
        "abs/etc/passwd",
        "up/proc/self",
        "nope",
        "sub/up-etc/shadow",
    ] {
        let target = new_dir(&format!("missing-{}", subtree.replace('/', "_")));
        assert_error(
            &client.call_json(&read_tree_at("tree", &target, subtree)),
            subtree,
        );
    }

    // Failures: missing target, kind mismatch, unknown object.
    assert_error(
        &client.call_json(&read_tree_at("tree", &targets.join("absent"), "/")),
        "missing target",
    );
    let dir_target = new_dir("kind");
    assert_error(
        &client.call_json(&read_tree_at("tree", &dir_target, "sub/file")),
        "file onto dir",
    );
    assert!(client.call_json(&read_tree_at("unknown", &dir_target, "/"))["path"].is_null());

    // A floating object can be mounted too.
    let floating = fx.floating("floating", &[("f", "floating!")]);
    let fl = new_dir("floating");
    client.call_json(&read_tree_at("floating", &fl, "/"))["path"]
        .as_str()
        .expect("mounted");
    assert_eq!(fs::read_to_string(fl.join("f")).unwrap(), "floating!");

    // A request from a client that leaves at once still gets tracked.
    let gone_target = new_dir("gone");
    let gone = fx.client();
    gone.send(
        read_tree_at("tree", &gone_target, "/")
            .to_string()
            .as_bytes(),
    );
    drop(gone);
    // A mkdtemp directory as target (as osbuild does).
    let made = client.call_json(&json!({"method": "mkdtemp"}));
    let in_root = PathBuf::from(made["path"].as_str().unwrap());
    client.call_json(&read_tree_at("tree", &in_root, "/"))["path"]
        .as_str()
        .expect("mounted");
    // Stacked mounts on one target.
    client.call_json(&read_tree_at("tree", &whole, "/sub"))["path"]
        .as_str()
        .expect("mounted");
    assert!(whole.join("inner").is_dir());

    let ours = |p: &PathBuf| p.starts_with(&targets) || p.starts_with(in_root.parent().unwrap());
    assert!(mount_points().iter().filter(|p| ours(p)).count() >= 10);
    drop(floating);
    fx.stop();
    let left: Vec<_> = mount_points().into_iter().filter(|p| ours(p)).collect();
    assert!(left.is_empty(), "mounts left after stop: {left:?}");
    assert!(!in_root.exists());
    assert_eq!(fs::read_to_string(&file).unwrap(), "placeholder");
}

/// `move_mount(fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)`.
fn attach(fd: &OwnedFd, target: &Path) -> std::io::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    let target = CString::new(target.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C strings and an open descriptor.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[test]
fn open_tree_passes_a_detached_read_only_mount() {
    if common::skip_without_private_mounts("open_tree_passes_a_detached_read_only_mount") {
        return;
    }
    let mut fx = Fixture::new();
    bait_tree(&fx, "tree");
    let client = fx.client();

    client.send(
        json!({"method": "open-tree", "object-id": "tree", "subtree": "/up/sub"})
            .to_string()
            .as_bytes(),
    );
    let (reply, fds) = client.recv_with_fds();
    assert_eq!(reply, br#"{"fd": 0, "pin": 1}"#);
    assert_eq!(fds.len(), 2);
    // The pin reads the whole tree, read-only.
    let pin_root = format!("/proc/self/fd/{}", fds[1].as_raw_fd());
    assert_eq!(
        fs::read_to_string(format!("{pin_root}/marker")).unwrap(),
        "tree root"
    );
    assert_eq!(
        errno_of(fs::write(format!("{pin_root}/new"), "x")),
        Some(libc::EROFS)
    );
    // Not attached anywhere yet; the server keeps nothing of it.
    let target = fx.dir.path().join("attached");
    fs::create_dir(&target).unwrap();
    attach(&fds[0], &target).expect("move_mount");
    assert_eq!(
        fs::read_to_string(target.join("file")).unwrap(),
        "file contents"
    );
    assert_eq!(
        errno_of(fs::write(target.join("new"), "x")),
        Some(libc::EROFS)
    );

    // Without a subtree: the whole tree.
    client.send(br#"{"method": "open-tree", "object-id": "tree"}"#);
    let (reply, fds2) = client.recv_with_fds();
    assert_eq!(reply, br#"{"fd": 0, "pin": 1}"#);
    let whole = fx.dir.path().join("whole");
    fs::create_dir(&whole).unwrap();
    attach(&fds2[0], &whole).expect("move_mount");
    assert_eq!(
        fs::read_to_string(whole.join("marker")).unwrap(),
        "tree root"
    );

    assert!(
        client.call_json(&json!({"method": "open-tree", "object-id": "unknown"}))["path"].is_null()
    );
    assert_error(
        &client.call_json(&json!({"method": "open-tree", "object-id": "tree", "subtree": "nope"})),
        "missing subtree",
    );

    // The server did not attach these: stopping leaves them to their owner.
    fx.stop();
    assert!(mount_points().contains(&target));
    nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH).unwrap();
    nix::mount::umount2(&whole, nix::mount::MntFlags::MNT_DETACH).unwrap();
}

#[test]
fn a_mounted_tree_survives_replacement_and_garbage_collection() {
    if common::skip_without_private_mounts(
        "a_mounted_tree_survives_replacement_and_garbage_collection",
    ) {
        return;
    }
    let mut fx = Fixture::new();
    fx.commit("pinned", &[("file", "first")]);
    let target = fx.dir.path().join("target");
    fs::create_dir(&target).unwrap();
    let client = fx.client();
    client.call_json(&read_tree_at("pinned", &target, "/"))["path"]
        .as_str()
        .expect("mounted");
    // The ref moves on; the mounted object is unnamed but still mounted.
    fx.commit("pinned", &[("file", "second")]);
    let removed = fx.store.gc().unwrap().removed;
    assert_eq!(removed, 0, "nothing may be collected under a mount");
    assert_eq!(fs::read_to_string(target.join("file")).unwrap(), "first");
    // Once the server has unmounted it, the old object goes.
    fx.stop();
    assert_eq!(fx.store.gc().unwrap().removed, 1);
}

/// cache.md "Pins" and "Last use": `open-tree` and `read-tree-at` count as
/// uses and pin the object against another user of the store; an
/// `open-tree` answer is pinned while the connection that asked for it or
/// its pin descriptor is open (docs/protocol.md), a mount until the server
/// unmounts it.
#[test]
fn open_tree_and_read_tree_at_pin_and_record_a_use() {
    if common::skip_without_private_mounts("open_tree_and_read_tree_at_pin_and_record_a_use") {
        return;
    }
    let mut fx = Fixture::new();
    let other = other_user(&fx);
    for id in ["opened", "mounted"] {
        let mut obj = other.new_object(id).unwrap();
        fill(&obj, &[("f", id)]);
        other.commit(&mut obj, id).unwrap();
        forget_last_use(fx.store.path(), id);
    }
    let client = fx.client();
    client.send(br#"{"method": "open-tree", "object-id": "opened"}"#);
    let (reply, mut fds) = client.recv_with_fds();
    assert_eq!(reply, br#"{"fd": 0, "pin": 1}"#);
    let target = fx.dir.path().join("target");
    fs::create_dir(&target).unwrap();
    client.call_json(&read_tree_at("mounted", &target, "/"))["path"]
        .as_str()
        .expect("mounted");
    for id in ["opened", "mounted"] {
        assert!(last_used(&other, id) > 1000, "{id}: the look-up is a use");
    }
    let evicted = other.evict(0).unwrap().evicted;
    assert!(
        evicted.is_empty(),
        "pinned objects were evicted: {evicted:?}"
    );

    // The view alone does not pin, the connection does.
    let pin = fds.pop().unwrap();
    drop(fds);
    assert!(other.evict(0).unwrap().evicted.is_empty());
    // Once the connection is gone, the pin descriptor still pins: a copy
    // of it in a child process (a lock goes with the last copy) too.
    drop(client);
    // Answered once the server has seen the old connection close.
    let _ = fx.client().call_json(&read_tree("none"));
    assert!(other.evict(0).unwrap().evicted.is_empty());
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .stdin(std::process::Stdio::from(pin))
        .spawn()
        .unwrap();
    assert!(other.evict(0).unwrap().evicted.is_empty());
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(other.evict(0).unwrap().evicted, ["opened"]);
    assert_eq!(fs::read_to_string(target.join("f")).unwrap(), "mounted");
    fx.stop();
    assert_eq!(other.evict(0).unwrap().evicted, ["mounted"]);
}
