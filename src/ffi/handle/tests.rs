//! Tests of the handle table, on real stores.

use std::ffi::{CString, c_int};
use std::ptr::null_mut;

use super::table::{CHUNKS, FIRST_CHUNK, HALF, MAX_SLOTS, locate};
use super::*;
use crate::ffi::object::os_object_release;
use crate::ffi::store::{OS_STORE_NO_SYNC, os_store_free, os_store_get, os_store_new};

fn open(dir: &std::path::Path) -> *mut os_store_t {
    let path = CString::new(dir.to_str().unwrap()).unwrap();
    let mut store = null_mut();
    // SAFETY: a C string and a writable out-parameter.
    let rc =
        unsafe { crate::ffi::store::os_store_open_ex(path.as_ptr(), OS_STORE_NO_SYNC, &mut store) };
    assert_eq!(rc, 0);
    store
}

fn new_object(store: *mut os_store_t, id: &str) -> (c_int, *mut os_object_t) {
    let id = CString::new(id).unwrap();
    let mut object = null_mut();
    // SAFETY: a C string and a writable out-parameter.
    let rc = unsafe { os_store_new(store, id.as_ptr(), &mut object) };
    (rc, object)
}

fn errno<R>(result: Result<R>) -> c_int {
    result.err().map_or(0, |e| e.errno())
}

#[test]
fn chunks_are_located_by_index() {
    assert_eq!(locate(0), (0, 0));
    assert_eq!(locate(63), (0, 63));
    assert_eq!(locate(64), (1, 0));
    assert_eq!(locate(191), (1, 127));
    assert_eq!(locate(192), (2, 0));
    assert_eq!(
        locate(MAX_SLOTS - 1),
        (CHUNKS - 1, (FIRST_CHUNK << (CHUNKS - 1)) - 1)
    );
}

#[test]
fn handle_tokens_refuse_values_that_name_no_slot() {
    for t in [0, 1, 1 << HALF, usize::MAX, usize::MAX / 3, MAX_SLOTS + 1] {
        assert_eq!(
            errno(with_store(t as *const os_store_t, |_| Ok(()))),
            libc::EINVAL
        );
    }
    assert!(take_object(0).unwrap().is_none());
}

#[test]
fn released_tokens_stay_dead_and_kinds_do_not_mix() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (rc, a) = new_object(store, "a");
    assert_eq!(rc, 0);
    // SAFETY: a live handle, released once.
    unsafe { os_object_release(a) };
    let (_, b) = new_object(store, "b");
    assert_ne!(a, b);
    assert_eq!(errno(with_object_ref(a, |_| Ok(()))), libc::EINVAL);
    assert_eq!(errno(take_object(token_of(a))), libc::EINVAL);
    assert_eq!(
        errno(with_store(b as *const os_store_t, |_| Ok(()))),
        libc::EINVAL
    );
    assert_eq!(
        errno(with_object_ref(store as *const os_object_t, |_| Ok(()))),
        libc::EINVAL
    );
    let id = with_object_ref(b, |obj| Ok(obj.object.id().as_str().to_owned())).unwrap();
    assert_eq!(id, "b");
    // SAFETY: a live handle; it frees `b` with it.
    unsafe { os_store_free(store) };
    assert_eq!(errno(with_object_ref(b, |_| Ok(()))), libc::EINVAL);
    assert_eq!(errno(with_store(store, |_| Ok(()))), libc::EINVAL);
}

#[test]
fn a_handle_freed_while_in_use_lives_until_the_use_ends() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (_, object) = new_object(store, "in-use");
    let tree = with_object_ref(object, |obj| Ok(obj.object.tree().to_path_buf())).unwrap();
    with_object_ref(object, |obj| {
        // Released from inside a use of it (as a callback might): no
        // wait, no deadlock, and the object stays whole meanwhile.
        // SAFETY: a live handle.
        unsafe { os_object_release(object) };
        assert_eq!(errno(with_object_ref(object, |_| Ok(()))), libc::EINVAL);
        assert_eq!(errno(take_object(token_of(object))), libc::EINVAL);
        assert!(obj.object.tree().is_dir());
        Ok(())
    })
    .unwrap();
    // The last use let it go: its work dir went with it.
    assert!(!tree.exists());
    with_store(store, |owner| {
        // SAFETY: a live handle.
        unsafe { os_store_free(store) };
        assert!(owner.store.path().is_dir());
        assert!(owner.store.contains("in-use").is_ok());
        Ok(())
    })
    .unwrap();
    assert_eq!(errno(with_store(store, |_| Ok(()))), libc::EINVAL);
}

#[test]
fn handles_used_and_freed_by_several_threads_never_crash() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..20 {
        let store = open(dir.path());
        let (_, object) = new_object(store, "shared");
        // SAFETY: a live handle.
        assert_eq!(unsafe { crate::ffi::object::os_object_finalize(object) }, 0);
        let (store_t, object_t) = (store as usize, object as usize);
        let users: Vec<_> = (0..3)
            .map(|_| {
                std::thread::spawn(move || {
                    let id = CString::new("shared").unwrap();
                    for _ in 0..200 {
                        let mut got = null_mut();
                        let store = store_t as *mut os_store_t;
                        // SAFETY: a C string and a writable out-parameter;
                        // the handle may be dead (refused) by now.
                        let rc = unsafe { os_store_get(store, id.as_ptr(), &mut got) };
                        assert!(
                            rc == 0 || rc == -libc::EINVAL || rc == -libc::ENOENT,
                            "{rc}"
                        );
                        // SAFETY: NULL, or a handle that may be dead by now.
                        unsafe { os_object_release(got) };
                        let r = with_object_ref(object_t as *const os_object_t, |o| {
                            Ok(o.object.id().as_str().len())
                        });
                        assert!(matches!(r, Ok(6)) || errno(r) == libc::EINVAL);
                    }
                })
            })
            .collect();
        // SAFETY: live handles, each released once.
        unsafe {
            os_object_release(object);
            os_store_free(store);
        }
        for user in users {
            user.join().unwrap();
        }
    }
}
