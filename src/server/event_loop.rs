//! The event loop: one thread, one epoll instance, non-blocking sockets.
//!
//! Every socket is registered level-triggered. A readable connection gets
//! one `recvmsg` into the loop's shared buffer, its request is carried out
//! and the reply sent at once with `MSG_DONTWAIT`; a connection with more
//! queued is reported again by the next `epoll_wait`, so a busy client
//! cannot starve the others. (Only when a wait found a single connection
//! ready are a few more of its requests served in a row, see
//! [`EventLoop::follow_up`].) If a reply cannot be sent because the
//! client's socket is full, the reply is parked on that connection and the
//! connection watched for `EPOLLOUT` instead of `EPOLLIN` until it has
//! gone out: the loop never blocks on a client, and a client that does not
//! read its replies is not read from either.
//!
//! An idle connection costs its socket and one 16-byte slot of a table
//! indexed by descriptor, plus the pins of its answers (see
//! [`Methods::disconnected`]); no buffer is kept per connection.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::EventFd;

use super::methods::Methods;
use super::protocol::{self, Reply};
use super::transport::{self, MAX_FDS, MAX_REQUEST, Received, RecvBuffers, Sent};
use crate::error::{Error, Result};
use crate::log;

/// Epoll token of the listening socket.
const LISTENER: u64 = u64::MAX;
/// Epoll token of the stop event.
const STOP: u64 = u64::MAX - 1;
/// Events taken per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 64;
/// Connections accepted per readiness of the listener, so that a flood of
/// new connections does not delay requests on the established ones.
const ACCEPTS_PER_EVENT: usize = 64;
/// Requests served in a row on a lone active connection (see
/// [`EventLoop::follow_up`]).
const FOLLOW_UPS: usize = 8;
/// Pause after `accept` failed (e.g. out of descriptors) before trying again.
const ACCEPT_RETRY_MS: u16 = 100;

/// One client connection.
struct Conn {
    fd: OwnedFd,
    /// A reply waiting for room in the socket (rare, hence boxed).
    pending: Option<Box<Pending>>,
}

struct Pending {
    packet: Vec<u8>,
    /// The descriptors it passes.
    fds: Vec<OwnedFd>,
}

/// Everything the loop thread owns.
pub struct EventLoop {
    epoll: Epoll,
    listener: OwnedFd,
    /// Kept open for as long as it is registered with `epoll`; the server
    /// signals it to stop the loop.
    _stop: Arc<EventFd>,
    /// Connections by descriptor number.
    conns: Vec<Option<Conn>>,
    buffers: RecvBuffers,
    /// The encoded reply being sent.
    out: Vec<u8>,
    methods: Methods,
    allowed_uids: Option<Vec<u32>>,
    accept_paused: bool,
}

