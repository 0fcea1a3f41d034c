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
