//! One function per command.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::{SigSet, Signal};
use osstore::server::{Server, ServerOptions};
use osstore::{Error, Result, Store};
use osstore_cli::args::{Export, Ls, Serve};

use crate::progress::Progress;

/// The refs of the store, sorted by id, each with the object it names.
fn refs(store: &Store) -> Result<Vec<(String, String)>> {
    let dir = store.path().join("refs");
    let entries = fs::read_dir(&dir).map_err(|e| Error::path("cannot list", &dir, e))?;
    let mut refs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::path("cannot list", &dir, e))?;
        let Ok(id) = entry.file_name().into_string() else {
            continue; // not an id: ids are UTF-8
        };
        let target = fs::read_link(entry.path()).unwrap_or_default();
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        refs.push((id, name));
    }
    refs.sort();
    Ok(refs)
}

pub fn ls(store: &Store, args: &Ls) -> Result<()> {
    let refs = refs(store)?;
    if args.json {
        let list: Vec<_> = refs
            .iter()
            .map(|(id, name)| serde_json::json!({ "id": id, "name": name }))
            .collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        for (id, name) in &refs {
            println!("{id}\t{name}");
        }
    }
    Ok(())
}

/// Disk space taken by the tree at `root`: allocated blocks of every inode
/// not counted yet in `seen` (hard links and trees shared between refs
/// count once).
fn measure(root: &Path, seen: &mut HashSet<(u64, u64)>) -> Result<u64> {
    let mut bytes = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let meta = fs::symlink_metadata(&dir).map_err(|e| Error::path("cannot stat", &dir, e))?;
        if seen.insert((meta.dev(), meta.ino())) {
            bytes += meta.blocks() * 512;
        }
        let entries = fs::read_dir(&dir).map_err(|e| Error::path("cannot list", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::path("cannot list", &dir, e))?;
            let path = entry.path();
            let meta = entry
                .metadata()
                .map_err(|e| Error::path("cannot stat", &path, e))?;
            if meta.is_dir() {
                dirs.push(path);
            } else if seen.insert((meta.dev(), meta.ino())) {
                bytes += meta.blocks() * 512;
            }
        }
    }
    Ok(bytes)
}

pub fn du(store: &Store) -> Result<()> {
    let progress = Progress::start("measuring the store");
    let mut rows = Vec::new();
    for (id, name) in refs(store)? {
        let tree: PathBuf = store.path().join("objects").join(&name);
        rows.push((id, measure(&tree, &mut HashSet::new())?));
    }
    let total = measure(&store.path().join("objects"), &mut HashSet::new())?;
    progress.finish("done");
    for (id, bytes) in &rows {
        println!("{}\t{id}", human(*bytes));
    }
    println!("{}\ttotal (objects/)", human(total));
    Ok(())
}

pub fn gc(store: &Store) -> Result<()> {
    let progress = Progress::start("collecting garbage");
    let report = store.gc()?;
    progress.finish("done");
    println!("removed {} entries", report.removed);
    Ok(())
}

pub fn export(store: &Store, args: &Export) -> Result<()> {
    let object = store
        .get(&args.id)?
        .ok_or_else(|| Error::new(libc::ENOENT, format!("no object {:?}", args.id)))?;
    let progress = Progress::start(format!("exporting {} to {}", args.id, args.dir.display()));
    object.export(&args.dir)?;
    progress.finish("done");
    Ok(())
}

pub fn serve(store: Store, args: Serve) -> Result<()> {
    // Blocked before the server's thread starts, so that it inherits the
    // mask and the signals wait for sigwait below.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGHUP);
    signals
        .thread_block()
        .map_err(|e| Error::sys("cannot block signals", e))?;
    let server = Server::start(
        store,
        ServerOptions {
            socket_path: args.socket,
            ..ServerOptions::default()
        },
    )?;
    println!("{}", server.socket_path().display());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let signal = signals
        .wait()
        .map_err(|e| Error::sys("cannot wait for a signal", e))?;
    eprintln!("osstore: {signal}: stopping the server");
    server.stop()
}

/// `bytes` in IEC units, e.g. "1.5 GiB".
fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
