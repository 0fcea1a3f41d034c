//! The tree engines: copying a directory tree with `cp -a` fidelity
//! ([`copy_tree`]; with progress reports and cancellation:
//! [`copy_tree_with`]), removing one whatever a build left in it
//! ([`remove_tree`]), and comparing two ([`compare_trees`]).
//!
//! Copy and removal walk the tree in parallel, one directory per job, with
//! `*at` syscalls relative to open directories (see `pool`); their memory use
//! depends on the tree's depth and directory sizes, not on its size.

pub mod compare;
pub mod copy;
pub mod progress;
pub mod remove;

pub(crate) mod btrfs;

mod data;
mod links;
pub mod measure;
mod pool;
pub(crate) mod sys;
mod undo;
mod xattr;

pub use compare::{Difference, compare_trees};
pub use copy::copy_tree;
pub use measure::{Clamp, Measure, measure_tree};
pub use progress::{CopyOptions, Progress, Totals, copy_tree_with};
pub use remove::remove_tree;
