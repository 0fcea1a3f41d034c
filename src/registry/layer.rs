//! Writing one layer: a deterministic tar stream (entries in the order the
//! caller gives, fixed header fields, PAX records for what ustar cannot
//! hold), compressed with fixed settings, hashed as it is written: the
//! SHA-256 of the tar is the layer's `diff_id`, that of the compressed bytes
//! its digest.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{File, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::Compression;
use crate::error::{Error, Result};
use crate::tree::sys::XattrTarget;
use crate::tree::xattr::{XattrBufs, read_all};

/// gzip level: fixed, so that the bytes are the same on every machine.
const GZIP_LEVEL: u32 = 6;
/// zstd level: fixed likewise.
const ZSTD_LEVEL: i32 = 3;
/// Largest id a ustar header field holds (7 octal digits).
const USTAR_ID_MAX: u64 = 0o7777777;
/// Largest time a ustar header field holds (11 octal digits).
const USTAR_TIME_MAX: i64 = 0o77777777777;

/// A finished layer blob, in an unlinked temp file.
#[derive(Debug)]
pub(crate) struct Blob {
    pub(crate) digest: String,
    pub(crate) diff_id: String,
    pub(crate) size: u64,
    pub(crate) media_type: &'static str,
    pub(crate) file: File,
}

/// `sha256:<hex>` of what `hash` was fed.
pub(crate) fn sha256_of(hash: Sha256) -> String {
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in hash.finalize().iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A writer that hashes and counts what goes through it.
pub(crate) struct Hashing<W> {
    inner: W,
    hash: Sha256,
    count: u64,
}

impl<W> Hashing<W> {
    pub(crate) fn new(inner: W) -> Self {
        Hashing {
            inner,
            hash: Sha256::new(),
            count: 0,
        }
    }

    pub(crate) fn finish(self) -> (W, String, u64) {
        (self.inner, sha256_of(self.hash), self.count)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Encoder {
    Gzip(flate2::write::GzEncoder<Hashing<File>>),
    Zstd(zstd::Encoder<'static, Hashing<File>>),
}

impl Write for Encoder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

impl Encoder {
    fn new(out: Hashing<File>, compression: Compression) -> io::Result<Encoder> {
        Ok(match compression {
            Compression::Gzip => Encoder::Gzip(
                flate2::GzBuilder::new()
                    .operating_system(255)
                    .write(out, flate2::Compression::new(GZIP_LEVEL)),
            ),
            Compression::Zstd => Encoder::Zstd(zstd::Encoder::new(out, ZSTD_LEVEL)?),
        })
    }

    fn finish(self) -> io::Result<Hashing<File>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

/// Bytes of tar handed to the compressing thread at a time.
const PIPE_CHUNK: usize = 256 << 10;

/// The tar stream's way to the compressor: chunks go to a thread started
/// for the layer (compression runs beside the walk, as `tar | gzip` does),
/// which compresses, hashes and writes them. The output does not depend on
/// the chunking. The thread is joined by [`Pipe::close`] or on drop.
struct Pipe {
    buf: Vec<u8>,
    tx: Option<SyncSender<Vec<u8>>>,
    worker: Option<JoinHandle<io::Result<(File, String, u64)>>>,
}

impl Pipe {
    fn start(file: File, compression: Compression) -> io::Result<Pipe> {
        let (tx, rx) = sync_channel::<Vec<u8>>(4);
        let worker = std::thread::Builder::new()
            .name("osstore-layer".into())
            .spawn(move || {
                let mut encoder = Encoder::new(Hashing::new(file), compression)?;
                for chunk in rx {
                    encoder.write_all(&chunk)?;
                }
                Ok(encoder.finish()?.finish())
            })?;
        Ok(Pipe {
            buf: Vec::with_capacity(PIPE_CHUNK),
            tx: Some(tx),
            worker: Some(worker),
        })
    }

    fn send(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(PIPE_CHUNK));
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(chunk).is_ok());
        if sent {
            Ok(())
        } else {
            Err(self
                .join()
                .err()
                .unwrap_or_else(|| io::Error::other("the compressor stopped")))
        }
    }

    fn join(&mut self) -> io::Result<(File, String, u64)> {
        self.tx.take();
        match self.worker.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the compressing thread panicked")),
            None => Err(io::Error::other("the compressor stopped")),
        }
    }

    /// Sends what is left, ends the stream and returns the compressed
    /// file, its digest and its size.
    fn close(mut self) -> io::Result<(File, String, u64)> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        self.join()
    }
}

impl Write for Pipe {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PIPE_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        if self.worker.is_some() {
            let _ = self.join();
        }
    }
}

