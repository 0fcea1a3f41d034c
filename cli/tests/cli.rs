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

const COMMANDS: &[&str] = &["ls", "du", "gc", "export", "serve"];

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
        .arg("ls")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 2);
}

#[test]
fn ls_lists_every_ref() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());
    let out = osstore(Some(&store), &["ls"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let want = format!(
        "a\t{}\nb\t{}\n",
        object_name(&store, "a"),
        object_name(&store, "b")
    );
    assert_eq!(stdout(&out), want);

    let out = osstore(Some(&store), &["ls", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(list[1]["name"], object_name(&store, "b"));
}

#[test]
fn du_measures_each_ref_and_the_total() {
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
    assert!(lines[2].ends_with("\ttotal (objects/)"), "{lines:?}");
    // Not a terminal: plain progress lines on stderr.
    assert!(
        stderr(&out).contains("measuring the store: done"),
        "{}",
        stderr(&out)
    );
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
    let orphan = store.join("objects").join("orphan");
    fs::create_dir(&orphan).unwrap();
    fs::write(orphan.join("f"), "x").unwrap();
    let out = osstore(Some(&store), &["gc"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "removed 1 entries\n");
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
    assert_eq!(reply["path"], store.join("refs/a").to_str().unwrap());
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
    assert_eq!(
        read_tree(&socket, "b")["path"],
        store.join("refs/b").to_str().unwrap()
    );
    stop(child);
    assert!(!want.exists());
}
