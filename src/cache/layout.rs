//! What opening a store checks and adds for the cache: refusing another
//! tool's cache directory, and the `CACHEDIR.TAG` that backup tools honour.

use std::path::Path;

use crate::error::{Error, Result};

/// Name of the cache-directory tag.
pub const TAG: &str = "CACHEDIR.TAG";
/// The standard signature line of a cache-directory tag.
const SIGNATURE: &str = "Signature: 8a477f597d28d172789f06886806bc55";
const TAG_TEXT: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by osstore.\n\
# For information about cache directory tags see https://bford.info/cachedir/\n";

/// `ENOTSUP` when `root` holds another tool's cache: osbuild's file-system
/// cache (`cache.info`, `stage/`) or a `CACHEDIR.TAG` osstore did not write.
/// Only looks; changes nothing.
pub fn refuse_foreign(root: &Path) -> Result<()> {
    let foreign = |what: &str| {
        Err(Error::new(
            libc::ENOTSUP,
            format!(
                "{} holds another tool's cache ({what}); osstore does not open it",
                root.display()
            ),
        ))
    };
    if std::fs::symlink_metadata(root.join("cache.info")).is_ok() {
        return foreign("an osbuild cache: cache.info");
    }
    if std::fs::symlink_metadata(root.join("stage")).is_ok_and(|m| m.is_dir()) {
        return foreign("an osbuild cache: stage/");
    }
    match std::fs::read(root.join(TAG)) {
        Ok(text) if !is_ours(&text) => foreign("a CACHEDIR.TAG not written by osstore"),
        _ => Ok(()),
    }
}

fn is_ours(text: &[u8]) -> bool {
    text.starts_with(SIGNATURE.as_bytes()) && text.windows(7).any(|w| w == b"osstore")
}

/// Writes the tag into `root` if it has none (atomically: a reader sees no
/// tag or the whole one). Not flushed: a tag lost to a power cut is written
/// again at the next open.
pub fn write_tag(root: &Path) -> Result<()> {
    if std::fs::symlink_metadata(root.join(TAG)).is_ok() {
        return Ok(());
    }
    super::settings::write_atomically(root, TAG, TAG_TEXT.as_bytes(), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_caches_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        refuse_foreign(dir.path()).unwrap();
        write_tag(dir.path()).unwrap();
        refuse_foreign(dir.path()).unwrap();
        std::fs::write(dir.path().join(TAG), format!("{SIGNATURE}\n# other tool\n")).unwrap();
        assert_eq!(
            refuse_foreign(dir.path()).unwrap_err().errno(),
            libc::ENOTSUP
        );
        std::fs::remove_file(dir.path().join(TAG)).unwrap();
        std::fs::create_dir(dir.path().join("stage")).unwrap();
        assert_eq!(
            refuse_foreign(dir.path()).unwrap_err().errno(),
            libc::ENOTSUP
        );
    }
}
