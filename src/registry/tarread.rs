//! Reading layer tars entry by entry, with the extension records handled
//! here rather than by the `tar` crate (whose PAX parser splits records at
//! newlines, which breaks binary xattr values): PAX records are read by
//! their length prefix, GNU long names and links are applied, and old-GNU
//! sparse entries are described by their map.

use std::ffi::CString;
use std::io::Read;

use nix::sys::time::TimeSpec;
use tar::EntryType;

use crate::error::{Error, Result};

/// The largest extension record (PAX header, GNU long name) accepted.
const MAX_EXTENSION: u64 = 16 << 20;

/// One member of a layer, its extension records applied.
pub(crate) struct Item {
    pub(crate) path: Vec<u8>,
    pub(crate) link: Option<Vec<u8>>,
    pub(crate) kind: EntryType,
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    pub(crate) mtime: TimeSpec,
    pub(crate) xattrs: Vec<(CString, Vec<u8>)>,
    pub(crate) rdev: libc::dev_t,
    /// For an old-GNU sparse file: its size and its data segments
    /// (offset, length), in the order the data comes.
    pub(crate) sparse: Option<(u64, Vec<(u64, u64)>)>,
}

pub(crate) fn refuse(what: impl std::fmt::Display) -> Error {
    Error::new(libc::EPERM, format!("refused layer entry: {what}"))
}

fn read_error(e: std::io::Error) -> Error {
    Error::io("cannot read a layer", e)
}

/// PAX records `"<len> <key>=<value>\n"`, split by their lengths.
fn pax_records(mut data: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let bad = || refuse("malformed PAX record");
    let mut out = Vec::new();
    while !data.is_empty() && data[0] != 0 {
        let space = data.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(bad());
        }
        let record = &data[space + 1..len - 1];
        let eq = record.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        let key = String::from_utf8(record[..eq].to_vec()).map_err(|_| bad())?;
        out.push((key, record[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

fn parse_time(v: &str) -> Option<TimeSpec> {
    let (neg, v) = v.strip_prefix('-').map_or((false, v), |r| (true, r));
    let (sec, frac) = v.split_once('.').unwrap_or((v, ""));
    let sec: i64 = sec.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let nsec: i64 = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    Some(if neg && nsec > 0 {
        TimeSpec::new(-sec - 1, 1_000_000_000 - nsec)
    } else {
        TimeSpec::new(if neg { -sec } else { sec }, nsec)
    })
}

fn read_all(entry: &mut impl Read, size: u64) -> Result<Vec<u8>> {
    if size > MAX_EXTENSION {
        return Err(refuse(format_args!("an extension record of {size} bytes")));
    }
    let mut data = Vec::with_capacity(size as usize);
    entry.read_to_end(&mut data).map_err(read_error)?;
    Ok(data)
}

fn strip_nuls(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

/// Calls `f` for each member of the tar stream `reader`, with a reader of
/// its data.
pub(crate) fn for_each(
    reader: impl Read,
    mut f: impl FnMut(Item, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(read_error)?.raw(true);
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    let (mut long_name, mut long_link) = (None, None);
    for entry in entries {
        let mut entry = entry.map_err(read_error)?;
        let h = entry.header().clone();
        let kind = h.entry_type();
        let size = h.entry_size().map_err(|_| refuse("unreadable size"))?;
        match kind {
            EntryType::XHeader => {
                pax.extend(pax_records(&read_all(&mut entry, size)?)?);
                continue;
            }
            EntryType::XGlobalHeader => {
                read_all(&mut entry, size)?;
                continue;
            }
            EntryType::GNULongName => {
                long_name = Some(strip_nuls(read_all(&mut entry, size)?));
                continue;
            }
            EntryType::GNULongLink => {
                long_link = Some(strip_nuls(read_all(&mut entry, size)?));
                continue;
            }
            _ => {}
        }
        let bad = |what: &str| refuse(format_args!("unreadable {what}"));
        let mut item = Item {
            path: long_name
                .take()
                .unwrap_or_else(|| h.path_bytes().into_owned()),
            link: long_link
                .take()
                .or_else(|| h.link_name_bytes().map(|l| l.into_owned())),
            kind,
            mode: h.mode().map_err(|_| bad("mode"))? & 0o7777,
            // Some writers leave the id fields empty: owner 0 then.
            uid: h.uid().unwrap_or(0),
            gid: h.gid().unwrap_or(0),
            mtime: TimeSpec::new(h.mtime().unwrap_or(0) as i64, 0),
            xattrs: Vec::new(),
            rdev: libc::makedev(
                h.device_major().ok().flatten().unwrap_or(0),
                h.device_minor().ok().flatten().unwrap_or(0),
            ),
            sparse: None,
        };
        for (key, value) in pax.drain(..) {
            let text = std::str::from_utf8(&value).ok();
            match key.as_str() {
                "path" => item.path = value,
                "linkpath" => item.link = Some(value),
                "mtime" => {
                    item.mtime = text.and_then(parse_time).ok_or_else(|| bad("PAX mtime"))?
                }
                "uid" => {
                    item.uid = text
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| bad("PAX uid"))?
                }
                "gid" => {
                    item.gid = text
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| bad("PAX gid"))?
                }
                "size" if text.and_then(|v| v.parse::<u64>().ok()) != Some(size) => {
                    return Err(refuse(
                        "a PAX size record (files over 8 GiB) is not supported",
                    ));
                }
                k if k.starts_with("GNU.sparse.") => {
                    return Err(refuse("PAX sparse files are not supported"));
                }
                k => {
                    if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                        let name = CString::new(name).map_err(|_| bad("xattr name"))?;
                        item.xattrs.push((name, value));
                    }
                }
            }
        }
        if kind == EntryType::GNUSparse {
            item.sparse = Some(sparse_map(&h, size)?);
        }
        f(item, &mut entry)?;
    }
    if !pax.is_empty() || long_name.is_some() || long_link.is_some() {
        return Err(refuse(
            "extension records at the end of a layer describe no member",
        ));
    }
    Ok(())
}

/// The map of an old-GNU sparse entry: its size and data segments, checked
/// to be in order, inside the file and to add up to the data present.
fn sparse_map(h: &tar::Header, data: u64) -> Result<(u64, Vec<(u64, u64)>)> {
    let bad = || refuse("malformed sparse map");
    let gnu = h.as_gnu().ok_or_else(bad)?;
    if gnu.is_extended() {
        return Err(refuse(
            "sparse maps of more than 4 segments are not supported",
        ));
    }
    let real = gnu.real_size().map_err(|_| bad())?;
    let mut segments = Vec::new();
    let (mut end, mut total) = (0u64, 0u64);
    for s in &gnu.sparse {
        if s.is_empty() {
            break;
        }
        let (offset, length) = (
            s.offset().map_err(|_| bad())?,
            s.length().map_err(|_| bad())?,
        );
        let stop = offset.checked_add(length).ok_or_else(bad)?;
        if offset < end || stop > real {
            return Err(bad());
        }
        end = stop;
        total += length;
        segments.push((offset, length));
    }
    if total != data {
        return Err(bad());
    }
    Ok((real, segments))
}
