//! Several processes on one store: collection never touches live work, the
//! leftovers of dead processes are reclaimed, and concurrent writers of the
//! same ids leave every ref naming a complete tree (the last writer's).
//! Helper processes are this test binary run again.

mod common;
#[path = "common/reliability.rs"]
mod reliability;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use osstore::{Object, OpenOptions, Store};
use reliability::{
    Rng, announce_ready, check_refs, check_refs_with, check_tree, env_path, env_u64, fill_tree,
    helper, kill_and_reap, names, wait_ready,
};

const STORE_VAR: &str = "OSSTORE_CONCURRENCY_STORE";
const STOP_VAR: &str = "OSSTORE_CONCURRENCY_STOP";
const SEED_VAR: &str = "OSSTORE_CONCURRENCY_SEED";

/// Everything a process can hold in a store, to check it survives sweeps.
struct Live {
    /// WRITE objects with a tree being built.
    work: Vec<Object>,
    /// Finalized, never committed objects.
    floating: Vec<Object>,
    /// Committed objects got through `get` (some since replaced).
    got: Vec<Object>,
    /// Temp dirs with a file in each.
    tempdirs: Vec<osstore::tempdir::TempDir>,
}

impl Live {
    fn new() -> Live {
        Live {
            work: Vec::new(),
            floating: Vec::new(),
            got: Vec::new(),
            tempdirs: Vec::new(),
        }
    }

    /// Fills `store` with one of each kind of live entry; `tag` makes the
    /// ids unique to the caller.
    fn create(&mut self, store: &Store, tag: &str, rng: &mut Rng) {
        let id = format!("{tag}-work");
        let work = store.new_object(&id).unwrap();
        fill_tree(work.tree(), &id, rng, 8192).unwrap();
        self.work.push(work);

        let id = format!("{tag}-floating");
        let mut floating = store.new_object(&id).unwrap();
        fill_tree(floating.tree(), &id, rng, 8192).unwrap();
        floating.finalize().unwrap();
        self.floating.push(floating);

        // Committed, held, then replaced: no ref names it any more.
        let id = format!("{tag}-replaced");
        for _ in 0..2 {
            let mut obj = store.new_object(&id).unwrap();
            fill_tree(obj.tree(), &id, rng, 8192).unwrap();
            store.commit(&mut obj, &id).unwrap();
            self.got.push(obj);
        }
        self.got.push(store.get(&id).unwrap().expect("committed"));

        let tempdir = store.tempdir(format!("{tag}-").as_bytes(), b"").unwrap();
        fs::write(tempdir.path().join("file"), tag).unwrap();
        self.tempdirs.push(tempdir);
    }

    /// Panics unless everything held is intact.
    fn check(&self) {
        for obj in self.work.iter().chain(&self.floating).chain(&self.got) {
            check_tree(obj.tree(), obj.id()).unwrap_or_else(|e| panic!("live object lost: {e}"));
        }
        for t in &self.tempdirs {
            assert!(
                t.path().join("file").is_file(),
                "live temp dir lost: {}",
                t.path().display()
            );
        }
    }

    /// The entries of `tmp/` and `objects/` that this holds.
    fn paths(&self) -> Vec<PathBuf> {
        let objects = self.work.iter().chain(&self.floating).chain(&self.got);
        let entries = objects.map(|o| {
            // Through the ref for an object got by id.
            let tree = fs::canonicalize(o.tree()).unwrap();
            match tree.parent() {
                // A tree being built (or floating) is in its work dir.
                Some(workdir) if tree.ends_with("object") => workdir.to_path_buf(),
                _ => tree,
            }
        });
        entries
            .chain(self.tempdirs.iter().map(|t| t.path().to_path_buf()))
            .collect()
    }
}

#[test]
fn collection_in_another_process_spares_live_work() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::quick(dir.path());
    let mut rng = Rng::new(1);
    let mut live = Live::new();
    live.create(&store, "mine", &mut rng);
    let host_tree = if common::skip_without_private_mounts(
        "collection_in_another_process_spares_live_work (host tree part)",
    ) {
        None
    } else {
        Some(store.host_tree().unwrap())
    };
    // Another process opens the store (which sweeps) and collects.
    let out = helper("sweep_once")
        .env(STORE_VAR, dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    live.check();
    if let Some(tree) = host_tree {
        assert!(tree.join("usr/bin").is_dir(), "host tree still mounted");
    }
}

