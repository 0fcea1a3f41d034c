//! `make bench`'s registry rows: push and pull of the 20k-file bench tree
//! through a `docker-registry` on 127.0.0.1, against the usual way done by
//! hand (`tar | gzip -6` into an OCI layout + `skopeo copy`, and
//! `skopeo copy` + `tar -x`). Appends its rows to the results file.
//!
//! Usage: registry-bench --gen OSSTORE-BENCH --append RESULTS.md [--quick]

#[allow(dead_code)] // the tests' helpers serve the bench too
#[path = "../../../../tests/registry/support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use osstore::registry::{RegistryOptions, pull, push};
use osstore::{OpenOptions, Store};
use support::Registry;

fn quick_store(path: &Path) -> Store {
    Store::open_with(
        path,
        OpenOptions {
            durable: false,
            ..OpenOptions::default()
        },
    )
    .expect("open store")
}

fn sh(script: &str) {
    let status = Command::new("bash")
        .arg("-c")
        .arg(script)
        .status()
        .expect("bash");
    assert!(status.success(), "failed: {script}");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// The usual way by hand: one gzip layer of the tree in an OCI layout, then
/// `skopeo copy` to the registry.
fn reference_push(tree: &Path, work: &Path, image: &str) {
    let layout = work.join("layout");
    let _ = std::fs::remove_dir_all(&layout);
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    sh(&format!(
        "cd '{}' && tar -cf - . | tee >(sha256sum | cut -d' ' -f1 > '{w}/diffid') | gzip -6 > '{w}/layer.gz'; wait",
        tree.display(),
        w = work.display()
    ));
    let diff_id = format!(
        "sha256:{}",
        std::fs::read_to_string(work.join("diffid")).unwrap().trim()
    );
    let gz = work.join("layer.gz");
    let sum = Command::new("sha256sum").arg(&gz).output().unwrap();
    let hex = String::from_utf8_lossy(&sum.stdout)
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    let size = std::fs::metadata(&gz).unwrap().len();
    std::fs::rename(&gz, layout.join("blobs/sha256").join(&hex)).unwrap();
    let put = |bytes: &[u8]| {
        let d = support::sha256(bytes);
        std::fs::write(layout.join("blobs/sha256").join(&d[7..]), bytes).unwrap();
        (d, bytes.len())
    };
    let config = serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).to_string();
    let (cd, cs) = put(config.as_bytes());
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{hex}"), "size": size}]})
    .to_string();
    let (md, ms) = put(manifest.as_bytes());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": md, "size": ms, "annotations": {"org.opencontainers.image.ref.name": "t"}}]});
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    support::skopeo_push_layout(&layout, "t", image);
}

