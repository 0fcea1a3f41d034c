//! Helpers for the reliability tests (tests/crash.rs, tests/concurrency.rs,
//! tests/faults.rs): trees that carry a manifest of their own contents, a
//! check that every ref of a store names such a complete tree, a small
//! deterministic random generator, and helper processes that are this test
//! binary run again (fork+exec, never a bare fork of a threaded process).
#![allow(dead_code)] // each test crate uses a different subset

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

/// Name of the manifest file at the top of every test tree.
pub const MANIFEST: &str = "MANIFEST";
/// The line a helper process prints once it is at work.
pub const READY: &str = "OSSTORE-HELPER-READY";

/// splitmix64: small, fast, and reproducible from a printed seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A seed from the clock and the pid, for a run to print.
    pub fn fresh_seed() -> u64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        nanos ^ (u64::from(std::process::id()) << 32)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// FNV-1a, 64 bits: enough to tell a truncated or mixed-up file.
pub fn fnv64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// Fills the empty directory `dir` with a small random tree for `id`:
/// files of random sizes in nested directories, a symlink and a hard link,
/// and last the manifest that lists all of them. `max_file` bounds the size
/// of each file.
pub fn fill_tree(dir: &Path, id: &str, rng: &mut Rng, max_file: usize) -> std::io::Result<()> {
    let mut manifest = format!("id {id}\n");
    fs::create_dir_all(dir.join("d0/d1"))?;
    let files = 1 + rng.below(6) as usize;
    for i in 0..files {
        let rel = match i % 3 {
            0 => format!("f{i}"),
            1 => format!("d0/f{i}"),
            _ => format!("d0/d1/f{i}"),
        };
        let seed = rng.next_u64();
        let data = content(seed, rng.below(max_file as u64 + 1) as usize);
        fs::write(dir.join(&rel), &data)?;
        manifest.push_str(&format!(
            "file {rel} {} {:016x}\n",
            data.len(),
            fnv64(&data)
        ));
    }
    std::os::unix::fs::symlink("f0", dir.join("link"))?;
    manifest.push_str("symlink link f0\n");
    fs::hard_link(dir.join("f0"), dir.join("d0/hard"))?;
    manifest.push_str("hardlink d0/hard f0\n");
    // Written last, but the tree is only committed once complete anyway: a
    // ref must never name a tree whose manifest disagrees with it.
    fs::write(dir.join(MANIFEST), manifest)
}

/// Checks that `dir` is a complete tree for `id`: its manifest names `id`,
/// and the tree holds exactly what the manifest lists, with the right
/// contents.
pub fn check_tree(dir: &Path, id: &str) -> Result<(), String> {
    let manifest = fs::read_to_string(dir.join(MANIFEST))
        .map_err(|e| format!("{}: no readable manifest: {e}", dir.display()))?;
    let mut expected: BTreeMap<String, &str> = BTreeMap::new();
    expected.insert(MANIFEST.into(), "manifest");
    expected.insert("d0".into(), "dir");
    expected.insert("d0/d1".into(), "dir");
    let mut lines = manifest.lines();
    if lines.next() != Some(&format!("id {id}")) {
        return Err(format!(
            "{}: manifest is not for {id:?}: {manifest:?}",
            dir.display()
        ));
    }
    for line in lines {
        let fields: Vec<&str> = line.split(' ').collect();
        match fields.as_slice() {
            ["file", rel, len, hash] => {
                let data =
                    fs::read(dir.join(rel)).map_err(|e| format!("{}/{rel}: {e}", dir.display()))?;
                let got = format!("{} {:016x}", data.len(), fnv64(&data));
                if got != format!("{len} {hash}") {
                    return Err(format!(
                        "{}/{rel}: expected {len} {hash}, found {got}",
                        dir.display()
                    ));
                }
                expected.insert((*rel).into(), "file");
            }
            ["symlink", rel, target] => {
                let got = fs::read_link(dir.join(rel))
                    .map_err(|e| format!("{}/{rel}: {e}", dir.display()))?;
                if got != Path::new(target) {
                    return Err(format!(
                        "{}/{rel}: links to {}, not {target}",
                        dir.display(),
                        got.display()
                    ));
                }
                expected.insert((*rel).into(), "symlink");
            }
            ["hardlink", rel, to] => {
                let a = fs::symlink_metadata(dir.join(rel))
                    .map_err(|e| format!("{}/{rel}: {e}", dir.display()))?;
                let b = fs::symlink_metadata(dir.join(to))
                    .map_err(|e| format!("{}/{to}: {e}", dir.display()))?;
                if a.ino() != b.ino() {
                    return Err(format!("{}/{rel}: not a hard link of {to}", dir.display()));
                }
                expected.insert((*rel).into(), "hardlink");
            }
            _ => return Err(format!("{}: bad manifest line {line:?}", dir.display())),
        }
    }
    let mut found = Vec::new();
    walk(dir, Path::new(""), &mut found).map_err(|e| format!("{}: {e}", dir.display()))?;
    let expected: Vec<String> = expected.into_keys().collect();
    found.sort();
    if found != expected {
        return Err(format!(
            "{}: entries {found:?} differ from the manifest's {expected:?}",
            dir.display()
        ));
    }
    Ok(())
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let path = rel.join(entry.file_name());
        out.push(path.to_string_lossy().into_owned());
        if entry.file_type()?.is_dir() {
            walk(root, &path, out)?;
        }
    }
    Ok(())
}

