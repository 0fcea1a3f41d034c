//! The store as a cache (docs/cache.md), through the Rust API:
//! settings, sidecars, sizes, last use, eviction, metadata, source epoch,
//! read-only stores, foreign directories and what the collector spares.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use osstore::{Mode, OpenOptions, Store};

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Commits an object `id` holding `bytes` bytes of data; returns its name.
fn commit_sized(store: &Store, id: &str, bytes: usize) -> String {
    let mut obj = store.new_object(id).unwrap();
    fs::write(obj.tree().join("data"), vec![7u8; bytes]).unwrap();
    store.commit(&mut obj, id).unwrap()
}

#[test]
fn settings_have_defaults_canonical_forms_and_refuse_bad_values() {
    let dir = scratch();
    let store = common::quick(dir.path());
    assert_eq!(store.config_get("max-size").unwrap(), "unlimited");
    assert_eq!(store.config_get("low-water").unwrap(), "90");
    assert_eq!(store.config_get("min-free").unwrap(), "5%");
    store.config_set("max-size", "1 MiB").unwrap();
    assert_eq!(store.config_get("max-size").unwrap(), "1048576");
    let before = fs::read(dir.path().join("osstore-settings.json")).unwrap();
    assert_eq!(
        store.config_set("max-size", "lots").unwrap_err().errno(),
        libc::EINVAL
    );
    assert_eq!(
        store.config_set("colour", "1").unwrap_err().errno(),
        libc::EINVAL
    );
    assert_eq!(
        fs::read(dir.path().join("osstore-settings.json")).unwrap(),
        before
    );
    // Another process (a second handle) sees it.
    assert_eq!(
        common::quick(dir.path()).stat().unwrap().max_size,
        Some(1 << 20)
    );
}

#[test]
fn newer_settings_format_is_refused_untouched() {
    let dir = scratch();
    drop(common::quick(dir.path()));
    fs::write(
        dir.path().join("osstore-settings.json"),
        r#"{"format": 99}"#,
    )
    .unwrap();
    let e = Store::open(dir.path()).unwrap_err();
    assert_eq!(e.errno(), libc::ENOTSUP);
    assert!(e.message().contains("99"), "{e}");
}

#[test]
fn sidecars_carry_size_files_creation_and_metadata_through_init_and_commit() {
    let dir = scratch();
    let store = common::quick(dir.path());
    let mut a = store.new_object("a").unwrap();
    let created = a.created().unwrap();
    fs::create_dir(a.tree().join("d")).unwrap();
    fs::write(a.tree().join("d/f"), vec![1u8; 5000]).unwrap();
    a.meta_set("k", r#"{"x": [1, 2]}"#).unwrap();
    assert_eq!(a.meta_set("bad", "{").unwrap_err().errno(), libc::EINVAL);
    assert_eq!(a.meta_get("nope").unwrap_err().errno(), libc::ENOENT);
    let a_name = store.commit(&mut a, "a").unwrap();
    assert_eq!(a.mode(), Mode::Read);
    assert_eq!(a.meta_set("k", "1").unwrap_err().errno(), libc::EPERM);

    let got = store.get("a").unwrap().unwrap();
    assert_eq!(got.meta_get("k").unwrap(), r#"{"x":[1,2]}"#);
    assert_eq!(got.created().unwrap(), created);
    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].id.as_str(), list[0].name.as_str()),
        ("a", a_name.as_str())
    );
    assert_eq!(
        list[0].size,
        common::du(&dir.path().join("objects").join(&a_name))
    );
    assert_eq!(list[0].files, 3);

    // init copies creation time and metadata; a copy commit carries them.
    let mut b = store.new_object("b").unwrap();
    b.init(&got).unwrap();
    assert_eq!(b.created().unwrap(), created);
    assert_eq!(b.base_name().as_deref(), Some(a_name.as_str()));
    b.meta_set("k2", "\"v\"").unwrap();
    store.commit(&mut b, "c").unwrap();
    let c = store.get("c").unwrap().unwrap();
    assert_eq!(c.meta_keys().unwrap(), ["k", "k2"]);
    assert_eq!(c.created().unwrap(), created);
    assert!(store.fsck().unwrap().problems.is_empty());
}

