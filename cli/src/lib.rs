//! The command line of `osstore`, the administration command of an osstore
//! store. The definition lives in a library so that the man page and the
//! shell completions are generated from exactly what the binary parses
//! (`examples/gen-docs.rs`).

pub mod args;
