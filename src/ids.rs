//! Validation of the strings that become path components: object ids,
//! source names, temp-dir prefixes and suffixes.
//!
//! Every string a caller or a socket client supplies is checked here before
//! any path is built from it, so that none of them can reach outside the
//! store (the reference implementation joins them unchecked).

use crate::error::{Error, Result};

/// Longest id or name, in bytes: one path component on Linux.
pub(crate) const MAX_NAME_BYTES: usize = 255;

/// Checks an object id or a source name: non-empty, at most 255 bytes, no
/// `/` or NUL, and not `.` or `..`.
pub fn check_name(what: &str, name: &[u8]) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(format!("{what} is empty")));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::invalid(format!(
            "{what} is {} bytes long, the limit is {MAX_NAME_BYTES}",
            name.len()
        )));
    }
    if name == b"." || name == b".." {
        return Err(Error::invalid(format!(
            "{what} {:?} names a directory, not an entry",
            String::from_utf8_lossy(name)
        )));
    }
    check_component_bytes(what, name)
}

/// Checks an object id (see [`check_name`]).
pub fn check_id(id: &str) -> Result<()> {
    check_name("object id", id.as_bytes())
}

/// Checks a prefix or suffix of a temporary directory name: any length up to
/// 255 bytes, no `/` or NUL.
pub fn check_affix(what: &str, affix: &[u8]) -> Result<()> {
    if affix.len() > MAX_NAME_BYTES {
        return Err(Error::invalid(format!(
            "{what} is {} bytes long, the limit is {MAX_NAME_BYTES}",
            affix.len()
        )));
    }
    check_component_bytes(what, affix)
}

fn check_component_bytes(what: &str, bytes: &[u8]) -> Result<()> {
    if bytes.contains(&b'/') {
        return Err(Error::invalid(format!(
            "{what} {:?} contains '/'",
            String::from_utf8_lossy(bytes)
        )));
    }
    if bytes.contains(&0) {
        return Err(Error::invalid(format!("{what} contains a NUL byte")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        for id in [
            "a",
            "abc123",
            ".hidden",
            "...",
            "x..y",
            "with space",
            "ünïcode",
        ] {
            check_id(id).unwrap();
        }
        check_id(&"x".repeat(255)).unwrap();
    }

    #[test]
    fn refuses_escaping_ids() {
        for id in ["", ".", "..", "a/b", "/etc", "../x", "x/..", "a\0b"] {
            let e = check_id(id).unwrap_err();
            assert_eq!(e.errno(), libc::EINVAL, "{id:?}");
        }
        assert_eq!(
            check_id(&"x".repeat(256)).unwrap_err().errno(),
            libc::EINVAL
        );
    }

    #[test]
    fn affixes_may_be_empty_but_not_contain_slash() {
        check_affix("prefix", b"").unwrap();
        check_affix("prefix", b"..").unwrap();
        assert!(check_affix("prefix", b"../x").is_err());
        assert!(check_affix("suffix", b"a\0").is_err());
        assert!(check_affix("suffix", &[b'a'; 256]).is_err());
    }
}