/// Opens the store and collects once.
#[test]
#[ignore = "helper process of collection_in_another_process_spares_live_work"]
fn sweep_once() {
    let Some(root) = env_path(STORE_VAR) else {
        return;
    };
    Store::open(&root).unwrap().gc().unwrap();
}

#[test]
fn leftovers_of_a_killed_process_are_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::quick(dir.path());
    let mut rng = Rng::new(2);
    let mut live = Live::new();
    live.create(&store, "mine", &mut rng);

    let mut child = helper("hold_until_killed")
        .env(STORE_VAR, dir.path())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    // The helper lists what it holds, then says it is ready.
    let mut theirs = Vec::new();
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 && !line.trim_end().ends_with(reliability::READY) {
        if let Some(at) = line.find("HOLDS ") {
            theirs.push(PathBuf::from(line[at + "HOLDS ".len()..].trim_end()));
        }
        line.clear();
    }
    assert!(!theirs.is_empty(), "the helper held nothing");
    for path in &theirs {
        assert!(path.exists(), "{}", path.display());
    }
    // While it lives, a collection here leaves its entries alone...
    store.gc().unwrap();
    for path in &theirs {
        assert!(
            path.exists(),
            "live entry of another process removed: {}",
            path.display()
        );
    }
    // ...and once it is killed, reclaims every one of them.
    let (killed, stderr) = kill_and_reap(child);
    assert!(killed, "{stderr}");
    let report = store.gc().unwrap();
    for path in &theirs {
        assert!(
            !path.exists(),
            "leftover of a dead process kept: {}",
            path.display()
        );
    }
    // Its entries in tmp/ and its unreferenced object (the refs it made
    // stay, with their objects).
    assert_eq!(report.removed, theirs.len(), "{theirs:#?}");
    live.check();
    // Nothing else is left: only what this process holds, and named objects.
    let mut expected: BTreeSet<PathBuf> = live.paths().into_iter().collect();
    for name in check_refs(dir.path()).unwrap().values() {
        expected.insert(dir.path().join("objects").join(name));
    }
    let mut found = BTreeSet::new();
    for sub in ["tmp", "objects"] {
        for name in names(&dir.path().join(sub)) {
            found.insert(dir.path().join(sub).join(name));
        }
    }
    assert_eq!(found, expected);
}

/// Holds one of each kind of entry, prints `HOLDS <path>` for each entry of
/// `tmp/` or `objects/` that a collection may remove once this process is
/// dead, and waits to be killed.
#[test]
#[ignore = "helper process of leftovers_of_a_killed_process_are_reclaimed"]
fn hold_until_killed() {
    let Some(root) = env_path(STORE_VAR) else {
        return;
    };
    reliability::die_with_parent();
    let store = common::quick(&root);
    let mut live = Live::new();
    live.create(&store, "theirs", &mut Rng::new(3));
    let named: BTreeSet<PathBuf> = check_refs(&root)
        .unwrap()
        .values()
        .map(|n| root.join("objects").join(n))
        .collect();
    for path in live.paths() {
        if !named.contains(&path) {
            println!("HOLDS {}", path.display());
        }
    }
    announce_ready();
    loop {
        std::thread::park();
    }
}

#[test]
fn gc_hammering_never_removes_live_work() {
    let rounds = env_u64("OSSTORE_CONCURRENCY_ROUNDS", 100);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = common::quick(&root);
    let hammer = Hammer::start("gc_hammer", &root, &dir.path().join("stop-gc"));

    let mut rng = Rng::new(env_u64(SEED_VAR, Rng::fresh_seed()));
    let mut live = Live::new();
    for round in 0..rounds {
        let tag = format!("r{round}");
        live.create(&store, &tag, &mut rng);
        // Snapshots of a writable object, a commit of a floating one.
        let work = live.work.last_mut().unwrap();
        let snap = format!("{tag}-snap");
        store.commit(work, &snap).unwrap();
        let floating = live.floating.last_mut().unwrap();
        let id = floating.id().to_owned();
        store.commit(floating, &id).unwrap();
        check_tree(&store.resolve_ref(&id).unwrap(), &id).unwrap();
        // The snapshot's tree is the work object's, under another id.
        let got = store.get(&snap).unwrap().expect("snapshot committed");
        check_tree(got.tree(), live.work.last().unwrap().id()).unwrap();
        live.check();
        // Let go of the oldest, so that the collector has work too.
        if live.work.len() > 4 {
            live.work.remove(0);
            live.floating.remove(0);
            live.got.drain(..3);
            live.tempdirs.remove(0);
        }
    }
    let runs = hammer.stop();
    println!("{rounds} rounds of create/commit/get while another process ran gc {runs} times");
    live.check();
    check_refs_with(&root, |id| id.replace("-snap", "-work")).unwrap();
}

