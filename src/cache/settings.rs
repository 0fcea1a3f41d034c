//! The store's settings file: `max-size`, `low-water`, `min-free`, with a
//! format version.
//!
//! The file (`<store>/osstore-settings.json`) is one JSON object. It is
//! replaced atomically (written under a temporary name, flushed, renamed
//! over the old one) while the store's root directory is locked, so a
//! reader sees the old settings or the new ones and two writers never lose
//! each other's change. Keys this version does not know are kept as they
//! are. A file whose `format` is newer than [`FORMAT`] is refused with
//! `ENOTSUP` before anything is changed.

use std::io::Write;
use std::os::fd::BorrowedFd;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::lock::DirLock;

/// Name of the settings file in the store's root.
pub const FILE: &str = "osstore-settings.json";
const FILE_C: &std::ffi::CStr = c"osstore-settings.json";
/// The settings format this library reads and writes.
pub const FORMAT: u64 = 1;
const FORMAT_KEY: &str = "format";

/// The settings that the store acts on, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Bound of the total size; `None` for unlimited.
    pub max_size: Option<u64>,
    /// Percent of `max_size` that an eviction brings the total down to.
    pub low_water: u64,
    /// Free space to keep on the store's filesystem.
    pub min_free: MinFree,
}

/// The `min-free` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinFree {
    /// An absolute number of bytes.
    Bytes(u64),
    /// A percentage of the filesystem's size.
    Percent(u64),
}

impl MinFree {
    /// The bytes to keep free on a filesystem of `fs_size` bytes.
    pub fn bytes(self, fs_size: u64) -> u64 {
        match self {
            MinFree::Bytes(b) => b,
            MinFree::Percent(p) => (u128::from(fs_size) * u128::from(p) / 100) as u64,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_size: None,
            low_water: 90,
            min_free: MinFree::Percent(5),
        }
    }
}

/// The keys, with their accepted forms for messages.
const KEYS: [(&str, &str); 3] = [
    (
        "max-size",
        "a number of bytes with an optional unit (kB KiB MB MiB GB GiB TB TiB), or \"unlimited\"",
    ),
    ("low-water", "a percentage of max-size from 1 to 100"),
    (
        "min-free",
        "a number of bytes with an optional unit (kB KiB MB MiB GB GiB TB TiB), or N% of the filesystem (0-100)",
    ),
];

fn accepted(key: &str) -> Result<&'static str> {
    KEYS.iter()
        .find(|(k, _)| *k == key)
        .map(|(_, forms)| *forms)
        .ok_or_else(|| {
            Error::invalid(format!(
                "unknown setting {key:?}: the settings are max-size, low-water and min-free"
            ))
        })
}

/// The canonical form of `value` for `key`; `EINVAL` naming the accepted
/// forms when either is bad.
pub fn canonical(key: &str, value: &str) -> Result<String> {
    let forms = accepted(key)?;
    let bad = || Error::invalid(format!("bad value {value:?} for {key}: expected {forms}"));
    let v = value.trim();
    match key {
        "max-size" if v == "unlimited" => Ok("unlimited".into()),
        "max-size" => parse_bytes(v).map(|b| b.to_string()).ok_or_else(bad),
        "low-water" => {
            let n: u64 = v
                .strip_suffix('%')
                .unwrap_or(v)
                .trim_end()
                .parse()
                .map_err(|_| bad())?;
            if (1..=100).contains(&n) {
                Ok(n.to_string())
            } else {
                Err(bad())
            }
        }
        _ => match v.strip_suffix('%') {
            Some(p) => match p.trim_end().parse::<u64>() {
                Ok(n) if n <= 100 => Ok(format!("{n}%")),
                _ => Err(bad()),
            },
            None => parse_bytes(v).map(|b| b.to_string()).ok_or_else(bad),
        },
    }
}

