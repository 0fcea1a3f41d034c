//! Drives the real `osstore` binary: help and version, exit statuses, and
//! every command on a real store.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::sys::socket::MsgFlags;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, recv, send, socket};
use nix::unistd::Pid;
use osstore::{OpenOptions, Store};
use std::os::fd::AsRawFd;

const COMMANDS: &[&str] = &[
    "info", "ls", "du", "config", "gc", "evict", "fsck", "meta", "export", "push", "pull", "serve",
];

// The real registry of the registry tests (Debian's docker-registry).
#[allow(dead_code)]
#[path = "../../tests/registry/support.rs"]
mod support;

fn osstore(store: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_osstore"));
    cmd.env_remove("OSSTORE_DIR").env_remove("OSSTORE_SOCKET");
    if let Some(store) = store {
        cmd.arg("--store").arg(store);
    }
    cmd.args(args).output().expect("run osstore")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A store with two refs: `a` (two files) and `b` (one file).
fn sample_store(dir: &Path) -> PathBuf {
    let path = dir.join("store");
    let store = Store::open_with(
        &path,
        OpenOptions {
            durable: false,
            collect_garbage: false,
            read_only: false,
        },
    )
    .unwrap();
    for (id, files) in [
        ("a", &[("one", "1"), ("two", "22")][..]),
        ("b", &[("x", "xyz")][..]),
    ] {
        let mut obj = store.new_object(id).unwrap();
        for (name, content) in files {
            fs::write(obj.tree().join(name), content).unwrap();
        }
        obj.meta_set("stage", &format!("{{\"name\": \"{id}\"}}"))
            .unwrap();
        store.commit(&mut obj, id).unwrap();
    }
    path
}

/// The names of the objects refs/ names, by id.
fn object_name(store: &Path, id: &str) -> String {
    fs::read_link(store.join("refs").join(id))
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn every_command_has_help() {
    for args in [&["--help"][..], &["help"][..]] {
        let out = osstore(None, args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(stdout(&out).contains("Usage: osstore"), "{}", stdout(&out));
        for command in COMMANDS {
            assert!(
                stdout(&out).contains(command),
                "{command} missing from --help"
            );
        }
    }
    for command in COMMANDS {
        let out = osstore(None, &[command, "--help"]);
        assert_eq!(out.status.code(), Some(0), "{command} --help");
        assert!(
            stdout(&out).contains(&format!("Usage: osstore {command}")),
            "{command}: {}",
            stdout(&out)
        );
    }
}

#[test]
fn version_is_the_library_version() {
    let out = osstore(None, &["--version"]);
    assert_eq!(out.status.code(), Some(0));
    let manifest =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml")).unwrap();
    let version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap();
    assert_eq!(stdout(&out).trim(), format!("osstore {version}"));
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());
    for args in [
        &[][..],
        &["frobnicate"][..],
        &["ls", "--frob"][..],
        &["export", "a"][..],
        &["export"][..],
        &["gc", "extra"][..],
        &["--store"][..],
    ] {
        let out = osstore(Some(&store), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).is_empty(), "{args:?}: no message");
    }
}

#[test]
fn errors_exit_1_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());
    let out = osstore(None, &["ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("OSSTORE_DIR"), "{}", stderr(&out));

    let out = osstore(Some(&dir.path().join("nowhere")), &["ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not a store"), "{}", stderr(&out));
    assert!(!dir.path().join("nowhere").exists(), "a store was created");

    let target = dir.path().join("out");
    fs::create_dir(&target).unwrap();
    let out = osstore(Some(&store), &["export", "nope", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no object \"nope\""),
        "{}",
        stderr(&out)
    );
    let out = osstore(Some(&store), &["export", "a", "/nonexistent-dir"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("\nosstore: cannot export"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn store_comes_from_osstore_dir() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_osstore"))
        .env("OSSTORE_DIR", &store)
        .arg("du")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 3);
}

/// `osstore ls --json` of `store`.
fn ls_json(store: &Path) -> Vec<serde_json::Value> {
    let out = osstore(Some(store), &["ls", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    list.as_array().unwrap().clone()
}

#[test]
fn ls_lists_every_ref_least_recently_used_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());
    let list = ls_json(&store);
    let mut ids: Vec<_> = list.iter().map(|o| o["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["a", "b"]);
    let a = list.iter().find(|o| o["id"] == "a").unwrap();
    assert_eq!(a["name"], object_name(&store, "a"));
    assert_eq!(a["files"], 3, "{a}"); // the root and two files
    assert_eq!(a["pinned"], false);
    assert!(
        a["size"].as_u64().unwrap() > 0 && a["created"].as_i64().unwrap() > 0,
        "{a}"
    );

    // Using `a` makes `b` the least recently used.
    let later = OpenOptions {
        durable: false,
        ..OpenOptions::default()
    };
    let handle = Store::open_with(&store, later).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(handle.contains_cached("a").unwrap());
    let list = ls_json(&store);
    assert_eq!(list[0]["id"], "b", "{list:?}");
    assert_eq!(list[1]["id"], "a", "{list:?}");

    let out = osstore(Some(&store), &["ls"]);
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<_> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].starts_with("SIZE") && lines[0].ends_with("ID"),
        "{lines:?}"
    );
    assert!(
        lines[1].ends_with("  b") && lines[2].ends_with("  a"),
        "{lines:?}"
    );
    assert!(lines[2].contains("  no  "), "{lines:?}");
}

#[test]
fn info_shows_settings_and_totals() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());
    let bytes: u64 = ls_json(&store)
        .iter()
        .map(|o| o["size"].as_u64().unwrap())
        .sum();
    let out = osstore(Some(&store), &["info"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for want in [
        "max-size:     unlimited".to_string(),
        "refs:         2".to_string(),
        "objects:      2".to_string(),
        format!("({bytes} bytes)"),
        "bound:        unlimited".to_string(),
        "free space:".to_string(),
    ] {
        assert!(text.contains(&want), "{want:?} not in:\n{text}");
    }
}

#[test]
fn du_shows_each_ref_and_the_total() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());
    let out = osstore(Some(&store), &["du"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines: Vec<_> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].ends_with("\ta") && lines[1].ends_with("\tb"),
        "{lines:?}"
    );
    assert!(lines[2].ends_with("\ttotal"), "{lines:?}");
}

#[test]
fn config_get_and_set() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());
    let get = |key: &str| stdout(&osstore(Some(&store), &["config", "get", key]));
    assert_eq!(get("max-size"), "unlimited\n");
    let out = osstore(Some(&store), &["config", "set", "max-size", "2 GiB"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "max-size = 2147483648\n");
    assert_eq!(get("max-size"), "2147483648\n");
    let out = osstore(Some(&store), &["config", "set", "max-size", "lots"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("bad value"), "{}", stderr(&out));
    let out = osstore(Some(&store), &["config", "get", "colour"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        osstore(Some(&store), &["config", "set", "max-size"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn evict_down_to_a_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());
    let list = ls_json(&store);
    let (first, second) = (&list[0], &list[1]);
    let keep = second["size"].as_u64().unwrap();
    let out = osstore(Some(&store), &["evict", "--to", &keep.to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!("evicted {}\n", first["id"].as_str().unwrap())),
        "{text}"
    );
    assert!(
        text.contains(&format!("({} bytes) from 1 refs", first["size"])),
        "{text}"
    );
    let left = ls_json(&store);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], second["id"]);
    let out = osstore(Some(&store), &["evict", "--to", "unlimited"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(osstore(Some(&store), &["evict"]).status.code(), Some(2));
}

#[test]
fn fsck_reports_health_and_problems() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());
    let out = osstore(Some(&store), &["fsck"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "2 refs, 2 objects checked: healthy\n");
    // A tree that changed behind the store's back: its recorded size is wrong.
    let tree = store.join("objects").join(object_name(&store, "a"));
    fs::write(tree.join("grown"), vec![7u8; 100_000]).unwrap();
    let out = osstore(Some(&store), &["fsck"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("1 problem"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("osstore: the store has problems"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn meta_shows_an_objects_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());
    let out = osstore(Some(&store), &["meta", "a"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let (key, value) = text.trim_end().split_once('\t').unwrap();
    assert_eq!(key, "stage");
    let value: serde_json::Value = serde_json::from_str(value).unwrap();
    assert_eq!(value["name"], "a");
    let out = osstore(Some(&store), &["meta", "b", "stage"]);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["name"], "b");
    assert_eq!(
        osstore(Some(&store), &["meta", "b", "absent"])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        osstore(Some(&store), &["meta", "nope"]).status.code(),
        Some(1)
    );
}

#[test]
fn looking_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());
    // The commands that look open the store read-only: not even the last
    // use changes (it has a resolution of a second).
    let before = ls_json(&store);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    for args in [&["info"][..], &["ls"], &["du"], &["fsck"], &["meta", "a"]] {
        let out = osstore(Some(&store), args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(ls_json(&store), before);
}

#[test]
fn export_copies_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());
    let target = dir.path().join("out");
    fs::create_dir(&target).unwrap();
    let out = osstore(Some(&store), &["export", "a", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(target.join("one")).unwrap(), "1");
    assert_eq!(fs::read_to_string(target.join("two")).unwrap(), "22");
    assert!(stderr(&out).contains("exporting a to"), "{}", stderr(&out));
}

#[test]
fn gc_removes_objects_no_ref_names() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());
    // An object whose ref was removed by hand.
    let orphan = store.join("objects").join(object_name(&store, "b"));
    fs::remove_file(store.join("refs/b")).unwrap();
    // A shared lock of this process lives on in a child forked by another
    // test until that child execs (flock locks belong to the open file,
    // which fork shares), and gc rightly skips a locked object: a few
    // tries, each of which must succeed, and one must remove it.
    let mut removed = false;
    for _ in 0..50 {
        let out = osstore(Some(&store), &["gc"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(stdout(&out).starts_with("removed "), "{}", stdout(&out));
        if stdout(&out) != "removed 0 entries\n" {
            removed = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(removed, "gc never removed the unnamed object");
    assert!(!orphan.exists());
    // What refs name stays.
    assert_eq!(
        osstore(Some(&store), &["ls"])
            .stdout
            .split(|&b| b == b'\n')
            .count(),
        3
    );
}

/// Starts `osstore serve` and returns it with the socket path it printed.
fn serve(store: &Path, args: &[&str], env_socket: Option<&Path>) -> (std::process::Child, PathBuf) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_osstore"));
    cmd.env_remove("OSSTORE_SOCKET");
    if let Some(sock) = env_socket {
        cmd.env("OSSTORE_SOCKET", sock);
    }
    let mut child = cmd
        .arg("--store")
        .arg(store)
        .arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, PathBuf::from(line.trim_end()))
}

/// Asks the server at `socket` for the tree of `id`.
fn read_tree(path: &Path, id: &str) -> serde_json::Value {
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    connect(fd.as_raw_fd(), &UnixAddr::new(path).unwrap()).unwrap();
    let request = serde_json::json!({"method": "read-tree", "object-id": id}).to_string();
    send(fd.as_raw_fd(), request.as_bytes(), MsgFlags::empty()).unwrap();
    let mut buf = vec![0u8; 65536];
    let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
    serde_json::from_slice(&buf[..n]).unwrap()
}

fn stop(mut child: std::process::Child) -> Output {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    child.wait().unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn serve_answers_until_terminated_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());
    let want = dir.path().join("sock");
    let (child, socket) = serve(&store, &["--socket", want.to_str().unwrap()], None);
    assert_eq!(socket, want);
    let reply = read_tree(&socket, "a");
    // The object itself (cache.md).
    let object = store.join("objects").join(object_name(&store, "a"));
    assert_eq!(reply["path"], object.to_str().unwrap());
    assert_eq!(read_tree(&socket, "nope")["path"], serde_json::Value::Null);
    let out = stop(child);
    assert!(
        stderr(&out).contains("stopping the server"),
        "{}",
        stderr(&out)
    );
    assert!(!socket.exists(), "the socket outlived the server");
}

#[test]
fn serve_listens_at_osstore_socket_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());
    let want = dir.path().join("env.sock");
    let (child, socket) = serve(&store, &[], Some(&want));
    assert_eq!(socket, want);
    let object = store.join("objects").join(object_name(&store, "b"));
    assert_eq!(read_tree(&socket, "b")["path"], object.to_str().unwrap());
    stop(child);
    assert!(!want.exists());
}

#[test]
fn push_and_pull_through_a_registry() {
    if !Path::new("/usr/bin/docker-registry").exists() {
        println!(
            "SKIP push_and_pull_through_a_registry: no docker-registry (make deps installs it)"
        );
        return;
    }
    let registry = support::Registry::start(false);
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());
    let image = registry.image("cli/stage:a");
    let out = osstore(Some(&store), &["push", "a", &image]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let digest = stdout(&out).trim_end().to_owned();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    assert!(
        stderr(&out).contains(&format!("pushing a to {image}: ")),
        "{}",
        stderr(&out)
    );

    let other = dir.path().join("other");
    Store::open(&other).unwrap();
    let by_digest = format!("{}@{digest}", registry.image("cli/stage"));
    let out = osstore(Some(&other), &["pull", &by_digest, "copy"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim_end(), object_name(&other, "copy"));
    let target = dir.path().join("out");
    fs::create_dir(&target).unwrap();
    let out = osstore(Some(&other), &["export", "copy", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(target.join("two")).unwrap(), "22");
    let out = osstore(Some(&other), &["meta", "copy", "stage"]);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["name"], "a", "{}", stderr(&out));

    let out = osstore(Some(&store), &["push", "nope", &image]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("pushing nope") || stderr(&out).contains("osstore: "));
    assert_eq!(osstore(Some(&store), &["push", "a"]).status.code(), Some(2));
    assert_eq!(
        osstore(Some(&store), &["pull", &image]).status.code(),
        Some(2)
    );
}