/// The usual way by hand: `skopeo copy` to an OCI layout, then `tar -x` of
/// its layers.
fn reference_pull(image: &str, work: &Path) {
    let (layout, root) = (work.join("pulled"), work.join("root"));
    let _ = std::fs::remove_dir_all(&layout);
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    support::skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{image}"),
        &format!("oci:{}:t", layout.display()),
    ]);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| layout.join("blobs/sha256").join(&d[7..]);
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    for l in m["layers"].as_array().unwrap() {
        sh(&format!(
            "tar -xzpf '{}' --numeric-owner --xattrs --xattrs-include='*' -C '{}'",
            blob(l["digest"].as_str().unwrap()).display(),
            root.display()
        ));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let (gen_bin, results) = (
        arg("--gen").expect("--gen"),
        PathBuf::from(arg("--append").expect("--append")),
    );
    let quick = args.iter().any(|a| a == "--quick");
    if let Some(why) = support::unavailable() {
        println!("registry rows skipped: {why}");
        return;
    }
    let (rounds, nfiles) = if quick { (1, 2000) } else { (3, 20000) };
    let work = tempfile::tempdir().unwrap();
    let store = quick_store(&work.path().join("store"));
    let mut obj = store.new_object("base").unwrap();
    sh(&format!(
        "'{gen_bin}' --gen '{}' {nfiles} > /dev/null",
        obj.tree().display()
    ));
    store.commit(&mut obj, "base").unwrap();
    let tree = std::fs::canonicalize(store.get("base").unwrap().unwrap().tree()).unwrap();
    let opts = RegistryOptions::default();
    let (mut ours, mut theirs, mut stage_t, mut pull_t, mut ref_pull_t) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut full_bytes, mut stage_bytes, mut second_blobs, mut changed) = (0, 0, 0, 0);
    let (mut changed_bytes, mut tree_bytes) = (0u64, 0u64);
    let mut faithful = true;
    for round in 0..=rounds {
        let reg = Registry::start(false);
        let image = reg.image("bench/base:t");
        let _ = std::fs::remove_dir_all(work.path().join("store/registry"));
        let t = Instant::now();
        let full = push(&store, "base", &image, &opts).expect("push");
        let ours_s = secs(t);
        let t = Instant::now();
        reference_push(&tree, work.path(), &reg.image("bench/ref:t"));
        let theirs_s = secs(t);
        let second = push(&store, "base", &image, &opts).expect("second push");
        // A stage that changes 1 % of the base's files.
        let base = store.get("base").unwrap().unwrap();
        let mut stage = store.new_object("stage").unwrap();
        stage.init(&base).unwrap();
        let files: Vec<PathBuf> = walk_files(stage.tree());
        changed = files.len() / 100;
        tree_bytes = files
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .sum();
        changed_bytes = 0;
        for f in files.iter().step_by(100).take(changed) {
            changed_bytes += std::fs::metadata(f).unwrap().len();
            let mut data = std::fs::read(f).unwrap();
            data.iter_mut()
                .take(64)
                .for_each(|b| *b = b.wrapping_add(1));
            std::fs::write(f, data).unwrap();
        }
        store.commit(&mut stage, "stage").unwrap();
        let t = Instant::now();
        let staged = push(&store, "stage", &reg.image("bench/stage:t"), &opts).expect("stage push");
        let stage_s = secs(t);
        // Pulls into a fresh store (another machine) and the reference.
        let other = work.path().join(format!("other-{round}"));
        let t = Instant::now();
        let pulled_store = quick_store(&other);
        pull(&pulled_store, &image, "base", &opts).expect("pull");
        let pull_s = secs(t);
        let t = Instant::now();
        reference_pull(&reg.image("bench/ref:t"), work.path());
        let ref_pull_s = secs(t);
        if round == 0 {
            let pulled =
                std::fs::canonicalize(pulled_store.get("base").unwrap().unwrap().tree()).unwrap();
            faithful = osstore::tree::compare_trees(&tree, &pulled)
                .unwrap()
                .is_empty();
            continue; // warm-up
        }
        drop(pulled_store);
        let _ = std::fs::remove_dir_all(&other);
        ours.push(ours_s);
        theirs.push(theirs_s);
        stage_t.push(stage_s);
        pull_t.push(pull_s);
        ref_pull_t.push(ref_pull_s);
        full_bytes = full.bytes_uploaded;
        stage_bytes = staged.bytes_uploaded;
        second_blobs = second.blobs_uploaded;
    }
    let (o, r, s, p, rp) = (
        median(ours),
        median(theirs),
        median(stage_t),
        median(pull_t),
        median(ref_pull_t),
    );
    let yes = |ok: bool| if ok { "yes" } else { "**no**" };
    let rows = format!(
        "\n## Registry rows (bench/compare/src/bin/registry-bench.rs)\n\n\
         The bench tree ({nfiles} files) pushed to and pulled from a `docker-registry` on 127.0.0.1 (plain HTTP, filesystem storage in the bench's temp dir), a fresh registry each round; medians of {rounds} rounds after a warm-up round.\n\n\
         | Row | One op | Reference | osstore | Ratio | Target | Met |\n| --- | --- | --- | --- | --- | --- | --- |\n\
         | push, 20k tree, empty registry | `push` (walk, tar, gzip -6, sha256, HEAD, upload) vs `tar -cf - . \\| gzip -6` into an OCI layout + `skopeo copy oci:... docker://...` | {r:.2} s | {o:.2} s | {:.2} | <= 1.0 | {} |\n\
         | push of a stage with 1 % of the files changed ({changed} files, every 100th, holding {:.1} % of the tree's file bytes) | bytes uploaded vs the full push (base layer already there: one layer of changes) | {full_bytes} B | {stage_bytes} B | {:.4} | <= 0.05 | {} |\n\
         | the same push, time | time vs the full push | {o:.2} s | {s:.2} s | {:.2} | <= 0.2 | {} |\n\
         | pull, 20k tree, into a fresh store | `pull` (download, verify, extract, commit) vs `skopeo copy docker://... oci:...` + `tar -x` of its layers; pulled tree faithful (compare_trees): {} | {rp:.2} s | {p:.2} s | {:.2} | <= 1.0 | {} |\n\
         | second push of an unchanged tree | blobs uploaded | - | {second_blobs} | - | 0 | {} |\n",
        o / r,
        yes(o <= r),
        100.0 * changed_bytes as f64 / tree_bytes.max(1) as f64,
        stage_bytes as f64 / full_bytes as f64,
        yes(stage_bytes * 20 <= full_bytes),
        s / o,
        yes(s <= 0.2 * o),
        if faithful { "faithful" } else { "NOT faithful" },
        p / rp,
        yes(p <= rp),
        yes(second_blobs == 0),
    );
    print!("{rows}");
    let mut text = std::fs::read_to_string(&results).unwrap_or_default();
    if let Some(i) = text.find("\n## Registry rows") {
        let end = text[i + 1..]
            .find("\n## ")
            .map_or(text.len(), |j| i + 1 + j);
        text.replace_range(i..end, "");
    }
    text.push_str(&rows);
    std::fs::write(&results, text).unwrap();
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            out.extend(walk_files(&p));
        } else if m.is_file() && m.len() > 0 {
            out.push(p);
        }
    }
    out
}
