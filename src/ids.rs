//! Validation of the strings that become path components: object ids,
//! source names, temp-dir prefixes and suffixes.
//!
//! Every string a caller or a socket client supplies is checked here before
//! any path is built from it, so that none of them can reach outside the
//! store (the reference implementation joins them unchecked).

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use crate::error::{Error, Result};

/// A valid object id: 1 to 255 bytes of UTF-8, no `/` or NUL, not `.` or
/// `..` (see [`check_name`]). Checked once where an id enters the crate
/// (the C layer, the server's request decoding, the Rust API's string
/// arguments), so the store's methods never check an id again. A borrowed
/// view of a string, as `Path` is; [`ObjectIdBuf`] owns one.
#[derive(Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct ObjectId(str);

impl ObjectId {
    /// Checks `id` (see [`check_name`]) and views it as an id, without
    /// copying; `EINVAL` with a message when it is not a valid id.
    pub fn new(id: &str) -> Result<&ObjectId> {
        check_id(id)?;
        // SAFETY: `ObjectId` is a `repr(transparent)` wrapper of `str`, so
        // the two references have the same layout and lifetime.
        Ok(unsafe { &*(id as *const str as *const ObjectId) })
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An owned [`ObjectId`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectIdBuf(String);

impl ObjectIdBuf {
    /// Checks `id` and keeps it; `EINVAL` with a message when it is not a
    /// valid id.
    pub fn new(id: String) -> Result<ObjectIdBuf> {
        check_id(&id)?;
        Ok(ObjectIdBuf(id))
    }
}

impl Deref for ObjectIdBuf {
    type Target = ObjectId;

    fn deref(&self) -> &ObjectId {
        // SAFETY: `ObjectId` is a `repr(transparent)` wrapper of `str` (same
        // layout), and the string was checked when the value was made.
        unsafe { &*(self.0.as_str() as *const str as *const ObjectId) }
    }
}

impl Borrow<ObjectId> for ObjectIdBuf {
    fn borrow(&self) -> &ObjectId {
        self
    }
}

impl ToOwned for ObjectId {
    type Owned = ObjectIdBuf;

    fn to_owned(&self) -> ObjectIdBuf {
        ObjectIdBuf(self.0.to_owned())
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Deref for ObjectId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for ObjectId {
    fn eq(&self, other: &str) -> bool {
        &self.0 == other
    }
}

impl PartialEq<&str> for ObjectId {
    fn eq(&self, other: &&str) -> bool {
        &self.0 == *other
    }
}

impl AsRef<str> for ObjectId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// What the store's methods take as an id: an [`ObjectId`] (valid already)
/// or a string, checked on the way in. Neither copies.
pub trait ToObjectId {
    /// The id, or `EINVAL` when it is not valid.
    fn to_object_id(&self) -> Result<&ObjectId>;

    /// Whether this is the empty string (never an id, yet a question
    /// `contains` answers with "no").
    fn is_empty_id(&self) -> bool {
        false
    }
}

impl ToObjectId for ObjectId {
    fn to_object_id(&self) -> Result<&ObjectId> {
        Ok(self)
    }
}

impl ToObjectId for ObjectIdBuf {
    fn to_object_id(&self) -> Result<&ObjectId> {
        Ok(self)
    }
}

impl ToObjectId for str {
    fn to_object_id(&self) -> Result<&ObjectId> {
        ObjectId::new(self)
    }

    fn is_empty_id(&self) -> bool {
        self.is_empty()
    }
}

impl ToObjectId for String {
    fn to_object_id(&self) -> Result<&ObjectId> {
        ObjectId::new(self)
    }

    fn is_empty_id(&self) -> bool {
        self.is_empty()
    }
}

impl<T: ToObjectId + ?Sized> ToObjectId for &T {
    fn to_object_id(&self) -> Result<&ObjectId> {
        (**self).to_object_id()
    }

    fn is_empty_id(&self) -> bool {
        (**self).is_empty_id()
    }
}

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

fn check_id(id: &str) -> Result<()> {
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