/// Runs `gc` back to back, with no pause, until the stop file appears; any
/// failure fails. (Creating and committing take no lock that a collector
/// holds, so the writer is never kept waiting.)
#[test]
#[ignore = "helper process of gc_hammering_never_removes_live_work"]
fn gc_hammer() {
    hammer(|store| {
        store.gc().unwrap();
        1
    });
}

/// Two processes on one store: a test, and a helper (this test binary
/// run again) doing one thing back to back until the test stops it.
struct Hammer {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
    stop: PathBuf,
}

impl Hammer {
    /// Starts the helper test `name` on the store at `root`; it runs until
    /// the file `stop` appears.
    fn start(name: &str, root: &Path, stop: &Path) -> Hammer {
        let mut child = helper(name)
            .env(STORE_VAR, root)
            .env(STOP_VAR, stop)
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        assert!(wait_ready(&mut out), "{name} did not start");
        Hammer {
            child,
            out,
            stop: stop.to_path_buf(),
        }
    }

    /// Stops the helper, checks it succeeded, and returns its count.
    fn stop(mut self) -> u64 {
        fs::write(&self.stop, "").unwrap();
        let mut stdout = String::new();
        std::io::Read::read_to_string(&mut self.out, &mut stdout).unwrap();
        let output = self.child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}\n{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
            .lines()
            .find_map(|l| l.split("HAMMER-COUNT ").nth(1))
            .and_then(|n| n.trim().parse().ok())
            .expect("the helper's count")
    }
}

/// The helper's side of a [`Hammer`]: runs `once` (which returns what it
/// counted) back to back until the stop file appears, then prints the sum;
/// any failure fails.
fn hammer(mut once: impl FnMut(&Store) -> u64) {
    let (Some(root), Some(stop)) = (env_path(STORE_VAR), env_path(STOP_VAR)) else {
        return;
    };
    reliability::die_with_parent();
    let store = common::quick(&root);
    let mut count = once(&store);
    announce_ready();
    while !stop.exists() {
        count += once(&store);
    }
    println!("HAMMER-COUNT {count}");
}

/// Building takes no lock that a collection holds: new objects, commits
/// (a new ref, a replaced ref, a copy) and temp dirs all complete while a
/// collector holds the store-wide lock, as it does for a whole sweep.
#[test]
fn building_never_waits_for_a_collection() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = common::quick(&root);
    let mut first = store.new_object("a").unwrap();
    store.commit(&mut first, "a").unwrap();
    let sweeping = osstore::lock::DirLock::exclusive(&root.join("tmp")).unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    let builder = store.clone();
    std::thread::spawn(move || {
        let mut replacing = builder.new_object("a").unwrap();
        fs::write(replacing.tree().join("f"), "a2").unwrap();
        builder.commit(&mut replacing, "a").unwrap();
        let mut new = builder.new_object("b").unwrap();
        builder.commit(&mut new, "b").unwrap();
        builder.commit(&mut replacing, "c").unwrap();
        let tempdir = builder.tempdir(b"t-", b"").unwrap();
        done.send(tempdir.path().is_dir()).unwrap();
    });
    // A deadlock detector, not a time limit: the work takes milliseconds.
    let answer = finished.recv_timeout(std::time::Duration::from_secs(120));
    assert_eq!(
        answer,
        Ok(true),
        "the builder waited for the collector's lock (or failed)"
    );
    drop(sweeping);
    for id in ["a", "b", "c"] {
        assert!(store.contains(id).unwrap(), "{id}");
    }
    assert_eq!(fs::read(root.join("refs/a/f")).unwrap(), b"a2");
    assert_eq!(fs::read(root.join("refs/c/f")).unwrap(), b"a2");
}

