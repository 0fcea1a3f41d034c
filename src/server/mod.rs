//! The store server: answers the socket protocol of
//! `docs/protocol.md` (`read-tree`, `read-tree-at`, `mkdtemp`,
//! `source`, plus the `open-tree` extension) for one [`Store`].
//!
//! # Concurrency model
//!
//! One thread per server runs an `epoll` event loop over non-blocking
//! sockets (`event_loop.rs`). This was chosen over a thread per connection
//! and over a thread pool because every request is short (a look-up, a
//! `mkdir`, a few mount syscalls) and its cost is dominated by the system
//! calls of the transport and the wake-ups of the clients: one loop answers
//! a request with one `recvmsg` and one `send`, plus one `epoll_wait`
//! shared by all the connections that are ready, with no locks, no
//! hand-over between threads and no extra context switches; that is what
//! a minimal C epoll server does too. (On the 2-core machine it was
//! measured on, the clients keep the other core busy, so more server
//! threads would not add throughput.) It also keeps idle connections cheap:
//! there is one receive buffer per loop and none per connection, so an idle
//! connection costs its socket and a 16-byte table slot (plus the pins of
//! its answers, see `methods.rs`), where a thread per connection would cost
//! a stack.
//!
//! No client can stall the others: nothing in the loop waits for a client,
//! receives and sends are non-blocking, and a reply that does not fit in a
//! client's socket is parked until the client reads (meanwhile nothing more
//! is read from that client). When a single connection is active, the loop
//! reads its next request right after sending a reply, before going back
//! to `epoll_wait` (a bounded number of times in a row): in a ping-pong
//! with a client on the same core the request is there already.
//!
//! `read-tree` answers for committed objects come from the store's ref
//! cache (kept exact with inotify, see `src/refcache.rs`) and its table of
//! open object directories (see `src/cache/pins.rs`), as `Store::get`'s do:
//! that saves the `stat` of `refs/<id>` that otherwise costs as much as the
//! rest of a request.
//!
//! # Pins
//!
//! Look-ups pin what they find against eviction and collection (see
//! `methods.rs`): a `read-tree-at` mount until it is unmounted, the answers
//! of `read-tree` and `open-tree` until their connection closes.
//!
//! # Limits
//!
//! A request may be up to 4 MiB ([`MAX_REQUEST`] bytes); a larger packet is
//! discarded whole and answered with an `{"error": ...}`. A packet may carry
//! up to 253 descriptors ([`MAX_FDS`]), which are all closed. Each
//! connection holds one descriptor of the server process.
//!
//! # Clean-up
//!
//! [`Server::stop`] (or dropping the server) stops accepting, closes every
//! connection (letting go of their pins), syncs and lazily unmounts every mount that `read-tree-at`
//! made (newest first), removes the private temp root of `mkdtemp`, the
//! socket file and, when the server chose the socket path, its private
//! directory.

mod event_loop;
// Public (and hidden from the docs) only for the fuzz targets in fuzz/,
// which drive the decoding and dispatch directly.
#[doc(hidden)]
pub mod methods;
#[doc(hidden)]
pub mod protocol;
#[doc(hidden)]
pub mod readtree_at;
mod socket;
mod transport;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::error::{Error, Result};
use crate::store::Store;
use crate::tempdir::TempDir;

pub use socket::{DEFAULT_SOCKET_NAME, DEFAULT_SOCKET_PARENT, SOCKET_ENV};
pub use transport::{MAX_FDS, MAX_REQUEST};

/// Default permission bits of the socket file.
pub const DEFAULT_SOCKET_MODE: u32 = 0o600;

