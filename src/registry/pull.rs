//! Pull: any OCI image's flattened root filesystem, committed under an id.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::client::Client;
use super::extract::Extractor;
use super::layer::sha256_of;
use super::progress::Meter;
use super::push::{META_PREFIX, sha256};
use super::record::{Layer, Record, blob_dir};
use super::reference::{Reference, check_digest};
use super::{Facts, RegistryOptions, restore_facts};
use crate::error::{Error, Result};
use crate::store::Store;

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const MANIFEST_TYPES: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// What [`pull`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullReport {
    /// The name the tree was committed as (`objects/<name>`).
    pub name: String,
    /// The manifest digest the tree came from.
    pub digest: String,
    /// Layer blobs downloaded (in whole or in part).
    pub blobs_downloaded: u64,
    /// Layer blobs not downloaded: found in the download area or in an
    /// object already pulled or pushed.
    pub blobs_skipped: u64,
    /// Bytes downloaded for layer blobs.
    pub bytes_downloaded: u64,
}

/// Pulls the image `reference` and commits its root filesystem under `id`
/// (the usual atomic ref swap). On any failure nothing is committed; the
/// blobs fully downloaded stay in `<store>/registry/blobs` so that a second
/// try downloads only the rest.
pub fn pull(
    store: &Store,
    reference: &str,
    id: &str,
    options: &RegistryOptions,
) -> Result<PullReport> {
    crate::ids::ObjectId::new(id)?;
    let context = || format!("cannot pull {reference} into {id:?}");
    run(store, reference, id, options).map_err(|e| e.context(context()))
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::new(libc::EPROTO, format!("not a usable OCI image: {what}"))
}

fn json(bytes: &[u8], what: &str) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|_| bad(format_args!("the {what} is not JSON")))
}

