//! Push: a committed object as an OCI image.

use std::fs::File;
use std::sync::Mutex;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::client::Client;
use super::layer::{Blob, LayerWriter, sha256_of};
use super::progress::Meter;
use super::record::{Layer, Record};
use super::reference::{Reference, tag_for_id};
use super::{RegistryOptions, facts, walk};
use crate::error::{Error, Result};
use crate::store::Store;

pub(crate) const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Annotation and label keys.
pub(crate) const ID_KEY: &str = "org.osstore.id";
pub(crate) const META_PREFIX: &str = "org.osstore.meta.";
const CREATED_KEY: &str = "org.opencontainers.image.created";

/// What [`push`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    /// The manifest digest (`sha256:<hex>`).
    pub digest: String,
    /// The tag the manifest was put under (`None` for a push by digest).
    pub tag: Option<String>,
    /// Blobs sent (layers and config).
    pub blobs_uploaded: u64,
    /// Blobs the registry had already (or mounted from another repository).
    pub blobs_skipped: u64,
    /// Bytes sent for blobs.
    pub bytes_uploaded: u64,
    /// Layers of the image.
    pub layers: usize,
}

/// A layer to send: made by this push (a temp file) or known from a record.
struct Outgoing {
    layer: Layer,
    file: Option<File>,
    mount_from: Option<String>,
}

/// Uploads the committed object `id` of `store` as an OCI image to
/// `reference` (`host[:port]/repository[:tag]`; without a tag the id is
/// the tag, see [`tag_for_id`]).
///
/// An object recorded as built on a base that was pushed or pulled before
/// goes up as the base's layers plus one layer of its changes; blobs the
/// registry has are not sent again.
pub fn push(
    store: &Store,
    id: &str,
    reference: &str,
    options: &RegistryOptions,
) -> Result<PushReport> {
    let context = || format!("cannot push {id:?} to {reference}");
    run(store, id, reference, options).map_err(|e| e.context(context()))
}

fn run(store: &Store, id: &str, reference: &str, options: &RegistryOptions) -> Result<PushReport> {
    let reference = Reference::parse(reference)?;
    // The handle pins the object: no collection or eviction takes its tree
    // while the push reads it.
    let object = store
        .get(id)?
        .ok_or_else(|| Error::new(libc::ENOENT, format!("no object {id:?} in the store")))?;
    let name = object
        .committed_name()
        .ok_or_else(|| Error::invalid(format!("object {id:?} is not committed")))?
        .to_owned();
    let tree = object.tree().to_path_buf();
    let facts = facts(&object)?;
    let client = Client::new(&reference, options)?;
    let meter = Meter::new(options.progress.as_deref());
    let work = store.tempdir(b"push-", b"")?;
    let new_layer = || {
        File::create_new(work.path().join(uuid::Uuid::new_v4().to_string()))
            .map_err(|e| Error::path("cannot create a layer file in", work.path(), e))
    };
    let built = |blob: Blob| Outgoing {
        layer: Layer {
            digest: blob.digest,
            size: blob.size,
            media_type: blob.media_type.into(),
            diff_id: blob.diff_id,
        },
        file: Some(blob.file),
        mount_from: None,
    };
    let known = |layers: &[Layer], from: &Record| -> Vec<Outgoing> {
        let same_registry = from.registry == reference.registry;
        layers
            .iter()
            .map(|l| Outgoing {
                layer: l.clone(),
                file: None,
                mount_from: same_registry.then(|| from.repository.clone()),
            })
            .collect()
    };
    // Reuse what earlier pushes or pulls recorded, where the registry has it.
    let mut plan = None;
    if let Some(own) = Record::load(store, &name) {
        plan = Some(known(&own.layers, &own));
    } else if let Some(base) = facts.base.as_deref() {
        // Pinned while its changes are written: an emptied base would make
        // a layer of changes that rebuilds a wrong tree.
        let pinned = super::pin_base(store, base)?;
        if let (Some((base_tree, _pinned)), Some(record)) = (&pinned, Record::load(store, base)) {
            let mut w = LayerWriter::new(new_layer()?, options.compression)?;
            walk::write_changes(&mut w, base_tree, &tree)?;
            let mut layers = known(&record.layers, &record);
            layers.push(built(w.finish()?));
            plan = Some(layers);
        }
    }
    let mut outgoing = plan.unwrap_or_default();
    let first = send_all(&client, &mut outgoing, &meter, options.jobs());
    if let Err(e) = first.as_ref() {
        if e.errno() != libc::ENOENT {
            return Err(e.clone());
        }
    }
    if outgoing.is_empty() || first.is_err() {
        // Nothing recorded, or a recorded layer is neither in the registry
        // nor mountable: the whole tree as one layer.
        let mut w = LayerWriter::new(new_layer()?, options.compression)?;
        walk::write_tree(&mut w, &tree)?;
        outgoing = vec![built(w.finish()?)];
        send_all(&client, &mut outgoing, &meter, options.jobs())?;
    }
    let layers: Vec<Layer> = outgoing.into_iter().map(|o| o.layer).collect();
    let (config, manifest) = documents(id, &facts, &layers);
    let config_digest = sha256(&config);
    send_config(&client, &config_digest, new_layer()?, &config, &meter)?;
    let digest = sha256(&manifest);
    let tag = match &reference.digest {
        Some(d) if *d != digest => {
            return Err(Error::invalid(format!(
                "the image's manifest is {digest}, not the digest {d} the reference names"
            )));
        }
        Some(_) => None,
        None => Some(reference.tag.clone().unwrap_or_else(|| tag_for_id(id))),
    };
    client.put_manifest(tag.as_deref().unwrap_or(&digest), MANIFEST_TYPE, &manifest)?;
    Record {
        registry: reference.registry.clone(),
        repository: reference.repository.clone(),
        manifest: digest.clone(),
        layers: layers.clone(),
    }
    .save(store, &name)?;
    let p = meter.snapshot();
    Ok(PushReport {
        digest,
        tag,
        blobs_uploaded: p.blobs_done,
        blobs_skipped: p.blobs_skipped,
        bytes_uploaded: p.bytes_done,
        layers: layers.len(),
    })
}

