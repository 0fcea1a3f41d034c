//! Hostile trees (issue 9): removal, copy and export stay inside their trees
//! when a process that can write in them swaps a directory for a symlink
//! mid-walk, and work at any depth.
//!
//! The attacker watches a directory with inotify and, at the first deletion
//! (removal) or creation (export) in it, exchanges it for a symlink to an
//! outside directory (`renameat2(RENAME_EXCHANGE)`). Each attack runs a few
//! trials; the outside directory must come out untouched every time. The
//! same goes for the clean-up of a cancelled export, for special files whose
//! names get a hard link of an outside file renamed over them, and for
//! `read-tree-at` targets renamed out of the server's mount root.

#[path = "common/attack.rs"]
mod attack;
mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use attack::{
    Attacker, FdLimit, Trigger, check_deep, fast_tempdir, fill, make_deep, snapshot, touched,
};
use common::quick;

/// Trials per attack, at most: each lets the attacker swap once.
const TRIALS: usize = 10;
/// Trials that must see a swap (the attack stops once they did).
const SWAPS: usize = 3;
/// Files per directory, and subdirectories of `x`, in attacked trees.
const FILES: usize = 50;
const DIRS: usize = 10;

/// Plants `x/` in the work tree `tree`, to be swapped with the symlink
/// `link` to `victim` (made beside, where the walk does not remove it first).
fn plant(tree: &Path, link: &Path, victim: &Path) {
    fill(&tree.join("x"), FILES, DIRS);
    fs::create_dir_all(link.parent().expect("parent")).expect("mkdir");
    symlink(victim, link).expect("symlink");
}

/// A temporary directory with a store and a victim directory outside it.
fn arena() -> (tempfile::TempDir, osstore::Store, PathBuf) {
    let tmp = fast_tempdir();
    let store = quick(&tmp.path().join("store"));
    let victim = tmp.path().join("victim");
    fill(&victim, FILES, DIRS);
    (tmp, store, victim)
}

/// Runs `trial` (given its number; it returns whether the attacker swapped
/// and how many outside entries changed) until [`SWAPS`] trials saw a swap
/// or [`TRIALS`] ran; asserts that some did and that nothing outside was
/// touched by `what`.
fn attack(what: &str, mut trial: impl FnMut(usize) -> (bool, usize)) {
    let (mut swaps, mut outside) = (0, 0);
    for n in 0..TRIALS {
        if swaps == SWAPS {
            break;
        }
        let (swapped, touched) = trial(n);
        swaps += usize::from(swapped);
        outside += touched;
    }
    assert!(swaps > 0, "the attacker never swapped");
    assert_eq!(outside, 0, "outside entries touched by {what}");
}

/// Runs `remove` on `tree` (planted) with the attacker armed on `tree/x`,
/// then a collection for what the interrupted removal left (which must go
/// too); returns (swapped, outside entries touched).
fn attack_removal(
    store: &osstore::Store,
    tree: &Path,
    link: &Path,
    victim: &Path,
    remove: impl FnOnce(),
) -> (bool, usize) {
    let before = snapshot(victim);
    let attacker = Attacker::arm(&tree.join("x"), Trigger::Delete, &tree.join("x"), link);
    remove();
    let swapped = attacker.swapped();
    store.gc().expect("gc after the attack");
    assert!(!tree.exists(), "tree left after gc");
    (swapped, touched(&before, &snapshot(victim)))
}

#[test]
fn hostile_release_exchange_race_stays_inside() {
    let (tmp, store, victim) = arena();
    attack("release", |trial| {
        let obj = store.new_object("w").expect("new");
        let tree = obj.tree().to_path_buf();
        let link = tmp.path().join(format!("attacker/l{trial}"));
        plant(&tree, &link, &victim);
        attack_removal(&store, &tree, &link, &victim, || drop(obj))
    });
}

