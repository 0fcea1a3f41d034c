//! The store as a long-lived, bounded cache (`docs/cache.md`):
//! settings, per-object sidecars, last use, eviction.

pub mod lastuse;
pub mod layout;
mod object;
pub mod settings;
pub mod sidecar;

pub use object::ObjectCache;
pub mod pinboard;
pub mod pins;

/// A quick 64-bit hash of an object name, eight bytes at a time (names are
/// UUIDs), for the tables that remember names by hash: recent last uses
/// (a collision costs a `utimensat`) and the pin board (a collision makes
/// an object look pinned). Part of the pin board's format, which processes
/// of every version share: it must never change.
pub(crate) fn name_hash(name: &str) -> u64 {
    name.as_bytes()
        .chunks(8)
        .fold(name.len() as u64, |h, chunk| {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            let h = (h ^ u64::from_le_bytes(word)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            h ^ (h >> 29)
        })
}
