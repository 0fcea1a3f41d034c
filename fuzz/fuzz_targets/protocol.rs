//! Fuzzes the server's request decoding (`protocol::decode`), its dispatch
//! (`methods::Methods::handle` for the methods that mount nothing; subtree
//! resolution for `read-tree-at` and `open-tree`), and its reply encoding.
//!
//! Invariants: a packet is either refused with `EINVAL` (and the error
//! reply is valid JSON carrying the message) or is a JSON object whose
//! members are exactly what the decoded request holds, every id and name
//! valid, no prefix or suffix with `/` or NUL; the replies name paths
//! inside the store (or the server's temp root); a subtree never resolves
//! outside its tree; every encoded reply is JSON that decodes to what was
//! encoded.

#![no_main]

use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use osstore_fuzz::protocol::{self, Reply, Request};
use osstore_fuzz::{Fixture, fd_path, fixture, readtree_at, valid_affix, valid_name};
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    if let Ok(text) = std::str::from_utf8(data) {
        // Any string survives the encoder's escaping.
        assert_eq!(encoded(&Reply::Error(text.to_owned()))["error"], text);
        assert_eq!(encoded(&Reply::Path(PathBuf::from(text)))["path"], text);
    }
    let request = match protocol::decode(data) {
        Ok(request) => request,
        Err(e) => {
            assert_eq!(e.errno(), libc::EINVAL, "{e}");
            assert_eq!(encoded(&Reply::error(&e))["error"], e.message());
            return;
        }
    };
    let value: Value = serde_json::from_slice(data).expect("accepted a packet that is not JSON");
    let members = value
        .as_object()
        .expect("accepted a packet that is not an object");
    check_request(&request, members);
    dispatch(fixture, request);
});

/// The decoded request is what the packet says, and valid.
fn check_request(request: &Request, members: &Map<String, Value>) {
    let string = |name: &str| members.get(name).and_then(Value::as_str);
    let method = string("method").expect("accepted without a string method");
    match request {
        Request::ReadTree { object_id } => {
            assert_eq!(method, protocol::READ_TREE);
            assert_eq!(string("object-id"), Some(object_id.as_str()));
            assert!(valid_name(object_id.as_bytes()), "{object_id:?}");
        }
        Request::ReadTreeAt {
            object_id,
            target,
            subtree,
        } => {
            assert_eq!(method, protocol::READ_TREE_AT);
            assert_eq!(string("object-id"), Some(object_id.as_str()));
            assert!(valid_name(object_id.as_bytes()), "{object_id:?}");
            assert_eq!(string("target"), Some(target.as_str()));
            assert!(!target.is_empty() && !target.contains('\0'), "{target:?}");
            assert_eq!(string("subtree"), Some(subtree.as_str()));
            assert!(!subtree.contains('\0'), "{subtree:?}");
        }
        Request::Mkdtemp { prefix, suffix } => {
            assert_eq!(method, protocol::MKDTEMP);
            assert_eq!(string("prefix").unwrap_or("tmp"), prefix);
            assert_eq!(string("suffix").unwrap_or(""), suffix);
            assert!(
                valid_affix(prefix.as_bytes()) && valid_affix(suffix.as_bytes()),
                "{prefix:?} {suffix:?}"
            );
        }
        Request::Source { name } => {
            assert_eq!(method, protocol::SOURCE);
            assert_eq!(string("name"), Some(name.as_str()));
            assert!(valid_name(name.as_bytes()), "{name:?}");
        }
        Request::OpenTree { object_id, subtree } => {
            assert_eq!(method, protocol::OPEN_TREE);
            assert_eq!(string("object-id"), Some(object_id.as_str()));
            assert!(valid_name(object_id.as_bytes()), "{object_id:?}");
            assert_eq!(string("subtree").unwrap_or("/"), subtree);
            assert!(!subtree.contains('\0'), "{subtree:?}");
        }
    }
}

/// Carries the request out as the server would, minus the mounts.
fn dispatch(fixture: &Fixture, request: Request) {
    let store = fixture.store.path();
    match request {
        Request::ReadTreeAt {
            object_id, subtree, ..
        }
        | Request::OpenTree { object_id, subtree } => {
            // What both do before mounting: find the tree, resolve inside it.
            let Some(object) = fixture
                .store
                .get(&object_id)
                .expect("look-up of a valid id")
            else {
                return;
            };
            let tree = object.tree().canonicalize().expect("the tree exists");
            if let Ok(fd) = readtree_at::open_subtree(&tree, &subtree) {
                let resolved = fd_path(&fd);
                assert!(
                    resolved.starts_with(&tree),
                    "{subtree:?} resolved to {}",
                    resolved.display()
                );
            }
        }
        Request::ReadTree { ref object_id } => match handle(fixture, request.clone()) {
            Reply::Path(path) => {
                assert!(path.starts_with(store), "{object_id:?}: {}", path.display());
                assert!(path.exists(), "{}", path.display());
            }
            Reply::NoObject => assert!(!fixture.store.contains(object_id).expect("valid id")),
            other => panic!("read-tree {object_id:?}: {other:?}"),
        },
        Request::Source { ref name } => match handle(fixture, request.clone()) {
            Reply::Path(path) => {
                assert_eq!(path.parent(), Some(store.join("sources").as_path()));
                assert_eq!(
                    path.file_name().and_then(|n| n.to_str()),
                    Some(name.as_str())
                );
            }
            other => panic!("source {name:?}: {other:?}"),
        },
        Request::Mkdtemp {
            ref prefix,
            ref suffix,
        } => match handle(fixture, request.clone()) {
            Reply::Path(path) => {
                assert_eq!(path.parent(), Some(fixture.tmproot.as_path()));
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .expect("a UTF-8 name");
                assert!(
                    name.starts_with(prefix.as_str()) && name.ends_with(suffix.as_str()),
                    "{name:?}"
                );
                std::fs::remove_dir(&path).expect("mkdtemp made a directory");
            }
            // Only a name too long for one path component may fail: the
            // generated part is the random characters and their check.
            Reply::Error(message) => {
                let generated = osstore::tempdir::RANDOM_LEN + osstore::tempdir::CHECK_LEN;
                assert!(
                    prefix.len() + suffix.len() + generated > 255,
                    "mkdtemp: {message}"
                )
            }
            other => panic!("mkdtemp: {other:?}"),
        },
    }
}

/// Dispatches, and checks that the reply encodes to the JSON it stands for.
fn handle(fixture: &Fixture, request: Request) -> Reply {
    let reply = fixture
        .methods
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .handle(0, request);
    let json = encoded(&reply);
    match &reply {
        Reply::Path(path) => assert_eq!(json["path"], path_str(path)),
        Reply::NoObject => assert_eq!(json["path"], Value::Null),
        Reply::Error(message) => assert_eq!(json["error"], message.as_str()),
        Reply::Fd { .. } => assert_eq!((&json["fd"], &json["pin"]), (&0.into(), &1.into())),
    }
    reply
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("fixture paths are UTF-8")
}

/// `reply` encoded, parsed back.
fn encoded(reply: &Reply) -> Value {
    let mut out = Vec::new();
    protocol::encode(reply, &mut out);
    serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("reply {:?} is not JSON: {e}", String::from_utf8_lossy(&out)))
}