#[test]
fn hostile_gc_exchange_race_stays_inside() {
    let (tmp, store, victim) = arena();
    attack("gc", |trial| {
        // A dead builder's work dir: in tmp/, locked by nobody.
        let dead = osstore::tempdir::fresh_name(format!("dead-{trial}-").as_bytes(), b"").unwrap();
        let tree = tmp
            .path()
            .join("store/tmp")
            .join(dead.to_str().unwrap())
            .join("tree");
        let link = tmp.path().join(format!("attacker/l{trial}"));
        plant(&tree, &link, &victim);
        attack_removal(&store, &tree, &link, &victim, || {
            let _ = store.gc();
        })
    });
}

#[test]
fn hostile_export_destination_exchange_race_stays_inside() {
    let (tmp, store, victim) = arena();
    let mut obj = store.new_object("src").expect("new");
    fill(&obj.tree().join("x"), FILES, DIRS);
    store.commit(&mut obj, "src").expect("commit");
    attack("export", |trial| {
        export_trial(tmp.path(), &victim, trial, "x", "x", |dst| {
            let _ = obj.export(dst);
        })
    });
}

/// One trial of an export into `<tmp>/dst<trial>`, which holds the
/// directory `watched` beforehand: at the first entry the export creates in
/// it, the attacker swaps `swap` (in the destination) for a symlink to
/// `victim`; `export` runs the export. Returns (swapped, outside entries
/// touched).
fn export_trial(
    tmp: &Path,
    victim: &Path,
    trial: usize,
    watched: &str,
    swap: &str,
    export: impl FnOnce(&Path),
) -> (bool, usize) {
    let dst = tmp.join(format!("dst{trial}"));
    fs::create_dir_all(dst.join(watched)).expect("mkdir");
    let link = tmp.join(format!("attacker/l{trial}"));
    fs::create_dir_all(link.parent().expect("parent")).expect("mkdir");
    symlink(victim, &link).expect("symlink");
    let before = snapshot(victim);
    let attacker = Attacker::arm(&dst.join(watched), Trigger::Create, &dst.join(swap), &link);
    export(&dst);
    (attacker.swapped(), touched(&before, &snapshot(victim)))
}

/// A chain of `depth` directories of `name_len`-byte names (deeper than
/// `PATH_MAX`) through write, commit by move and by copy, init, export,
/// release and the collection of a dead builder's work dir.
fn deep_tree_lifecycle(name_len: usize, depth: usize) {
    let tmp = fast_tempdir();
    let store = quick(&tmp.path().join("store"));
    let mut a = store.new_object("a").expect("new");
    make_deep(a.tree(), name_len, depth);
    store.commit(&mut a, "a").expect("commit by move");
    check_deep(a.tree(), name_len, depth);

    store.commit(&mut a, "a2").expect("commit by copy");
    let a2 = store.get("a2").expect("get").expect("a2 exists");
    check_deep(a2.tree(), name_len, depth);

    let mut b = store.new_object("b").expect("new");
    b.init(&a).expect("init");
    check_deep(b.tree(), name_len, depth);

    let export = tmp.path().join("export");
    fs::create_dir(&export).expect("mkdir");
    a.export(&export).expect("export");
    check_deep(&export, name_len, depth);
    let diffs = osstore::tree::compare_trees(a.tree(), &export).expect("compare");
    assert!(
        diffs.is_empty(),
        "export differs: {:?}",
        &diffs[..diffs.len().min(5)]
    );

    let workdir = b.tree().parent().expect("work dir").to_path_buf();
    drop(b);
    assert!(!workdir.exists(), "release left the work dir");

    // The export becomes a dead builder's work dir (in tmp/, unlocked).
    let dead = osstore::tempdir::fresh_name(b"dead-", b"").unwrap();
    let dead = tmp.path().join("store/tmp").join(dead.to_str().unwrap());
    fs::create_dir(&dead).expect("mkdir");
    fs::rename(&export, dead.join("tree")).expect("rename");
    store.gc().expect("gc");
    assert!(!dead.exists(), "gc left the dead work dir");
}

#[test]
fn hostile_deep_tree_long_names() {
    // 20 levels of 250-byte names: 5,020 bytes of path.
    deep_tree_lifecycle(250, 20);
}

