//! Process crashes and durability.
//!
//! Writers killed with SIGKILL at random moments never leave a ref to an
//! incomplete tree or a dangling ref, and a new handle reclaims whatever they
//! left and works normally. Durable commits flush the tree before the ref
//! names it (checked with strace when it is installed). Helper processes are
//! this test binary run again (fork+exec), never a fork of the threaded test
//! process.

mod common;
#[path = "common/reliability.rs"]
mod reliability;

use std::io::BufReader;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use osstore::{OpenOptions, Store};
use reliability::{
    Rng, announce_ready, check_refs, check_tree, env_path, env_u64, fill_tree, helper,
    kill_and_reap, names, wait_ready,
};

/// The ids the writers commit under: few, so that refs are replaced often.
const IDS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
/// Largest file a writer puts in a tree.
const MAX_FILE: usize = 48 << 10;

const STORE_VAR: &str = "OSSTORE_CRASH_STORE";
const SEED_VAR: &str = "OSSTORE_CRASH_WRITER_SEED";
const DURABLE_VAR: &str = "OSSTORE_CRASH_DURABLE";

fn quick() -> OpenOptions {
    OpenOptions {
        durable: false,
        collect_garbage: true,
        read_only: false,
    }
}

#[test]
fn writers_killed_at_random_leave_complete_refs() {
    let kills = env_u64("OSSTORE_CRASH_KILLS", 400);
    let seed = env_u64("OSSTORE_CRASH_SEED", Rng::fresh_seed());
    println!("{kills} kills (OSSTORE_CRASH_KILLS), seed {seed} (OSSTORE_CRASH_SEED)");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    drop(Store::open_with(&root, quick()).expect("create the store"));
    let mut rng = Rng::new(seed);
    let mut while_working = 0;
    for round in 0..kills {
        let mut child = helper("crash_writer")
            .env(STORE_VAR, &root)
            .env(SEED_VAR, rng.next_u64().to_string())
            // Now and then a durable writer, so that kills land in syncfs too.
            .env(DURABLE_VAR, if round % 16 == 0 { "1" } else { "0" })
            .spawn()
            .expect("spawn writer");
        // One kill in ten may land anywhere, even before or while the
        // writer opens (and sweeps) the store; the others once it works.
        let anywhere = rng.below(10) == 0;
        if !anywhere {
            let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
            if !wait_ready(&mut out) {
                let (_, stderr) = kill_and_reap(child);
                panic!(
                    "round {round} (seed {seed}): the writer ended before it was ready: {stderr}"
                );
            }
            while_working += 1;
        }
        std::thread::sleep(Duration::from_micros(rng.below(if anywhere {
            5_000
        } else {
            25_000
        })));
        let (killed, stderr) = kill_and_reap(child);
        assert!(
            killed,
            "round {round} (seed {seed}): the writer failed: {stderr}"
        );

        // Every ref names a complete tree; none dangles.
        let refs = check_refs(&root).unwrap_or_else(|e| panic!("round {round} (seed {seed}): {e}"));
        // A new handle reclaims what the dead writer left: its work dirs,
        // temp links and the objects that no ref names.
        let store = Store::open_with(&root, quick()).expect("open after a crash");
        assert_eq!(
            names(&root.join("tmp")),
            Vec::<String>::new(),
            "round {round}: tmp/ swept"
        );
        let mut named: Vec<String> = refs.values().cloned().collect();
        named.sort();
        named.dedup();
        assert_eq!(
            names(&root.join("objects")),
            named,
            "round {round}: only named objects are left"
        );
        // And it works normally.
        let mut obj = store.new_object("after-crash").unwrap();
        fill_tree(obj.tree(), "after-crash", &mut rng, 4096).unwrap();
        store.commit(&mut obj, "after-crash").unwrap();
        let got = store.get("after-crash").unwrap().expect("committed");
        check_tree(got.tree(), "after-crash").unwrap();
    }
    println!(
        "{kills} writers killed ({while_working} while at work), every ref complete after each"
    );
}