/// Checks every ref of the store at `root`: a link `../objects/<name>` to
/// an existing object whose tree is complete for the ref's id. Returns the
/// refs with the object names they point at.
pub fn check_refs(root: &Path) -> Result<BTreeMap<String, String>, String> {
    check_refs_with(root, str::to_owned)
}

/// [`check_refs`] for stores where a ref's tree was built for another id
/// (a snapshot): `built_for` maps a ref's id to the id in its manifest.
pub fn check_refs_with(
    root: &Path,
    built_for: impl Fn(&str) -> String,
) -> Result<BTreeMap<String, String>, String> {
    let mut refs = BTreeMap::new();
    let dir = root.join("refs");
    for entry in fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let id = entry.file_name().to_string_lossy().into_owned();
        let target =
            fs::read_link(entry.path()).map_err(|e| format!("ref {id}: not a link: {e}"))?;
        let name = target
            .strip_prefix("../objects")
            .ok()
            .and_then(|n| n.to_str())
            .filter(|n| uuid::Uuid::parse_str(n).is_ok())
            .ok_or_else(|| format!("ref {id}: bad target {}", target.display()))?
            .to_owned();
        let object = root.join("objects").join(&name);
        if !object.is_dir() {
            return Err(format!("ref {id} dangles: {} is missing", object.display()));
        }
        check_tree(&object, &built_for(&id)).map_err(|e| format!("ref {id}: {e}"))?;
        refs.insert(id, name);
    }
    Ok(refs)
}

/// Names in a directory, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// This test binary run again to execute only the ignored test `helper`
/// (a helper process, which returns at once unless its environment says
/// what to do). Output is piped.
pub fn helper(helper: &str) -> Command {
    let exe = std::env::current_exe().expect("current test binary");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        helper,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

/// Waits until the helper prints [`READY`]; `false` if it ended before.
pub fn wait_ready(out: &mut BufReader<ChildStdout>) -> bool {
    let mut line = String::new();
    loop {
        line.clear();
        match out.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            // The harness may have printed "test <name> ... " on the same line.
            Ok(_) if line.trim_end().ends_with(READY) => return true,
            Ok(_) => {}
        }
    }
}

/// Makes this helper process die with the test thread that started it, so
/// that a helper which loops until told to stop never outlives a failed
/// test. Call it first thing in such a helper.
pub fn die_with_parent() {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .expect("prctl(PR_SET_PDEATHSIG)");
}

/// Signals readiness from a helper process.
pub fn announce_ready() {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{READY}");
    let _ = out.flush();
}

/// Kills `child` with SIGKILL and reaps it; returns its stderr and whether
/// it died of the signal (rather than exiting on its own, e.g. after a
/// failed check).
pub fn kill_and_reap(child: Child) -> (bool, String) {
    // The pid is our unreaped child, so it cannot have been reused; it may
    // have exited already, which the status tells.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let out = child.wait_with_output().expect("reap helper");
    use std::os::unix::process::ExitStatusExt;
    let killed = out.status.signal() == Some(libc::SIGKILL);
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    if !killed {
        text.push_str(&format!(
            "\n[status {:?}; stdout: {}]",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    (killed, text)
}

/// `path` as a `PathBuf` from an environment variable, or `None`.
pub fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).map(PathBuf::from)
}

/// An environment variable as a number, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
