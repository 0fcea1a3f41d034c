//! The crate's error type: an errno value and a human-readable message.
//!
//! Every fallible operation of the core returns [`Result`]; the C layer turns
//! an [`Error`] into a negative errno return plus the thread's last-error
//! message.
//!
//! Messages are written for C programmers: reasons are `strerror(3)` texts
//! (never Rust's `(os error 13)`), modes are octal with a leading zero
//! (`01777`).

use std::fmt;
use std::io;
use std::path::Path;

/// An error with the errno that best describes it and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    errno: i32,
    message: String,
}

/// Result type of the core.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error with an explicit errno value (positive, e.g. `libc::EINVAL`).
    pub fn new(errno: i32, message: impl Into<String>) -> Self {
        Error {
            errno,
            message: message.into(),
        }
    }

    /// `EINVAL`: a bad argument.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(libc::EINVAL, message)
    }

    /// An I/O error, with what was being done when it happened:
    /// "`<context>`: `<strerror text>`", as a C program would say it.
    pub fn io(context: impl fmt::Display, err: io::Error) -> Self {
        match err.raw_os_error() {
            Some(errno) => Error::new(
                errno,
                format!("{context}: {}", nix::errno::Errno::from_raw(errno).desc()),
            ),
            None => Error::new(libc::EIO, format!("{context}: {err}")),
        }
    }

    /// An I/O error about one path: "`<what>` `<path>`: `<reason>`".
    pub fn path(what: &str, path: &Path, err: io::Error) -> Self {
        Self::io(format_args!("{what} {}", path.display()), err)
    }

    /// An errno value from a syscall, with context.
    pub fn sys(context: impl fmt::Display, errno: nix::errno::Errno) -> Self {
        Self::io(context, io::Error::from_raw_os_error(errno as i32))
    }

    /// The positive errno value.
    pub fn errno(&self) -> i32 {
        self.errno
    }

    /// The message, without the errno.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error with more context in front of the message.
    pub fn context(self, context: impl fmt::Display) -> Self {
        Error {
            errno: self.errno,
            message: format!("{context}: {}", self.message),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        io::Error::new(io::Error::from_raw_os_error(e.errno).kind(), e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_speak_c() {
        let e = Error::io("cannot open x", io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(e.errno(), libc::EACCES);
        assert_eq!(e.message(), "cannot open x: Permission denied");
        let e = Error::sys("cannot bind y", nix::errno::Errno::ENOTDIR);
        assert_eq!(e.message(), "cannot bind y: Not a directory");
        let e = Error::io("z", io::Error::other("custom"));
        assert_eq!((e.errno(), e.message()), (libc::EIO, "z: custom"));
    }
}