/// Look-ups take no lock a collection holds: `contains` and `get` (which
/// pins, as the server's `read-tree`, `read-tree-at` and `open-tree` do)
/// answer while a collector holds the store-wide lock,
/// as it does for a whole sweep. (The server answers every client from one
/// thread: one wait there stalls them all.)
#[test]
fn look_ups_never_wait_for_a_collection() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = common::quick(&root);
    let mut first = store.new_object("a").unwrap();
    fs::write(first.tree().join("f"), "a1").unwrap();
    store.commit(&mut first, "a").unwrap();
    let sweeping = osstore::lock::DirLock::exclusive(&root.join("tmp")).unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    let reader = store.clone();
    std::thread::spawn(move || {
        let got = reader.get("a").unwrap().unwrap();
        let answers = (
            reader.contains("a").unwrap(),
            got.tree().starts_with(reader.path().join("objects")),
            fs::read(got.tree().join("f")).ok(),
        );
        done.send(answers).unwrap();
    });
    // A deadlock detector, not a time limit: the work takes microseconds.
    let answer = finished.recv_timeout(std::time::Duration::from_secs(120));
    assert_eq!(
        answer,
        Ok((true, true, Some(b"a1".to_vec()))),
        "a look-up waited for the collector's lock (or failed)"
    );
    drop(sweeping);
}

/// Look-ups pin what they find (on the pin board) against evictions that
/// another process runs back to back: every tree a `get` handle holds stays
/// whole until it is released, whether the look-up read the ref or came
/// through the ref cache, and whether it raced an eviction of its object
/// (then it pins with `flock`).
#[test]
fn eviction_hammering_never_removes_what_a_look_up_holds() {
    let rounds = env_u64("OSSTORE_CONCURRENCY_ROUNDS", 100) * 10;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = common::quick(&root);
    let hammer = Hammer::start("evict_hammer", &root, &dir.path().join("stop-evicting"));

    let mut rng = Rng::new(env_u64(SEED_VAR, Rng::fresh_seed()));
    let ids: Vec<String> = (0..6).map(|i| format!("e{i}")).collect();
    let (mut held, mut found) = (Vec::<Object>::new(), 0);
    for round in 0..rounds as usize {
        let id = &ids[round % ids.len()];
        match store.get(id).unwrap() {
            Some(obj) => {
                check_tree(obj.tree(), id).unwrap_or_else(|e| panic!("round {round}: {e}"));
                held.push(obj);
                found += 1;
            }
            None => {
                let mut obj = store.new_object(id).unwrap();
                fill_tree(obj.tree(), id, &mut rng, 4096).unwrap();
                store.commit(&mut obj, id).unwrap();
            }
        }
        for obj in &held {
            check_tree(obj.tree(), obj.id())
                .unwrap_or_else(|e| panic!("round {round}: a held tree was evicted: {e}"));
        }
        if held.len() > 3 {
            held.remove(0);
        }
    }
    let evicted = hammer.stop();
    println!(
        "{rounds} look-ups ({found} found and held) while another process evicted {evicted} refs"
    );
    assert!(evicted > 0 && found > 0, "the race was not run");
}

/// Evicts everything unpinned, back to back, until the stop file appears;
/// prints how many refs it evicted.
#[test]
#[ignore = "helper process of eviction_hammering_never_removes_what_a_look_up_holds"]
fn evict_hammer() {
    hammer(|store| store.evict(0).unwrap().evicted.len() as u64);
}

const SHARED_IDS: [&str; 3] = ["one", "two", "three"];