#[test]
fn hostile_deep_tree_5000_levels_bounded_descriptors() {
    // 5,000 levels of 1-byte names, with fewer descriptors allowed than
    // levels: a walk holding one per level fails.
    let _limit = FdLimit::lower_to(1024);
    deep_tree_lifecycle(1, 5000);
}

/// Sends one request to the server at `socket` as uid/gid 65534 (a child
/// that drops to it before running the client) and returns the reply.
fn request_as_nobody(socket: &Path, request: &str) -> String {
    use std::os::unix::process::CommandExt;
    const CLIENT: &str = "import socket, sys\n\
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n\
        s.connect(sys.argv[1])\n\
        s.send(sys.argv[2].encode())\n\
        sys.stdout.write(s.recv(1 << 20).decode())\n";
    let out = std::process::Command::new("python3")
        .args(["-c", CLIENT])
        .arg(socket)
        .arg(request)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run the client");
    assert!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 reply")
}

fn read_tree_at(target: &Path) -> String {
    format!(
        r#"{{"method": "read-tree-at", "object-id": "obj", "target": "{}", "subtree": "/"}}"#,
        target.display()
    )
}

/// A server on `socket` (mode 0666) admitting uid 65534, with `mount_roots`.
fn serve_nobody(
    store: &osstore::Store,
    socket: &Path,
    mount_roots: Option<Vec<PathBuf>>,
) -> osstore::server::Server {
    let options = osstore::server::ServerOptions {
        socket_path: Some(socket.to_path_buf()),
        socket_mode: 0o666,
        allowed_uids: Some(vec![65534]),
        mount_roots,
    };
    osstore::server::Server::start(store.clone(), options).expect("start")
}

#[test]
fn hostile_unprivileged_read_tree_at_confined() {
    use std::os::unix::fs::PermissionsExt;
    if common::skip_without_private_mounts("hostile_unprivileged_read_tree_at_confined") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let store = quick(&tmp.path().join("store"));
    let mut obj = store.new_object("obj").expect("new");
    fs::write(obj.tree().join("from-store"), b"x").expect("write");
    store.commit(&mut obj, "obj").expect("commit");
    let allowed = tmp.path().join("allowed");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(allowed.join("ok")).expect("mkdir");
    fs::create_dir_all(&outside).expect("mkdir");
    fs::write(outside.join("host-file"), b"host").expect("write");
    symlink(&outside, allowed.join("evil")).expect("symlink");
    let mounted_over = |dir: &Path| dir.join("from-store").exists();

    // Explicit mount roots.
    let socket = tmp.path().join("sock");
    let server = serve_nobody(&store, &socket, Some(vec![allowed.clone()]));
    for target in [
        outside.clone(),
        allowed.join("evil"),
        allowed.join("ok/../../outside"),
        allowed.clone(),
    ] {
        let reply = request_as_nobody(&socket, &read_tree_at(&target));
        assert!(reply.contains("\"error\""), "{target:?} accepted: {reply}");
    }
    assert!(!mounted_over(&outside), "mounted outside the allowed root");
    assert!(outside.join("host-file").exists());
    let reply = request_as_nobody(&socket, &read_tree_at(&allowed.join("ok")));
    assert!(
        reply.contains("\"path\""),
        "allowed target refused: {reply}"
    );
    assert!(
        mounted_over(&allowed.join("ok")),
        "allowed target not mounted"
    );
    server.stop().expect("stop");

    // No list, uids set: only below the server's own temp root.
    let socket = tmp.path().join("sock2");
    let server = serve_nobody(&store, &socket, None);
    let reply = request_as_nobody(&socket, &read_tree_at(&outside));
    assert!(reply.contains("\"error\""), "host path accepted: {reply}");
    assert!(!mounted_over(&outside), "mounted over a host path");
    let reply = request_as_nobody(
        &socket,
        r#"{"method": "mkdtemp", "prefix": "t-", "suffix": ""}"#,
    );
    let dir = reply
        .split('"')
        .nth(3)
        .unwrap_or_else(|| panic!("mkdtemp reply: {reply}"));
    let reply = request_as_nobody(&socket, &read_tree_at(Path::new(dir)));
    assert!(reply.contains("\"path\""), "mkdtemp dir refused: {reply}");
    assert!(mounted_over(Path::new(dir)), "mkdtemp dir not mounted");
    server.stop().expect("stop");
}