#[test]
fn stat_is_exact_after_commits_replacements_evictions_and_gc() {
    let dir = scratch();
    let store = common::quick(dir.path());
    for i in 0..6 {
        commit_sized(&store, &format!("o{i}"), 1000 * i);
    }
    commit_sized(&store, "o2", 70_000); // replaces o2's object
    assert_eq!(
        store.stat().unwrap().bytes,
        common::measured_total(dir.path())
    );
    store.evict(common::measured_total(dir.path()) / 2).unwrap();
    store.gc().unwrap();
    let stat = store.stat().unwrap();
    assert_eq!(stat.bytes, common::measured_total(dir.path()));
    assert_eq!(stat.refs, stat.objects);
    assert!(stat.fs_free > 0);
}

#[test]
fn list_is_least_recently_used_first_and_lookups_record_use() {
    let dir = scratch();
    let store = common::quick(dir.path());
    let names: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|id| commit_sized(&store, id, 10))
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    common::age(dir.path(), &names[0], now - 30);
    common::age(dir.path(), &names[1], now - 20);
    common::age(dir.path(), &names[2], now - 10);
    let ids = |s: &Store| {
        s.list()
            .unwrap()
            .into_iter()
            .map(|o| o.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&store), ["a", "b", "c"]);
    // Another handle (as another process would) uses "a", then "b".
    let other = common::quick(dir.path());
    assert!(other.contains("a").unwrap());
    assert_eq!(ids(&store), ["b", "c", "a"]);
    drop(other.get("b").unwrap());
    assert_eq!(ids(&store)[0], "c");
    let listed = store.list().unwrap();
    assert!(listed.iter().all(|o| o.last_used >= now - 30 && !o.pinned));
}

#[test]
fn evict_removes_lru_unpinned_refs_and_their_objects() {
    let dir = scratch();
    let store = common::quick(dir.path());
    let names: Vec<String> = (0..4)
        .map(|i| commit_sized(&store, &format!("e{i}"), 20_000))
        .collect();
    for (i, n) in names.iter().enumerate() {
        common::age(dir.path(), n, 1000 + i as i64);
    }
    let pinned = store.get("e0").unwrap().unwrap();
    let size = store.list().unwrap()[0].size;
    let report = store.evict(2 * size).unwrap();
    // e0 is pinned, so e1 and e2 go; total ends at e0 + e3.
    assert_eq!(report.evicted, ["e1", "e2"]);
    assert_eq!(report.freed, 2 * size);
    for gone in [&names[1], &names[2]] {
        assert!(!dir.path().join("objects").join(gone).exists());
        assert!(!dir.path().join("meta").join(gone).exists());
    }
    assert!(!store.contains("e1").unwrap());
    let stat = store.stat().unwrap();
    assert_eq!(stat.pinned_bytes, size);
    let listed = store.list().unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|o| (o.id.as_str(), o.pinned))
            .collect::<Vec<_>>(),
        [("e3", false), ("e0", true)],
        "e0's get was its last use"
    );
    drop(pinned);
    store.evict(0).unwrap();
    assert_eq!(store.stat().unwrap().bytes, 0);
}

