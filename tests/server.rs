//! The store server (shared/spec/protocol.md) driven with raw
//! `SOCK_SEQPACKET` packets.
//!
//! Tests that mount need root in a private mount namespace:
//! `unshare --mount --propagation private cargo test --test server` (or
//! `tests/in-private-ns.sh cargo test --test server`); elsewhere they print
//! a SKIP line and pass. The benchmarks are ignored tests:
//! `cargo test --release --test server -- --ignored --nocapture --test-threads 1 bench_`.

mod common;

use std::ffi::CString;
use std::fs;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    self, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
    UnixAddr, sockopt,
};
use osstore::server::{Server, ServerOptions};
use osstore::{Object, OpenOptions, Store};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// Helpers

/// A raw client connection.
struct Client {
    fd: OwnedFd,
}

impl Client {
    fn try_connect(path: &Path, autobind: bool) -> nix::Result<Client> {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        if autobind {
            // What the reference client does: bind to the empty address.
            socket::bind(fd.as_raw_fd(), &UnixAddr::new_unnamed())?;
        }
        socket::connect(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
        // A server bug must fail the test, not hang it.
        let timeout = nix::sys::time::TimeVal::new(30, 0);
        socket::setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)?;
        Ok(Client { fd })
    }

    fn connect(path: &Path) -> Client {
        Self::try_connect(path, false).expect("connect")
    }

    fn connect_autobind(path: &Path) -> Client {
        Self::try_connect(path, true).expect("connect")
    }

    fn send(&self, packet: &[u8]) {
        self.send_with_fds(packet, &[]);
    }

