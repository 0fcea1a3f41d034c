//! Helpers shared by the server tests (tests/server_*.rs): a raw
//! `SOCK_SEQPACKET` client, a store with a running server, request
//! builders and checks.

use std::fs;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    self, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
    UnixAddr, sockopt,
};
use osstore::server::{Server, ServerOptions};
use osstore::{Object, Store};
use serde_json::{Value, json};

/// A raw client connection.
pub struct Client {
    pub fd: OwnedFd,
}

impl Client {
    pub fn try_connect(path: &Path, autobind: bool) -> nix::Result<Client> {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        if autobind {
            // What the reference client does: bind to the empty address.
            socket::bind(fd.as_raw_fd(), &UnixAddr::new_unnamed())?;
        }
        socket::connect(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
        // A server bug must fail the test, not hang it.
        let timeout = nix::sys::time::TimeVal::new(30, 0);
        socket::setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)?;
        Ok(Client { fd })
    }

    pub fn connect(path: &Path) -> Client {
        Self::try_connect(path, false).expect("connect")
    }

    pub fn connect_autobind(path: &Path) -> Client {
        Self::try_connect(path, true).expect("connect")
    }

    pub fn send(&self, packet: &[u8]) {
        self.send_with_fds(packet, &[]);
    }

    pub fn send_with_fds(&self, packet: &[u8], fds: &[RawFd]) {
        let iov = [IoSlice::new(packet)];
        let cmsgs = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsgs };
        // A packet of several MiB needs the kernel to find that much memory
        // for one buffer; on a machine short of it at that moment sendmsg
        // says ENOBUFS, which is the machine's state, not the server's: the
        // send is tried again, a bounded number of times.
        let mut tries = 0;
        loop {
            match socket::sendmsg::<UnixAddr>(
                self.fd.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::empty(),
                None,
            ) {
                Err(nix::errno::Errno::ENOBUFS) if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                result => {
                    result.expect("sendmsg");
                    break;
                }
            }
        }
    }

    /// One packet (up to 64 KiB) and the descriptors that came with it.
    pub fn recv_with_fds(&self) -> (Vec<u8>, Vec<OwnedFd>) {
        let mut buf = vec![0u8; 65536];
        let mut space = nix::cmsg_space!([RawFd; 253]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = socket::recvmsg::<UnixAddr>(
            self.fd.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .expect("recvmsg");
        assert!(!msg.flags.contains(MsgFlags::MSG_TRUNC), "reply truncated");
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs().expect("cmsgs") {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                // SAFETY: the kernel installed these descriptors for us.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let n = msg.bytes;
        buf.truncate(n);
        (buf, fds)
    }

    pub fn recv(&self) -> Vec<u8> {
        let (packet, fds) = self.recv_with_fds();
        assert!(fds.is_empty(), "unexpected descriptors in reply");
        packet
    }

    pub fn call(&self, packet: &[u8]) -> Vec<u8> {
        self.send(packet);
        self.recv()
    }

    pub fn call_json(&self, request: &Value) -> Value {
        let reply = self.call(request.to_string().as_bytes());
        serde_json::from_slice(&reply)
            .unwrap_or_else(|e| panic!("reply {:?} is not JSON: {e}", text(&reply)))
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A store in a scratch dir with a server on `<scratch>/sock`.
pub struct Fixture {
    // Dropped in this order: the server before the store and the scratch dir.
    pub server: Option<Server>,
    pub store: Store,
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        Self::with(ServerOptions::default())
    }

    pub fn with(mut options: ServerOptions) -> Fixture {
        let dir = tempfile::tempdir().expect("scratch dir");
        let store = super::quick(&dir.path().join("store"));
        options
            .socket_path
            .get_or_insert_with(|| dir.path().join("sock"));
        let server = Server::start(store.clone(), options).expect("start server");
        Fixture {
            dir,
            store,
            server: Some(server),
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.server().socket_path().to_path_buf()
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.socket())
    }

    pub fn stop(&mut self) {
        self.server
            .take()
            .expect("server running")
            .stop()
            .expect("stop");
    }

    pub fn store_path(&self) -> String {
        self.store
            .path()
            .to_str()
            .expect("UTF-8 scratch path")
            .to_owned()
    }

    /// Commits an object `id` whose tree has `files` (path, contents).
    pub fn commit(&self, id: &str, files: &[(&str, &str)]) {
        let mut obj = self.store.new_object(id).expect("new");
        fill(&obj, files);
        self.store.commit(&mut obj, id).expect("commit");
    }

    /// A floating object `id` (finalized, never committed).
    pub fn floating(&self, id: &str, files: &[(&str, &str)]) -> Object {
        let mut obj = self.store.new_object(id).expect("new");
        fill(&obj, files);
        obj.finalize().unwrap();
        obj
    }
}

pub fn fill(obj: &Object, files: &[(&str, &str)]) {
    for (path, contents) in files {
        let path = obj.tree().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }
}

pub fn read_tree(id: &str) -> Value {
    json!({"method": "read-tree", "object-id": id})
}

pub fn assert_error(reply: &Value, context: &str) {
    let members = reply
        .as_object()
        .unwrap_or_else(|| panic!("{context}: reply {reply} is not an object"));
    assert!(
        members.len() == 1 && members.get("error").is_some_and(Value::is_string),
        "{context}: expected an error reply, got {reply}"
    );
}

/// Mount points of this process's namespace.
pub fn mount_points() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(PathBuf::from)
        .collect()
}

pub fn errno_of(result: std::io::Result<()>) -> Option<i32> {
    result.err().and_then(|e| e.raw_os_error())
}

/// `objects/<name>` of the object `refs/<id>` names in the store at `root`.
pub fn object_of(root: &Path, id: &str) -> PathBuf {
    let target = fs::read_link(root.join("refs").join(id)).expect("a ref");
    root.join("objects")
        .join(target.file_name().expect("an object name"))
}

/// Sets the last use of the object `refs/<id>` names back to 1970 (the
/// mtime of its sidecar's info file, see cache.md "Last use").
pub fn forget_last_use(root: &Path, id: &str) {
    let object = object_of(root, id);
    let info = root
        .join("meta")
        .join(object.file_name().unwrap())
        .join("info");
    let epoch = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1000);
    fs::File::options()
        .write(true)
        .open(info)
        .expect("sidecar info")
        .set_modified(epoch)
        .expect("set mtime");
}

/// The last use of `id` as the store lists it.
pub fn last_used(store: &Store, id: &str) -> i64 {
    store
        .list()
        .expect("list")
        .into_iter()
        .find(|o| o.id == id)
        .expect("listed")
        .last_used
}

/// Opens the store of `fx` a second time: another user of the store, with
/// its own descriptors, locks and memory of recorded uses (as another
/// process would have).
pub fn other_user(fx: &Fixture) -> Store {
    super::quick(fx.store.path())
}
