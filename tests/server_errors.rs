//! The store server, driven with raw `SOCK_SEQPACKET` packets: malformed
//! requests, escape attempts, oversized packets, passed descriptors.
//!
//! Tests that mount need root in a private mount namespace
//! (`tests/in-private-ns.sh cargo test --test <this file>`); elsewhere they
//! print a SKIP line and pass.

mod common;

use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::socket::{self, sockopt};
use serde_json::{Value, json};

use common::server::*;

// ---------------------------------------------------------------------------
// Errors and refusals

#[test]
fn malformed_requests_get_an_error_and_the_connection_goes_on() {
    let fx = Fixture::new();
    fx.commit("x", &[]);
    let client = fx.client();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let packets: Vec<Vec<u8>> = vec![
        b"not json".to_vec(),
        b"{".to_vec(),
        b"{\"method\": \"read-tree\", \"object-id\": \"x\"} trailing".to_vec(),
        b"[1, 2]".to_vec(),
        b"\"read-tree\"".to_vec(),
        b"42".to_vec(),
        b"null".to_vec(),
        b"{}".to_vec(),
        b"{\"method\": \"read-tree\", \"object-id\": \"\xff\"}".to_vec(),
        b"\xfe\xff{}".to_vec(),
        br#"{"method": "read-tree", "object-id": "\ud800"}"#.to_vec(),
        deep.into_bytes(),
        br#"{"method": 5}"#.to_vec(),
        br#"{"method": null}"#.to_vec(),
        br#"{"method": "delete-everything"}"#.to_vec(),
        br#"{"method": "Read-Tree", "object-id": "x"}"#.to_vec(),
        br#"{"object-id": "x"}"#.to_vec(),
        br#"{"method": "read-tree"}"#.to_vec(),
        br#"{"method": "read-tree", "object-id": 1}"#.to_vec(),
        br#"{"method": "read-tree", "object-id": null}"#.to_vec(),
        br#"{"method": "read-tree", "object-id": ["x"]}"#.to_vec(),
        br#"{"method": "read-tree", "object-id": {"x": 1}}"#.to_vec(),
        br#"{"method": "read-tree-at", "object-id": "x", "subtree": "/"}"#.to_vec(),
        br#"{"method": "read-tree-at", "object-id": "x", "target": "/tmp"}"#.to_vec(),
        br#"{"method": "read-tree-at", "object-id": "x", "target": 7, "subtree": "/"}"#.to_vec(),
        br#"{"method": "read-tree-at", "object-id": "x", "target": "/tmp", "subtree": false}"#
            .to_vec(),
        br#"{"method": "read-tree-at", "object-id": "x", "target": "", "subtree": "/"}"#.to_vec(),
        br#"{"method": "read-tree-at", "object-id": "x", "target": "/t\u0000mp", "subtree": "/"}"#
            .to_vec(),
        br#"{"method": "mkdtemp", "prefix": 1}"#.to_vec(),
        br#"{"method": "mkdtemp", "suffix": true}"#.to_vec(),
        br#"{"method": "source"}"#.to_vec(),
        br#"{"method": "source", "name": 3}"#.to_vec(),
        br#"{"method": "open-tree", "object-id": "x", "subtree": 1}"#.to_vec(),
    ];
    for packet in &packets {
        client.send(packet);
        let reply: Value = serde_json::from_slice(&client.recv()).expect("a JSON reply");
        assert_error(&reply, &text(&packet[..packet.len().min(80)]));
        // The same connection keeps working.
        assert!(client.call_json(&read_tree("x"))["path"].is_string());
    }
}

#[test]
fn escape_attempts_are_refused() {
    let fx = Fixture::new();
    let client = fx.client();
    let long = "x".repeat(256);
    for id in [
        "..",
        ".",
        "a/b",
        "/etc",
        "",
        "../../etc",
        "x/..",
        "a\0b",
        &long,
    ] {
        for request in [
            read_tree(id),
            json!({"method": "read-tree-at", "object-id": id, "target": "/tmp", "subtree": "/"}),
            json!({"method": "open-tree", "object-id": id, "subtree": "/"}),
        ] {
            assert_error(&client.call_json(&request), &format!("object id {id:?}"));
        }
    }
    for name in ["..", ".", "", "a/b", "/etc", "../x", "x\0"] {
        let request = json!({"method": "source", "name": name});
        assert_error(
            &client.call_json(&request),
            &format!("source name {name:?}"),
        );
    }
    for affix in ["/", "a/b", "../x", "/abs", "x\0", &long] {
        for member in ["prefix", "suffix"] {
            let request = json!({"method": "mkdtemp", member: affix});
            assert_error(&client.call_json(&request), &format!("{member} {affix:?}"));
        }
    }
    // Nothing was created outside the store's temp root.
    assert!(!fx.store.path().join("sources").exists());
}

