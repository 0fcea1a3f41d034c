//! Support for the fuzz targets: the server's request decoding, dispatch
//! and subtree resolution (re-exported from `osstore::server`, where they
//! are public for this purpose only), the invariants the targets check, and
//! a small fixture (a tree with hostile symlinks next to a directory it must
//! never reach, and a store).

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, OnceLock};

pub use osstore::server::{methods, protocol, readtree_at};

/// Longest id, name, prefix or suffix (one path component).
pub const MAX_NAME: usize = 255;

/// What `ids::check_name` must accept: 1 to 255 bytes, no `/` or NUL, not
/// `.` or `..`.
pub fn valid_name(name: &[u8]) -> bool {
    valid_affix(name) && !name.is_empty() && name != b"." && name != b".."
}

/// What `ids::check_affix` must accept: up to 255 bytes, no `/` or NUL.
pub fn valid_affix(affix: &[u8]) -> bool {
    affix.len() <= MAX_NAME && !affix.contains(&b'/') && !affix.contains(&0)
}

/// Panics unless `name` joined onto `dir` is exactly one entry of `dir`.
pub fn assert_stays_in(dir: &Path, name: &[u8]) {
    let joined = dir.join(OsStr::from_bytes(name));
    assert_eq!(
        joined.parent(),
        Some(dir),
        "{name:?} leaves {}",
        dir.display()
    );
    assert!(
        matches!(joined.components().next_back(), Some(Component::Normal(n)) if n.as_bytes() == name),
        "{name:?} is not one entry of {}",
        dir.display()
    );
}

/// The path a descriptor names, from `/proc/self/fd`.
pub fn fd_path(fd: &OwnedFd) -> PathBuf {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("readlink /proc/self/fd")
}

/// The fixture: under a private temporary root, `tree/` (the root subtrees
/// are resolved in) with symlinks that try every way out, `outside/` next
/// to it that no resolution may reach, and a store with a committed object
/// `a` and a floating object `fl`, both copies of `tree/`.
pub struct Fixture {
    /// The temporary root, removed at exit.
    pub root: PathBuf,
    /// The tree, canonical.
    pub tree: PathBuf,
    /// The directory next to the tree, canonical.
    pub outside: PathBuf,
    /// The store.
    pub store: osstore::Store,
    /// The server's dispatch, serving `store`.
    pub methods: Mutex<methods::Methods>,
    /// The private temp root of `methods` (where `mkdtemp` creates).
    pub tmproot: PathBuf,
    /// Held so that the floating object and the temp root stay.
    _held: (osstore::Object, osstore::tempdir::TempDir),
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

/// The fixture, made on first use and removed when the process exits.
pub fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("osstore-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir(&root).expect("create the fixture root");
        // SAFETY: `remove_fixture` is an `extern "C" fn()` that lives as
        // long as the process; a panic in it aborts instead of unwinding
        // into C.
        unsafe { libc::atexit(remove_fixture) };
        let tree = root.join("tree");
        build_tree(&tree, &root.join("outside")).expect("build the fixture tree");
        let store = osstore::Store::open_with(
            root.join("store"),
            osstore::OpenOptions {
                durable: false,
                collect_garbage: false,
                ..Default::default()
            },
        )
        .expect("open the fixture store");
        let mut a = store.new_object("a").expect("new a");
        osstore::tree::copy_tree(&tree, a.tree()).expect("fill a");
        store.commit(&mut a, "a").expect("commit a");
        let mut fl = store.new_object("fl").expect("new fl");
        osstore::tree::copy_tree(&tree, fl.tree()).expect("fill fl");
        fl.finalize().expect("finalize fl");
        let tmproot = store.tempdir(b"store-server-", b"").expect("temp root");
        let methods = methods::Methods::new(store.clone(), tmproot.path().to_path_buf(), None);
        Fixture {
            tree: tree.canonicalize().expect("canonical tree"),
            outside: root
                .join("outside")
                .canonicalize()
                .expect("canonical outside"),
            root,
            tmproot: tmproot.path().to_path_buf(),
            store,
            methods: Mutex::new(methods),
            _held: (fl, tmproot),
        }
    })
}

extern "C" fn remove_fixture() {
    if let Some(fixture) = FIXTURE.get() {
        let _ = std::fs::remove_dir_all(&fixture.root);
    }
}

fn build_tree(tree: &Path, outside: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::symlink;
    std::fs::create_dir_all(outside)?;
    std::fs::write(outside.join("secret"), "outside")?;
    std::fs::create_dir_all(tree.join("a/b/c"))?;
    std::fs::create_dir_all(tree.join("etc"))?;
    std::fs::write(tree.join("file"), "inside")?;
    std::fs::write(tree.join("etc/passwd"), "inside")?;
    for (link, target) in [
        ("abs_etc", "/etc"),
        ("abs_passwd", "/etc/passwd"),
        ("up", "../../../../.."),
        ("out", "../outside"),
        ("out_secret", "../outside/secret"),
        ("abs_out", "/../outside/secret"),
        ("loop", "loop"),
        ("proc_root", "/proc/self/root"),
        ("file_link", "file"),
        ("through_file", "file/x"),
        ("a/b/up2", "../../.."),
        ("a/b/back", "/a"),
        ("a/b/c/deep_out", "../../../../outside"),
    ] {
        symlink(target, tree.join(link))?;
    }
    Ok(())
}
