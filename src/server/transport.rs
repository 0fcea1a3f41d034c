//! Packets on non-blocking `SOCK_SEQPACKET` sockets: receiving one whole
//! request (closing every descriptor that came with it), sending one reply
//! (optionally with one descriptor), accepting connections with the peer's
//! credentials.
//!
//! Requests are received with a single `recvmsg(MSG_TRUNC)` into the
//! event loop's one buffer of [`MAX_REQUEST`] bytes. The kernel reports the
//! packet's real length, so a larger packet is recognised, and it is
//! discarded whole by that same call (a `SOCK_SEQPACKET` receive consumes
//! the entire packet); the connection then gets an error reply and carries
//! on. This needs one system call per request where peeking needs two.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Largest request accepted, in bytes (4 MiB). Real requests are a few
/// hundred bytes; larger packets are discarded whole and answered with an
/// error.
pub const MAX_REQUEST: usize = 4 << 20;

/// Most descriptors one packet can carry on Linux (`SCM_MAX_FD`).
pub const MAX_FDS: usize = 253;

/// Bytes of control data for [`MAX_FDS`] descriptors.
// SAFETY: CMSG_SPACE is plain arithmetic on its argument.
const CONTROL_LEN: usize =
    unsafe { libc::CMSG_SPACE((MAX_FDS * size_of::<RawFd>()) as libc::c_uint) } as usize;

/// The receive buffers, one per event loop (never per connection).
pub struct RecvBuffers {
    data: Vec<u8>,
    // u64 elements give the alignment that `cmsghdr` needs.
    control: Vec<u64>,
}

impl RecvBuffers {
    /// Buffers for one request of up to [`MAX_REQUEST`] bytes and
    /// [`MAX_FDS`] descriptors. The pages are zero-filled lazily by the
    /// kernel, so only what large packets touch becomes resident.
    pub fn new() -> RecvBuffers {
        RecvBuffers {
            data: vec![0; MAX_REQUEST],
            control: vec![0; CONTROL_LEN.div_ceil(size_of::<u64>())],
        }
    }
}

/// What one receive gave.
#[derive(Debug)]
pub enum Received<'a> {
    /// A whole request.
    Packet(&'a [u8]),
    /// Nothing queued right now.
    WouldBlock,
    /// The peer closed the connection (a read of zero bytes).
    Closed,
    /// A packet of this many bytes, more than [`MAX_REQUEST`]; it was
    /// discarded.
    TooLarge(usize),
    /// The packet's control data was truncated (`MSG_CTRUNC`); it was
    /// discarded, and the descriptors that did arrive were closed.
    ControlTruncated,
}

/// Receives one packet from `fd`. Every descriptor passed with it is
/// closed: the store methods carry none.
pub fn receive<'a>(fd: BorrowedFd<'_>, buffers: &'a mut RecvBuffers) -> io::Result<Received<'a>> {
    let mut iov = libc::iovec {
        iov_base: buffers.data.as_mut_ptr().cast(),
        iov_len: buffers.data.len(),
    };
    // SAFETY: an all-zero msghdr is a valid value (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buffers.control.as_mut_ptr().cast();
    msg.msg_controllen = (buffers.control.len() * size_of::<u64>()) as _;
    let flags = libc::MSG_TRUNC | libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC;
    let n = loop {
        // SAFETY: `msg` points to a buffer and a control buffer that live
        // (and are not otherwise borrowed) for the duration of the call.
        let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, flags) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Ok(Received::WouldBlock),
            Some(libc::ECONNRESET) => return Ok(Received::Closed),
            _ => return Err(err),
        }
    };
    // SAFETY: the kernel filled `msg`'s control buffer (msg_controllen
    // bytes) in the call above.
    unsafe { close_passed_fds(&msg) };
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Ok(Received::ControlTruncated);
    }
    if n == 0 {
        return Ok(Received::Closed);
    }
    if n > buffers.data.len() || msg.msg_flags & libc::MSG_TRUNC != 0 {
        return Ok(Received::TooLarge(n));
    }
    Ok(Received::Packet(&buffers.data[..n]))
}

/// Closes the descriptors of every `SCM_RIGHTS` message in `msg`.
///
/// # Safety
///
/// `msg` must have been filled by a successful `recvmsg`.
unsafe fn close_passed_fds(msg: &libc::msghdr) {
    // SAFETY: the caller promises a control buffer laid out by the kernel.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !cmsg.is_null() {
        // SAFETY: CMSG_FIRSTHDR/NXTHDR only return headers inside the buffer.
        let header = unsafe { &*cmsg };
        if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN(0) is plain arithmetic.
            let payload =
                (header.cmsg_len as usize).saturating_sub(unsafe { libc::CMSG_LEN(0) } as usize);
            // SAFETY: the data of this header lies inside the control buffer.
            let data = unsafe { libc::CMSG_DATA(cmsg) }.cast::<RawFd>();
            for i in 0..payload / size_of::<RawFd>() {
                // SAFETY: `i` indexes the header's payload; the data may be unaligned.
                let raw = unsafe { data.add(i).read_unaligned() };
                // SAFETY: the kernel installed this descriptor for us; nobody else owns it.
                drop(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        // SAFETY: `cmsg` is a header of `msg`'s control buffer.
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
    }
}

/// Whether a send went out.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// The packet is queued at the peer.
    Done,
    /// The socket's buffer is full: try again when it is writable.
    WouldBlock,
}

