//! Push and pull through a real registry on 127.0.0.1 (Debian's
//! `docker-registry`, started and stopped by each test), with `skopeo` as
//! the independent client. Needs root for the fixture tree (chown, mknod);
//! skips with the reason where the packages are missing.

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/reliability.rs"]
mod reliability;
mod support;
#[allow(dead_code)] // the fixture serves several test crates
#[path = "../common/tree_fixture.rs"]
mod tree_fixture;

use std::io::BufReader;
use std::path::Path;
use std::process::Command;

use osstore::registry::{Compression, RegistryOptions, pull, push};
use osstore::tree::compare_trees;
use osstore::{Mode, Store};
use support::{Item, PASSWORD, Registry, USER, oci_layout, skopeo, skopeo_push_layout, tar_of};

fn skip(test: &str) -> bool {
    match support::unavailable() {
        Some(why) => {
            println!("SKIP {test}: {why}");
            true
        }
        None => false,
    }
}

/// Commits the full fixture (every kind of entry tar can carry: the socket
/// is left out) as `id`; returns its tree.
fn commit_fixture(store: &Store, id: &str) -> std::path::PathBuf {
    let mut obj = store.new_object(id).expect("new object");
    tree_fixture::build_full(obj.tree());
    std::fs::remove_file(obj.tree().join("special/socket")).expect("remove socket");
    store.commit(&mut obj, id).expect("commit");
    tree_of(store, id)
}

/// The committed tree of `id` (its real path, not the ref's).
fn tree_of(store: &Store, id: &str) -> std::path::PathBuf {
    std::fs::canonicalize(store.get(id).expect("lookup").expect("committed").tree())
        .expect("canonicalize")
}

fn assert_same(a: &Path, b: &Path) {
    let diffs = compare_trees(a, b).expect("compare");
    assert!(
        diffs.is_empty(),
        "trees differ: {}",
        diffs
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    );
}

fn opts() -> RegistryOptions {
    RegistryOptions::default()
}

#[test]
fn registry_round_trip_between_stores() {
    if skip("registry_round_trip_between_stores") {
        return;
    }
    let reg = Registry::start(false);
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (sa, sb) = (common::quick(a.path()), common::quick(b.path()));
    let tree = commit_fixture(&sa, "stage");
    let image = reg.image("builds/stage");
    let first = push(&sa, "stage", &image, &opts()).expect("push");
    assert_eq!(first.tag.as_deref(), Some("stage"));
    assert!(first.blobs_uploaded >= 2, "{first:?}");

    let pulled = pull(&sb, &format!("{image}:stage"), "copy", &opts()).expect("pull");
    assert_eq!(pulled.digest, first.digest);
    assert_same(&tree, &tree_of(&sb, "copy"));

    // Unchanged tree: nothing uploaded again.
    let again = push(&sa, "stage", &image, &opts()).expect("second push");
    assert_eq!(
        (again.blobs_uploaded, again.bytes_uploaded),
        (0, 0),
        "{again:?}"
    );
    assert_eq!(again.digest, first.digest);

    // Deterministic: the same tree in another store gives the same digest.
    let sc = common::quick(c.path());
    let mut obj = sc.new_object("stage").unwrap();
    obj.init(&sb.get("copy").unwrap().unwrap()).unwrap();
    sc.commit(&mut obj, "stage").unwrap();
    let from_c =
        push(&sc, "stage", &reg.image("builds/other"), &opts()).expect("push from another store");
    assert_eq!(from_c.digest, first.digest);

    // zstd layers round-trip too. (An object pushed before reuses its
    // recorded layers, so the zstd push is of a fresh copy, not built on a
    // base.)
    let z = RegistryOptions {
        compression: Compression::Zstd,
        ..opts()
    };
    let mut fresh = sc.new_object("z").unwrap();
    osstore::tree::copy_tree(&tree_of(&sc, "stage"), fresh.tree()).unwrap();
    sc.commit(&mut fresh, "z").unwrap();
    let zpush = push(&sc, "z", &format!("{image}:zstd"), &z).expect("zstd push");
    assert_eq!(zpush.layers, 1);
    let manifest = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{image}:zstd"),
    ]);
    assert!(manifest.contains("tar+zstd"), "{manifest}");
    pull(&sb, &format!("{image}@{}", zpush.digest), "zcopy", &opts()).expect("zstd pull");
    assert_same(&tree, &tree_of(&sb, "zcopy"));
}

