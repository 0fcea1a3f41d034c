//! The commands that look at a store: info, ls, du, config, fsck, meta.

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use osstore::{Error, Result, Store};
use osstore_cli::args::{Config, Ls, Meta};

use crate::progress::Progress;

/// `bytes` in IEC units, e.g. "1.5 GiB".
pub fn human(bytes: u64) -> String {
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

/// Unix seconds as UTC, e.g. "2026-11-30T01:00:00Z".
fn time(seconds: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(seconds.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

pub fn info(store: &Store) -> Result<()> {
    let stat = store.stat()?;
    println!("store:        {}", store.path().display());
    for key in ["max-size", "low-water", "min-free"] {
        println!("{:<13} {}", format!("{key}:"), store.config_get(key)?);
    }
    println!("refs:         {}", stat.refs);
    println!("objects:      {}", stat.objects);
    println!("size:         {} ({} bytes)", human(stat.bytes), stat.bytes);
    println!(
        "pinned:       {} ({} bytes)",
        human(stat.pinned_bytes),
        stat.pinned_bytes
    );
    match stat.max_size {
        Some(max) => println!(
            "bound:        {} ({}% used)",
            human(max),
            stat.bytes.saturating_mul(100) / max.max(1)
        ),
        None => println!("bound:        unlimited"),
    }
    println!(
        "free space:   {} ({} bytes)",
        human(stat.fs_free),
        stat.fs_free
    );
    Ok(())
}

pub fn ls(store: &Store, args: &Ls) -> Result<()> {
    let list = store.list()?;
    if args.json {
        let list: Vec<_> = list
            .iter()
            .map(|o| {
                serde_json::json!({
                    "id": o.id, "name": o.name, "size": o.size, "files": o.files,
                    "created": o.created, "last_used": o.last_used, "pinned": o.pinned,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(());
    }
    println!(
        "{:<10}  {:>8}  {:<20}  {:<20}  {:<6}  ID",
        "SIZE", "FILES", "CREATED", "LAST USE", "PINNED"
    );
    for o in &list {
        println!(
            "{:<10}  {:>8}  {:<20}  {:<20}  {:<6}  {}",
            human(o.size),
            o.files,
            time(o.created),
            time(o.last_used),
            if o.pinned { "yes" } else { "no" },
            o.id
        );
    }
    Ok(())
}

pub fn du(store: &Store) -> Result<()> {
    let mut list = store.list()?;
    list.sort_by(|a, b| a.id.cmp(&b.id));
    let mut objects = HashMap::new();
    for o in &list {
        println!("{}\t{}", human(o.size), o.id);
        objects.insert(o.name.as_str(), o.size);
    }
    println!("{}\ttotal", human(objects.values().sum()));
    Ok(())
}

pub fn config(store: &Store, args: &Config) -> Result<()> {
    match args {
        Config::Get { key } => println!("{}", store.config_get(key)?),
        Config::Set { key, value } => {
            store.config_set(key, value)?;
            println!("{key} = {}", store.config_get(key)?);
        }
    }
    Ok(())
}

pub fn fsck(store: &Store) -> Result<()> {
    let progress = Progress::start("checking the store");
    let report = store.fsck()?;
    progress.finish("done");
    for problem in &report.problems {
        println!("{problem}");
    }
    println!(
        "{} refs, {} objects checked: {}",
        report.refs,
        report.objects,
        match report.problems.len() {
            0 => "healthy".to_string(),
            1 => "1 problem".to_string(),
            n => format!("{n} problems"),
        }
    );
    if report.problems.is_empty() {
        Ok(())
    } else {
        Err(Error::new(libc::EIO, "the store has problems (see above)"))
    }
}

pub fn meta(store: &Store, args: &Meta) -> Result<()> {
    let object = store
        .get(&args.id)?
        .ok_or_else(|| Error::new(libc::ENOENT, format!("no object {:?}", args.id)))?;
    match &args.key {
        Some(key) => println!("{}", object.meta_get(key)?),
        None => {
            for key in object.meta_keys()? {
                println!("{key}\t{}", object.meta_get(&key)?);
            }
        }
    }
    Ok(())
}
