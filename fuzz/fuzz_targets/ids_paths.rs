//! Fuzzes the validation of ids, names, prefixes and suffixes
//! (`osstore::ids`) and the resolution of subtrees inside a tree
//! (`openat2` with `RESOLVE_IN_ROOT`, as `read-tree-at` does it).
//!
//! Invariants: validation accepts exactly the strings the specification
//! allows, refuses the others with `EINVAL`, and an accepted name is one
//! entry of the directory it is joined onto; a subtree, whatever it is,
//! resolves to a path inside the tree or fails, never to anything outside.

#![no_main]

use libfuzzer_sys::fuzz_target;
use osstore::ids;
use osstore_fuzz::{assert_stays_in, fd_path, fixture, readtree_at, valid_affix, valid_name};

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    match ids::check_name("name", data) {
        Ok(()) => {
            assert!(valid_name(data), "accepted {data:?}");
            assert_stays_in(&fixture.tree, data);
        }
        Err(e) => {
            assert!(!valid_name(data), "refused {data:?}: {e}");
            assert_eq!(e.errno(), libc::EINVAL);
        }
    }
    match ids::check_affix("prefix", data) {
        Ok(()) => assert!(valid_affix(data), "accepted affix {data:?}"),
        Err(e) => {
            assert!(!valid_affix(data), "refused affix {data:?}: {e}");
            assert_eq!(e.errno(), libc::EINVAL);
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // An id is a name that is a string: the same rules.
    assert_eq!(ids::ObjectId::new(text).is_ok(), valid_name(data), "{text:?}");
    if let Ok(path) = fixture.store.resolve_ref(text) {
        assert_eq!(
            path.parent(),
            Some(fixture.store.path().join("refs").as_path()),
            "{text:?}"
        );
    }
    match readtree_at::open_subtree(&fixture.tree, text) {
        Ok(fd) => {
            let resolved = fd_path(&fd);
            assert!(
                resolved.starts_with(&fixture.tree),
                "subtree {text:?} resolved to {} outside {}",
                resolved.display(),
                fixture.tree.display()
            );
        }
        Err(e) => assert!(e.errno() > 0 && !e.message().is_empty(), "{text:?}: {e:?}"),
    }
});