/// A caller built against 0.1's smaller `os_server_options_t` (without the
/// mount roots) still starts a server: the members it lacks are not read.
#[test]
fn hostile_server_options_of_0_1_size_accepted() {
    use osstore::ffi::server::{os_server_options_t, os_server_start_ex, os_server_stop};
    use osstore::ffi::store::{os_store_free, os_store_open};
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).expect("path");
    let (store_path, sock) = (c(&tmp.path().join("store")), c(&tmp.path().join("sock")));
    let mut store = std::ptr::null_mut();
    // SAFETY: valid arguments.
    assert_eq!(unsafe { os_store_open(store_path.as_ptr(), &mut store) }, 0);
    let options = os_server_options_t {
        struct_size: std::mem::offset_of!(os_server_options_t, mount_roots),
        socket_mode: 0,
        allowed_uids: std::ptr::null(),
        allowed_uids_len: 0,
        // Past the 0.1 struct: must not be looked at.
        mount_roots: std::ptr::dangling(),
        mount_roots_len: 7,
    };
    let mut server = std::ptr::null_mut();
    // SAFETY: valid arguments; `options` has struct_size readable bytes.
    let rc = unsafe { os_server_start_ex(store, sock.as_ptr(), &options, &mut server) };
    assert_eq!(rc, 0);
    assert!(!server.is_null());
    // SAFETY: a live server, then the store's last use.
    unsafe {
        os_server_stop(server);
        os_store_free(store);
    }
}

/// A cancelled export puts the destination back as it was; a directory of
/// the destination swapped for a symlink to an outside directory meanwhile
/// must not lead the clean-up there (it removed the outside directory's
/// entries, absent from its record of the destination's `a/s0`).
#[test]
fn hostile_cancelled_export_restore_stays_inside() {
    let (tmp, store, victim) = arena();
    let mut obj = store.new_object("src").expect("new");
    fill(&obj.tree().join("a/s0"), 2000, 0);
    store.commit(&mut obj, "src").expect("commit");
    attack("cancelled export", |trial| {
        // `a/s0` is merged into: recorded, and restored, by the cancellation.
        export_trial(tmp.path(), &victim, trial, "a/s0", "a", |dst| {
            // Goes on at the first report, cancels at any later one (the
            // last one at the latest).
            let mut reports = 0;
            let mut progress = |_: &osstore::tree::Progress| {
                reports += 1;
                reports == 1
            };
            let options = osstore::tree::CopyOptions {
                progress: Some(&mut progress),
                caller_owns: false,
            };
            let _ = obj.export_with(dst, options);
        })
    });
}

/// Renames a fresh hard link of `outside` over each entry created in `dir`
/// (`IN_CREATE`), until `stop` is set; returns how many it renamed.
fn link_over_created(
    dir: &Path,
    outside: &Path,
    links: &Path,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    use std::ffi::{CString, OsStr};
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: plain syscall without pointers.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    assert!(fd >= 0, "inotify_init1");
    let path = CString::new(dir.as_os_str().as_bytes()).expect("path");
    // SAFETY: `path` is NUL-terminated; `fd` is an inotify descriptor.
    let wd = unsafe { libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_CREATE) };
    assert!(wd >= 0, "inotify_add_watch");
    let (dir, outside, links) = (
        dir.to_path_buf(),
        outside.to_path_buf(),
        links.to_path_buf(),
    );
    std::thread::spawn(move || {
        let mut renamed = 0;
        let mut buf = vec![0u8; 64 * 1024];
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut pfd, 1, 50) } != 1 {
                continue;
            }
            // SAFETY: `buf` is valid for its length.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            let mut events = &buf[..usize::try_from(n).unwrap_or(0)];
            // struct inotify_event { int wd; u32 mask, cookie, len; char name[]; }
            while events.len() >= 16 {
                let len = u32::from_ne_bytes(events[12..16].try_into().expect("4 bytes")) as usize;
                let name = &events[16..16 + len];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(len)];
                events = &events[16 + len..];
                let link = links.join(format!("h{renamed}"));
                if fs::hard_link(&outside, &link).is_ok()
                    && fs::rename(&link, dir.join(OsStr::from_bytes(name))).is_ok()
                {
                    renamed += 1;
                }
            }
        }
        // SAFETY: the descriptor is ours and closed once.
        unsafe { libc::close(fd) };
        renamed
    })
}

