//! Progress of long work: an animated line on a terminal (indicatif), plain
//! lines otherwise, both on standard error.

use std::io::IsTerminal;
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