impl EventLoop {
    /// A loop serving connections to `listener` (non-blocking, listening)
    /// with `methods` until `stop` is signalled. With `allowed_uids`, only
    /// peers with one of these uids are served; others are disconnected at
    /// once.
    pub fn new(
        listener: OwnedFd,
        stop: Arc<EventFd>,
        methods: Methods,
        allowed_uids: Option<Vec<u32>>,
    ) -> Result<EventLoop> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| Error::sys("epoll_create1", e))?;
        epoll
            .add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))
            .map_err(|e| Error::sys("epoll_ctl (listener)", e))?;
        epoll
            .add(stop.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, STOP))
            .map_err(|e| Error::sys("epoll_ctl (stop event)", e))?;
        Ok(EventLoop {
            epoll,
            listener,
            _stop: stop,
            conns: Vec::new(),
            buffers: RecvBuffers::new(),
            out: Vec::with_capacity(4096),
            methods,
            allowed_uids,
            accept_paused: false,
        })
    }

    /// Serves until stopped, then closes the listener and every connection
    /// and undoes every mount made. Returns the first error of serving or of
    /// unmounting.
    pub fn run(mut self) -> Result<()> {
        let served = self.serve();
        let EventLoop {
            listener,
            conns,
            mut methods,
            ..
        } = self;
        drop(listener);
        drop(conns);
        let unmounted = methods.unmount_all();
        served.and(unmounted)
    }

    fn serve(&mut self) -> Result<()> {
        let mut events = [EpollEvent::empty(); EVENTS_PER_WAIT];
        loop {
            let timeout = if self.accept_paused {
                EpollTimeout::from(ACCEPT_RETRY_MS)
            } else {
                EpollTimeout::NONE
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::sys("epoll_wait", e)),
            };
            if self.accept_paused {
                self.watch_listener(true)?;
            }
            for event in &events[..n] {
                match event.data() {
                    STOP => return Ok(()),
                    LISTENER => self.accept_some()?,
                    token => {
                        let fd = token as RawFd;
                        if self.service(fd, event.events()) && n == 1 {
                            self.follow_up(fd);
                        }
                    }
                }
            }
        }
    }

    fn watch_listener(&mut self, on: bool) -> Result<()> {
        let flags = if on {
            EpollFlags::EPOLLIN
        } else {
            EpollFlags::empty()
        };
        self.epoll
            .modify(&self.listener, &mut EpollEvent::new(flags, LISTENER))
            .map_err(|e| Error::sys("epoll_ctl (listener)", e))?;
        self.accept_paused = !on;
        Ok(())
    }

    fn accept_some(&mut self) -> Result<()> {
        for _ in 0..ACCEPTS_PER_EVENT {
            match transport::accept(self.listener.as_fd()) {
                Ok(Some(fd)) => self.admit(fd),
                Ok(None) => return Ok(()),
                // Out of descriptors or memory, most likely: leave the
                // connections in the backlog and try again shortly, rather
                // than spin on a listener that stays readable.
                Err(_) => return self.watch_listener(false),
            }
        }
        Ok(())
    }

    /// Registers a new connection, unless its peer's uid is not allowed.
    fn admit(&mut self, fd: OwnedFd) {
        if let Some(allowed) = &self.allowed_uids {
            match transport::peer_uid(fd.as_fd()) {
                Ok(uid) if allowed.contains(&uid) => {}
                // Dropping the descriptor closes the connection.
                Ok(uid) => return log::info(format_args!("server refused uid {uid}: not allowed")),
                Err(e) => return log::info(format_args!("server refused a client: {e}")),
            }
        }
        let index = fd.as_raw_fd() as usize;
        if self
            .epoll
            .add(&fd, EpollEvent::new(EpollFlags::EPOLLIN, index as u64))
            .is_err()
        {
            return;
        }
        if self.conns.len() <= index {
            self.conns.resize_with(index + 1, || None);
        }
        self.conns[index] = Some(Conn { fd, pending: None });
    }

    /// Handles readiness of connection `fd`; `true` when a request was
    /// answered and the connection is ready for the next one.
    fn service(&mut self, fd: RawFd, events: EpollFlags) -> bool {
        let Some(Some(conn)) = self.conns.get(fd as usize) else {
            return false;
        };
        if conn.pending.is_some() {
            if events.intersects(EpollFlags::EPOLLOUT | EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP)
            {
                self.flush(fd);
            }
            false
        } else {
            self.serve_request(fd)
        }
    }

    /// When a single connection is active, its next request is often queued
    /// by the time its reply is out (the client runs as soon as the reply
    /// wakes it): serve it straight away, saving an `epoll_wait`. Bounded,
    /// so that new connections and the stop event are not kept waiting.
    fn follow_up(&mut self, fd: RawFd) {
        for _ in 0..FOLLOW_UPS {
            if !self.serve_request(fd) {
                break;
            }
        }
    }

    /// Receives one request on connection `fd` and answers it; `true` when
    /// the reply went out and the connection is ready for the next request.
    fn serve_request(&mut self, fd: RawFd) -> bool {
        let Some(Some(conn)) = self.conns.get(fd as usize) else {
            return false;
        };
        let reply = match transport::receive(conn.fd.as_fd(), &mut self.buffers) {
            Ok(Received::Packet(packet)) => match protocol::decode(packet) {
                Ok(request) => self.methods.handle(fd, request),
                Err(e) => Reply::error(&e),
            },
            Ok(Received::WouldBlock) => return false,
            Ok(Received::Closed) | Err(_) => {
                self.close(fd);
                return false;
            }
            Ok(Received::TooLarge(size)) => Reply::Error(format!(
                "request of {size} bytes is larger than the limit of {MAX_REQUEST} bytes; it was discarded"
            )),
            Ok(Received::ControlTruncated) => Reply::Error(format!(
                "the request's control data was truncated (more than {MAX_FDS} descriptors?); it was discarded"
            )),
        };
        self.send_reply(fd, reply)
    }

    /// Sends (or parks) a reply; `true` when it went out.
    fn send_reply(&mut self, fd: RawFd, reply: Reply) -> bool {
        let Some(Some(conn)) = self.conns.get_mut(fd as usize) else {
            return false;
        };
        protocol::encode(&reply, &mut self.out);
        let passed = match reply {
            Reply::Fd { view, pin } => vec![view, pin],
            _ => Vec::new(),
        };
        let borrowed: Vec<_> = passed.iter().map(AsFd::as_fd).collect();
        match transport::send(conn.fd.as_fd(), &self.out, &borrowed) {
            // The passed descriptors (copies are in flight) are closed here.
            Ok(Sent::Done) => true,
            Ok(Sent::WouldBlock) => {
                conn.pending = Some(Box::new(Pending {
                    packet: self.out.clone(),
                    fds: passed,
                }));
                let watched = self.epoll.modify(
                    &conn.fd,
                    &mut EpollEvent::new(EpollFlags::EPOLLOUT, fd as u64),
                );
                if watched.is_err() {
                    self.close(fd);
                }
                false
            }
            Err(_) => {
                self.close(fd);
                false
            }
        }
    }

    /// Retries the parked reply of connection `fd`.
    fn flush(&mut self, fd: RawFd) {
        let Some(Some(conn)) = self.conns.get_mut(fd as usize) else {
            return;
        };
        let Some(pending) = &conn.pending else {
            return;
        };
        match transport::send(
            conn.fd.as_fd(),
            &pending.packet,
            &pending.fds.iter().map(AsFd::as_fd).collect::<Vec<_>>(),
        ) {
            Ok(Sent::Done) => {
                conn.pending = None;
                let watched = self.epoll.modify(
                    &conn.fd,
                    &mut EpollEvent::new(EpollFlags::EPOLLIN, fd as u64),
                );
                if watched.is_err() {
                    self.close(fd);
                }
            }
            Ok(Sent::WouldBlock) => {}
            Err(_) => self.close(fd),
        }
    }

    /// Closes connection `fd`. It is taken out of the epoll set first:
    /// closing alone would not do that while a forked child of another
    /// thread still shares the descriptor.
    /// The pins of the connection's answers go with it.
    fn close(&mut self, fd: RawFd) {
        if let Some(slot) = self.conns.get_mut(fd as usize) {
            if let Some(conn) = slot.take() {
                let _ = self.epoll.delete(&conn.fd);
                self.methods.disconnected(fd);
            }
        }
    }
}