/// Special files are created by name and their metadata set after: a hard
/// link of an outside file renamed over the new name meanwhile must not get
/// the copy's owner, mode or times (`NOFOLLOW` does not stop hard links).
#[test]
fn hostile_special_file_metadata_not_applied_through_hard_link() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !common::is_root() {
        eprintln!(
            "skipping hostile_special_file_metadata_not_applied_through_hard_link: needs root (chown)"
        );
        return;
    }
    let tmp = fast_tempdir();
    let (src, outside, links) = (
        tmp.path().join("src"),
        tmp.path().join("outside"),
        tmp.path().join("links"),
    );
    fs::create_dir(&src).expect("mkdir");
    fs::create_dir(&links).expect("mkdir");
    fs::write(&outside, b"outside").expect("write");
    for i in 0..300 {
        let fifo = src.join(format!("p{i}"));
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        std::os::unix::fs::chown(&fifo, Some(1234), Some(4321)).expect("chown");
        fs::set_permissions(&fifo, fs::Permissions::from_mode(0o4757)).expect("chmod");
        let old = nix::sys::time::TimeSpec::new(1_000_000, 0);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &fifo,
            &old,
            &old,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .expect("utimensat");
    }
    let meta = || {
        let m = fs::metadata(&outside).expect("stat outside");
        (m.uid(), m.gid(), m.mode(), m.mtime(), m.mtime_nsec())
    };
    let before = meta();
    let mut renamed = 0;
    for trial in 0..5 {
        let dst = tmp.path().join(format!("dst{trial}"));
        fs::create_dir(&dst).expect("mkdir");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let attacker = link_over_created(&dst, &outside, &links, stop.clone());
        let result = osstore::tree::copy_tree(&src, &dst);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        renamed += attacker.join().expect("attacker");
        if let Err(e) = result {
            assert!(
                [libc::ESTALE, libc::ENOENT].contains(&e.errno()),
                "copy failed otherwise: {e}"
            );
        }
        assert_eq!(
            meta(),
            before,
            "outside file's metadata changed by the copy"
        );
        if renamed > 0 {
            break;
        }
    }
    assert!(renamed > 0, "the attacker never renamed a link in");
}

