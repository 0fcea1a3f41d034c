//! The commands that change a store or serve it: gc, evict, export, serve.

use std::io::Write;

use nix::sys::signal::{SigSet, Signal};
use osstore::cache::settings;
use osstore::server::{Server, ServerOptions};
use osstore::{Error, Result, Store};
use osstore_cli::args::{Evict, Export, Serve};

use crate::inspect::human;
use crate::progress::Progress;

pub fn gc(store: &Store) -> Result<()> {
    let progress = Progress::start("collecting garbage");
    let report = store.gc()?;
    progress.finish("done");
    println!("removed {} entries", report.removed);
    Ok(())
}

pub fn evict(store: &Store, args: &Evict) -> Result<()> {
    // The forms max-size accepts, so that `evict --to` and `config set
    // max-size` read sizes alike.
    let target: u64 = match settings::canonical("max-size", &args.to)?.parse() {
        Ok(bytes) => bytes,
        Err(_) => {
            return Err(Error::invalid(format!(
                "--to needs a size, not {:?}",
                args.to
            )));
        }
    };
    let progress = Progress::start(format!("evicting down to {}", human(target)));
    let report = store.evict(target)?;
    progress.finish("done");
    for id in &report.evicted {
        println!("evicted {id}");
    }
    println!(
        "freed {} ({} bytes) from {} refs",
        human(report.freed),
        report.freed,
        report.evicted.len()
    );
    Ok(())
}

pub fn export(store: &Store, args: &Export) -> Result<()> {
    let object = store
        .get(&args.id)?
        .ok_or_else(|| Error::new(libc::ENOENT, format!("no object {:?}", args.id)))?;
    let progress = Progress::start(format!("exporting {} to {}", args.id, args.dir.display()));
    object.export(&args.dir)?;
    progress.finish("done");
    Ok(())
}

pub fn serve(store: Store, args: Serve) -> Result<()> {
    // Blocked before the server's thread starts, so that it inherits the
    // mask and the signals wait for sigwait below.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGHUP);
    signals
        .thread_block()
        .map_err(|e| Error::sys("cannot block signals", e))?;
    let server = Server::start(
        store,
        ServerOptions {
            socket_path: args.socket,
            ..ServerOptions::default()
        },
    )?;
    println!("{}", server.socket_path().display());
    let _ = std::io::stdout().flush();
    let signal = signals
        .wait()
        .map_err(|e| Error::sys("cannot wait for a signal", e))?;
    eprintln!("osstore: {signal}: stopping the server");
    server.stop()
}
