//! The store server, driven with raw `SOCK_SEQPACKET` packets: the four
//! methods and compatibility with the reference client.
//!
//! Tests that mount need root in a private mount namespace
//! (`tests/in-private-ns.sh cargo test --test <this file>`); elsewhere they
//! print a SKIP line and pass.

mod common;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use osstore::Store;
use osstore::server::{Server, ServerOptions};
use serde_json::{Value, json};

use common::server::*;

// ---------------------------------------------------------------------------
// The four methods

#[test]
fn read_tree_finds_committed_and_floating_objects() {
    let fx = Fixture::new();
    fx.commit("committed", &[("f", "c")]);
    let floating = fx.floating("floating", &[("f", "fl")]);
    let client = fx.client();

    // cache.md: the object itself, as `get` names it, not the ref.
    let reply = client.call(read_tree("committed").to_string().as_bytes());
    assert_eq!(
        text(&reply),
        format!(
            r#"{{"path": "{}"}}"#,
            object_of(fx.store.path(), "committed").display()
        )
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
    // The object the ref names now.
    let committed = || {
        let object = object_of(fx.store.path(), "x");
        format!(r#"{{"path": "{}"}}"#, object.display())
    };
    let ask = || text(&client.call(read_tree("x").to_string().as_bytes()));
    for _ in 0..3 {
        assert_eq!(ask(), r#"{"path": null}"#);
        fx.commit("x", &[("f", "1")]);
        assert_eq!(ask(), committed());
        assert_eq!(ask(), committed());
        // A new commit under the same id: its object is named.
        let first = committed();
        fx.commit("x", &[("f", "2")]);
        assert_eq!(ask(), committed());
        assert_ne!(committed(), first);
        // The object the ref names disappears behind the store's back.
        let target = object_of(fx.store.path(), "x");
        let aside = fx.dir.path().join("aside");
        fs::rename(&target, &aside).unwrap();
        assert_eq!(ask(), r#"{"path": null}"#);
        fs::rename(&aside, &target).unwrap();
        assert_eq!(ask(), committed());
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
    let committed = format!(
        r#"{{"path": "{}"}}"#,
        fx.store.path().join("objects").join(&name).display()
    );
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

/// cache.md "Pins" and "Last use": a `read-tree` answer pins the object it
/// names for as long as the connection that asked lives, against eviction
/// and collection by another user of the store, and counts as a use.
#[test]
fn read_tree_pins_its_answer_until_the_connection_closes() {
    let fx = Fixture::new();
    let other = other_user(&fx);
    for id in ["held", "free"] {
        let mut obj = other.new_object(id).unwrap();
        fill(&obj, &[("f", "first")]);
        other.commit(&mut obj, id).unwrap();
        forget_last_use(fx.store.path(), id);
    }
    let client = fx.client();
    let reply = client.call_json(&read_tree("held"));
    let held = PathBuf::from(reply["path"].as_str().expect("a path"));
    assert_eq!(held, object_of(fx.store.path(), "held"));
    assert!(last_used(&other, "held") > 1000, "the look-up is a use");
    assert_eq!(last_used(&other, "free"), 1000);

    assert_eq!(other.evict(0).unwrap().evicted, ["free"]);
    assert!(held.is_dir(), "a pinned object is never evicted");
    // The ref moves on: the answer still names what was looked up, and a
    // collection spares it.
    let mut obj = other.new_object("held").unwrap();
    fill(&obj, &[("f", "second")]);
    other.commit(&mut obj, "held").unwrap();
    assert_eq!(other.gc().unwrap().removed, 0);
    assert_eq!(fs::read_to_string(held.join("f")).unwrap(), "first");

    drop(client);
    // A request on a new connection is answered after the server has seen
    // the old one close (it was closed before this one was accepted).
    let _ = fx.client().call_json(&read_tree("none"));
    assert_eq!(other.gc().unwrap().removed, 1);
    assert!(!held.exists());
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
        // 8 random characters and their 6-character check (store.md).
        assert_eq!(name.len(), prefix.len() + 14 + suffix.len(), "{name}");
        assert!(osstore::tempdir::is_generated(name.as_bytes()), "{name}");
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
// Compatibility with the reference client

#[test]
fn reference_client_bytes_get_reference_server_bytes() {
    let fx = Fixture::new();
    fx.commit("\u{e9}t\u{e9}-\u{1f600}", &[]);
    // What osbuild's StoreClient sends: json.dumps() output, auto-bound socket.
    let client = Client::connect_autobind(&fx.socket());
    let store = fx.store_path();
    // The object itself (cache.md), whose name is ASCII.
    let object = object_of(fx.store.path(), "\u{e9}t\u{e9}-\u{1f600}");
    let exchanges: Vec<(&[u8], String)> = vec![
        (
            br#"{"method": "read-tree", "object-id": "\u00e9t\u00e9-\ud83d\ude00"}"#,
            format!(r#"{{"path": "{}"}}"#, object.display()),
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
