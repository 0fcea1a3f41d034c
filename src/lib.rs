//! osstore: a store of filesystem trees for OS image builders.
//!
//! The crate has two layers. The core (every module but [`ffi`]) is plain
//! Rust: [`Store`], [`Object`], the tree copy and removal engines, the socket
//! server. The [`ffi`] module is a thin `extern "C"` layer over it with opaque
//! handles, from which `include/osstore.h` is generated.

#![warn(clippy::undocumented_unsafe_blocks)]

pub mod cache;
pub mod error;
mod fd;
pub mod ffi;
mod hosttree;
pub mod ids;
pub mod lock;
pub mod log;
mod mount;
mod object;
mod process;
mod refcache;
pub mod registry;
pub mod server;
mod store;
pub mod tempdir;
pub mod tree;

pub use error::{Error, Result};
pub use ids::{ObjectId, ObjectIdBuf};
pub use object::{Mode, Object};
pub use store::{EvictReport, FsckReport, GcReport, ObjectInfo, OpenOptions, Store, StoreStat};