#[test]
fn a_look_up_of_an_object_being_evicted_pins_it_with_flock() {
    use std::os::fd::AsFd;

    use osstore::cache::pinboard::PinBoard;
    use osstore::lock::DirLock;

    let dir = scratch();
    let store = common::quick(dir.path());
    let name = commit_sized(&store, "x", 100);
    commit_sized(&store, "y", 100);
    let meta = fs::File::open(dir.path().join("meta")).unwrap();
    let board = PinBoard::open(meta.as_fd())
        .unwrap()
        .expect("a local filesystem");
    let object = dir.path().join("objects").join(&name);
    // The first look-up reads the ref; the second comes through the ref
    // cache. While an eviction announces the object, both pin with flock.
    for round in 0..2 {
        let evicting = board.evicting(&name);
        let held = store.get("x").unwrap().expect("x is there");
        drop(evicting);
        assert!(!board.is_pinned(&name).unwrap(), "round {round}");
        assert!(
            DirLock::try_exclusive(&object).unwrap().is_none(),
            "round {round}: the object is locked"
        );
        assert_eq!(
            store.evict(0).unwrap().evicted.len(),
            usize::from(round == 0)
        );
        drop(held);
    }
    assert_eq!(store.evict(0).unwrap().evicted, ["x"]);
}

#[test]
fn commit_evicts_to_low_water_but_never_itself_and_refuses_oversized_objects() {
    let dir = scratch();
    let store = common::quick(dir.path());
    let first = commit_sized(&store, "first", 40_000);
    let one = store.list().unwrap()[0].size;
    store
        .config_set("max-size", &(3 * one).to_string())
        .unwrap();
    store.config_set("low-water", "50").unwrap();
    common::age(dir.path(), &first, 1000);
    commit_sized(&store, "second", 40_000);
    commit_sized(&store, "third", 40_000);
    assert_eq!(store.stat().unwrap().objects, 3, "at max-size, not over");
    let fourth = commit_sized(&store, "fourth", 40_000);
    // Over 3 objects' worth: down to 50% = 1.5 objects, keeping "fourth".
    let left: Vec<String> = store.list().unwrap().into_iter().map(|o| o.id).collect();
    assert_eq!(left, ["fourth"]);
    assert!(dir.path().join("objects").join(&fourth).is_dir());

    let mut big = store.new_object("big").unwrap();
    fs::write(big.tree().join("data"), vec![1u8; 4 * one as usize]).unwrap();
    let e = store.commit(&mut big, "big").unwrap_err();
    assert_eq!(e.errno(), libc::EFBIG);
    assert_eq!(big.mode(), Mode::Write);
    assert!(big.tree().join("data").exists());
    assert_eq!(left.len() as u64, store.stat().unwrap().objects);
    assert!(store.fsck().unwrap().problems.is_empty());
}

#[test]
fn cached_only_lookups_ignore_floating_objects() {
    let dir = scratch();
    let store = common::quick(dir.path());
    let mut f = store.new_object("x").unwrap();
    f.finalize().unwrap();
    assert!(store.contains("x").unwrap());
    assert!(!store.contains_cached("x").unwrap());
    commit_sized(&store, "x", 1);
    assert!(store.contains_cached("x").unwrap());
}

#[test]
fn source_epoch_clamps_new_entries_at_finalize_and_commit() {
    let dir = scratch();
    let store = common::quick(dir.path());
    let mut obj = store.new_object("s").unwrap();
    fs::write(obj.tree().join("new"), "").unwrap();
    fs::write(obj.tree().join("old"), "").unwrap();
    std::os::unix::fs::symlink("/nonexistent", obj.tree().join("link")).unwrap();
    let old = fs::File::options()
        .write(true)
        .open(obj.tree().join("old"))
        .unwrap();
    old.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(86_400))
        .unwrap();
    obj.set_source_epoch(1_000_000).unwrap();
    obj.finalize().unwrap();
    let tree = obj.tree().to_path_buf();
    for p in ["", "new"] {
        assert_eq!(
            fs::metadata(tree.join(p)).unwrap().mtime(),
            1_000_000,
            "{p}"
        );
    }
    assert_eq!(
        fs::symlink_metadata(tree.join("link")).unwrap().mtime(),
        1_000_000
    );
    assert_eq!(fs::metadata(tree.join("old")).unwrap().mtime(), 86_400);
    // A copy commit clamps again what changed since.
    let mut w = store.new_object("w").unwrap();
    fs::write(w.tree().join("late"), "").unwrap();
    w.set_source_epoch(2_000_000).unwrap();
    let name = store.commit(&mut w, "w").unwrap();
    let late = dir.path().join("objects").join(name).join("late");
    assert_eq!(fs::metadata(late).unwrap().mtime(), 2_000_000);
    assert_eq!(w.set_source_epoch(1).unwrap_err().errno(), libc::EPERM);
}