/// Bytes with an optional decimal or binary unit, spaces allowed before it.
fn parse_bytes(v: &str) -> Option<u64> {
    let digits = v.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = v[..digits].parse().ok()?;
    let unit = v[digits..].trim_start();
    let factor: u64 = match unit {
        "" => 1,
        "kB" => 1000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        "TB" => 1_000_000_000_000,
        "TiB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// Reads the settings file of the store at `root`: the JSON members (empty
/// when there is no file). `ENOTSUP` for a newer format.
pub fn read_raw(root: &Path) -> Result<Map<String, Value>> {
    let path = root.join(FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        // No file, or `root` is not a directory (opening it then says so).
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(Map::new());
        }
        Err(e) => return Err(Error::path("cannot read settings", &path, e)),
    };
    let members = match serde_json::from_slice::<Value>(&text) {
        Ok(Value::Object(m)) => m,
        _ => {
            return Err(Error::new(
                libc::EIO,
                format!("{} is not a JSON object", path.display()),
            ));
        }
    };
    let format = members.get(FORMAT_KEY).and_then(Value::as_u64).unwrap_or(0);
    if format > FORMAT {
        return Err(Error::new(
            libc::ENOTSUP,
            format!(
                "the store at {} has settings format {format}; this osstore understands format {FORMAT} and older",
                root.display()
            ),
        ));
    }
    Ok(members)
}

/// The value of `key` in canonical form (the default when not set).
pub fn get(root: &Path, key: &str) -> Result<String> {
    accepted(key)?;
    let members = read_raw(root)?;
    if let Some(v) = members.get(key).and_then(Value::as_str) {
        if let Ok(c) = canonical(key, v) {
            return Ok(c);
        }
    }
    let d = Settings::default();
    Ok(match key {
        "max-size" => "unlimited".into(),
        "low-water" => d.low_water.to_string(),
        _ => "5%".into(),
    })
}

/// The parsed settings of the store at `root` (defaults for what is unset
/// or unreadable in a value).
pub fn load(root: &Path) -> Result<Settings> {
    let members = read_raw(root)?;
    let mut s = Settings::default();
    let value = |key: &str| {
        members
            .get(key)
            .and_then(Value::as_str)
            .and_then(|v| canonical(key, v).ok())
    };
    if let Some(v) = value("max-size") {
        s.max_size = v.parse().ok();
    }
    if let Some(v) = value("low-water") {
        s.low_water = v.parse().unwrap_or(s.low_water);
    }
    if let Some(v) = value("min-free") {
        s.min_free = match v.strip_suffix('%') {
            Some(p) => MinFree::Percent(p.parse().unwrap_or(5)),
            None => MinFree::Bytes(v.parse().unwrap_or(0)),
        };
    }
    Ok(s)
}

/// The settings of one store as last [`load`]ed, kept while the file is
/// the same (device, inode, size, mtime and ctime to the nanosecond, or
/// still absent): a commit then costs one `fstatat` instead of reading and
/// parsing the file, and a change by any process is seen at the next
/// commit.
#[derive(Debug, Default)]
pub struct Cache(std::sync::Mutex<Option<(Option<Stamp>, Settings)>>);

/// What identifies one version of the settings file.
type Stamp = (u64, u64, i64, i64, i64, i64, i64);

impl Cache {
    /// The settings of the store at `root` (open as `root_dir`), read
    /// again only when the file changed since the last call.
    pub fn load(&self, root_dir: BorrowedFd<'_>, root: &Path) -> Result<Settings> {
        let stamp = stamp(root_dir, root)?;
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, settings)) = *last {
            if s == stamp {
                return Ok(settings);
            }
        }
        // Stamped before it is read: a change in between gives another
        // stamp at the next call, which reads the file again.
        let settings = load(root)?;
        *last = Some((stamp, settings));
        Ok(settings)
    }
}

/// The stamp of the settings file in `root_dir`; `None` without one.
fn stamp(root_dir: BorrowedFd<'_>, root: &Path) -> Result<Option<Stamp>> {
    match nix::sys::stat::fstatat(root_dir, FILE_C, nix::fcntl::AtFlags::empty()) {
        Ok(st) => Ok(Some((
            st.st_dev,
            st.st_ino,
            st.st_size,
            st.st_mtime,
            st.st_mtime_nsec,
            st.st_ctime,
            st.st_ctime_nsec,
        ))),
        Err(nix::errno::Errno::ENOENT) => Ok(None),
        Err(e) => Err(Error::sys(
            format_args!("cannot stat settings {}", root.join(FILE).display()),
            e,
        )),
    }
}