/// How a server is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// Where to listen. `None` (the default): `$OSSTORE_SOCKET` when set and
    /// not empty ([`SOCKET_ENV`]), otherwise a socket named `store` in a
    /// fresh private directory (mode 0700) under `/run/osbuild`, which is
    /// created if missing; the directory is removed when the server stops.
    pub socket_path: Option<PathBuf>,
    /// Permission bits of the socket file, at most 0777 (default 0600).
    /// The file never has wider permissions than these.
    pub socket_mode: u32,
    /// When set, only peers whose uid (`SO_PEERCRED`, taken when they
    /// connected) is in the list are served; any other connection is closed
    /// as soon as it is accepted. `None` (the default): whoever can open the
    /// socket file.
    pub allowed_uids: Option<Vec<u32>>,
    /// Directories that `read-tree-at` targets must lie under (strictly
    /// below one of them). A target is resolved from its directory without
    /// following a symlink or leaving it, and the mount is made on what was
    /// so resolved, so nothing planted under a directory leads the mount
    /// elsewhere. `None` (the default): when `allowed_uids` is set, the
    /// server's own temp root (where `mkdtemp` creates directories), so that
    /// admitting an unprivileged uid never lets it mount over host paths;
    /// otherwise no confinement (a root-only server mounts wherever a client
    /// names, as the reference server does). `Some(vec![])` refuses every
    /// target.
    pub mount_roots: Option<Vec<PathBuf>>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            socket_path: None,
            socket_mode: DEFAULT_SOCKET_MODE,
            allowed_uids: None,
            mount_roots: None,
        }
    }
}

/// A running store server. Stopped by [`Server::stop`] or when dropped.
#[derive(Debug)]
pub struct Server {
    socket_path: PathBuf,
    running: Option<Running>,
}

#[derive(Debug)]
struct Running {
    thread: JoinHandle<Result<()>>,
    stop: Arc<EventFd>,
    tmproot: TempDir,
    socket: socket::SocketFile,
}

impl Server {
    /// Starts serving `store` on a new socket, in a thread of its own.
    ///
    /// Creates the private temp root (`<store>/tmp/store-server-<random>`)
    /// and the socket (see [`ServerOptions`]). Fails with `EINVAL` for a
    /// mode beyond 0777, `EADDRINUSE` when the socket path exists,
    /// `ENAMETOOLONG` for a path too long for a socket address, or the
    /// error of creating the directories.
    pub fn start(store: Store, options: ServerOptions) -> Result<Server> {
        let tmproot = store.tempdir(b"store-server-", b"")?;
        let (listener, socket) =
            socket::listen(options.socket_path.as_deref(), options.socket_mode)?;
        let stop = EventFd::from_flags(EfdFlags::EFD_CLOEXEC)
            .map_err(|e| Error::sys("cannot create an eventfd", e))?;
        let stop = Arc::new(stop);
        let mount_roots = match (options.mount_roots, &options.allowed_uids) {
            (Some(roots), _) => Some(roots),
            (None, Some(_)) => Some(vec![tmproot.path().to_path_buf()]),
            (None, None) => None,
        };
        let methods = methods::Methods::new(store, tmproot.path().to_path_buf(), mount_roots);
        let event_loop =
            event_loop::EventLoop::new(listener, Arc::clone(&stop), methods, options.allowed_uids)?;
        let thread = std::thread::Builder::new()
            .name("osstore-server".into())
            .spawn(move || event_loop.run())
            .map_err(|e| Error::io("cannot start the server thread", e))?;
        Ok(Server {
            socket_path: socket.path().to_path_buf(),
            running: Some(Running {
                thread,
                stop,
                tmproot,
                socket,
            }),
        })
    }

    /// The path of the listening socket.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// Stops the server and cleans up after it (see the module
    /// documentation), reporting the first failure; the clean-up is
    /// attempted in full regardless.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        // Only an overflowing counter makes this fail, which one write
        // cannot cause; without the signal the thread could not be joined.
        running
            .stop
            .write(1)
            .map_err(|e| Error::sys("cannot signal the server thread to stop", e))?;
        let served = running
            .thread
            .join()
            .unwrap_or_else(|_| Err(Error::new(libc::EIO, "the server thread panicked")));
        let socket_removed = running.socket.remove();
        let tmproot_removed = running.tmproot.remove();
        served.and(socket_removed).and(tmproot_removed)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Errors cannot be reported from drop; `stop` reports them.
        let _ = self.shutdown();
    }
}