#[test]
fn registry_skopeo_reads_what_osstore_pushed() {
    if skip("registry_skopeo_reads_what_osstore_pushed") {
        return;
    }
    let reg = Registry::start(false);
    let a = tempfile::tempdir().unwrap();
    let sa = common::quick(a.path());
    let tree = commit_fixture(&sa, "base-os");
    let image = reg.image("os/base:v1");
    let report = push(&sa, "base-os", &image, &opts()).expect("push");
    let inspect = skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ]);
    let json: serde_json::Value = serde_json::from_str(&inspect).expect("inspect json");
    assert_eq!(json["Digest"], report.digest);
    assert_eq!(json["Labels"]["org.osstore.id"], "base-os");
    assert_eq!(json["Layers"].as_array().map(Vec::len), Some(1));
    println!("skopeo inspect: {inspect}");

    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("layout");
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{image}"),
        &format!("oci:{}:v1", layout.display()),
    ]);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mdigest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let blob = |d: &str| layout.join("blobs/sha256").join(&d[7..]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&mdigest)).unwrap()).unwrap();
    let listing = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -tvzf {}/blobs/sha256/*  2>&1 | head -20",
            layout.display()
        ))
        .output()
        .unwrap();
    println!("{}", String::from_utf8_lossy(&listing.stdout));
    let root = out.path().join("root");
    std::fs::create_dir(&root).unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let out = Command::new("tar")
            .args([
                "-xzp",
                "--numeric-owner",
                "--xattrs",
                "--xattrs-include=*",
                "-C",
            ])
            .arg(&root)
            .arg("-f")
            .arg(blob(layer["digest"].as_str().unwrap()))
            .output()
            .expect("tar");
        assert!(
            out.status.success(),
            "tar -x: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_same(&tree, &root);
}

#[test]
fn registry_pulls_an_image_skopeo_pushed_with_whiteouts() {
    if skip("registry_pulls_an_image_skopeo_pushed_with_whiteouts") {
        return;
    }
    let reg = Registry::start(false);
    let work = tempfile::tempdir().unwrap();
    let lower = tar_of(&[
        Item::Dir(b"etc/"),
        Item::File(b"etc/keep", b"kept"),
        Item::File(b"etc/gone", b"removed by a whiteout"),
        Item::Dir(b"opaque/"),
        Item::File(b"opaque/old", b"hidden by an opaque whiteout"),
    ]);
    let upper = tar_of(&[
        Item::File(b"etc/.wh.gone", b""),
        Item::File(
            b"opaque/new",
            b"added in the same layer as the opaque whiteout",
        ),
        Item::File(b"opaque/.wh..wh..opq", b""),
        Item::Symlink(b"etc/link", b"keep"),
    ]);
    oci_layout(&work.path().join("layout"), "t", &[lower, upper]);
    let image = reg.image("third/party:t");
    skopeo_push_layout(&work.path().join("layout"), "t", &image);
    let store = common::quick(&work.path().join("store"));
    pull(&store, &image, "third", &opts()).expect("pull");
    let t = tree_of(&store, "third");
    assert_eq!(std::fs::read(t.join("etc/keep")).unwrap(), b"kept");
    assert!(!t.join("etc/gone").exists() && !t.join("etc/.wh.gone").exists());
    assert!(!t.join("opaque/old").exists() && !t.join("opaque/.wh..wh..opq").exists());
    assert!(t.join("opaque/new").exists());
    assert_eq!(
        std::fs::read_link(t.join("etc/link")).unwrap(),
        Path::new("keep")
    );
}

/// A tag that names an image index (several platforms): the pull takes the
/// manifest for this machine's platform, through the same client.
#[test]
fn registry_pulls_this_platform_from_an_image_index() {
    if skip("registry_pulls_this_platform_from_an_image_index") {
        return;
    }
    let reg = Registry::start(false);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    oci_layout(
        &layout,
        "single",
        &[tar_of(&[Item::File(b"platform", b"linux")])],
    );
    let single: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = &single["manifests"][0];
    let entry = |os: &str| {
        serde_json::json!({"mediaType": manifest["mediaType"], "digest": manifest["digest"],
                           "size": manifest["size"],
                           "platform": {"os": os, "architecture": "amd64"}})
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let mut ours = entry("linux");
    ours["platform"]["architecture"] = arch.into();
    // Another platform first: the pull must skip it.
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry("windows"), ours],
    })
    .to_string();
    let digest = support::sha256(index.as_bytes());
    std::fs::write(layout.join("blobs/sha256").join(&digest[7..]), &index).unwrap();
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest,
                       "size": index.len(),
                       "annotations": {"org.opencontainers.image.ref.name": "multi"}}],
    });
    std::fs::write(layout.join("index.json"), top.to_string()).unwrap();
    let image = reg.image("multi/arch:multi");
    skopeo_push_layout(&layout, "multi", &image);
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ]);
    assert!(raw.contains("image.index"), "the tag names an index: {raw}");
    let store = common::quick(&work.path().join("store"));
    let report = pull(&store, &image, "multi", &opts()).expect("pull through the index");
    assert_eq!(report.digest, manifest["digest"].as_str().unwrap());
    assert_eq!(
        std::fs::read(tree_of(&store, "multi").join("platform")).unwrap(),
        b"linux"
    );
}

fn nothing_committed(store_dir: &Path, id: &str) {
    let store = common::quick(store_dir);
    assert!(!store.contains(id).unwrap(), "{id} was committed");
    store.gc().expect("gc");
    assert_eq!(
        std::fs::read_dir(store_dir.join("objects"))
            .unwrap()
            .count(),
        0,
        "objects left"
    );
    assert_eq!(
        std::fs::read_dir(store_dir.join("tmp")).unwrap().count(),
        0,
        "tmp not reclaimed"
    );
}

#[test]
fn registry_tampered_blob_fails_the_pull() {
    if skip("registry_tampered_blob_fails_the_pull") {
        return;
    }
    let reg = Registry::start(false);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let sa = common::quick(a.path());
    let mut obj = sa.new_object("t").unwrap();
    std::fs::write(obj.tree().join("data"), tree_fixture::noise(1 << 20, 5)).unwrap();
    sa.commit(&mut obj, "t").unwrap();
    let image = reg.image("tamper/me:t");
    push(&sa, "t", &image, &opts()).expect("push");
    let inspect = skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ]);
    let json: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let layer = json["Layers"][0].as_str().unwrap();
    let file = reg.blob_file(layer);
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let sb = common::quick(b.path());
    let err = pull(&sb, &image, "t", &opts()).expect_err("tampered pull");
    assert_eq!(err.errno(), libc::EBADMSG, "{err}");
    assert!(err.message().contains("does not match"), "{err}");
    drop(sb);
    nothing_committed(b.path(), "t");
    let left: Vec<_> = std::fs::read_dir(b.path().join("registry/blobs"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "a bad blob was kept");
}

#[test]
fn registry_basic_auth_and_wrong_credentials() {
    if skip("registry_basic_auth_and_wrong_credentials") {
        return;
    }
    let reg = Registry::start(true);
    let work = tempfile::tempdir().unwrap();
    let store = common::quick(&work.path().join("store"));
    let mut obj = store.new_object("x").unwrap();
    std::fs::write(obj.tree().join("f"), b"secret stuff").unwrap();
    store.commit(&mut obj, "x").unwrap();
    let auth = |user: &str, pw: &str| {
        let path = work.path().join(format!("auth-{pw}.json"));
        let token = base64_encode(format!("{user}:{pw}").as_bytes());
        let key = reg.addr.clone();
        std::fs::write(
            &path,
            format!(r#"{{"auths":{{"{key}":{{"auth":"{token}"}}}}}}"#),
        )
        .unwrap();
        RegistryOptions {
            auth_file: Some(path),
            ..opts()
        }
    };
    let image = reg.image("private/x:1");
    let wrong =
        push(&store, "x", &image, &auth(USER, "not-the-password")).expect_err("wrong password");
    assert_eq!(wrong.errno(), libc::EACCES, "{wrong}");
    assert!(
        wrong.message().contains("401") && wrong.message().contains(&reg.addr),
        "{wrong}"
    );
    assert!(
        !wrong.message().contains("not-the-password"),
        "password in {wrong}"
    );
    let empty = work.path().join("none.json");
    std::fs::write(&empty, r#"{"auths":{}}"#).unwrap();
    let anon = pull(
        &store,
        &image,
        "y",
        &RegistryOptions {
            auth_file: Some(empty),
            ..opts()
        },
    )
    .expect_err("anonymous");
    assert!(anon.message().contains("no credentials"), "{anon}");

    let good = auth(USER, PASSWORD);
    push(&store, "x", &image, &good).expect("push with credentials");
    pull(&store, &image, "y", &good).expect("pull with credentials");
    assert_eq!(
        std::fs::read(tree_of(&store, "y").join("f")).unwrap(),
        b"secret stuff"
    );
}

fn base64_encode(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= c.len() {
                A[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

#[test]
fn registry_hostile_images_are_refused() {
    if skip("registry_hostile_images_are_refused") {
        return;
    }
    let reg = Registry::start(false);
    let work = tempfile::tempdir().unwrap();
    let outside = work.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let out = outside.to_str().unwrap().as_bytes().to_vec();
    let cases: Vec<(&str, Vec<Item>)> = vec![
        ("dotdot", vec![Item::File(b"../../escape", b"x")]),
        (
            "dotdot-inner",
            vec![Item::Dir(b"a/"), Item::File(b"a/../../escape", b"x")],
        ),
        ("absolute", vec![Item::File(b"/tmp/osstore-escape", b"x")]),
        (
            "symlink-abs-then-write",
            vec![
                Item::Symlink(b"link", &out),
                Item::File(b"link/pwned", b"x"),
            ],
        ),
        (
            "symlink-up-then-write",
            vec![
                Item::Symlink(b"up", b"../../../../../../.."),
                Item::File(b"up/pwned", b"x"),
            ],
        ),
        (
            "whiteout-dotdot",
            vec![Item::Dir(b"d/"), Item::File(b"d/.wh...", b"")],
        ),
        ("sparse-claim", vec![Item::SparseClaim(b"huge", 10 << 30)]),
    ];
    for (i, (name, items)) in cases.into_iter().enumerate() {
        let layout = work.path().join(format!("layout-{i}"));
        oci_layout(&layout, "t", &[tar_of(&items)]);
        let image = reg.image(&format!("hostile/{name}:t"));
        skopeo_push_layout(&layout, "t", &image);
        let dir = work.path().join(format!("store-{i}"));
        let store = common::quick(&dir);
        let err = pull(&store, &image, "h", &opts()).expect_err(name);
        assert_eq!(err.errno(), libc::EPERM, "{name}: {err}");
        assert!(err.message().contains("refused"), "{name}: {err}");
        drop(store);
        nothing_committed(&dir, "h");
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "{name} wrote outside"
        );
    }
    assert!(!Path::new("/tmp/osstore-escape").exists());
}

/// The helper process of the kill tests: a push or pull whose progress
/// callback stops it (forever) once `OSSTORE_REG_STOP_AT` bytes moved.
#[test]
#[ignore = "helper process of the kill tests"]
fn registry_transfer_helper() {
    let Some(store_dir) = reliability::env_path("OSSTORE_REG_STORE") else {
        return;
    };
    reliability::die_with_parent();
    let what = std::env::var("OSSTORE_REG_WHAT").unwrap();
    let image = std::env::var("OSSTORE_REG_IMAGE").unwrap();
    let stop_at = reliability::env_u64("OSSTORE_REG_STOP_AT", 1);
    let stop_blobs = reliability::env_u64("OSSTORE_REG_STOP_BLOBS", 0);
    let store = common::quick(&store_dir);
    let options = RegistryOptions {
        jobs: 1,
        progress: Some(Box::new(move |p| {
            if p.bytes_done >= stop_at && p.blobs_done >= stop_blobs {
                reliability::announce_ready();
                loop {
                    std::thread::park();
                }
            }
            true
        })),
        ..opts()
    };
    let result = if what == "push" {
        push(&store, "big", &image, &options).map(drop)
    } else {
        pull(&store, &image, "big", &options).map(drop)
    };
    panic!("the transfer ended before it was stopped: {result:?}");
}

/// Runs the helper and kills it once `stop_at` bytes and `stop_blobs`
/// blobs have moved.
fn kill_mid_transfer(what: &str, store: &Path, image: &str, stop_at: u64, stop_blobs: u64) {
    let mut child = reliability::helper("registry_transfer_helper")
        .env("OSSTORE_REG_STORE", store)
        .env("OSSTORE_REG_WHAT", what)
        .env("OSSTORE_REG_IMAGE", image)
        .env("OSSTORE_REG_STOP_AT", stop_at.to_string())
        .env("OSSTORE_REG_STOP_BLOBS", stop_blobs.to_string())
        .spawn()
        .expect("helper");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let ready = reliability::wait_ready(&mut out);
    let (killed, stderr) = reliability::kill_and_reap(child);
    assert!(
        ready && killed,
        "helper did not stop mid-transfer: {stderr}"
    );
}

#[test]
fn registry_killed_push_and_pull_resume() {
    if skip("registry_killed_push_and_pull_resume") {
        return;
    }
    let reg = Registry::start(false);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Two layers of incompressible data: a base pulled from a skopeo image
    // of two layers.
    let big = |seed| tree_fixture::noise(3 << 20, seed);
    let (d1, d2) = (big(1), big(2));
    let layout = a.path().join("layout");
    oci_layout(
        &layout,
        "t",
        &[
            tar_of(&[Item::File(b"one", &d1)]),
            tar_of(&[Item::File(b"two", &d2)]),
        ],
    );
    let image = reg.image("resume/pull:t");
    skopeo_push_layout(&layout, "t", &image);
    let total: u64 = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .filter(|&n| n > 1 << 20)
        .sum();

    // Pull killed halfway through the second layer (one at a time).
    let stop_at = total * 3 / 4;
    kill_mid_transfer("pull", b.path(), &image, stop_at, 0);
    let sb = common::quick(b.path());
    assert!(!sb.contains("big").unwrap(), "a killed pull committed");
    // A collection keeps what the killed pull downloaded, for the rerun.
    sb.gc().expect("gc");
    let rerun = pull(&sb, &image, "big", &opts()).expect("pull again");
    assert!(
        rerun.bytes_downloaded <= total - stop_at,
        "{rerun:?} of {total}"
    );
    assert_eq!(rerun.blobs_skipped, 1, "{rerun:?}");
    let t = tree_of(&sb, "big");
    assert_eq!(std::fs::read(t.join("one")).unwrap(), d1);
    assert_eq!(std::fs::read(t.join("two")).unwrap(), d2);

    // Push killed once its layer is up (before the config and manifest):
    // the rerun sends only those.
    let mut obj = sb.new_object("big2").unwrap();
    assert_eq!(obj.mode(), Mode::Write);
    std::fs::write(obj.tree().join("three"), big(3)).unwrap();
    sb.commit(&mut obj, "big").unwrap();
    drop(sb);
    let pushed = reg.image("resume/push:t");
    kill_mid_transfer("push", b.path(), &pushed, 1, 1);
    let sb = common::quick(b.path());
    let rerun = push(&sb, "big", &pushed, &opts()).expect("push again");
    assert_eq!(rerun.blobs_skipped, 1, "{rerun:?}");
    assert!(rerun.bytes_uploaded < 4096, "{rerun:?}");
    let inspect = skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{pushed}"),
    ]);
    assert!(inspect.contains(&rerun.digest), "{inspect}");
}

#[test]
fn registry_stage_on_a_base_pushes_one_layer_of_changes() {
    if skip("registry_stage_on_a_base_pushes_one_layer_of_changes") {
        return;
    }
    let reg = Registry::start(false);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let sa = common::quick(a.path());
    let base_tree = commit_fixture(&sa, "base");
    let base_push = push(&sa, "base", &reg.image("farm/base:1"), &opts()).expect("push base");

    // A stage built on the base: a changed file, a new one, a removed file,
    // a removed directory, a file that became a directory, and metadata.
    let base = sa.get("base").unwrap().unwrap();
    let mut stage = sa.new_object("stage").unwrap();
    stage.init(&base).unwrap();
    let t = stage.tree().to_path_buf();
    std::fs::write(t.join("dir/nested/deeper/file.txt"), b"changed\n").unwrap();
    std::fs::write(t.join("added"), b"new file").unwrap();
    std::fs::remove_file(t.join("empty_file")).unwrap();
    std::fs::remove_dir(t.join("empty_dir")).unwrap();
    std::fs::remove_file(t.join("large.bin")).unwrap();
    std::fs::create_dir(t.join("large.bin")).unwrap();
    stage.meta_set("build", r#"{"step":2}"#).unwrap();
    sa.commit(&mut stage, "stage").unwrap();
    let stage_tree = tree_of(&sa, "stage");
    assert!(!compare_trees(&base_tree, &stage_tree).unwrap().is_empty());

    let image = reg.image("farm/stage:1");
    let report = push(&sa, "stage", &image, &opts()).expect("push stage");
    assert_eq!(report.layers, 2, "{report:?}");
    assert!(
        report.bytes_uploaded < base_push.bytes_uploaded / 20,
        "{report:?} vs {base_push:?}"
    );

    // Another machine that has the base pulls only the stage's layer.
    let sb = common::quick(b.path());
    pull(&sb, &reg.image("farm/base:1"), "base", &opts()).expect("pull base");
    let pulled = pull(&sb, &image, "stage", &opts()).expect("pull stage");
    assert_eq!(pulled.blobs_skipped, 1, "{pulled:?}");
    assert_same(&stage_tree, &tree_of(&sb, "stage"));
    let got = sb.get("stage").unwrap().unwrap();
    assert_eq!(got.meta_get("build").unwrap(), r#"{"step":2}"#);
    assert_eq!(
        got.created().unwrap(),
        sa.get("stage").unwrap().unwrap().created().unwrap()
    );

    // And a machine without it gets the same tree from both layers.
    let c = tempfile::tempdir().unwrap();
    let sc = common::quick(c.path());
    pull(&sc, &image, "stage", &opts()).expect("pull stage alone");
    assert_same(&stage_tree, &tree_of(&sc, "stage"));
}

unsafe extern "C" fn count_progress(
    p: *const osstore::ffi::copy::os_progress_t,
    userdata: *mut std::ffi::c_void,
) -> std::ffi::c_int {
    // SAFETY: the test passes a pointer to an AtomicU64 that outlives the call.
    let calls = unsafe { &*(userdata as *const std::sync::atomic::AtomicU64) };
    // SAFETY: valid during the call, as the API promises.
    let p = unsafe { &*p };
    assert!(p.bytes_done <= p.bytes_total.max(p.bytes_done));
    calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    0
}

#[test]
fn registry_c_functions() {
    if skip("registry_c_functions") {
        return;
    }
    use osstore::ffi::registry::{
        OS_REGISTRY_INSECURE, os_registry_options_t, os_store_pull, os_store_push,
    };
    use osstore::ffi::{error::os_free, store::os_store_free, store::os_store_open};
    use std::ffi::{CStr, CString, c_char};
    use std::ptr::{null, null_mut};
    let reg = Registry::start(false);
    let dir = tempfile::tempdir().unwrap();
    let store = common::quick(&dir.path().join("a"));
    let mut obj = store.new_object("c").unwrap();
    std::fs::write(obj.tree().join("f"), b"from C").unwrap();
    store.commit(&mut obj, "c").unwrap();
    drop(store);
    let path = CString::new(dir.path().join("a").to_str().unwrap()).unwrap();
    let mut handle = null_mut();
    // SAFETY: valid C strings and out-pointer.
    assert_eq!(unsafe { os_store_open(path.as_ptr(), &mut handle) }, 0);
    let (id, image) = (
        CString::new("c").unwrap(),
        CString::new(reg.image("c/api:1")).unwrap(),
    );
    let calls = std::sync::atomic::AtomicU64::new(0);
    let mut options = os_registry_options_t {
        struct_size: size_of::<os_registry_options_t>(),
        flags: 0,
        auth_file: null(),
        progress: Some(count_progress),
        userdata: &calls as *const _ as *mut std::ffi::c_void,
    };
    let mut digest: *mut c_char = null_mut();
    // SAFETY: all pointers valid or NULL where allowed.
    unsafe {
        assert_eq!(
            os_store_push(handle, null(), image.as_ptr(), &options, null_mut()),
            -libc::EINVAL
        );
        assert_eq!(
            os_store_push(handle, id.as_ptr(), null(), null(), null_mut()),
            -libc::EINVAL
        );
        assert_eq!(
            os_store_push(null_mut(), id.as_ptr(), image.as_ptr(), null(), null_mut()),
            -libc::EINVAL
        );
        options.flags = 0x80;
        assert_eq!(
            os_store_push(handle, id.as_ptr(), image.as_ptr(), &options, null_mut()),
            -libc::EINVAL
        );
        options.flags = OS_REGISTRY_INSECURE;
        assert_eq!(
            os_store_push(handle, id.as_ptr(), image.as_ptr(), &options, &mut digest),
            0
        );
        let d = CStr::from_ptr(digest).to_str().unwrap().to_owned();
        assert!(d.starts_with("sha256:") && d.len() == 71, "{d}");
        os_free(digest.cast());
        assert!(calls.load(std::sync::atomic::Ordering::Relaxed) > 0);
        let mut name: *mut c_char = null_mut();
        let pulled = CString::new("c2").unwrap();
        assert_eq!(
            os_store_pull(handle, image.as_ptr(), pulled.as_ptr(), null(), &mut name),
            0
        );
        assert_eq!(CStr::from_ptr(name).to_bytes().len(), 36);
        os_free(name.cast());
        let missing = CString::new(reg.image("c/none:1")).unwrap();
        assert_eq!(
            os_store_pull(
                handle,
                missing.as_ptr(),
                pulled.as_ptr(),
                null(),
                null_mut()
            ),
            -libc::ENOENT
        );
        os_store_free(handle);
    }
}

/// What failed pulls leave for a second try is reclaimed by gc once nobody
/// touched it for a day, and so are the records of pulled objects that are
/// gone; fresh downloads stay. (No registry needed.)
#[test]
fn registry_gc_reclaims_stale_downloads_and_orphan_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::quick(dir.path());
    let blobs = dir.path().join("registry/blobs");
    let records = dir.path().join("registry/objects");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(&records).unwrap();
    let (stale, fresh) = (blobs.join("aa.partial"), blobs.join("bb"));
    std::fs::write(&stale, b"old").unwrap();
    std::fs::write(&fresh, b"new").unwrap();
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 24 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();
    let mut obj = store.new_object("kept").unwrap();
    std::fs::write(obj.tree().join("f"), b"x").unwrap();
    let name = store.commit(&mut obj, "kept").unwrap();
    let (live, orphan) = (
        records.join(format!("{name}.json")),
        records.join("00000000-0000-4000-8000-000000000000.json"),
    );
    std::fs::write(&live, b"{}").unwrap();
    std::fs::write(&orphan, b"{}").unwrap();

    store.gc().expect("gc");
    assert!(!stale.exists(), "a download untouched for two days stays");
    assert!(fresh.exists(), "a fresh download was removed");
    assert!(live.exists(), "the record of a live object was removed");
    assert!(!orphan.exists(), "the record of a gone object stays");
}
