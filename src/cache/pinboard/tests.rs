use std::os::fd::{AsFd, OwnedFd};

use super::*;

/// Two boards on one file, as two store handles (or processes) have.
fn boards() -> (tempfile::TempDir, Arc<PinBoard>, Arc<PinBoard>) {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let meta = OwnedFd::from(std::fs::File::open(dir.path()).unwrap());
        Arc::new(
            PinBoard::open(meta.as_fd())
                .unwrap()
                .expect("a local filesystem"),
        )
    };
    let (a, b) = (open(), open());
    (dir, a, b)
}

#[test]
fn a_pin_shows_on_every_board_until_its_last_handle_goes() {
    let (_dir, a, b) = boards();
    assert_ne!(a.slot, b.slot);
    let first = a.pin("x").unwrap();
    let second = a.pin("x").unwrap();
    assert!(b.is_pinned("x").unwrap());
    assert!(a.is_pinned("x").unwrap(), "a board sees its own pins");
    assert!(!b.is_pinned("y").unwrap());
    drop(first);
    assert!(b.is_pinned("x").unwrap());
    drop(second);
    assert!(!b.is_pinned("x").unwrap());
}

#[test]
fn a_dropped_board_pins_nothing_and_its_slot_is_claimed_again() {
    let (dir, a, b) = boards();
    let slot = a.slot;
    // What a killed process leaves: a count, with nobody holding the
    // slot's lock (its descriptor closed).
    let (key_word, count) = a.entry(slot.unwrap(), 5);
    key_word.store(key("x"), Ordering::SeqCst);
    count.store(1, Ordering::SeqCst);
    assert!(b.is_pinned("x").unwrap());
    drop(a);
    assert!(
        !b.is_pinned("x").unwrap(),
        "a dead slot's pins count for nothing"
    );
    let meta = OwnedFd::from(std::fs::File::open(dir.path()).unwrap());
    let c = PinBoard::open(meta.as_fd()).unwrap().unwrap();
    assert_eq!(c.slot, slot, "the lowest free slot is claimed");
    let (key_word, count) = c.entry(slot.unwrap(), 5);
    assert_eq!(
        (
            key_word.load(Ordering::SeqCst),
            count.load(Ordering::SeqCst)
        ),
        (0, 0),
        "its next owner clears it"
    );
}

#[test]
fn a_look_up_does_not_pin_on_the_board_what_an_eviction_is_taking() {
    let (_dir, a, b) = boards();
    let evicting = a.evicting("x");
    assert!(b.pin("x").is_none(), "the caller must pin with flock");
    assert!(!a.is_pinned("x").unwrap(), "the pin was taken back");
    let other = b.pin("y").unwrap();
    drop(evicting);
    assert!(b.pin("x").is_some());
    drop(other);
}

#[test]
fn a_full_slot_makes_the_caller_pin_otherwise() {
    let (_dir, a, _b) = boards();
    let held: Vec<_> = (0..ENTRIES)
        .map(|i| a.pin(&format!("n{i}")).unwrap())
        .collect();
    assert!(a.pin("one-more").is_none());
    assert!(a.pin("n3").is_some(), "a name it holds is counted again");
    drop(held);
    assert!(a.pin("one-more").is_some());
}

#[test]
fn a_file_that_is_not_a_board_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pins"), b"something else entirely").unwrap();
    let meta = OwnedFd::from(std::fs::File::open(dir.path()).unwrap());
    let err = PinBoard::open(meta.as_fd()).unwrap_err();
    assert_eq!(err.errno(), libc::ENOTSUP, "{err}");
}

#[test]
fn a_new_board_is_writable_by_whoever_may_write_its_directory() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o2775)).unwrap();
    let meta = OwnedFd::from(std::fs::File::open(dir.path()).unwrap());
    PinBoard::open(meta.as_fd()).unwrap().unwrap();
    let mode = std::fs::metadata(dir.path().join("pins"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o664, "whatever the umask");
}
