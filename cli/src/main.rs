//! `osstore`: the administration command of an osstore store.
//!
//! Exit status: 0 on success, 1 on an error (the message on standard
//! error), 2 on a wrong command line (clap's own status for usage errors).

mod commands;
mod inspect;
mod progress;
mod registry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use osstore::{Error, OpenOptions, Store};
use osstore_cli::args::{Cli, Command, Config};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("osstore: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    // Commands that only look open the store read-only: they work on a
    // read-only mount or without write permission, and count as no use.
    let writes = matches!(
        cli.command,
        Command::Config(Config::Set { .. })
            | Command::Gc
            | Command::Evict(_)
            | Command::Pull(_)
            | Command::Serve(_)
    );
    let store = open_store(cli.store, !writes)?;
    match cli.command {
        Command::Info => inspect::info(&store),
        Command::Ls(args) => inspect::ls(&store, &args),
        Command::Du => inspect::du(&store),
        Command::Config(args) => inspect::config(&store, &args),
        Command::Gc => commands::gc(&store),
        Command::Evict(args) => commands::evict(&store, &args),
        Command::Fsck => inspect::fsck(&store),
        Command::Meta(args) => inspect::meta(&store, &args),
        Command::Export(args) => commands::export(&store, &args),
        Command::Push(args) => registry::push(&store, &args),
        Command::Pull(args) => registry::pull(&store, &args),
        Command::Serve(args) => commands::serve(store, args),
    }
}

/// Opens the existing store at `dir` (from --store or $OSSTORE_DIR); unlike
/// the library's open, never creates one, and leaves collecting garbage to
/// `osstore gc`.
fn open_store(dir: Option<PathBuf>, read_only: bool) -> Result<Store, Error> {
    let dir =
        dir.ok_or_else(|| Error::invalid("no store given: pass --store DIR or set OSSTORE_DIR"))?;
    for sub in ["objects", "refs"] {
        if !dir.join(sub).is_dir() {
            return Err(Error::new(
                libc::ENOENT,
                format!("{} is not a store (it has no {sub}/)", dir.display()),
            ));
        }
    }
    Store::open_with(
        &dir,
        OpenOptions {
            durable: true,
            collect_garbage: false,
            read_only,
        },
    )
}