/// Most descriptors a reply passes.
const MAX_PASSED: usize = 2;

/// Sends one packet on `fd` without blocking, with the descriptors `pass`
/// (at most [`MAX_PASSED`]) as `SCM_RIGHTS` data. An error (e.g. `EPIPE`)
/// means the connection is unusable.
pub fn send(fd: BorrowedFd<'_>, packet: &[u8], pass: &[BorrowedFd<'_>]) -> io::Result<Sent> {
    if pass.is_empty() {
        return send_plain(fd, packet);
    }
    if pass.len() > MAX_PASSED {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut iov = libc::iovec {
        iov_base: packet.as_ptr().cast_mut().cast(),
        iov_len: packet.len(),
    };
    // SAFETY: an all-zero msghdr is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: CMSG_SPACE and CMSG_LEN are plain arithmetic.
    let (space, len) = unsafe {
        let bytes = (pass.len() * size_of::<RawFd>()) as libc::c_uint;
        (libc::CMSG_SPACE(bytes) as usize, libc::CMSG_LEN(bytes))
    };
    // SAFETY: as above.
    const MAX_SPACE: usize =
        unsafe { libc::CMSG_SPACE((MAX_PASSED * size_of::<RawFd>()) as libc::c_uint) } as usize;
    let mut control = [0u64; MAX_SPACE.div_ceil(size_of::<u64>())];
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer is big enough for one header with
    // `pass.len()` descriptors.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    // SAFETY: `cmsg` points into `control` (not null: the buffer is large
    // enough), and its data has room for `pass.len()` descriptors.
    unsafe {
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = len as _;
        let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
        for (i, passed) in pass.iter().enumerate() {
            data.add(i).write_unaligned(passed.as_raw_fd());
        }
    }
    // SAFETY: `msg` points to `packet` and `control`, which outlive the
    // call; the kernel only reads them.
    retry_send(|| unsafe {
        libc::sendmsg(
            fd.as_raw_fd(),
            &msg,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    })
}

/// `send` without ancillary data (cheaper than `sendmsg`).
fn send_plain(fd: BorrowedFd<'_>, packet: &[u8]) -> io::Result<Sent> {
    // SAFETY: `packet` is readable for its length during the call.
    retry_send(|| unsafe {
        libc::send(
            fd.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    })
}

fn retry_send(mut call: impl FnMut() -> isize) -> io::Result<Sent> {
    loop {
        if call() >= 0 {
            return Ok(Sent::Done);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Ok(Sent::WouldBlock),
            _ => return Err(err),
        }
    }
}

/// Accepts one connection, non-blocking and close-on-exec; `None` when
/// none is pending. Errors that concern only the connection being accepted
/// (it was aborted) are skipped.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    loop {
        // SAFETY: plain syscall; the peer address is not asked for.
        let raw = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if raw >= 0 {
            // SAFETY: accept4 returned a new descriptor that we own.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(raw) }));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR | libc::ECONNABORTED) => continue,
            Some(libc::EAGAIN) => return Ok(None),
            _ => return Err(err),
        }
    }
}

/// The uid of the process that connected `fd` (`SO_PEERCRED`).
pub fn peer_uid(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let creds = nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::PeerCredentials)?;
    Ok(creds.uid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn pair() -> (OwnedFd, OwnedFd) {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    #[test]
    fn round_trip_with_fd() {
        let (a, b) = pair();
        let mut buffers = RecvBuffers::new();
        assert!(matches!(
            receive(b.as_fd(), &mut buffers).unwrap(),
            Received::WouldBlock
        ));
        let passed = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(
            send(a.as_fd(), b"hello", &[passed.as_fd(), passed.as_fd()]).unwrap(),
            Sent::Done
        );
        match receive(b.as_fd(), &mut buffers).unwrap() {
            Received::Packet(p) => assert_eq!(p, b"hello"),
            other => panic!("{other:?}"),
        }
        drop(a);
        assert!(matches!(
            receive(b.as_fd(), &mut buffers).unwrap(),
            Received::Closed
        ));
    }

    #[test]
    fn control_buffer_fits_the_maximum() {
        // SAFETY: arithmetic only.
        assert!(CONTROL_LEN >= unsafe { libc::CMSG_LEN((MAX_FDS * 4) as libc::c_uint) } as usize);
    }
}
