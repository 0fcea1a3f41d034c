//! The library's log: what it decides on its own (what a collection removed,
//! fallbacks to slower methods, clients the server refused), for whoever
//! installed a sink with [`set_sink`], or for stderr when the environment
//! variable `OSSTORE_LOG` names a level. Silent otherwise.
//!
//! A message below the current level costs one relaxed atomic load: the
//! callers pass `format_args!`, which is only formatted once the level says
//! the message is wanted. `OSSTORE_LOG` is read at the first message, not
//! at load time, and only when no sink was set before.
//!
//! Not the `log` crate: its logger is set once per process and its level
//! check never reaches the library before a logger is installed, while a C
//! program replaces its callback at any time and `OSSTORE_LOG` must work
//! without one.

use std::cell::Cell;
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

/// How important a message is; a sink gets the messages at or above its
/// level (`Error` is the most important).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    /// Something failed that the caller is not told about otherwise.
    Error = 1,
    /// Something is wrong but the work goes on.
    Warning = 2,
    /// What the library decided on its own: removals, refused clients.
    Info = 3,
    /// Fallbacks and other details of how work was done.
    Debug = 4,
}

impl Level {
    /// The level for a number (1 to 4, as the C constants); `None` otherwise.
    pub fn from_number(n: i32) -> Option<Level> {
        [Level::Error, Level::Warning, Level::Info, Level::Debug]
            .into_iter()
            .find(|l| *l as i32 == n)
    }

    /// The level a value of `OSSTORE_LOG` names: `error`, `warning` (or
    /// `warn`), `info`, `debug`, in any case.
    pub fn from_name(name: &str) -> Option<Level> {
        match name.trim().to_ascii_lowercase().as_str() {
            "error" => Some(Level::Error),
            "warning" | "warn" => Some(Level::Warning),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            _ => None,
        }
    }

    /// The level's name in messages on stderr.
    pub fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

/// Where messages go: called with the level and the message (one line).
pub type Sink = Arc<dyn Fn(Level, &str) + Send + Sync>;

/// The most detailed level wanted; `OFF` for none, `UNSET` until either a
/// sink is set or `OSSTORE_LOG` was read.
static LEVEL: AtomicU8 = AtomicU8::new(UNSET);
const OFF: u8 = 0;
const UNSET: u8 = u8::MAX;

/// The current sink; `None` with a level set means stderr. Messages are
/// delivered under the read lock, so once [`set_sink`] returns (it takes the
/// write lock) the old sink is never called again.
static SINK: RwLock<Option<Sink>> = RwLock::new(None);

thread_local! {
    /// This thread is inside a sink: its own messages are dropped (a sink
    /// calling into the library must not wait for itself).
    static IN_SINK: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as inside a sink until dropped (also by a panic).
struct InSink;

impl InSink {
    fn enter() -> InSink {
        IN_SINK.with(|c| c.set(true));
        InSink
    }
}

impl Drop for InSink {
    fn drop(&mut self) {
        IN_SINK.with(|c| c.set(false));
    }
}

/// Sends messages at `level` and above to `sink` (`None`: to stderr), or
/// none at all with `level` `None`. Replaces any earlier sink and the
/// environment's choice. Fails (`false`) when called from inside a sink.
pub fn set_sink(sink: Option<Sink>, level: Option<Level>) -> bool {
    if IN_SINK.with(Cell::get) {
        return false;
    }
    let mut slot = SINK.write().unwrap_or_else(|p| p.into_inner());
    *slot = sink;
    LEVEL.store(level.map_or(OFF, |l| l as u8), Ordering::Release);
    true
}

/// Whether messages at `level` are wanted (reads `OSSTORE_LOG` the first
/// time, unless a sink was set).
#[inline]
pub fn enabled(level: Level) -> bool {
    let current = LEVEL.load(Ordering::Relaxed);
    let current = if current == UNSET {
        level_from_env()
    } else {
        current
    };
    level as u8 <= current
}

#[cold]
fn level_from_env() -> u8 {
    let from_env = std::env::var("OSSTORE_LOG")
        .ok()
        .and_then(|v| Level::from_name(&v))
        .map_or(OFF, |l| l as u8);
    // A sink set meanwhile wins.
    match LEVEL.compare_exchange(UNSET, from_env, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => from_env,
        Err(set) => set,
    }
}

/// Logs a message at `level` if it is wanted.
pub fn log(level: Level, message: fmt::Arguments<'_>) {
    if !enabled(level) || IN_SINK.with(Cell::get) {
        return;
    }
    let text = message.to_string();
    let slot = SINK.read().unwrap_or_else(|p| p.into_inner());
    // The level may have changed while the message was formatted.
    if level as u8 > LEVEL.load(Ordering::Acquire) {
        return;
    }
    match slot.as_ref() {
        Some(sink) => {
            let _inside = InSink::enter();
            sink(level, &text);
        }
        None => {
            // One write per message, so that lines of several threads do
            // not interleave.
            let line = format!("osstore: {}: {text}\n", level.name());
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }
}

/// Logs at [`Level::Error`].
pub fn error(message: fmt::Arguments<'_>) {
    log(Level::Error, message);
}

/// Logs at [`Level::Warning`].
pub fn warn(message: fmt::Arguments<'_>) {
    log(Level::Warning, message);
}

/// Logs at [`Level::Info`].
pub fn info(message: fmt::Arguments<'_>) {
    log(Level::Info, message);
}

/// Logs at [`Level::Debug`].
pub fn debug(message: fmt::Arguments<'_>) {
    log(Level::Debug, message);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn log_levels_parse() {
        assert_eq!(Level::from_name(" DEBUG\n"), Some(Level::Debug));
        assert_eq!(Level::from_name("warn"), Some(Level::Warning));
        assert_eq!(Level::from_name("loud"), None);
        assert_eq!(Level::from_number(3), Some(Level::Info));
        assert_eq!(Level::from_number(0), None);
        assert!(Level::Error < Level::Debug);
    }

    /// One test owns the process-wide sink (tests run in parallel).
    #[test]
    fn log_sink_gets_wanted_levels_only() {
        let seen: Arc<Mutex<Vec<(Level, String)>>> = Arc::default();
        let got = Arc::clone(&seen);
        let sink: Sink = Arc::new(move |level, text: &str| {
            // Inside a sink, the library's own messages are dropped and the
            // sink cannot be replaced.
            info(format_args!("nested"));
            assert!(!set_sink(None, None));
            got.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((level, text.to_owned()));
        });
        assert!(set_sink(Some(sink), Some(Level::Info)));
        debug(format_args!("too detailed {}", 1));
        info(format_args!("removed {} entries", 2));
        error(format_args!("broken"));
        assert!(set_sink(None, None));
        info(format_args!("after"));
        // Other tests may log meanwhile: only this test's messages count.
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        let mine: Vec<_> = seen
            .iter()
            .filter(|(_, text)| {
                [
                    "too detailed 1",
                    "removed 2 entries",
                    "broken",
                    "after",
                    "nested",
                ]
                .contains(&text.as_str())
            })
            .cloned()
            .collect();
        assert_eq!(
            mine,
            vec![
                (Level::Info, "removed 2 entries".to_owned()),
                (Level::Error, "broken".to_owned())
            ]
        );
    }
}
