//! push and pull through an OCI registry, with progress.

use std::sync::Arc;

use osstore::registry::{self, Compression, RegistryOptions};
use osstore::{Result, Store};
use osstore_cli::args::{Pull, Push, RegistryArgs};

use crate::inspect::human;
use crate::progress::Transfer;

fn options(args: &RegistryArgs, transfer: &Arc<Transfer>) -> RegistryOptions {
    let transfer = Arc::clone(transfer);
    RegistryOptions {
        insecure: args.insecure,
        auth_file: args.auth_file.clone(),
        progress: Some(Box::new(move |p: &registry::Progress| {
            transfer.update((p.bytes_done, p.bytes_total), (p.blobs_done, p.blobs_total));
            true
        })),
        ..RegistryOptions::default()
    }
}

pub fn push(store: &Store, args: &Push) -> Result<()> {
    let transfer = Arc::new(Transfer::start(format!(
        "pushing {} to {}",
        args.id, args.reference
    )));
    let mut options = options(&args.registry, &transfer);
    if args.zstd {
        options.compression = Compression::Zstd;
    }
    let report = registry::push(store, &args.id, &args.reference, &options)?;
    transfer.finish(&format!(
        "{} uploaded in {} blobs, {} already there",
        human(report.bytes_uploaded),
        report.blobs_uploaded,
        report.blobs_skipped
    ));
    println!("{}", report.digest);
    Ok(())
}

pub fn pull(store: &Store, args: &Pull) -> Result<()> {
    let transfer = Arc::new(Transfer::start(format!(
        "pulling {} into {}",
        args.reference, args.id
    )));
    let options = options(&args.registry, &transfer);
    let report = registry::pull(store, &args.reference, &args.id, &options)?;
    transfer.finish(&format!(
        "{} downloaded in {} blobs, {} already here",
        human(report.bytes_downloaded),
        report.blobs_downloaded,
        report.blobs_skipped
    ));
    println!("{}", report.name);
    Ok(())
}
