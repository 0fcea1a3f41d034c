//! `os_log_set`: where the library's messages go.

use std::ffi::{CString, c_char, c_int, c_void};
use std::sync::Arc;

use super::boundary;
use crate::error::Error;
use crate::log::{self, Level};

/// Log level: nothing (for `os_log_set()`).
pub const OS_LOG_NONE: c_int = 0;
/// Log level: failures the caller is not told about otherwise.
pub const OS_LOG_ERROR: c_int = 1;
/// Log level: something is wrong, but the work goes on.
pub const OS_LOG_WARNING: c_int = 2;
/// Log level: what the library decided on its own (what a collection
/// removed, clients the server refused).
pub const OS_LOG_INFO: c_int = 3;
/// Log level: fallbacks and other details of how work was done.
pub const OS_LOG_DEBUG: c_int = 4;

/// A log callback: `level` is one of `OS_LOG_ERROR` ... `OS_LOG_DEBUG`,
/// `message` one line without a newline, valid during the call only.
pub type os_log_fn =
    Option<unsafe extern "C" fn(level: c_int, message: *const c_char, userdata: *mut c_void)>;

/// The C callback and its userdata, callable from any thread.
struct CSink {
    callback: unsafe extern "C" fn(c_int, *const c_char, *mut c_void),
    userdata: *mut c_void,
}

// SAFETY: `os_log_set()` documents that the callback is called from any
// thread of the library, so the caller made it and its userdata fit for that.
unsafe impl Send for CSink {}
// SAFETY: as above; calls may also happen at the same time.
unsafe impl Sync for CSink {}

impl CSink {
    fn deliver(&self, level: Level, message: &str) {
        let text = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
        // SAFETY: the caller of `os_log_set()` gave a function with this
        // signature and the userdata it expects.
        unsafe { (self.callback)(level as c_int, text.as_ptr(), self.userdata) };
    }
}

/// Sends the library's messages at `level` and more important ones to
/// `callback` with `userdata`: `level` `OS_LOG_ERROR` gives errors only,
/// `OS_LOG_DEBUG` everything, `OS_LOG_NONE` nothing. With `callback` NULL
/// the messages go to stderr, one line each (`osstore: <level>: <message>`).
///
/// The library is silent by default, unless the environment variable
/// `OSSTORE_LOG` is `error`, `warning`, `info` or `debug` when it has its
/// first message: then that level goes to stderr. A call of `os_log_set()`
/// replaces that choice and any earlier callback.
///
/// What is logged: what the library decides on its own, such as what
/// `os_store_gc()` removed (at `OS_LOG_INFO` the count and how much the
/// filesystem's free space grew meanwhile, at `OS_LOG_DEBUG` each path),
/// what an eviction removed (at `OS_LOG_INFO` the number of refs, the bytes
/// and how long removing the objects took),
/// fallbacks to slower methods
/// (copying file data where a reflink was refused, the classic mount calls
/// where the new mount API is missing) and clients the server refused.
///
/// Threads: the callback is called from the thread where the event
/// happens, which may be a thread of the library (the server's thread, a
/// copy's worker threads), and from several threads at the same time. It
/// must not call `os_log_set()` (that call then fails with `-EDEADLK`);
/// messages the library has while the callback runs in that thread are
/// dropped. Once `os_log_set()` returns, the previous callback is not
/// running and is never called again, so its userdata may be freed.
/// Messages are never sent at library load time, and no thread is started.
///
/// Returns 0, or `-EINVAL` for a level outside `OS_LOG_NONE` to
/// `OS_LOG_DEBUG`, `-EDEADLK` when called from the callback.
///
/// The caller passes: `callback` NULL or a function of this signature that
/// stays callable, with `userdata`, from any thread until it is replaced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn os_log_set(
    callback: os_log_fn,
    level: c_int,
    userdata: *mut c_void,
) -> c_int {
    boundary(|| {
        let level = match level {
            OS_LOG_NONE => None,
            n => Some(Level::from_number(n).ok_or_else(|| {
                Error::invalid(format!(
                    "log level {n} is not one of OS_LOG_NONE (0) to OS_LOG_DEBUG (4)"
                ))
            })?),
        };
        let sink = callback.map(|callback| {
            let sink = CSink { callback, userdata };
            Arc::new(move |level: Level, message: &str| sink.deliver(level, message)) as log::Sink
        });
        if !log::set_sink(sink, level) {
            return Err(Error::new(
                libc::EDEADLK,
                "os_log_set() cannot be called from the log callback",
            ));
        }
        Ok(0)
    })
}