/// Writes the entries of one layer.
pub(crate) struct LayerWriter {
    tar: tar::Builder<Hashing<Pipe>>,
    compression: Compression,
    /// Regular files with several links: inode -> name of the first one.
    links: HashMap<(u64, u64), Vec<u8>>,
    xattr_bufs: XattrBufs,
}

fn tar_error(e: io::Error) -> Error {
    Error::io("cannot write a layer", e)
}

impl LayerWriter {
    /// A layer written to `file` (an empty temp file).
    pub(crate) fn new(file: File, compression: Compression) -> Result<LayerWriter> {
        let pipe = Pipe::start(file, compression).map_err(tar_error)?;
        let mut tar = tar::Builder::new(Hashing::new(pipe));
        tar.mode(tar::HeaderMode::Deterministic);
        Ok(LayerWriter {
            tar,
            compression,
            links: HashMap::new(),
            xattr_bufs: XattrBufs::new(),
        })
    }

    /// Adds the entry at `path` on disk (described by `meta`, from `lstat`)
    /// under the name `name` (relative, no leading `./`; empty for the root).
    /// Sockets are left out: tar has no way to carry them.
    pub(crate) fn entry(&mut self, path: &Path, name: &[u8], meta: &Metadata) -> Result<()> {
        let ft = meta.file_type();
        if ft.is_socket() {
            return Ok(());
        }
        let mut tar_name = if name.is_empty() {
            b"./".to_vec()
        } else {
            name.to_vec()
        };
        let mut records: Vec<(String, Vec<u8>)> = Vec::new();
        let mut header = Header::new_ustar();
        let mut link_target = None;
        let mut size = 0;
        let kind = if ft.is_dir() {
            if !name.is_empty() {
                tar_name.push(b'/');
            }
            EntryType::Directory
        } else if ft.is_symlink() {
            let target =
                std::fs::read_link(path).map_err(|e| Error::path("cannot read link", path, e))?;
            link_target = Some(target.as_os_str().as_bytes().to_vec());
            EntryType::Symlink
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = self.links.get(&key) {
                    link_target = Some(first.clone());
                } else {
                    self.links.insert(key, tar_name.clone());
                }
            }
            if link_target.is_some() {
                EntryType::Link
            } else {
                size = meta.len();
                EntryType::Regular
            }
        } else if ft.is_char_device() || ft.is_block_device() {
            let rdev = meta.rdev();
            header
                .set_device_major(libc::major(rdev))
                .map_err(tar_error)?;
            header
                .set_device_minor(libc::minor(rdev))
                .map_err(tar_error)?;
            if ft.is_char_device() {
                EntryType::Char
            } else {
                EntryType::Block
            }
        } else {
            EntryType::Fifo
        };
        header.set_entry_type(kind);
        header.set_mode(meta.mode() & 0o7777);
        for (key, id, set) in [
            (
                "uid",
                u64::from(meta.uid()),
                Header::set_uid as fn(&mut Header, u64),
            ),
            ("gid", u64::from(meta.gid()), Header::set_gid),
        ] {
            if id > USTAR_ID_MAX {
                records.push((key.into(), id.to_string().into_bytes()));
                set(&mut header, 0);
            } else {
                set(&mut header, id);
            }
        }
        let (sec, nsec) = (meta.mtime(), meta.mtime_nsec());
        header.set_mtime(sec.clamp(0, USTAR_TIME_MAX) as u64);
        if nsec != 0 || !(0..=USTAR_TIME_MAX).contains(&sec) {
            records.push(("mtime".into(), pax_time(sec, nsec).into_bytes()));
        }
        header.set_size(size);
        put_name(
            &mut header.as_old_mut().name,
            &tar_name,
            "path",
            &mut records,
        );
        if let Some(target) = &link_target {
            put_name(
                &mut header.as_old_mut().linkname,
                target,
                "linkpath",
                &mut records,
            );
        }
        self.xattrs(path, &mut records)?;
        self.pax(&records)?;
        header.set_cksum();
        if size > 0 {
            let file = File::open(path).map_err(|e| Error::path("cannot open", path, e))?;
            let len = meta.len();
            // A file that shrank under us would make a corrupt archive: tar
            // needs exactly `size` bytes. Committed trees do not change.
            let mut data = io::Read::take(file, len);
            self.tar.append(&header, &mut data).map_err(|e| {
                Error::io(format_args!("cannot add {} to a layer", path.display()), e)
            })?;
        } else {
            self.tar.append(&header, io::empty()).map_err(tar_error)?;
        }
        Ok(())
    }

    /// Adds the whiteout `.wh.<name>` of the entry `name` (relative).
    pub(crate) fn whiteout(&mut self, name: &[u8]) -> Result<()> {
        let (dir, base) = match name.iter().rposition(|&b| b == b'/') {
            Some(i) => (&name[..=i], &name[i + 1..]),
            None => (&b""[..], name),
        };
        let tar_name = [dir, b".wh.", base].concat();
        let mut records = Vec::new();
        let mut header = Header::new_ustar();
        header.set_entry_type(EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(0);
        header.set_mtime(0);
        put_name(
            &mut header.as_old_mut().name,
            &tar_name,
            "path",
            &mut records,
        );
        self.pax(&records)?;
        header.set_cksum();
        self.tar.append(&header, io::empty()).map_err(tar_error)
    }

    fn xattrs(&mut self, path: &Path, records: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
        for (name, value) in xattrs_of(path, &mut self.xattr_bufs)? {
            let name = String::from_utf8(name)
                .ok()
                .filter(|n| !n.contains('='))
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "{}: an xattr name cannot go into a tar header",
                        path.display()
                    ))
                })?;
            records.push((format!("SCHILY.xattr.{name}"), value));
        }
        Ok(())
    }

    /// Writes a PAX extended header with `records` (nothing when empty).
    fn pax(&mut self, records: &[(String, Vec<u8>)]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut data = Vec::new();
        for (key, value) in records {
            let body = key.len() + value.len() + 3; // " " key "=" value "\n"
            let mut len = body + 1;
            while len != body + len.to_string().len() {
                len = body + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        let mut header = Header::new_ustar();
        header.set_entry_type(EntryType::XHeader);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_size(data.len() as u64);
        header.as_old_mut().name[..9].copy_from_slice(b"PaxHeader");
        header.set_cksum();
        self.tar.append(&header, data.as_slice()).map_err(tar_error)
    }

    /// Ends the archive and the compressed stream.
    pub(crate) fn finish(self) -> Result<Blob> {
        let (pipe, diff_id, _) = self.tar.into_inner().map_err(tar_error)?.finish();
        let (file, digest, size) = pipe.close().map_err(tar_error)?;
        Ok(Blob {
            digest,
            diff_id,
            size,
            media_type: self.compression.media_type(),
            file,
        })
    }
}

/// The extended attributes of `path` (not following a symlink), sorted by
/// name.
pub(crate) fn xattrs_of(path: &Path, bufs: &mut XattrBufs) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid("path with a NUL byte"))?;
    let all = read_all(XattrTarget::Path(&cpath), bufs).map_err(|e| {
        Error::sys(
            format_args!("cannot {} {}", e.what, path.display()),
            e.errno,
        )
    })?;
    let mut out: Vec<_> = all
        .into_iter()
        .map(|(name, value)| (name.into_bytes(), value))
        .collect();
    out.sort();
    Ok(out)
}

/// Puts `name` in a header field, or in a PAX record (`key`) with a cut
/// copy in the field when it does not fit.
fn put_name(field: &mut [u8], name: &[u8], key: &str, records: &mut Vec<(String, Vec<u8>)>) {
    let n = name.len().min(field.len());
    field[..n].copy_from_slice(&name[..n]);
    if name.len() > field.len() {
        records.push((key.into(), name.to_vec()));
    }
}

/// A PAX time `sec.nnnnnnnnn` (negative times written as such).
fn pax_time(sec: i64, nsec: i64) -> String {
    if sec < 0 && nsec > 0 {
        format!("-{}.{:09}", -(sec + 1), 1_000_000_000 - nsec)
    } else {
        format!("{sec}.{nsec:09}")
    }
}

#[cfg(test)]
mod tests;
