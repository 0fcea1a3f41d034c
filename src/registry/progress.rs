//! Progress of a transfer, reported to the caller's callback one report at
//! a time (the transferring threads take turns), with cancellation.

use std::io::{self, Read};
use std::sync::Mutex;

use super::ProgressFn;
use crate::error::{Error, Result};

/// Where a push or pull stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes sent or received so far.
    pub bytes_done: u64,
    /// Bytes that will move if nothing is skipped (0 until known).
    pub bytes_total: u64,
    /// Blobs moved so far.
    pub blobs_done: u64,
    /// Blobs the other side already had (not moved).
    pub blobs_skipped: u64,
    /// Blobs of the image.
    pub blobs_total: u64,
}

/// Counts what moves and calls the callback; a callback answering `false`
/// cancels the transfer (`ECANCELED`).
pub(crate) struct Meter<'a> {
    state: Mutex<Progress>,
    callback: Option<&'a ProgressFn>,
}

impl<'a> Meter<'a> {
    pub(crate) fn new(callback: Option<&'a ProgressFn>) -> Self {
        Meter {
            state: Mutex::new(Progress::default()),
            callback,
        }
    }

    fn update(&self, f: impl FnOnce(&mut Progress)) -> Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut state);
        match self.callback {
            Some(cb) if !cb(&state) => Err(Error::new(
                libc::ECANCELED,
                "transfer cancelled by the progress callback",
            )),
            _ => Ok(()),
        }
    }

    pub(crate) fn plan(&self, blobs: u64, bytes: u64) -> Result<()> {
        self.update(|p| {
            p.blobs_total += blobs;
            p.bytes_total += bytes;
        })
    }

    pub(crate) fn bytes(&self, n: u64) -> Result<()> {
        self.update(|p| p.bytes_done += n)
    }

    pub(crate) fn blob(&self, skipped: bool) -> Result<()> {
        self.update(|p| {
            if skipped {
                p.blobs_skipped += 1
            } else {
                p.blobs_done += 1
            }
        })
    }

    pub(crate) fn snapshot(&self) -> Progress {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A reader that counts what is read through it.
    pub(crate) fn reader<R: Read>(&'a self, inner: R) -> Metered<'a, R> {
        Metered { inner, meter: self }
    }
}

/// See [`Meter::reader`].
pub(crate) struct Metered<'a, R> {
    inner: R,
    meter: &'a Meter<'a>,
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.meter
            .bytes(n as u64)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        Ok(n)
    }
}
