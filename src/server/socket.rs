//! The listening socket and its file: choosing the default path, binding
//! with the right mode from the start, and removing exactly what was
//! created when the server stops.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
use nix::sys::stat::{FchmodatFlags, Mode};

use crate::error::{Error, Result};
use crate::tempdir::create_unique_dir;

/// Parent of the private directories of servers started without a socket
/// path.
pub const DEFAULT_SOCKET_PARENT: &str = "/run/osbuild";

/// Name of the socket inside a default private directory.
pub const DEFAULT_SOCKET_NAME: &str = "store";

/// Environment variable naming the socket of a server started without a
/// socket path (when set and not empty); `osstore-client` connects to it
/// too, so exporting it once makes both agree.
pub const SOCKET_ENV: &str = "OSSTORE_SOCKET";

/// The socket file (and the private directory holding it, when the server
/// chose the path), removed by [`SocketFile::remove`] or on drop.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    /// Device and inode of the socket file, so that only our own socket is
    /// removed even if the path was replaced meanwhile.
    identity: Option<(u64, u64)>,
    private_dir: Option<PathBuf>,
    removed: bool,
}

impl SocketFile {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket file (if it is still ours) and the private
    /// directory, reporting the first failure.
    pub fn remove(mut self) -> Result<()> {
        self.remove_now()
    }

    fn remove_now(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.removed, true) {
            return Ok(());
        }
        let mut result = Ok(());
        if let (Some((dev, ino)), Ok(meta)) = (self.identity, std::fs::symlink_metadata(&self.path))
        {
            if meta.dev() == dev && meta.ino() == ino {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    result = Err(Error::path("cannot remove socket", &self.path, e));
                }
            }
        }
        if let Some(dir) = &self.private_dir {
            if let Err(e) = std::fs::remove_dir(dir) {
                result = result.and(Err(Error::path("cannot remove directory", dir, e)));
            }
        }
        result
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = self.remove_now();
    }
}

/// Creates a non-blocking `SOCK_SEQPACKET` socket listening at `path`; when
/// `path` is `None`, at `$OSSTORE_SOCKET` if set and not empty, otherwise at
/// `<fresh private dir under /run/osbuild>/store`.
/// The socket file gets permission bits `mode` (at most 0777); it never
/// has wider permissions than `mode`, not even for a moment.
pub fn listen(path: Option<&Path>, mode: u32) -> Result<(OwnedFd, SocketFile)> {
    if mode & !0o777 != 0 {
        return Err(Error::invalid(format!(
            "socket mode 0{mode:o} has bits beyond 0777"
        )));
    }
    let from_env = std::env::var_os(SOCKET_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let mut file = match path.or(from_env.as_deref()) {
        Some(path) => SocketFile {
            path: path.to_path_buf(),
            identity: None,
            private_dir: None,
            removed: false,
        },
        None => {
            let dir = private_dir()?;
            SocketFile {
                path: dir.join(DEFAULT_SOCKET_NAME),
                identity: None,
                private_dir: Some(dir),
                removed: false,
            }
        }
    };
    let address = UnixAddr::new(file.path.as_path()).map_err(|e| {
        Error::sys(
            format!("cannot use {} as a socket address", file.path.display()),
            e,
        )
    })?;
    let socket = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| Error::sys("cannot create socket", e))?;
    // The file that bind creates takes the socket inode's mode (less the
    // umask): set it first, so the file is never more open than `mode`.
    let bits = Mode::from_bits_truncate(mode);
    nix::sys::stat::fchmod(&socket, bits)
        .map_err(|e| Error::sys("cannot set the socket's mode", e))?;
    nix::sys::socket::bind(socket.as_raw_fd(), &address)
        .map_err(|e| Error::sys(format!("cannot bind {}", file.path.display()), e))?;
    let meta = std::fs::symlink_metadata(&file.path)
        .map_err(|e| Error::path("cannot stat", &file.path, e))?;
    file.identity = Some((meta.dev(), meta.ino()));
    if meta.mode() & 0o777 != mode {
        // The umask took bits away; put them back (not through a symlink).
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            file.path.as_path(),
            bits,
            FchmodatFlags::NoFollowSymlink,
        )
        .map_err(|e| Error::sys(format!("cannot chmod {}", file.path.display()), e))?;
    }
    nix::sys::socket::listen(&socket, Backlog::MAXCONN)
        .map_err(|e| Error::sys(format!("cannot listen on {}", file.path.display()), e))?;
    Ok((socket, file))
}

/// A fresh directory `/run/osbuild/store-<random>`, mode 0700 (the parent is
/// created if missing).
fn private_dir() -> Result<PathBuf> {
    let parent = Path::new(DEFAULT_SOCKET_PARENT);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(parent)
        .map_err(|e| Error::path("cannot create", parent, e))?;
    create_unique_dir(parent, b"store-", b"")
}
