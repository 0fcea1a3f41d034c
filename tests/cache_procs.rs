//! The cache with several processes: pins held by another process, exact
//! totals after SIGKILLs (during commits and during an eviction),
//! concurrent committers over max-size, and the eviction index kept true
//! when another process uses, commits or pins objects. Helper processes are this test
//! binary run again (see tests/common/reliability.rs).

mod common;
#[path = "common/reliability.rs"]
mod reliability;

use std::fs;
use std::io::BufReader;
use std::path::Path;

use osstore::Store;
use reliability::{announce_ready, die_with_parent, env_path, helper, kill_and_reap, wait_ready};

const STORE_VAR: &str = "OSSTORE_CACHE_PROCS_STORE";
const ROLE_VAR: &str = "OSSTORE_CACHE_PROCS_ROLE";

fn commit_files(store: &Store, id: &str, files: usize, bytes: usize) -> String {
    let mut obj = store.new_object(id).unwrap();
    for i in 0..files {
        fs::write(obj.tree().join(format!("f{i}")), vec![3u8; bytes]).unwrap();
    }
    store.commit(&mut obj, id).unwrap()
}

/// What a helper process does, chosen by `ROLE_VAR`.
#[test]
#[ignore = "helper process of the tests in this file"]
fn cache_helper() {
    let Some(root) = env_path(STORE_VAR) else {
        return;
    };
    die_with_parent();
    let store = common::quick(&root);
    match std::env::var(ROLE_VAR).as_deref() {
        Ok("hold") => {
            let held = store.get("held").unwrap().expect("held exists");
            announce_ready();
            loop {
                std::thread::park();
                let _ = held.tree();
            }
        }
        Ok("evict") => {
            announce_ready();
            store.evict(0).unwrap();
            loop {
                std::thread::park();
            }
        }
        Ok(role) if role.starts_with("use-") => {
            drop(
                store
                    .get(&role["use-".len()..])
                    .unwrap()
                    .expect("object exists"),
            );
            announce_ready();
        }
        Ok(role) if role.starts_with("late-") => {
            commit_files(&store, &role["late-".len()..], 1, 3000);
            announce_ready();
        }
        Ok(role) if role.starts_with("commit") => {
            announce_ready();
            for i in 0.. {
                commit_files(&store, &format!("{role}-{}", i % 40), 1 + i % 5, 3000);
                if role.ends_with("-bounded") && i == 60 {
                    break;
                }
            }
        }
        other => panic!("unknown role {other:?}"),
    }
}

fn start(root: &Path, role: &str) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut child = helper("cache_helper")
        .env(STORE_VAR, root)
        .env(ROLE_VAR, role)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    assert!(wait_ready(&mut out), "helper {role} did not start");
    (child, out)
}

/// Runs the helper `role` to its end.
fn run(root: &Path, role: &str) {
    let (child, _out) = start(root, role);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "helper {role} failed");
}

/// The running total in `meta/total` (`<boot> <total> ...`).
fn running_total(root: &Path) -> u64 {
    let text = fs::read_to_string(root.join("meta/total")).unwrap();
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A bounded store (so that its eviction index is kept between evictions)
/// with objects `ids`, of the same size, last used a second apart in that
/// order, long ago.
fn bounded_store_of(root: &Path, ids: &[&str]) -> (Store, Vec<String>) {
    let store = common::quick(root);
    store.config_set("min-free", "0").unwrap();
    let names: Vec<String> = ids
        .iter()
        .map(|id| commit_files(&store, id, 1, 3000))
        .collect();
    for (i, name) in names.iter().enumerate() {
        common::age(root, name, 1000 + i as i64);
    }
    // Last use only grows: the index is built once the bound is set.
    store.config_set("max-size", "1 GiB").unwrap();
    (store, names)
}

fn now_secs() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.unwrap().as_secs() as i64
}

/// Evicts the least recently used object (and its ref); returns its ref.
fn evict_one(store: &Store) -> Vec<String> {
    let total = store.stat().unwrap().bytes;
    store.evict(total - 1).unwrap().evicted
}

#[test]
fn eviction_follows_uses_by_another_process_after_the_index_was_built() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (store, _) = bounded_store_of(root, &["a", "b", "c"]);
    // Builds this process's index, with a, b, c in that order.
    assert!(store.evict(u64::MAX).unwrap().evicted.is_empty());
    // Another process uses a: its last use is now, after b's and c's.
    run(root, "use-a");
    // Indexed by this process's commit, a second after a's use.
    let a_used = store.list().unwrap().last().unwrap().last_used;
    while now_secs() <= a_used {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    commit_files(&store, "d", 1, 3000);
    let order: Vec<String> = (0..4).flat_map(|_| evict_one(&store)).collect();
    assert_eq!(order, ["b", "c", "a", "d"]);
    assert_eq!(running_total(root), 0);
}