    fn send_with_fds(&self, packet: &[u8], fds: &[RawFd]) {
        let iov = [IoSlice::new(packet)];
        let cmsgs = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsgs };
        socket::sendmsg::<UnixAddr>(self.fd.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None)
            .expect("sendmsg");
    }

    /// One packet (up to 64 KiB) and the descriptors that came with it.
    fn recv_with_fds(&self) -> (Vec<u8>, Vec<OwnedFd>) {
        let mut buf = vec![0u8; 65536];
        let mut space = nix::cmsg_space!([RawFd; 253]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = socket::recvmsg::<UnixAddr>(
            self.fd.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .expect("recvmsg");
        assert!(!msg.flags.contains(MsgFlags::MSG_TRUNC), "reply truncated");
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs().expect("cmsgs") {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                // SAFETY: the kernel installed these descriptors for us.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let n = msg.bytes;
        buf.truncate(n);
        (buf, fds)
    }

    fn recv(&self) -> Vec<u8> {
        let (packet, fds) = self.recv_with_fds();
        assert!(fds.is_empty(), "unexpected descriptors in reply");
        packet
    }

    fn call(&self, packet: &[u8]) -> Vec<u8> {
        self.send(packet);
        self.recv()
    }

    fn call_json(&self, request: &Value) -> Value {
        let reply = self.call(request.to_string().as_bytes());
        serde_json::from_slice(&reply)
            .unwrap_or_else(|e| panic!("reply {:?} is not JSON: {e}", text(&reply)))
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A store in a scratch dir with a server on `<scratch>/sock`.
struct Fixture {
    // Dropped in this order: the server before the store and the scratch dir.
    server: Option<Server>,
    store: Store,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Self::with(ServerOptions::default())
    }

    fn with(mut options: ServerOptions) -> Fixture {
        let dir = tempfile::tempdir().expect("scratch dir");
        let store = Store::open_with(
            dir.path().join("store"),
            OpenOptions {
                durable: false,
                collect_garbage: true,
                read_only: false,
            },
        )
        .expect("open store");
        options
            .socket_path
            .get_or_insert_with(|| dir.path().join("sock"));
        let server = Server::start(store.clone(), options).expect("start server");
        Fixture {
            dir,
            store,
            server: Some(server),
        }
    }

    fn socket(&self) -> PathBuf {
        self.server().socket_path().to_path_buf()
    }

    fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
    }

    fn client(&self) -> Client {
        Client::connect(&self.socket())
    }

    fn stop(&mut self) {
        self.server
            .take()
            .expect("server running")
            .stop()
            .expect("stop");
    }

    fn store_path(&self) -> String {
        self.store
            .path()
            .to_str()
            .expect("UTF-8 scratch path")
            .to_owned()
    }

    /// Commits an object `id` whose tree has `files` (path, contents).
    fn commit(&self, id: &str, files: &[(&str, &str)]) {
        let mut obj = self.store.new_object(id).expect("new");
        fill(&obj, files);
        self.store.commit(&mut obj, id).expect("commit");
    }

    /// A floating object `id` (finalized, never committed).
    fn floating(&self, id: &str, files: &[(&str, &str)]) -> Object {
        let mut obj = self.store.new_object(id).expect("new");
        fill(&obj, files);
        obj.finalize().unwrap();
        obj
    }
}

fn fill(obj: &Object, files: &[(&str, &str)]) {
    for (path, contents) in files {
        let path = obj.tree().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }
}

fn read_tree(id: &str) -> Value {
    json!({"method": "read-tree", "object-id": id})
}

fn assert_error(reply: &Value, context: &str) {
    let members = reply
        .as_object()
        .unwrap_or_else(|| panic!("{context}: reply {reply} is not an object"));
    assert!(
        members.len() == 1 && members.get("error").is_some_and(Value::is_string),
        "{context}: expected an error reply, got {reply}"
    );
}

/// Mount points of this process's namespace.
fn mount_points() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(PathBuf::from)
        .collect()
}

fn errno_of(result: std::io::Result<()>) -> Option<i32> {
    result.err().and_then(|e| e.raw_os_error())
}

// ---------------------------------------------------------------------------
// The four methods

#[test]
fn read_tree_finds_committed_and_floating_objects() {
    let fx = Fixture::new();
    fx.commit("committed", &[("f", "c")]);
    let floating = fx.floating("floating", &[("f", "fl")]);
    let client = fx.client();
    let store = fx.store_path();

    let reply = client.call(read_tree("committed").to_string().as_bytes());
    assert_eq!(
        text(&reply),
        format!(r#"{{"path": "{store}/refs/committed"}}"#)
    );

    let reply = client.call_json(&read_tree("floating"));
    let path = reply["path"].as_str().expect("a path");
    assert_eq!(Path::new(path), floating.tree());
    assert_eq!(fs::read_to_string(Path::new(path).join("f")).unwrap(), "fl");

    // Floating objects come before committed ones with the same id.
    let shadow = fx.floating("committed", &[("f", "shadow")]);
    let reply = client.call_json(&read_tree("committed"));
    assert_eq!(Path::new(reply["path"].as_str().unwrap()), shadow.tree());
    drop(shadow);

    assert_eq!(
        client.call(read_tree("missing").to_string().as_bytes()),
        br#"{"path": null}"#
    );
    drop(floating);
    assert_eq!(
        client.call(read_tree("floating").to_string().as_bytes()),
        br#"{"path": null}"#
    );
}

#[test]
fn read_tree_answers_follow_changes_of_the_store() {
    let fx = Fixture::new();
    let client = fx.client();
    let committed = format!(r#"{{"path": "{}/refs/x"}}"#, fx.store_path());
    let ask = || text(&client.call(read_tree("x").to_string().as_bytes()));
    for _ in 0..3 {
        assert_eq!(ask(), r#"{"path": null}"#);
        fx.commit("x", &[("f", "1")]);
        assert_eq!(ask(), committed);
        assert_eq!(ask(), committed);
        // A new commit under the same id: still there.
        fx.commit("x", &[("f", "2")]);
        assert_eq!(ask(), committed);
        // The object the ref names disappears behind the store's back.
        let target = fs::canonicalize(fx.store.path().join("refs/x")).unwrap();
        let aside = fx.dir.path().join("aside");
        fs::rename(&target, &aside).unwrap();
        assert_eq!(ask(), r#"{"path": null}"#);
        fs::rename(&aside, &target).unwrap();
        assert_eq!(ask(), committed);
        // The ref goes away.
        fs::remove_file(fx.store.path().join("refs/x")).unwrap();
    }
    // Changes made by another process are seen at once too.
    let name = fs::read_dir(fx.store.path().join("objects"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let link = fx.store.path().join("refs/x");
    let run = |args: &[&std::ffi::OsStr]| {
        assert!(
            std::process::Command::new(args[0])
                .args(&args[1..])
                .status()
                .unwrap()
                .success()
        );
    };
    let target = Path::new("../objects").join(&name);
    run(&[
        "ln".as_ref(),
        "-s".as_ref(),
        target.as_os_str(),
        link.as_os_str(),
    ]);
    assert_eq!(ask(), committed);
    assert_eq!(ask(), committed);
    run(&["rm".as_ref(), link.as_os_str()]);
    assert_eq!(ask(), r#"{"path": null}"#);
}

#[test]
fn paths_that_are_not_utf8_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join(std::ffi::OsStr::from_bytes(b"store-\xff"));
    let store = Store::open(&root).unwrap();
    let mut obj = store.new_object("x").unwrap();
    store.commit(&mut obj, "x").unwrap();
    let server = Server::start(
        store,
        ServerOptions {
            socket_path: Some(dir.path().join("sock")),
            ..ServerOptions::default()
        },
    )
    .unwrap();
    let client = Client::connect(server.socket_path());
    for request in [
        read_tree("x"),
        json!({"method": "source", "name": "s"}),
        json!({"method": "mkdtemp"}),
    ] {
        let reply = client.call_json(&request);
        assert_error(&reply, &request.to_string());
        assert!(
            reply["error"].as_str().unwrap().contains("not valid UTF-8"),
            "{reply}"
        );
    }
    assert!(client.call_json(&read_tree("unknown"))["path"].is_null());
}

#[test]
fn source_joins_the_name_and_creates_nothing() {
    let fx = Fixture::new();
    let client = fx.client();
    let reply = client.call(br#"{"method": "source", "name": "org.osbuild.files"}"#);
    assert_eq!(
        text(&reply),
        format!(
            r#"{{"path": "{}/sources/org.osbuild.files"}}"#,
            fx.store_path()
        )
    );
    assert!(!fx.store.path().join("sources").exists());
}

#[test]
fn mkdtemp_creates_private_directories_in_the_temp_root() {
    let mut fx = Fixture::new();
    let client = fx.client();
    let mut made = Vec::new();
    for (request, prefix, suffix) in [
        (
            json!({"method": "mkdtemp", "prefix": null, "suffix": null}),
            "tmp",
            "",
        ),
        (json!({"method": "mkdtemp"}), "tmp", ""),
        (
            json!({"method": "mkdtemp", "prefix": "pre-", "suffix": "-suf"}),
            "pre-",
            "-suf",
        ),
        (
            json!({"method": "mkdtemp", "prefix": "", "suffix": ".d"}),
            "",
            ".d",
        ),
    ] {
        let reply = client.call_json(&request);
        let path = PathBuf::from(reply["path"].as_str().expect("a path"));
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(prefix) && name.ends_with(suffix), "{name}");
        assert_eq!(name.len(), prefix.len() + 8 + suffix.len(), "{name}");
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.mode() & 0o777, 0o700);
        assert_eq!(fs::read_dir(&path).unwrap().count(), 0);
        let root = path.parent().unwrap().to_path_buf();
        assert_eq!(root.parent().unwrap(), fx.store.path().join("tmp"));
        assert!(
            root.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("store-server-")
        );
        made.push(path);
    }
    assert!(
        made.windows(2).all(|w| w[0].parent() == w[1].parent()),
        "one private root"
    );
    let root = made[0].parent().unwrap().to_path_buf();
    fs::write(made[0].join("left-behind"), "x").unwrap();
    fx.stop();
    assert!(!root.exists(), "the private temp root is removed on stop");
}

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

// ---------------------------------------------------------------------------
// Concurrency

#[test]
fn many_concurrent_clients() {
    let fx = Fixture::new();
    fx.commit("committed", &[]);
    let socket = fx.socket();
    let store = fx.store_path();
    let threads: Vec<_> = (0..50)
        .map(|t| {
            let socket = socket.clone();
            let store = store.clone();
            std::thread::spawn(move || {
                let client = Client::connect(&socket);
                let committed = format!(r#"{{"path": "{store}/refs/committed"}}"#);
                for i in 0..200 {
                    match i % 3 {
                        0 => assert_eq!(
                            text(&client.call(read_tree("committed").to_string().as_bytes())),
                            committed
                        ),
                        1 => assert_eq!(
                            client.call(read_tree("nope").to_string().as_bytes()),
                            br#"{"path": null}"#
                        ),
                        _ => {
                            let name = format!("s{t}-{i}");
                            let reply = client.call(
                                json!({"method": "source", "name": name})
                                    .to_string()
                                    .as_bytes(),
                            );
                            assert_eq!(
                                text(&reply),
                                format!(r#"{{"path": "{store}/sources/{name}"}}"#)
                            );
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
}

#[test]
fn hundreds_of_idle_connections_do_not_stop_the_server() {
    let fx = Fixture::new();
    fx.commit("x", &[]);
    let idle: Vec<Client> = (0..500).map(|_| fx.client()).collect();
    let started = Instant::now();
    assert!(fx.client().call_json(&read_tree("x"))["path"].is_string());
    assert!(started.elapsed() < Duration::from_secs(5));
    // Every idle connection is still served.
    for client in &idle {
        assert!(client.call_json(&read_tree("x"))["path"].is_string());
    }
}

#[test]
fn a_client_that_does_not_read_its_replies_stalls_nobody() {
    let fx = Fixture::new();
    fx.commit("x", &[]);
    let greedy = fx.client();
    nix::fcntl::fcntl(
        &greedy.fd,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let request = read_tree("x").to_string();
    // Send requests without reading replies until the socket is full.
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match socket::send(
            greedy.fd.as_raw_fd(),
            request.as_bytes(),
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(_) => sent += 1,
            Err(nix::errno::Errno::EAGAIN) => {
                // The server may still be draining: give it a moment, then stop.
                std::thread::sleep(Duration::from_millis(50));
                if socket::send(
                    greedy.fd.as_raw_fd(),
                    request.as_bytes(),
                    MsgFlags::MSG_DONTWAIT,
                )
                .is_ok()
                {
                    sent += 1;
                    continue;
                }
                break;
            }
            Err(e) => panic!("send: {e}"),
        }
    }
    assert!(sent > 10, "only {sent} requests sent");
    // Others are served meanwhile.
    let other = fx.client();
    for _ in 0..100 {
        assert!(other.call_json(&read_tree("x"))["path"].is_string());
    }
    // The greedy client gets every reply, in order, once it reads.
    nix::fcntl::fcntl(
        &greedy.fd,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .unwrap();
    for _ in 0..sent {
        assert!(greedy.recv().starts_with(b"{\"path\": \""));
    }
}

#[test]
fn clients_that_disconnect_mid_request_do_no_harm() {
    let fx = Fixture::new();
    fx.commit("x", &[]);
    for i in 0..200 {
        let client = fx.client();
        match i % 3 {
            0 => client.send(read_tree("x").to_string().as_bytes()),
            1 => client.send(br#"{"method": "mkdtemp"}"#),
            _ => {}
        }
        drop(client);
    }
    let client = fx.client();
    for _ in 0..10 {
        assert!(client.call_json(&read_tree("x"))["path"].is_string());
    }
}

// ---------------------------------------------------------------------------
// Compatibility with the reference client

#[test]
fn reference_client_bytes_get_reference_server_bytes() {
    let fx = Fixture::new();
    fx.commit("\u{e9}t\u{e9}-\u{1f600}", &[]);
    // What osbuild's StoreClient sends: json.dumps() output, auto-bound socket.
    let client = Client::connect_autobind(&fx.socket());
    let store = fx.store_path();
    let exchanges: Vec<(&[u8], String)> = vec![
        (
            br#"{"method": "read-tree", "object-id": "\u00e9t\u00e9-\ud83d\ude00"}"#,
            format!(r#"{{"path": "{store}/refs/\u00e9t\u00e9-\ud83d\ude00"}}"#),
        ),
        (br#"{"method": "read-tree", "object-id": "unknown"}"#, r#"{"path": null}"#.to_owned()),
        (
            br#"{"method": "source", "name": "org.osbuild.curl"}"#,
            format!(r#"{{"path": "{store}/sources/org.osbuild.curl"}}"#),
        ),
        (
            br#"{"method": "read-tree-at", "object-id": "unknown", "target": "/x", "subtree": "/"}"#,
            r#"{"path": null}"#.to_owned(),
        ),
    ];
    for (request, expected) in exchanges {
        assert_eq!(
            text(&client.call(request)),
            expected,
            "reply to {}",
            text(request)
        );
    }
    // mkdtemp: the reference client sends nulls; the reply is a path.
    let reply = client.call(br#"{"method": "mkdtemp", "suffix": null, "prefix": null}"#);
    let value: Value = serde_json::from_slice(&reply).unwrap();
    let path = value["path"].as_str().unwrap();
    assert_eq!(text(&reply), format!(r#"{{"path": "{path}"}}"#));
    assert!(
        Path::new(path)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("tmp")
    );
}

#[test]
fn python_reference_client_interoperates() {
    let fx = Fixture::new();
    fx.commit("committed", &[]);
    fx.commit("\u{e9}t\u{e9}-\u{1f600}", &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/server_compat.py");
    let output = match std::process::Command::new("python3")
        .arg(&script)
        .arg(fx.socket())
        .arg(fx.store.path())
        .output()
    {
        Ok(output) => output,
        Err(e) => {
            println!("SKIP python_reference_client_interoperates: cannot run python3: {e}");
            return;
        }
    };
    assert!(
        output.status.success(),
        "server_compat.py failed:\n{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

// ---------------------------------------------------------------------------
// Socket file, access control, clean-up

#[test]
fn socket_mode_and_uid_filter() {
    let uid = nix::unistd::getuid().as_raw();
    // Default mode 0600.
    let fx = Fixture::new();
    assert_eq!(fs::metadata(fx.socket()).unwrap().mode() & 0o7777, 0o600);
    drop(fx);

    // A mode wider than the umask allows is applied exactly.
    let fx = Fixture::with(ServerOptions {
        socket_mode: 0o666,
        allowed_uids: Some(vec![uid]),
        ..ServerOptions::default()
    });
    assert_eq!(fs::metadata(fx.socket()).unwrap().mode() & 0o7777, 0o666);
    fx.commit("x", &[]);
    assert!(fx.client().call_json(&read_tree("x"))["path"].is_string());
    drop(fx);

    // A peer whose uid is not in the list is disconnected at once.
    let fx = Fixture::with(ServerOptions {
        allowed_uids: Some(vec![uid.wrapping_add(4242)]),
        ..ServerOptions::default()
    });
    let client = fx.client();
    let _ = socket::send(
        client.fd.as_raw_fd(),
        read_tree("x").to_string().as_bytes(),
        MsgFlags::MSG_NOSIGNAL,
    );
    let mut buf = [0u8; 64];
    let got = socket::recv(client.fd.as_raw_fd(), &mut buf, MsgFlags::empty());
    assert!(
        matches!(got, Ok(0) | Err(nix::errno::Errno::ECONNRESET)),
        "{got:?}"
    );

    // Modes beyond 0777 are refused.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s")).unwrap();
    let err = Server::start(
        store,
        ServerOptions {
            socket_path: Some(dir.path().join("sock")),
            socket_mode: 0o4777,
            allowed_uids: None,
        },
    )
    .unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL);
    assert!(!dir.path().join("sock").exists());
}

#[test]
fn an_existing_socket_path_is_refused_and_kept() {
    let fx = Fixture::new();
    let err = Server::start(
        fx.store.clone(),
        ServerOptions {
            socket_path: Some(fx.socket()),
            ..ServerOptions::default()
        },
    )
    .unwrap_err();
    assert_eq!(err.errno(), libc::EADDRINUSE);
    // The running server's socket is untouched.
    assert!(fx.client().call_json(&read_tree("x"))["path"].is_null());
}

#[test]
fn stop_removes_socket_private_dir_and_temp_root() {
    if !common::is_root() {
        println!("SKIP stop_removes_socket_private_dir_and_temp_root: /run/osbuild needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s")).unwrap();
    let server = Server::start(store.clone(), ServerOptions::default()).unwrap();
    let socket = server.socket_path().to_path_buf();
    let private = socket.parent().unwrap().to_path_buf();
    assert_eq!(socket.file_name().unwrap(), "store");
    assert_eq!(private.parent().unwrap(), Path::new("/run/osbuild"));
    assert_eq!(fs::metadata(&private).unwrap().mode() & 0o7777, 0o700);
    let idle: Vec<Client> = (0..10).map(|_| Client::connect(&socket)).collect();
    let made = idle[0].call_json(&json!({"method": "mkdtemp"}));
    let root = Path::new(made["path"].as_str().unwrap())
        .parent()
        .unwrap()
        .to_path_buf();
    assert!(root.is_dir());
    server.stop().unwrap();
    assert!(!socket.exists() && !private.exists() && !root.exists());
    assert_eq!(
        fs::read_dir(store.path().join("tmp")).unwrap().count(),
        0,
        "nothing left in tmp/"
    );
    // Connected clients see the end of the connection.
    for client in &idle {
        let mut buf = [0u8; 16];
        assert_eq!(
            socket::recv(client.fd.as_raw_fd(), &mut buf, MsgFlags::empty()),
            Ok(0)
        );
    }
    assert!(Client::try_connect(&socket, false).is_err());
}

#[test]
fn dropping_the_server_stops_it() {
    let fx = Fixture::new();
    let socket = fx.socket();
    drop(fx);
    assert!(!socket.exists());
}

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
    assert_eq!(reply, br#"{"fd": 0}"#);
    assert_eq!(fds.len(), 1);
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
    assert_eq!(reply, br#"{"fd": 0}"#);
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

// ---------------------------------------------------------------------------
// The C API

mod c_api {
    use super::*;
    use osstore::ffi::error::os_last_error;
    use osstore::ffi::server::{
        os_server_options_t, os_server_socket_path, os_server_start, os_server_start_ex,
        os_server_stop, os_server_t,
    };
    use osstore::ffi::store::{os_store_free, os_store_open, os_store_t};
    use std::ffi::CStr;

    fn open_store(dir: &Path) -> *mut os_store_t {
        let path = CString::new(dir.join("store").as_os_str().as_bytes()).unwrap();
        let mut store = std::ptr::null_mut();
        // SAFETY: valid arguments.
        assert_eq!(unsafe { os_store_open(path.as_ptr(), &mut store) }, 0);
        store
    }

    fn socket_path(server: *const os_server_t) -> PathBuf {
        // SAFETY: a live handle; the string is copied at once.
        let ptr = unsafe { os_server_socket_path(server) };
        assert!(!ptr.is_null());
        // SAFETY: a C string owned by the handle.
        PathBuf::from(std::ffi::OsStr::from_bytes(
            unsafe { CStr::from_ptr(ptr) }.to_bytes(),
        ))
    }

    fn last_error() -> String {
        // SAFETY: never NULL.
        unsafe { CStr::from_ptr(os_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    fn options() -> os_server_options_t {
        os_server_options_t {
            struct_size: size_of::<os_server_options_t>(),
            socket_mode: 0,
            allowed_uids: std::ptr::null(),
            allowed_uids_len: 0,
        }
    }

    #[test]
    fn start_serve_stop() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let path = CString::new(dir.path().join("sock").as_os_str().as_bytes()).unwrap();
        let mut server = std::ptr::null_mut();
        // SAFETY: valid arguments.
        assert_eq!(
            unsafe { os_server_start(store, path.as_ptr(), &mut server) },
            0,
            "{}",
            last_error()
        );
        let socket = socket_path(server);
        assert_eq!(socket, dir.path().join("sock"));
        assert_eq!(
            fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let client = Client::connect(&socket);
        assert!(client.call_json(&read_tree("x"))["path"].is_null());
        // SAFETY: a live handle, given back.
        unsafe { os_server_stop(server) };
        assert!(!socket.exists());
        // SAFETY: NULL is accepted.
        unsafe { os_server_stop(std::ptr::null_mut()) };
        // SAFETY: the store's last use.
        unsafe { os_store_free(store) };
    }

    #[test]
    fn options_are_checked_and_applied() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let path = CString::new(dir.path().join("sock").as_os_str().as_bytes()).unwrap();
        let mut server = std::ptr::null_mut();
        let start = |options: *const os_server_options_t, server: &mut *mut os_server_t| {
            // SAFETY: valid arguments; `options` points to its struct_size bytes.
            unsafe { os_server_start_ex(store, path.as_ptr(), options, server) }
        };

        // Too small for any version.
        let mut small = options();
        small.struct_size = 8;
        assert_eq!(start(&small, &mut server), -libc::EINVAL);
        assert!(server.is_null());
        // Larger than known, with unknown non-zero bytes.
        #[repr(C)]
        struct Newer {
            base: os_server_options_t,
            extra: u64,
        }
        let mut newer = Newer {
            base: options(),
            extra: 1,
        };
        newer.base.struct_size = size_of::<Newer>();
        assert_eq!(
            start(&newer.base, &mut server),
            -libc::E2BIG,
            "{}",
            last_error()
        );
        // A mode beyond 0777; a NULL uid list with a length.
        let mut bad = options();
        bad.socket_mode = 0o1777;
        assert_eq!(start(&bad, &mut server), -libc::EINVAL);
        let mut bad = options();
        bad.allowed_uids_len = 1;
        assert_eq!(start(&bad, &mut server), -libc::EINVAL);
        assert!(!dir.path().join("sock").exists());

        // Larger with zeros is fine; mode and uids are applied.
        newer.extra = 0;
        newer.base.socket_mode = 0o660;
        let uids = [nix::unistd::getuid().as_raw()];
        newer.base.allowed_uids = uids.as_ptr();
        newer.base.allowed_uids_len = uids.len();
        assert_eq!(start(&newer.base, &mut server), 0, "{}", last_error());
        let socket = socket_path(server);
        assert_eq!(
            fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
            0o660
        );
        assert!(Client::connect(&socket).call_json(&read_tree("x"))["path"].is_null());
        // SAFETY: a live handle, given back.
        unsafe { os_server_stop(server) };
        // SAFETY: the store's last use.
        unsafe { os_store_free(store) };
    }

    #[test]
    fn freeing_the_store_stops_its_servers() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let mut sockets = Vec::new();
        for name in ["a", "b"] {
            let path = CString::new(dir.path().join(name).as_os_str().as_bytes()).unwrap();
            let mut server = std::ptr::null_mut();
            // SAFETY: valid arguments.
            assert_eq!(
                unsafe { os_server_start(store, path.as_ptr(), &mut server) },
                0
            );
            sockets.push((server, socket_path(server)));
        }
        let client = Client::connect(&sockets[0].1);
        let made = client.call_json(&json!({"method": "mkdtemp"}));
        let root = Path::new(made["path"].as_str().unwrap())
            .parent()
            .unwrap()
            .to_path_buf();
        // One is stopped by hand, the other by os_store_free.
        // SAFETY: a live handle, given back.
        unsafe { os_server_stop(sockets[1].0) };
        // SAFETY: the store's last use.
        unsafe { os_store_free(store) };
        assert!(!sockets[0].1.exists() && !sockets[1].1.exists());
        assert!(!root.exists());
        // The handle is gone: using it is refused, not a crash.
        // SAFETY: the registry refuses a freed handle.
        assert!(unsafe { os_server_socket_path(sockets[0].0) }.is_null());
    }
}

// ---------------------------------------------------------------------------
// Benchmarks (ignored; run with --release --ignored --nocapture --test-threads 1)

fn round_trips(socket: &Path, clients: usize, duration: Duration) -> f64 {
    let request = read_tree("x").to_string();
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let socket = socket.to_path_buf();
            let request = request.clone();
            std::thread::spawn(move || {
                let client = Client::connect(&socket);
                let mut buf = [0u8; 4096];
                let mut n = 0u64;
                while start.elapsed() < duration {
                    for _ in 0..100 {
                        socket::send(client.fd.as_raw_fd(), request.as_bytes(), MsgFlags::empty())
                            .unwrap();
                        socket::recv(client.fd.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
                    }
                    n += 100;
                }
                n
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    total as f64 / start.elapsed().as_secs_f64()
}

#[test]
#[ignore = "benchmark"]
fn bench_round_trips() {
    let fx = Fixture::new();
    fx.commit("x", &[]);
    let socket = fx.socket();
    for clients in [1, 8] {
        let rate = round_trips(&socket, clients, Duration::from_secs(3));
        println!("read-tree round trips/s with {clients} client(s): {rate:.0}");
    }
}

/// A "<name>: <n> kB" field of a /proc file.
fn kib(file: &str, name: &str) -> u64 {
    fs::read_to_string(file)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn rss_kib() -> u64 {
    kib("/proc/self/status", "VmRSS")
}

#[test]
#[ignore = "benchmark"]
fn bench_idle_connection_memory() {
    let fx = Fixture::new();
    fx.commit("x", &[]);
    // Warm up: the loop's buffers, the first connection slots.
    fx.client().call_json(&read_tree("x"));
    let before = rss_kib();
    let slab_before = kib("/proc/meminfo", "Slab");
    let idle: Vec<Client> = (0..1000).map(|_| fx.client()).collect();
    // Make sure the server has accepted them all.
    assert!(idle[999].call_json(&read_tree("x"))["path"].is_string());
    let after = rss_kib();
    let slab_after = kib("/proc/meminfo", "Slab");
    let per_connection = (after.saturating_sub(before) * 1024) as f64 / 1000.0;
    println!(
        "RSS {before} KiB -> {after} KiB with 1000 idle connections (server and client in this process): \
         {per_connection:.0} bytes per connection; kernel slab {:.1} KiB per connection (both ends, \
         system-wide, noisy)",
        slab_after.saturating_sub(slab_before) as f64 / 1000.0
    );
    assert!(per_connection < 16384.0);
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