/// Sends the blobs the registry lacks, `jobs` at a time. A recorded layer
/// (no file) the registry lacks and cannot mount is an error.
fn send_all(client: &Client, outgoing: &mut [Outgoing], meter: &Meter, jobs: usize) -> Result<()> {
    let total: u64 = outgoing
        .iter()
        .filter(|o| o.file.is_some())
        .map(|o| o.layer.size)
        .sum();
    meter.plan(outgoing.len() as u64, total)?;
    let queue = Mutex::new(outgoing.iter().collect::<Vec<_>>());
    let first_error = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..jobs.min(outgoing.len()) {
            s.spawn(|| {
                loop {
                    let Some(o) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop() else {
                        return;
                    };
                    if let Err(e) = send_one(client, o, meter) {
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                        queue.lock().unwrap_or_else(|p| p.into_inner()).clear();
                    }
                }
            });
        }
    });
    first_error
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .map_or(Ok(()), Err)
}

fn send_one(client: &Client, o: &Outgoing, meter: &Meter) -> Result<()> {
    let digest = &o.layer.digest;
    if client.has_blob(digest)? {
        return meter.blob(true);
    }
    match &o.file {
        Some(file) => {
            let sent = client.upload(file, o.layer.size, digest, o.mount_from.as_deref(), meter)?;
            meter.blob(!sent)
        }
        None => {
            let Some(from) = o.mount_from.as_deref() else {
                return Err(Error::new(
                    libc::ENOENT,
                    format!("layer {digest} is not in {}", client.place()),
                ));
            };
            // A mount sends no bytes; an empty file is never read.
            let empty =
                File::open("/dev/null").map_err(|e| Error::io("cannot open /dev/null", e))?;
            if client.upload(&empty, 0, digest, Some(from), meter)? {
                return Err(Error::new(
                    libc::ENOENT,
                    format!("layer {digest} could not be mounted from {from}"),
                ));
            }
            meter.blob(true)
        }
    }
}

/// Uploads the config blob unless the registry has it.
fn send_config(
    client: &Client,
    digest: &str,
    mut file: File,
    config: &[u8],
    meter: &Meter,
) -> Result<()> {
    if client.has_blob(digest)? {
        meter.plan(1, 0)?;
        return meter.blob(true);
    }
    meter.plan(1, config.len() as u64)?;
    std::io::Write::write_all(&mut file, config)
        .map_err(|e| Error::io("cannot write the config", e))?;
    client.upload(&file, config.len() as u64, digest, None, meter)?;
    meter.blob(false)
}

pub(crate) fn sha256(bytes: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(bytes);
    sha256_of(hash)
}

/// The config and manifest documents (keys sorted: the same inputs give
/// the same bytes).
fn documents(id: &str, facts: &super::Facts, layers: &[Layer]) -> (Vec<u8>, Vec<u8>) {
    let created = rfc3339(facts.created);
    let mut labels = Map::new();
    labels.insert(ID_KEY.into(), id.into());
    for (k, v) in &facts.meta {
        labels.insert(format!("{META_PREFIX}{k}"), v.clone().into());
    }
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    };
    let config = json!({
        "architecture": arch,
        "os": "linux",
        "created": created,
        "config": {"Labels": Value::Object(labels.clone())},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
    });
    let config = config.to_string().into_bytes();
    let mut annotations = labels;
    annotations.insert(CREATED_KEY.into(), created.into());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": sha256(&config), "size": config.len()},
        "layers": layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size})).collect::<Vec<_>>(),
        "annotations": Value::Object(annotations),
    });
    (config, manifest.to_string().into_bytes())
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (UTC).
fn rfc3339(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn registry_rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_600_000_000), "2020-09-13T12:26:40Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