#[test]
fn an_eviction_after_another_process_committed_sees_its_object() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (store, _) = bounded_store_of(root, &["a", "b"]);
    assert_eq!(evict_one(&store), ["a"]);
    // Another process commits "late"; made the least recently used, it is
    // the next victim, which only an index that was rebuilt knows.
    run(root, "late-late");
    let late = fs::read_link(root.join("refs/late")).unwrap();
    common::age(root, late.file_name().unwrap().to_str().unwrap(), 500);
    assert_eq!(evict_one(&store), ["late"]);
    assert_eq!(running_total(root), common::measured_total(root));
    assert_eq!(store.evict(0).unwrap().evicted, ["b"]);
    assert_eq!(running_total(root), 0);
}

#[test]
fn an_indexed_object_pinned_by_another_process_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (store, names) = bounded_store_of(root, &["held", "free"]);
    assert!(store.evict(u64::MAX).unwrap().evicted.is_empty());
    let (child, _out) = start(root, "hold");
    // The least recently used again, as indexed, but pinned.
    common::age(root, &names[0], 1000);
    assert_eq!(store.evict(0).unwrap().evicted, ["free"]);
    assert!(root.join("objects").join(&names[0]).is_dir());
    assert_eq!(running_total(root), common::measured_total(root));
    let (killed, err) = kill_and_reap(child);
    assert!(killed, "{err}");
    assert_eq!(store.evict(0).unwrap().evicted, ["held"]);
    assert_eq!(running_total(root), 0);
}

#[test]
fn an_evictor_killed_midway_leaves_no_index_of_another_process_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = common::quick(root);
    store.config_set("max-size", "1 GiB").unwrap();
    for round in 0..4 {
        // Trees of many files take a while to remove.
        for i in 0..4 {
            commit_files(&store, &format!("big-{round}-{i}"), 600, 10);
        }
        // This process's index is current; the evictor is killed mid-way.
        store.evict(u64::MAX).unwrap();
        let (evictor, _out) = start(root, "evict");
        std::thread::sleep(std::time::Duration::from_millis(5 + 10 * round));
        kill_and_reap(evictor);
        store.evict(u64::MAX).unwrap();
        assert_eq!(
            running_total(root),
            common::measured_total(root),
            "round {round}"
        );
        store.gc().unwrap();
    }
}

#[test]
fn a_get_in_another_process_pins_until_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::quick(dir.path());
    let held = commit_files(&store, "held", 3, 5000);
    commit_files(&store, "free", 3, 5000);
    let (child, _out) = start(dir.path(), "hold");
    let stat = store.stat().unwrap();
    assert!(
        stat.pinned_bytes > 0 && stat.pinned_bytes < stat.bytes,
        "{stat:?}"
    );
    let report = store.evict(0).unwrap();
    assert_eq!(report.evicted, ["free"]);
    store.gc().unwrap();
    assert!(dir.path().join("objects").join(&held).is_dir());
    assert!(store.contains("held").unwrap());
    let (killed, err) = kill_and_reap(child);
    assert!(killed, "{err}");
    assert_eq!(store.evict(0).unwrap().evicted, ["held"]);
    assert_eq!(store.stat().unwrap().bytes, 0);
}

#[test]
fn totals_stay_exact_after_kills_during_commits_and_evictions() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = common::quick(root);
    store.config_set("max-size", "8 MiB").unwrap();
    for round in 0..4 {
        // Something to evict: trees of many files take a while to remove.
        for i in 0..4 {
            commit_files(&store, &format!("big-{round}-{i}"), 600, 10);
        }
        let committers: Vec<_> = (0..2).map(|k| start(root, &format!("commit{k}"))).collect();
        let evictor = start(root, "evict");
        std::thread::sleep(std::time::Duration::from_millis(5 + 10 * round));
        for (child, _) in committers.into_iter().chain([evictor]) {
            kill_and_reap(child);
        }
        let left = (0..4)
            .filter(|i| root.join("refs").join(format!("big-{round}-{i}")).exists())
            .count();
        println!("round {round}: {left} of 4 big objects left when the evictor was killed");
        // This process's index was made stale by the others: its next
        // eviction writes the exact total.
        store.evict(u64::MAX).unwrap();
        assert_eq!(running_total(root), common::measured_total(root));
        let fresh = Store::open(root).unwrap();
        let stat = fresh.stat().unwrap();
        assert_eq!(stat.bytes, common::measured_total(root), "round {round}");
        assert_eq!(stat.refs, stat.objects, "round {round}");
        fresh.gc().unwrap();
        let problems = fresh.fsck().unwrap().problems;
        assert!(problems.is_empty(), "round {round}: {problems:?}");
    }
}

#[test]
fn concurrent_committers_over_max_size_leave_an_exact_bounded_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = common::quick(root);
    store.config_set("max-size", "200 KiB").unwrap();
    store.config_set("min-free", "0").unwrap();
    let kids: Vec<_> = (0..3)
        .map(|k| start(root, &format!("commit{k}-bounded")))
        .collect();
    for (child, _) in kids {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stat = store.stat().unwrap();
    assert_eq!(stat.bytes, common::measured_total(root));
    assert!(stat.bytes <= 200 * 1024, "{stat:?}");
    assert!(store.fsck().unwrap().problems.is_empty());
}
