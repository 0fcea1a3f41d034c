//! What `osstore` accepts: global options and one subcommand.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Manage an osstore store.
///
/// See what a store of filesystem trees holds and how big it is, bound its
/// size and evict to a size, collect leftovers, check it, export trees and
/// serve it to build stages.
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
    /// Show the store's settings, totals and free space.
    Info,
    /// List the refs, least recently used first.
    ///
    /// One line per ref: size, entries, creation time, last use (UTC),
    /// whether a live handle pins the object, id.
    Ls(Ls),
    /// Show the size of each ref's object and the store's total.
    ///
    /// Objects named by several refs count once in the total.
    Du,
    /// Read or change a setting.
    ///
    /// max-size: bytes with an optional unit (kB KiB MB MiB GB GiB TB TiB)
    /// or unlimited; low-water: the percentage of max-size an eviction brings
    /// the total down to; min-free: bytes or a percentage of the filesystem
    /// to keep free.
    #[command(subcommand)]
    Config(Config),
    /// Remove what nobody can use any more.
    ///
    /// Leftovers of dead processes, and objects that no ref names and no
    /// live handle holds. Only what osstore named is removed: another tool's
    /// files and directories in the store stay.
    Gc,
    /// Evict least recently used refs until the total is at most SIZE.
    ///
    /// Refs whose object a live handle pins are kept.
    Evict(Evict),
    /// Check the store without changing it.
    ///
    /// Every ref names an object, recorded sizes and entry counts match the
    /// trees, no orphaned records. Exits 1 when it finds a problem.
    Fsck,
    /// Show the metadata of an object.
    ///
    /// Every key with its JSON value, or the JSON value of KEY.
    Meta(Meta),
    /// Copy an object's tree into a directory.
    ///
    /// The copy has the fidelity of `cp -a`; DIR must exist.
    Export(Export),
    /// Push an object to an OCI registry.
    ///
    /// The tree goes up as a standard OCI image (REF is
    /// host[:port]/repository:tag or ...@sha256:<hex>); prints the
    /// manifest's digest. Credentials come from --auth-file, else
    /// $REGISTRY_AUTH_FILE, the containers and the docker auth files.
    Push(Push),
    /// Pull an OCI image into the store as object ID.
    ///
    /// Commits the image's flattened root filesystem under ID; prints the
    /// new object's name.
    Pull(Pull),
    /// Serve the store to build stages on a socket.
    ///
    /// Prints the socket's path and serves until SIGINT, SIGTERM or SIGHUP;
    /// see osstore-client(1).
    Serve(Serve),
}

/// `osstore ls`.
#[derive(Debug, clap::Args)]
pub struct Ls {
    /// Print a JSON array instead: one object per ref with id, name,
    /// size, files, created and last_used (Unix seconds) and pinned.
    #[arg(long)]
    pub json: bool,
}

/// `osstore config`.
#[derive(Debug, Subcommand)]
pub enum Config {
    /// Print the value of a setting (its default when unset).
    Get {
        /// max-size, low-water or min-free.
        #[arg(value_name = "KEY")]
        key: String,
    },
    /// Change a setting for every user of the store.
    Set {
        /// max-size, low-water or min-free.
        #[arg(value_name = "KEY")]
        key: String,
        /// The new value, e.g. 50GiB, unlimited, 80, 10%.
        #[arg(value_name = "VALUE")]
        value: String,
    },
}

/// `osstore evict`.
#[derive(Debug, clap::Args)]
pub struct Evict {
    /// The total to reach, in bytes with an optional unit (kB KiB MB MiB GB
    /// GiB TB TiB), e.g. 20GiB.
    #[arg(long = "to", value_name = "SIZE")]
    pub to: String,
}

/// `osstore meta`.
#[derive(Debug, clap::Args)]
pub struct Meta {
    /// The object's id (a ref name).
    #[arg(value_name = "ID")]
    pub id: String,
    /// One key only.
    #[arg(value_name = "KEY")]
    pub key: Option<String>,
}

/// How to reach a registry (push and pull).
#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    /// Plain HTTP to this registry (it is used without asking only for
    /// localhost, 127.0.0.1 and [::1]).
    #[arg(long)]
    pub insecure: bool,
    /// The auth file (containers-auth.json(5) format).
    #[arg(long, value_name = "FILE")]
    pub auth_file: Option<PathBuf>,
}

/// `osstore push`.
#[derive(Debug, clap::Args)]
pub struct Push {
    /// The object's id (a ref name).
    #[arg(value_name = "ID")]
    pub id: String,
    /// Where to: host[:port]/repository:tag.
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Compress layers with zstd instead of gzip.
    #[arg(long)]
    pub zstd: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `osstore pull`.
#[derive(Debug, clap::Args)]
pub struct Pull {
    /// What to pull: host[:port]/repository:tag or ...@sha256:<hex>.
    #[arg(value_name = "REF")]
    pub reference: String,
    /// The id to commit it under.
    #[arg(value_name = "ID")]
    pub id: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
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