#[test]
fn concurrent_writers_of_the_same_ids_leave_complete_refs() {
    let writers = env_u64("OSSTORE_CONCURRENCY_WRITERS", 4);
    let commits = env_u64("OSSTORE_CONCURRENCY_COMMITS", 30);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    drop(common::quick(&root));
    let go = dir.path().join("go");
    let mut children = Vec::new();
    for w in 0..writers {
        let mut child = helper("same_id_writer")
            .env(STORE_VAR, &root)
            .env(STOP_VAR, &go)
            .env(SEED_VAR, w.to_string())
            .env("OSSTORE_CONCURRENCY_COMMITS", commits.to_string())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        assert!(wait_ready(&mut out), "writer {w} did not start");
        children.push((child, out));
    }
    // All start together.
    fs::write(&go, "").unwrap();
    // Each writer's commits, in its order: id -> names.
    let mut last_of_writer: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut all: BTreeSet<String> = BTreeSet::new();
    for (mut child, mut out) in children {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut out, &mut text).unwrap();
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        assert!(status.success(), "{stderr}");
        let mut last: BTreeMap<&str, String> = BTreeMap::new();
        for line in text.lines() {
            let Some(at) = line.find("COMMITTED ") else {
                continue;
            };
            let mut fields = line[at..].split(' ').skip(1);
            let (Some(id), Some(name)) = (fields.next(), fields.next()) else {
                continue;
            };
            let id = SHARED_IDS.iter().find(|s| **s == id).expect("a shared id");
            all.insert(name.to_owned());
            last.insert(id, name.to_owned());
        }
        for (id, name) in last {
            last_of_writer.entry(id).or_default().insert(name);
        }
    }
    assert_eq!(
        all.len() as u64,
        writers * commits,
        "every commit made a new object"
    );
    // Every ref names a complete tree for its id, and the last swap of a ref
    // was necessarily some writer's last commit of that id.
    let refs = check_refs(&root).unwrap();
    assert_eq!(refs.keys().map(String::as_str).collect::<Vec<_>>(), {
        let mut ids = SHARED_IDS.to_vec();
        ids.sort();
        ids
    });
    for (id, name) in &refs {
        assert!(
            last_of_writer[id.as_str()].contains(name),
            "ref {id} names {name}, which is no writer's last commit of it"
        );
    }
    // The writers cleaned up after themselves, and every object they left
    // is complete; a collection then keeps exactly the named ones.
    assert_eq!(names(&root.join("tmp")), Vec::<String>::new());
    for name in names(&root.join("objects")) {
        assert!(all.contains(&name), "unknown object {name}");
        let tree = root.join("objects").join(&name);
        let id = fs::read_to_string(tree.join(reliability::MANIFEST)).unwrap();
        let id = id.lines().next().unwrap().trim_start_matches("id ");
        check_tree(&tree, id).unwrap();
    }
    common::quick(&root).gc().unwrap();
    let mut named: Vec<String> = refs.values().cloned().collect();
    named.sort();
    assert_eq!(names(&root.join("objects")), named);
}

/// Commits trees under [`SHARED_IDS`] as fast as it can once the go file
/// exists, printing `COMMITTED <id> <name>` after each commit.
#[test]
#[ignore = "helper process of concurrent_writers_of_the_same_ids_leave_complete_refs"]
fn same_id_writer() {
    let (Some(root), Some(go)) = (env_path(STORE_VAR), env_path(STOP_VAR)) else {
        return;
    };
    reliability::die_with_parent();
    let writer = env_u64(SEED_VAR, 0);
    let commits = env_u64("OSSTORE_CONCURRENCY_COMMITS", 30);
    // One writer in four makes its commits durable.
    let store = Store::open_with(
        &root,
        OpenOptions {
            durable: writer % 4 == 0,
            collect_garbage: true,
            read_only: false,
        },
    )
    .unwrap();
    let mut rng = Rng::new(writer);
    announce_ready();
    while !go.exists() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    for i in 0..commits {
        let id = SHARED_IDS[rng.below(SHARED_IDS.len() as u64) as usize];
        let name = if i % 3 == 0 {
            // A snapshot of a work object under the shared id.
            let mut work = store.new_object(&format!("w{writer}-{i}")).unwrap();
            fill_tree(work.tree(), id, &mut rng, 16 << 10).unwrap();
            store.commit(&mut work, id).unwrap()
        } else {
            let mut obj = store.new_object(id).unwrap();
            fill_tree(obj.tree(), id, &mut rng, 16 << 10).unwrap();
            store.commit(&mut obj, id).unwrap()
        };
        println!("COMMITTED {id} {name}");
        if let Some(obj) = store.get(id).unwrap() {
            // `refs/<id>`, which other writers swap meanwhile: read the
            // object it names now (nobody collects it while they write).
            check_tree(&fs::canonicalize(obj.tree()).unwrap(), id).unwrap();
        }
    }
}