/// Sets `key` to `value` (validated first) in the store at `root`, keeping
/// every other member, atomically and durably.
pub fn set(root: &Path, key: &str, value: &str) -> Result<()> {
    let canonical = canonical(key, value)?;
    let _lock = DirLock::exclusive(root)?;
    let mut members = read_raw(root)?;
    members.insert(FORMAT_KEY.into(), Value::from(FORMAT));
    members.insert(key.into(), Value::String(canonical));
    let text = serde_json::to_vec_pretty(&Value::Object(members))
        .map_err(|e| Error::new(libc::EIO, format!("cannot encode settings: {e}")))?;
    write_atomically(root, FILE, &text, true)
}

/// Writes `dir/name` through a temporary file renamed over it; with
/// `durable`, the file is flushed before and `dir` after the rename.
pub fn write_atomically(dir: &Path, name: &str, text: &[u8], durable: bool) -> Result<()> {
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let path = dir.join(name);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text)?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        if durable {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::path("cannot write", &path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_canonical_forms() {
        assert_eq!(canonical("max-size", "unlimited").unwrap(), "unlimited");
        assert_eq!(canonical("max-size", "10 GiB").unwrap(), "10737418240");
        assert_eq!(canonical("max-size", "3kB").unwrap(), "3000");
        assert_eq!(canonical("max-size", "17").unwrap(), "17");
        assert_eq!(canonical("low-water", "80").unwrap(), "80");
        assert_eq!(canonical("min-free", "7%").unwrap(), "7%");
        assert_eq!(canonical("min-free", "1 MiB").unwrap(), "1048576");
        for (k, v) in [
            ("max-size", "-1"),
            ("max-size", "1 kb"),
            ("max-size", ""),
            ("max-size", "99999999999999 TiB"),
            ("low-water", "0"),
            ("low-water", "101"),
            ("min-free", "101%"),
            ("nope", "1"),
        ] {
            assert_eq!(
                canonical(k, v).unwrap_err().errno(),
                libc::EINVAL,
                "{k}={v}"
            );
        }
    }

    #[test]
    fn the_cache_sees_every_change_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::default();
        let root = std::fs::File::open(dir.path()).unwrap();
        let load = || cache.load(std::os::fd::AsFd::as_fd(&root), dir.path());
        assert_eq!(load().unwrap(), Settings::default());
        set(dir.path(), "max-size", "5").unwrap();
        assert_eq!(load().unwrap().max_size, Some(5));
        set(dir.path(), "max-size", "6").unwrap();
        assert_eq!(load().unwrap().max_size, Some(6));
        // Rewritten in place, same size, by another tool.
        std::fs::write(dir.path().join(FILE), r#"{"format":1,"max-size":"7"}"#).unwrap();
        assert_eq!(load().unwrap().max_size, Some(7));
        std::fs::remove_file(dir.path().join(FILE)).unwrap();
        assert_eq!(load().unwrap(), Settings::default());
        std::fs::write(dir.path().join(FILE), r#"{"format":2}"#).unwrap();
        assert_eq!(load().unwrap_err().errno(), libc::ENOTSUP);
    }

    #[test]
    fn set_keeps_unknown_keys_and_newer_formats_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(get(dir.path(), "max-size").unwrap(), "unlimited");
        assert_eq!(get(dir.path(), "min-free").unwrap(), "5%");
        std::fs::write(dir.path().join(FILE), r#"{"format":1,"future":[1,2]}"#).unwrap();
        set(dir.path(), "max-size", "2 MiB").unwrap();
        assert_eq!(get(dir.path(), "max-size").unwrap(), "2097152");
        let raw = read_raw(dir.path()).unwrap();
        assert_eq!(raw["future"], serde_json::json!([1, 2]));
        assert_eq!(load(dir.path()).unwrap().max_size, Some(2 << 20));

        std::fs::write(dir.path().join(FILE), r#"{"format":2,"max-size":"1"}"#).unwrap();
        let before = std::fs::read(dir.path().join(FILE)).unwrap();
        assert_eq!(
            set(dir.path(), "max-size", "5").unwrap_err().errno(),
            libc::ENOTSUP
        );
        assert_eq!(std::fs::read(dir.path().join(FILE)).unwrap(), before);
    }
}