/// An unprivileged client of a server with a world-writable mount root
/// renames its target directory out of the root and back while asking for a
/// mount on it: a mount made while the directory is outside would stay
/// there (a mount point cannot be renamed back). No mount may end up
/// outside the root.
#[test]
fn hostile_read_tree_at_target_renamed_out_of_root() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if common::skip_without_private_mounts("hostile_read_tree_at_target_renamed_out_of_root") {
        return;
    }
    /// Trials: each a target directory, a renamer and one request.
    const TRIALS: usize = 300;
    const CLIENT: &str = "import os, socket, sys\n\
        sock, mr, out, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])\n\
        for i in range(n):\n\
        \x20   d, o = f'{mr}/t{i}', f'{out}/t{i}'\n\
        \x20   os.mkdir(d)\n\
        \x20   pid = os.fork()\n\
        \x20   if pid == 0:\n\
        \x20       while True:\n\
        \x20           try:\n\
        \x20               os.rename(d, o)\n\
        \x20               os.rename(o, d)\n\
        \x20           except OSError:\n\
        \x20               pass\n\
        \x20   s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n\
        \x20   s.connect(sock)\n\
        \x20   s.send(('{\"method\": \"read-tree-at\", \"object-id\": \"obj\", \"target\": \"%s\", \"subtree\": \"/\"}' % d).encode())\n\
        \x20   print(s.recv(1 << 20).decode())\n\
        \x20   os.kill(pid, 9)\n\
        \x20   os.waitpid(pid, 0)\n";
    let tmp = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let store = quick(&tmp.path().join("store"));
    let mut obj = store.new_object("obj").expect("new");
    fs::write(obj.tree().join("from-store"), b"x").expect("write");
    store.commit(&mut obj, "obj").expect("commit");
    let (mr, out) = (tmp.path().join("mr"), tmp.path().join("out"));
    for d in [&mr, &out] {
        fs::create_dir(d).expect("mkdir");
        fs::set_permissions(d, fs::Permissions::from_mode(0o1777)).expect("chmod");
    }
    let socket = tmp.path().join("sock");
    let server = serve_nobody(&store, &socket, Some(vec![mr.clone()]));
    let client = std::process::Command::new("python3")
        .args(["-c", CLIENT])
        .arg(&socket)
        .arg(&mr)
        .arg(&out)
        .arg(TRIALS.to_string())
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run the client");
    assert!(
        client.status.success(),
        "client: {}",
        String::from_utf8_lossy(&client.stderr)
    );
    let replies = String::from_utf8_lossy(&client.stdout);
    let mounted = replies.matches("\"path\"").count();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let points: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .collect();
    let below = |dir: &Path| {
        let prefix = format!("{}/", dir.display());
        points.iter().filter(|p| p.starts_with(&prefix)).count()
    };
    let (inside, outside) = (below(&mr), below(&out));
    // Confined mounts: read-only, no set-id, no devices.
    let mr_prefix = format!("{}/", mr.display());
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.get(4).is_some_and(|p| p.starts_with(&mr_prefix)) {
            let options: Vec<&str> = fields[5].split(',').collect();
            for want in ["ro", "nosuid", "nodev"] {
                assert!(options.contains(&want), "not {want}: {line}");
            }
        }
    }
    server.stop().expect("stop");
    assert_eq!(outside, 0, "mounts outside the mount root");
    assert_eq!(
        inside, mounted,
        "each accepted request is a mount in the root"
    );
    assert!(mounted > 0, "no request was accepted: {replies}");
}

/// A regular file swapped for a fifo between the listing (or the stat) and
/// the open must not make the copy wait for a writer that never comes: the
/// source is opened without blocking, found not to be a regular file, and
/// copied as what it is now (or the copy fails on the changed entry). A
/// thread keeps exchanging every `f<i>` with a fifo while copies run; each
/// copy must end. (The timeout is a deadlock detector, not a time limit:
/// one copy takes milliseconds.)
#[test]
fn hostile_file_swapped_for_a_fifo_does_not_hang_the_copy() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, mpsc};

    const SWAPPED: usize = 100;
    let tmp = fast_tempdir();
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    for i in 0..SWAPPED {
        fs::write(src.join(format!("f{i}")), b"data").expect("write");
        nix::unistd::mkfifo(
            &src.join(format!("p{i}")),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .expect("mkfifo");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (src, stop) = (src.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for i in 0..SWAPPED {
                    nix::fcntl::renameat2(
                        nix::fcntl::AT_FDCWD,
                        &src.join(format!("f{i}")),
                        nix::fcntl::AT_FDCWD,
                        &src.join(format!("p{i}")),
                        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                    )
                    .expect("exchange");
                    swaps += 1;
                }
            }
            swaps
        })
    };
    let (done, finished) = mpsc::channel();
    let copies = {
        let tmp = tmp.path().to_path_buf();
        std::thread::spawn(move || {
            let mut failed = 0;
            for round in 0..30 {
                let dst = tmp.join(format!("dst{round}"));
                fs::create_dir(&dst).expect("mkdir");
                failed += usize::from(osstore::tree::copy_tree(&src, &dst).is_err());
            }
            done.send(failed).expect("send");
        })
    };
    let failed = finished.recv_timeout(std::time::Duration::from_secs(120));
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().expect("swapper");
    assert!(
        failed.is_ok(),
        "a copy hung on a fifo swapped in for a file"
    );
    copies.join().expect("copies");
    assert!(swaps > 0);
    println!(
        "30 copies while {swaps} exchanges ran; {} failed on a changed entry",
        failed.unwrap()
    );
}