fn run(store: &Store, reference: &str, id: &str, options: &RegistryOptions) -> Result<PullReport> {
    let mut reference = Reference::parse(reference)?;
    let mut client = Client::new(&reference, options)?;
    let mut fetched = client.manifest()?;
    let mut doc = json(&fetched.bytes, "manifest")?;
    let kind = |doc: &Value, header: &str| {
        doc.get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or(header)
            .to_owned()
    };
    if INDEX_TYPES.contains(&kind(&doc, &fetched.media_type).as_str()) {
        let digest = pick_platform(&doc)?;
        reference.digest = Some(digest);
        // Same registry and repository: the connection and token carry over.
        client.reference = reference.clone();
        fetched = client.manifest()?;
        doc = json(&fetched.bytes, "manifest")?;
    }
    let digest = sha256(&fetched.bytes);
    if let Some(wanted) = &reference.digest {
        if *wanted != digest {
            return Err(Error::new(
                libc::EBADMSG,
                format!("the manifest is {digest}, not {wanted}"),
            ));
        }
    }
    if !MANIFEST_TYPES.contains(&kind(&doc, &fetched.media_type).as_str()) {
        return Err(bad(format_args!(
            "manifest type {:?}",
            kind(&doc, &fetched.media_type)
        )));
    }
    let config_digest = doc
        .pointer("/config/digest")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no config"))?;
    check_digest(config_digest)?;
    let config_bytes = client.small_blob(config_digest)?;
    if sha256(&config_bytes) != config_digest {
        return Err(Error::new(
            libc::EBADMSG,
            format!("config blob {config_digest} does not match its digest"),
        ));
    }
    let config = json(&config_bytes, "config")?;
    let diff_ids: Vec<&str> = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no rootfs.diff_ids in the config"))?
        .iter()
        .map(|v| v.as_str().ok_or_else(|| bad("a diff_id is not a string")))
        .collect::<Result<_>>()?;
    let descs = doc
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no layers"))?;
    if descs.len() != diff_ids.len() {
        return Err(bad(
            "the manifest and the config list different numbers of layers",
        ));
    }
    let mut layers = Vec::new();
    for (d, diff_id) in descs.iter().zip(&diff_ids) {
        let field = |k: &str| {
            d.get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format_args!("a layer without {k}")))
        };
        let layer = Layer {
            digest: field("digest")?.to_owned(),
            size: d
                .get("size")
                .and_then(Value::as_u64)
                .ok_or_else(|| bad("a layer without size"))?,
            media_type: field("mediaType")?.to_owned(),
            diff_id: (*diff_id).to_owned(),
        };
        check_digest(&layer.digest)?;
        check_digest(&layer.diff_id)?;
        decoder_kind(&layer.media_type)?;
        layers.push(layer);
    }

    let meter = Meter::new(options.progress.as_deref());
    // The base is pinned until it has been copied; one that is gone (or
    // going) means pulling every layer.
    let mut start = Record::best_prefix(store, &layers);
    let base = match &start {
        Some((name, _)) => super::pin_base(store, name)?,
        None => None,
    };
    if base.is_none() {
        start = None;
    }
    let skip = start.as_ref().map_or(0, |s| s.1);
    let (dir, _downloading) = blob_dir(store)?;
    let files = fetch_all(&client, &layers[skip..], &dir, &meter, options.jobs())?;

    let mut object = store.new_object(id)?;
    if let Some((base, _pinned)) = &base {
        crate::tree::copy_tree(base, object.tree())?;
        meter.plan(skip as u64, 0)?;
        for _ in 0..skip {
            meter.blob(true)?;
        }
    }
    let mut ex = Extractor::new(object.tree())?;
    for (layer, path) in layers[skip..].iter().zip(&files) {
        apply(&mut ex, layer, path).map_err(|e| e.context(format!("layer {}", layer.digest)))?;
    }
    ex.finish()?;
    restore_facts(&mut object, &facts_of(&config))?;
    let name = store.commit(&mut object, id)?;
    let record = Record {
        registry: reference.registry.clone(),
        repository: reference.repository.clone(),
        manifest: digest.clone(),
        layers,
    };
    // The tree is committed: a record that cannot be saved only costs a
    // later pull the reuse of these layers, so it is reported, not failed.
    if let Err(e) = record.save(store, &name) {
        crate::log::warn(format_args!("pull of {id:?}: {e}"));
    }
    for path in &files {
        let _ = std::fs::remove_file(path);
    }
    let p = meter.snapshot();
    Ok(PullReport {
        name,
        digest,
        blobs_downloaded: p.blobs_done,
        blobs_skipped: p.blobs_skipped,
        bytes_downloaded: p.bytes_done,
    })
}

/// The manifest of an index for this machine's platform (linux).
fn pick_platform(index: &Value) -> Result<String> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let entries = index
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("an index without manifests"))?;
    let fits = |m: &&Value| {
        let p = |k: &str| m.pointer(&format!("/platform/{k}")).and_then(Value::as_str);
        p("os").is_none_or(|os| os == "linux") && p("architecture").is_none_or(|a| a == arch)
    };
    let entry = entries
        .iter()
        .find(fits)
        .ok_or_else(|| bad(format_args!("no manifest for linux/{arch} in the index")))?;
    let digest = entry
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("an index entry without digest"))?;
    check_digest(digest)?;
    Ok(digest.to_owned())
}

/// The facts an image carries in its config labels.
fn facts_of(config: &Value) -> Facts {
    let labels = config.pointer("/config/Labels").and_then(Value::as_object);
    let meta = labels
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            Some((
                k.strip_prefix(META_PREFIX)?.to_owned(),
                v.as_str()?.to_owned(),
            ))
        })
        .collect();
    let created = config
        .get("created")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339)
        .unwrap_or(0);
    Facts {
        created,
        meta,
        base: None,
    }
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
fn parse_rfc3339(s: &str) -> Option<i64> {
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d, hh, mm, ss) = (
        n(0..4)?,
        n(5..7)?,
        n(8..10)?,
        n(11..13)?,
        n(14..16)?,
        n(17..19)?,
    );
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

enum Decoder {
    Gzip,
    Zstd,
    Plain,
}