/// The writer of `writers_killed_at_random_leave_complete_refs`: commits
/// trees under [`IDS`] (moves, snapshots of floating and writable objects),
/// checks what it reads and collects garbage, until it is killed.
#[test]
#[ignore = "helper process of writers_killed_at_random_leave_complete_refs"]
fn crash_writer() {
    let Some(root) = env_path(STORE_VAR) else {
        return;
    };
    reliability::die_with_parent();
    let durable = std::env::var(DURABLE_VAR).is_ok_and(|v| v == "1");
    let mut rng = Rng::new(env_u64(SEED_VAR, 0));
    let store = Store::open_with(
        &root,
        OpenOptions {
            durable,
            collect_garbage: true,
            read_only: false,
        },
    )
    .expect("open");
    announce_ready();
    // Objects held for a while, so that collections must spare them.
    let mut held = Vec::new();
    loop {
        let id = IDS[rng.below(IDS.len() as u64) as usize];
        match rng.below(10) {
            0..=4 => {
                let mut obj = store.new_object(id).unwrap();
                fill_tree(obj.tree(), id, &mut rng, MAX_FILE).unwrap();
                if rng.below(2) == 0 {
                    obj.finalize().unwrap();
                }
                store.commit(&mut obj, id).unwrap();
                check_tree(obj.tree(), id).unwrap();
            }
            5..=6 => {
                // A snapshot: the tree is copied into a new object, which
                // is committed; the work object stays writable.
                let mut work = store.new_object(&format!("work-{id}")).unwrap();
                fill_tree(work.tree(), id, &mut rng, MAX_FILE).unwrap();
                store.commit(&mut work, id).unwrap();
            }
            7..=8 => {
                if let Some(obj) = store.get(id).unwrap() {
                    check_tree(obj.tree(), id).unwrap();
                    held.push(obj);
                    if held.len() > 3 {
                        held.remove(0);
                    }
                }
            }
            _ => {
                store.gc().unwrap();
                for obj in &held {
                    check_tree(obj.tree(), obj.id()).unwrap();
                }
            }
        }
    }
}

/// The syscalls of one commit as strace saw them, by line number.
#[derive(Debug)]
struct CommitTrace {
    moved: usize,
    synced: Option<usize>,
    swapped: usize,
    refs_synced: Option<usize>,
}

fn find_commit(lines: &[String], store: &Path, id: &str, name: &str) -> CommitTrace {
    let store = store.to_str().unwrap();
    let find = |pred: &dyn Fn(&str) -> bool, from: usize| {
        lines
            .iter()
            .skip(from)
            .position(|l| pred(l))
            .map(|i| i + from)
    };
    // -y prints each descriptor's path: the tree moves into objects/ by
    // rename(at) and the ref is made by symlinkat (new) or rename(at) (a
    // replacement) in refs/.
    let object = format!("{store}/objects/{name}");
    let into = |dir: &str, entry: &str| {
        let (dir, entry) = (dir.to_owned(), entry.to_owned());
        move |l: &str| {
            (l.contains(" rename") || l.contains(" symlinkat("))
                && (l.contains(&format!("\"{dir}/{entry}\""))
                    || l.contains(&format!("<{dir}>, \"{entry}\"")))
        }
    };
    let moved = find(&into(&format!("{store}/objects"), name), 0)
        .unwrap_or_else(|| panic!("no rename to {object} in {lines:#?}"));
    // The tree's descriptor: the tree, now in objects/.
    let synced = find(
        &|l: &str| l.contains(" syncfs(") && l.contains(&format!("<{object}>")),
        moved,
    );
    let swapped = find(&into(&format!("{store}/refs"), id), moved)
        .unwrap_or_else(|| panic!("no new link at {store}/refs/{id} in {lines:#?}"));
    let refs_synced = find(
        &|l: &str| l.contains(" fsync(") && l.contains(&format!("<{store}/refs>")),
        swapped,
    );
    CommitTrace {
        moved,
        synced,
        swapped,
        refs_synced,
    }
}