#[test]
fn oversized_and_large_packets() {
    let fx = Fixture::new();
    let client = fx.client();
    // Let the client send packets of several MiB.
    let size = 16usize << 20;
    if socket::setsockopt(&client.fd, sockopt::SndBufForce, &size).is_err() {
        socket::setsockopt(&client.fd, sockopt::SndBuf, &size).expect("SO_SNDBUF");
    }
    // 1 MiB of valid JSON (padded with spaces) is under the limit: answered.
    let request = br#"{"method": "source", "name": "big"}"#;
    let mut packet = vec![b' '; 1 << 20];
    packet[..request.len()].copy_from_slice(request);
    let reply = client.call(&packet);
    assert_eq!(
        text(&reply),
        format!(r#"{{"path": "{}/sources/big"}}"#, fx.store_path())
    );

    // Over the limit: discarded whole, with an error, and the connection goes on.
    let mut packet = vec![b' '; osstore::server::MAX_REQUEST + 1];
    packet[..request.len()].copy_from_slice(request);
    let reply: Value = serde_json::from_slice(&client.call(&packet)).unwrap();
    assert_error(&reply, "oversized packet");
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("larger than the limit"),
        "{reply}"
    );
    let reply = client.call(br#"{"method": "source", "name": "after"}"#);
    assert_eq!(
        text(&reply),
        format!(r#"{{"path": "{}/sources/after"}}"#, fx.store_path())
    );
}

/// Open descriptors of this process that name `path`.
fn descriptors_of(path: &Path) -> usize {
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target == path)
        .count()
}

#[test]
fn passed_descriptors_are_all_closed() {
    let fx = Fixture::new();
    fx.commit("x", &[]);
    let marker = fx.dir.path().join("fd-marker");
    fs::write(&marker, "").unwrap();
    let client = fx.client();
    for count in [1, 200, osstore::server::MAX_FDS] {
        let files: Vec<fs::File> = (0..count)
            .map(|_| fs::File::open(&marker).unwrap())
            .collect();
        let raw: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        client.send_with_fds(read_tree("x").to_string().as_bytes(), &raw);
        drop(files);
        assert!(client.recv().starts_with(b"{\"path\": \""));
        assert_eq!(
            descriptors_of(&marker),
            0,
            "{count} passed descriptors were not all closed"
        );
        // Also with a request that fails.
        let files: Vec<fs::File> = (0..count)
            .map(|_| fs::File::open(&marker).unwrap())
            .collect();
        let raw: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        client.send_with_fds(b"garbage", &raw);
        drop(files);
        assert_error(
            &serde_json::from_slice(&client.recv()).unwrap(),
            "garbage with fds",
        );
        assert_eq!(descriptors_of(&marker), 0);
    }
}

#[test]
fn the_servers_descriptor_count_does_not_grow() {
    // Counted in a process of its own, where nothing else opens descriptors.
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "fd_count_child_process",
            "--nocapture",
            "--ignored",
        ])
        .env("OSSTORE_FD_COUNT_CHILD", "1")
        .status()
        .unwrap();
    assert!(status.success());
}

/// Run by `the_servers_descriptor_count_does_not_grow` in a child process.
#[test]
#[ignore = "helper process of the_servers_descriptor_count_does_not_grow"]
fn fd_count_child_process() {
    if std::env::var_os("OSSTORE_FD_COUNT_CHILD").is_none() {
        return;
    }
    let count = || fs::read_dir("/proc/self/fd").unwrap().count();
    let fx = Fixture::new();
    fx.commit("x", &[]);
    // Warm up (the first request allocates the loop's buffers); this
    // connection stays open, so no disconnect is pending.
    let warm = fx.client();
    warm.call_json(&read_tree("x"));
    let null = fs::File::open("/dev/null").unwrap();
    let settled = |expected: usize| {
        // The server notices disconnects asynchronously: wait for it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while count() != expected && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        count()
    };
    let before = count();
    for _ in 0..20 {
        let client = fx.client();
        let fds: Vec<OwnedFd> = (0..200)
            .map(|_| null.as_fd().try_clone_to_owned().unwrap())
            .collect();
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        client.send_with_fds(read_tree("x").to_string().as_bytes(), &raw);
        drop(fds);
        assert!(client.recv().starts_with(b"{\"path\": \""));
        // Disconnect with a request in flight.
        let gone = fx.client();
        gone.send(read_tree("x").to_string().as_bytes());
    }
    let after = settled(before);
    println!("descriptors before {before}, after {after}");
    warm.call_json(&read_tree("x"));
    assert_eq!(before, after);
}