#[test]
fn a_store_of_osstore_0_1_is_upgraded_on_first_need() {
    let dir = scratch();
    let store = common::quick(dir.path());
    let names: Vec<String> = (0..3)
        .map(|i| commit_sized(&store, &format!("v{i}"), 3000))
        .collect();
    drop(store);
    // What 0.1 leaves: no meta/, no settings, no tag.
    fs::remove_dir_all(dir.path().join("meta")).unwrap();
    fs::remove_file(dir.path().join("CACHEDIR.TAG")).unwrap();
    let store = common::quick(dir.path());
    assert!(store.contains("v1").unwrap());
    let stat = store.stat().unwrap();
    assert_eq!(stat.bytes, common::measured_total(dir.path()));
    for n in &names {
        assert!(dir.path().join("meta").join(n).join("info").is_file());
    }
    let created = fs::metadata(dir.path().join("objects").join(&names[0]))
        .unwrap()
        .mtime();
    assert!(store.get("v0").unwrap().unwrap().created().unwrap() <= created);
    assert!(store.fsck().unwrap().problems.is_empty());
}

#[test]
fn foreign_cache_directories_are_refused_untouched() {
    let dir = scratch();
    let root = dir.path();
    fs::write(root.join("cache.info"), "{}").unwrap();
    fs::create_dir_all(root.join("stage")).unwrap();
    fs::create_dir_all(root.join("objects/abc")).unwrap();
    fs::write(root.join("objects/abc/object.lock"), "").unwrap();
    let before = listing(root);
    let e = Store::open(root).unwrap_err();
    assert_eq!(e.errno(), libc::ENOTSUP);
    assert!(e.message().contains("cache.info"), "{e}");
    assert_eq!(listing(root), before);

    let other = scratch();
    fs::write(
        other.path().join("CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n# made by someone else\n",
    )
    .unwrap();
    assert_eq!(
        Store::open(other.path()).unwrap_err().errno(),
        libc::ENOTSUP
    );
    assert_eq!(listing(other.path()), ["CACHEDIR.TAG"]);
}

fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walkdir(root) {
        out.push(e.strip_prefix(root).unwrap().to_string_lossy().into_owned());
    }
    out.sort();
    out
}

/// Every entry below `root` with its mtime.
fn listing_with_mtimes(root: &Path) -> Vec<(String, i64, i64)> {
    listing(root)
        .into_iter()
        .map(|p| {
            let m = fs::symlink_metadata(root.join(&p)).unwrap();
            (p, m.mtime(), m.mtime_nsec())
        })
        .collect()
}

fn walkdir(p: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(p).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(walkdir(&path));
        }
        out.push(path);
    }
    out
}