fn decoder_kind(media_type: &str) -> Result<Decoder> {
    Ok(match media_type {
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Decoder::Gzip,
        "application/vnd.oci.image.layer.v1.tar+zstd" => Decoder::Zstd,
        "application/vnd.oci.image.layer.v1.tar" => Decoder::Plain,
        other => return Err(bad(format_args!("layer type {other:?}"))),
    })
}

/// A reader that hashes what is read through it.
struct HashReader<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Extracts one downloaded layer, checking its uncompressed digest.
fn apply(ex: &mut Extractor, layer: &Layer, path: &Path) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::path("cannot open", path, e))?;
    let input = io::BufReader::with_capacity(1 << 20, file);
    let reader: Box<dyn Read> = match decoder_kind(&layer.media_type)? {
        Decoder::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Decoder::Zstd => Box::new(
            zstd::Decoder::with_buffer(input).map_err(|e| Error::io("cannot start zstd", e))?,
        ),
        Decoder::Plain => Box::new(input),
    };
    let mut hashing = HashReader {
        inner: reader,
        hash: Sha256::new(),
    };
    ex.layer(&mut hashing)?;
    io::copy(&mut hashing, &mut io::sink()).map_err(|e| Error::io("cannot read the layer", e))?;
    let got = sha256_of(hashing.hash);
    if got != layer.diff_id {
        return Err(Error::new(
            libc::EBADMSG,
            format!(
                "the layer's contents are {got}, not the diff_id {}",
                layer.diff_id
            ),
        ));
    }
    Ok(())
}

/// Downloads the layers into `dir`, `jobs` at a time; returns their paths.
fn fetch_all(
    client: &Client,
    layers: &[Layer],
    dir: &Path,
    meter: &Meter,
    jobs: usize,
) -> Result<Vec<PathBuf>> {
    meter.plan(layers.len() as u64, layers.iter().map(|l| l.size).sum())?;
    let queue = Mutex::new(layers.iter().collect::<Vec<_>>());
    let first_error = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..jobs.min(layers.len()) {
            s.spawn(|| {
                loop {
                    let Some(layer) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop() else {
                        return;
                    };
                    if let Err(e) = fetch(client, layer, dir, meter) {
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
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(layers.iter().map(|l| dir.join(&l.digest[7..])).collect())
}

/// Downloads one blob to `dir/<hex>`, resuming `dir/<hex>.partial`, checking
/// size and digest as the bytes arrive.
fn fetch(client: &Client, layer: &Layer, dir: &Path, meter: &Meter) -> Result<()> {
    let hex = &layer.digest[7..];
    let done = dir.join(hex);
    if done.exists() {
        return meter.blob(true);
    }
    let partial = dir.join(format!("{hex}.partial"));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(&partial)
        .map_err(|e| Error::path("cannot open", &partial, e))?;
    let mut hash = Sha256::new();
    let mut have = io::copy(&mut (&file).take(layer.size), &mut HashWriter(&mut hash))
        .map_err(|e| Error::path("cannot read", &partial, e))?;
    let (body, from) = client.blob_from(&layer.digest, have)?;
    if from != have {
        file.set_len(0)
            .map_err(|e| Error::path("cannot truncate", &partial, e))?;
        hash = Sha256::new();
        have = 0;
    }
    let mut reader = body.into_reader().take(layer.size - have + 1);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| Error::io(format_args!("cannot download blob {}", layer.digest), e))?;
        if n == 0 {
            break;
        }
        have += n as u64;
        if have > layer.size {
            break;
        }
        hash.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(|e| Error::path("cannot write", &partial, e))?;
        meter.bytes(n as u64)?;
    }
    let got = sha256_of(hash);
    if have != layer.size || got != layer.digest {
        let _ = std::fs::remove_file(&partial);
        return Err(Error::new(
            libc::EBADMSG,
            format!(
                "blob {} from {} does not match its digest or size ({have} bytes, {got})",
                layer.digest,
                client.place()
            ),
        ));
    }
    std::fs::rename(&partial, &done).map_err(|e| Error::path("cannot rename", &partial, e))?;
    meter.blob(false)
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
