//! Progress of long work: an animated line on a terminal (indicatif), plain
//! lines otherwise, both on standard error.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// One piece of long work being reported.
pub struct Progress {
    bar: Option<ProgressBar>,
    what: String,
}

impl Progress {
    /// Starts reporting `what` (e.g. "exporting stage-1 to /srv/root").
    pub fn start(what: impl Into<String>) -> Progress {
        let what = what.into();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .expect("a valid template"),
            );
            bar.set_message(what.clone());
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        if bar.is_none() {
            eprintln!("{what}...");
        }
        Progress { bar, what }
    }

    /// Ends the report with `outcome` (e.g. "done").
    pub fn finish(mut self, outcome: &str) {
        match self.bar.take() {
            Some(bar) => bar.finish_with_message(format!("{}: {outcome}", self.what)),
            None => eprintln!("{}: {outcome}", self.what),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // On failure the error message follows on a clean line.
        if let Some(bar) = &self.bar {
            if !bar.is_finished() {
                bar.finish_and_clear();
            }
        }
    }
}

/// A transfer with known totals: a bar of bytes on a terminal, otherwise a
/// plain line each time another tenth of the blobs is done.
pub struct Transfer {
    bar: Option<ProgressBar>,
    what: String,
    /// Tenths of the blobs reported so far (plain lines only).
    reported: Mutex<u64>,
}

impl Transfer {
    /// Starts reporting `what` (e.g. "pushing stage-1").
    pub fn start(what: impl Into<String>) -> Transfer {
        let what = what.into();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_message(what.clone());
            bar
        });
        if bar.is_none() {
            eprintln!("{what}...");
        }
        Transfer {
            bar,
            what,
            reported: Mutex::new(0),
        }
    }

    /// Running totals: bytes and blobs done out of the totals.
    pub fn update(&self, bytes: (u64, u64), blobs: (u64, u64)) {
        if let Some(bar) = &self.bar {
            bar.set_length(bytes.1);
            bar.set_position(bytes.0);
            return;
        }
        let tenths = blobs.0 * 10 / blobs.1.max(1);
        let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        if tenths > *reported {
            *reported = tenths;
            eprintln!(
                "{}: {}/{} blobs, {} bytes",
                self.what, blobs.0, blobs.1, bytes.0
            );
        }
    }

    /// Ends the report with `outcome`.
    pub fn finish(&self, outcome: &str) {
        match &self.bar {
            Some(bar) => bar.finish_with_message(format!("{}: {outcome}", self.what)),
            None => eprintln!("{}: {outcome}", self.what),
        }
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            if !bar.is_finished() {
                bar.finish_and_clear();
            }
        }
    }
}
