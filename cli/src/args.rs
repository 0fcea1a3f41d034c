//! What `osstore` accepts: global options and one subcommand.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Manage an osstore store: see what it holds and how big it is, collect
/// leftovers, export trees and serve the store to build stages.
#[derive(Debug, Parser)]
#[command(
    name = "osstore",
    version,
    propagate_version = true,
    after_help = "Exit status: 0 on success, 1 on an error (message on standard error), \
                  2 on a wrong command line.\n\
                  Environment: OSSTORE_DIR is the store when --store is not given."
)]
pub struct Cli {
    /// The store's directory (the one holding objects/, refs/ and tmp/).
    #[arg(
        long,
        short = 's',
        value_name = "DIR",
        env = "OSSTORE_DIR",
        global = true
    )]
    pub store: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the refs: each id with the object it names.
    Ls(Ls),
    /// Measure the disk space each ref's tree takes, and the store's total.
    Du,
    /// Remove what nobody can use any more: leftovers of dead processes and
    /// objects that no ref names and no live handle holds.
    Gc,
    /// Copy the tree of object ID into the existing directory DIR, with the
    /// fidelity of `cp -a`.
    Export(Export),
    /// Serve the store on a socket for build stages (see osstore-client(1))
    /// until interrupted (SIGINT or SIGTERM).
    Serve(Serve),
}

/// `osstore ls`.
#[derive(Debug, clap::Args)]
pub struct Ls {
    /// Print a JSON array of objects instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// `osstore export`.
#[derive(Debug, clap::Args)]
pub struct Export {
    /// The object's id (a ref name).
    #[arg(value_name = "ID")]
    pub id: String,
    /// An existing directory to copy the tree into.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// `osstore serve`.
#[derive(Debug, clap::Args)]
pub struct Serve {
    /// Where to listen. Default: $OSSTORE_SOCKET when set, otherwise a
    /// socket named `store` in a fresh private directory under /run/osbuild.
    /// The path is printed once the server listens.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}