#[test]
fn durable_commits_flush_before_the_ref_names_the_tree() {
    const TEST: &str = "durable_commits_flush_before_the_ref_names_the_tree";
    if Command::new("strace").arg("-V").output().is_err() {
        println!("SKIP {TEST}: strace is not installed (apt-get install strace)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for durable in [true, false] {
        let root = dir.path().join(if durable { "durable" } else { "nosync" });
        let log = dir.path().join("strace.log");
        let exe = std::env::current_exe().unwrap();
        let out = Command::new("strace")
            .args([
                "-f",
                "-qq",
                "-y",
                "-e",
                "trace=rename,renameat,renameat2,symlinkat,syncfs,fsync,fdatasync,sync",
                "-o",
            ])
            .arg(&log)
            .arg(exe)
            .args([
                "--exact",
                "commit_three_times",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(STORE_VAR, &root)
            .env(DURABLE_VAR, if durable { "1" } else { "0" })
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && stderr.contains("ptrace") {
            println!("SKIP {TEST}: strace cannot trace here: {stderr}");
            return;
        }
        assert!(out.status.success(), "{stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<String> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        let mut commits = 0;
        for line in stdout.lines() {
            // The harness may have printed "test <name> ... " in front.
            let Some(at) = line.find("COMMITTED ") else {
                continue;
            };
            let mut fields = line[at..].split(' ');
            let (Some("COMMITTED"), Some(id), Some(name)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            commits += 1;
            let trace = find_commit(&lines, &root, id, name);
            if durable {
                // The tree's rename into objects/ and all its entries are
                // flushed before the ref is swapped; the swap after it.
                let synced = trace
                    .synced
                    .unwrap_or_else(|| panic!("{id}: no syncfs after the move: {lines:#?}"));
                assert!(
                    trace.moved < synced && synced < trace.swapped,
                    "{id}: {trace:?} in {lines:#?}"
                );
                let refs_synced = trace
                    .refs_synced
                    .unwrap_or_else(|| panic!("{id}: refs/ not fsynced: {lines:#?}"));
                assert!(trace.swapped < refs_synced, "{id}: {trace:?}");
            } else {
                assert!(trace.moved < trace.swapped, "{id}: {trace:?}");
                let flushes: Vec<_> = lines
                    .iter()
                    .filter(|l| {
                        ["syncfs(", "fsync(", "fdatasync(", "sync("]
                            .iter()
                            .any(|c| l.contains(&format!(" {c}")))
                    })
                    .collect();
                assert!(
                    flushes.is_empty(),
                    "OS_STORE_NO_SYNC flushes nothing: {flushes:#?}"
                );
            }
        }
        assert_eq!(commits, 3, "the helper commits three times: {stdout}");
    }
}

/// The helper of `durable_commits_flush_before_the_ref_names_the_tree`: a
/// commit under the object's own id (a move), one under another id (a
/// copy) and one replacing the first ref, each reported on stdout as
/// `COMMITTED <id> <name>`.
#[test]
#[ignore = "helper process of durable_commits_flush_before_the_ref_names_the_tree"]
fn commit_three_times() {
    let Some(root) = env_path(STORE_VAR) else {
        return;
    };
    let durable = std::env::var(DURABLE_VAR).is_ok_and(|v| v == "1");
    let store = Store::open_with(
        &root,
        OpenOptions {
            durable,
            collect_garbage: true,
            read_only: false,
        },
    )
    .unwrap();
    let mut rng = Rng::new(7);
    let mut own = store.new_object("own").unwrap();
    fill_tree(own.tree(), "own", &mut rng, 4096).unwrap();
    println!("COMMITTED own {}", store.commit(&mut own, "own").unwrap());
    let mut work = store.new_object("work").unwrap();
    fill_tree(work.tree(), "snap", &mut rng, 4096).unwrap();
    println!(
        "COMMITTED snap {}",
        store.commit(&mut work, "snap").unwrap()
    );
    // A replacement: the ref exists, so the new link is renamed over it.
    let mut again = store.new_object("own").unwrap();
    fill_tree(again.tree(), "own", &mut rng, 4096).unwrap();
    println!("COMMITTED own {}", store.commit(&mut again, "own").unwrap());
}

/// Prints the time a commit takes with and without durability on the
/// filesystem of `OSSTORE_BENCH_DIR` (a measurement, not a test: nothing is
/// asserted about the times).
#[test]
#[ignore = "measurement: OSSTORE_BENCH_DIR=<dir> cargo test --release --test crash -- --ignored --nocapture measure_durability_cost"]
fn measure_durability_cost() {
    let Some(base) = env_path("OSSTORE_BENCH_DIR") else {
        println!("set OSSTORE_BENCH_DIR to a directory on the filesystem to measure");
        return;
    };
    let commits = env_u64("OSSTORE_BENCH_COMMITS", 200);
    // A small build stage's tree: 16 files of 4 KiB in two directories.
    let fill = |tree: &Path, i: u64| {
        for d in ["a", "b"] {
            std::fs::create_dir(tree.join(d)).unwrap();
            for f in 0..8 {
                std::fs::write(tree.join(d).join(f.to_string()), vec![(i + f) as u8; 4096])
                    .unwrap();
            }
        }
    };
    for durable in [false, true, false, true] {
        let root = base.join(format!("osstore-bench-{}", uuid::Uuid::new_v4().simple()));
        let store = Store::open_with(
            &root,
            OpenOptions {
                durable,
                collect_garbage: true,
                read_only: false,
            },
        )
        .unwrap();
        let mut spent = Duration::ZERO;
        for i in 0..commits {
            let id = format!("id{}", i % 8);
            let mut obj = store.new_object(&id).unwrap();
            fill(obj.tree(), i);
            let start = Instant::now();
            store.commit(&mut obj, &id).unwrap();
            spent += start.elapsed();
        }
        println!(
            "{}: {commits} commits of 16 x 4 KiB, durable={durable}: {:.1} us per commit",
            base.display(),
            spent.as_secs_f64() * 1e6 / commits as f64
        );
        drop(store);
        std::fs::remove_dir_all(&root).unwrap();
    }
}

const MOUNT_IN_TREE_VAR: &str = "OSSTORE_CRASH_MOUNT_IN_TREE";

/// A builder killed while its work dir holds a mount is reclaimed by a
/// collection through another path to the store: a symlink to its
/// directory, or a bind mount of it. (Mount detection compared the path as
/// given with the mount table's canonical paths, found nothing to detach
/// and failed with `EBUSY` on every collection.)
#[test]
fn dead_builders_mount_is_reclaimed_through_any_store_path() {
    const TEST: &str = "dead_builders_mount_is_reclaimed_through_any_store_path";
    if common::skip_without_private_mounts(TEST) {
        return;
    }
    for via in ["symlink", "bind mount"] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        drop(Store::open_with(&root, quick()).expect("create the store"));
        let other_path = dir.path().join("other-path");
        let _bound = if via == "symlink" {
            std::os::unix::fs::symlink(&root, &other_path).unwrap();
            None
        } else {
            std::fs::create_dir(&other_path).unwrap();
            nix::mount::mount(
                Some(&root),
                &other_path,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .expect("bind mount");
            Some(Unmount(other_path.clone()))
        };
        let mut child = helper("builder_mounting_in_its_tree")
            .env(STORE_VAR, &root)
            .env(MOUNT_IN_TREE_VAR, "1")
            .spawn()
            .expect("spawn builder");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let ready = wait_ready(&mut out);
        let (killed, stderr) = kill_and_reap(child);
        assert!(ready && killed, "builder failed: {stderr}");
        let canonical = std::fs::canonicalize(&root).unwrap();
        let mounted_below = || {
            std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap()
                .lines()
                .filter(|l| l.contains(&format!("{}/tmp/", canonical.display())))
                .count()
        };
        assert_eq!(mounted_below(), 1, "the builder's mount is left ({via})");

        let store = Store::open_with(
            &other_path,
            OpenOptions {
                durable: false,
                collect_garbage: false,
                read_only: false,
            },
        )
        .unwrap();
        let report = store
            .gc()
            .unwrap_or_else(|e| panic!("gc through a {via}: {e}"));
        assert_eq!(report.removed, 1, "the dead builder's work dir ({via})");
        assert_eq!(mounted_below(), 0, "the mount is detached ({via})");
        assert!(
            names(&root.join("tmp")).is_empty(),
            "tmp/ is empty ({via}): {:?}",
            names(&root.join("tmp"))
        );
    }
}

/// Detaches a test's mount when the test ends.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Run by `dead_builders_mount_is_reclaimed_through_any_store_path`: creates
/// an object, mounts a tmpfs inside its tree, and waits to be killed.
#[test]
#[ignore = "helper process of dead_builders_mount_is_reclaimed_through_any_store_path"]
fn builder_mounting_in_its_tree() {
    let (Some(root), Some(_)) = (env_path(STORE_VAR), env_path(MOUNT_IN_TREE_VAR)) else {
        return;
    };
    reliability::die_with_parent();
    let store = Store::open_with(&root, quick()).unwrap();
    let object = store.new_object("built").unwrap();
    let point = object.tree().join("mnt");
    std::fs::create_dir(&point).unwrap();
    std::fs::write(point.join("under"), "hidden by the mount").unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &point,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .expect("mount tmpfs");
    std::fs::write(point.join("file"), "on the tmpfs").unwrap();
    announce_ready();
    loop {
        std::thread::park();
    }
}