#[test]
fn the_store_is_tagged_and_gc_spares_strangers() {
    let dir = scratch();
    let root = dir.path();
    let store = common::quick(root);
    let tag = fs::read_to_string(root.join("CACHEDIR.TAG")).unwrap();
    assert!(tag.starts_with("Signature: 8a477f597d28d172789f06886806bc55\n"));
    let name = commit_sized(&store, "keep", 1);
    // Another tool's entries, unlocked: a file, an empty directory, a full
    // one, and one named like earlier osstore work dirs (no check).
    let strangers = [
        "stranger-file",
        "stranger-dir",
        "stranger-full/inside",
        "object-abcdefg-hijklmno-workdir/object/f",
    ];
    for sub in ["objects", "tmp", "meta"] {
        fs::write(root.join(sub).join(strangers[0]), "").unwrap();
        fs::create_dir(root.join(sub).join(strangers[1])).unwrap();
        for full in &strangers[2..] {
            let path = root.join(sub).join(full);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, "theirs").unwrap();
        }
    }
    // A sidecar whose object is gone is osstore's and is reclaimed.
    let orphan = "0e1f2a3b-0000-4000-8000-00000000abcd";
    fs::create_dir(root.join("meta").join(orphan)).unwrap();
    store.gc().unwrap();
    for sub in ["objects", "tmp", "meta"] {
        for stranger in strangers {
            assert!(root.join(sub).join(stranger).exists(), "{sub}/{stranger}");
        }
    }
    assert!(!root.join("meta").join(orphan).exists());
    assert!(root.join("meta").join(name).exists());
}

#[test]
fn read_only_stores_change_nothing_and_still_read() {
    let dir = scratch();
    let root = dir.path();
    let store = common::quick(root);
    commit_sized(&store, "r", 100);
    drop(store);
    let before = listing_with_mtimes(root);
    let ro = Store::open_with(
        root,
        OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let obj = ro.get("r").unwrap().unwrap();
    assert!(ro.contains("r").unwrap());
    let out = scratch();
    obj.export(out.path()).unwrap();
    assert!(out.path().join("data").exists());
    assert_eq!(ro.stat().unwrap().objects, 1);
    assert_eq!(ro.list().unwrap().len(), 1);
    let t = ro.tempdir(b"ro-", b"").unwrap();
    assert!(t.path().starts_with(std::env::temp_dir()));
    drop(t);
    for e in [
        ro.new_object("n").map(drop),
        ro.gc().map(drop),
        ro.evict(0).map(drop),
        ro.config_set("max-size", "1"),
    ] {
        assert_eq!(e.unwrap_err().errno(), libc::EROFS);
    }
    drop(obj);
    drop(ro);
    assert_eq!(before, listing_with_mtimes(root));
}

/// One request to the store server at `path`, and its JSON reply.
fn ask(path: &Path, request: &str) -> serde_json::Value {
    use nix::sys::socket::{
        AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, connect, recv, send, socket,
    };
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    connect(fd.as_raw_fd(), &UnixAddr::new(path).unwrap()).unwrap();
    send(fd.as_raw_fd(), request.as_bytes(), MsgFlags::empty()).unwrap();
    let mut buf = [0u8; 8192];
    let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
    serde_json::from_slice(&buf[..n]).unwrap()
}

#[test]
fn a_read_only_store_is_served_with_its_temp_root_under_tmpdir() {
    use osstore::server::{Server, ServerOptions};
    let dir = scratch();
    let root = dir.path();
    commit_sized(&common::quick(root), "r", 10);
    let before = listing_with_mtimes(root);
    let ro = Store::open_with(
        root,
        OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let sockets = scratch();
    let socket = sockets.path().join("store");
    let server = Server::start(
        ro,
        ServerOptions {
            socket_path: Some(socket.clone()),
            ..ServerOptions::default()
        },
    )
    .unwrap();
    let reply = ask(&socket, r#"{"method": "read-tree", "object-id": "r"}"#);
    // The object itself (cache.md), pinned on a read-only store too.
    let object = root.join("objects").join(
        fs::read_link(root.join("refs/r"))
            .unwrap()
            .file_name()
            .unwrap(),
    );
    assert_eq!(reply["path"], object.to_str().unwrap());
    let reply = ask(
        &socket,
        r#"{"method": "mkdtemp", "prefix": "p-", "suffix": ""}"#,
    );
    let temp = reply["path"].as_str().unwrap();
    assert!(Path::new(temp).starts_with(std::env::temp_dir()), "{temp}");
    server.stop().unwrap();
    assert_eq!(before, listing_with_mtimes(root));
}
