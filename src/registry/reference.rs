//! Image references: `host[:port]/path/name:tag` or `...@sha256:<hex>`, and
//! the mapping of object ids to valid tags.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host` or `host:port`.
    pub registry: String,
    /// The repository path, e.g. `builds/base`.
    pub repository: String,
    /// The tag, when the reference names one.
    pub tag: Option<String>,
    /// The manifest digest (`sha256:<hex>`), when the reference names one.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `reference`. The registry host must be explicit (it contains a
    /// `.` or a `:`, or is `localhost`): there is no default registry.
    pub fn parse(reference: &str) -> Result<Reference> {
        let bad =
            |why: &str| Error::invalid(format!("invalid image reference {reference:?}: {why}"));
        let (registry, rest) = reference
            .split_once('/')
            .ok_or_else(|| bad("expected host[:port]/repository[:tag|@digest]"))?;
        if registry.is_empty()
            || !(registry.contains('.') || registry.contains(':') || registry == "localhost")
        {
            return Err(bad("the first component must be a registry host"));
        }
        let (name, digest) = match rest.split_once('@') {
            Some((name, digest)) => {
                check_digest(digest).map_err(|_| bad("the digest must be sha256:<64 hex>"))?;
                (name, Some(digest.to_owned()))
            }
            None => (rest, None),
        };
        let (repository, tag) = match name.rfind(':') {
            Some(i) if !name[i..].contains('/') => (&name[..i], Some(name[i + 1..].to_owned())),
            _ => (name, None),
        };
        if let Some(tag) = &tag {
            if !valid_tag(tag) {
                return Err(bad("tags are [A-Za-z0-9_][A-Za-z0-9._-]{0,127}"));
            }
        }
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.as_bytes()[0].is_ascii_alphanumeric()
        };
        if !repository.split('/').all(component_ok) {
            return Err(bad("repository components are lower-case [a-z0-9._-]"));
        }
        Ok(Reference {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag,
            digest,
        })
    }

    /// What a manifest request names: the digest if any, else the tag
    /// (`latest` when neither is given).
    pub fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// `registry/repository`, for messages.
    pub fn place(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

/// True for a tag the distribution spec accepts.
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

/// The tag an object id is pushed under when the reference names none.
///
/// An id that is a valid tag is its own tag. Any other id is mapped
/// deterministically: every byte outside `[A-Za-z0-9._-]` becomes `_`, a
/// leading `.` or `-` gets a `_` in front, the result is cut to 110 bytes,
/// and `-` plus the first 16 hex digits of the SHA-256 of the id is
/// appended, so two different ids never share a tag.
pub fn tag_for_id(id: &str) -> String {
    if valid_tag(id) {
        return id.to_owned();
    }
    let mut tag: String = id
        .bytes()
        .map(|c| {
            if c.is_ascii_alphanumeric() || b"._-".contains(&c) {
                c as char
            } else {
                '_'
            }
        })
        .collect();
    if !tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
        tag.insert(0, '_');
    }
    tag.truncate(110);
    let hash = Sha256::digest(id.as_bytes());
    tag.push('-');
    for b in &hash[..8] {
        tag.push_str(&format!("{b:02x}"));
    }
    tag
}

/// Checks `sha256:<64 lower-case hex>` and returns the hex part.
pub(crate) fn check_digest(digest: &str) -> Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(hex)
        }
        _ => Err(Error::invalid(format!(
            "unsupported or malformed digest {digest:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_reference_forms() {
        let r = Reference::parse("127.0.0.1:5000/a/b:v1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("127.0.0.1:5000", "a/b")
        );
        assert_eq!(r.tag.as_deref(), Some("v1"));
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("localhost/x@{d}")).unwrap();
        assert_eq!(r.manifest_ref(), d);
        assert!(Reference::parse("ubuntu:22.04").is_err());
        assert!(Reference::parse("host.io/Upper").is_err());
        assert!(Reference::parse("host.io/x:bad tag").is_err());
    }

    #[test]
    fn registry_tags_from_ids() {
        assert_eq!(tag_for_id("stage-1.2"), "stage-1.2");
        let t = tag_for_id("a b/c");
        assert!(valid_tag(&t) && t.starts_with("a_b_c-"), "{t}");
        assert_ne!(tag_for_id("a b"), tag_for_id("a/b"));
        assert!(valid_tag(&tag_for_id(".hidden")));
        assert!(valid_tag(&tag_for_id(&"x".repeat(300))));
    }
}
