//! Stream transports on the main loop: TCP, Unix-domain sockets, and a pair
//! of file descriptors (`trans=fd`, stdio).
//!
//! Each connection is its own session. Frames are cut by their size field
//! and submitted as PDUs free up; replies are written in completion order.
//! A frame whose size is below 7 or above the negotiated msize (8 KiB
//! before Tversion) closes the connection, the socket form of QEMU's
//! `virtio_error`. The msize is capped as QEMU master caps it to virtio's
//! `msize_limit`: at `max_msize=` ([`SOCKET_MAX_MSIZE_DEFAULT`] unless
//! given); no larger frame is taken in even where Tversion does not cap
//! (`--compat 7.2`, an unknown version string). A client that does not
//! read its replies stops being read from once a few replies are queued,
//! instead of being buffered without bound. A hang-up seen while requests
//! wait for a PDU closes at once, cancelling those in flight.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};

use mio::event::Event;
use mio::net::{TcpListener, UnixListener};
use mio::unix::SourceFd;
use mio::{Interest, Token};
use nix::errno::Errno;

use super::Transport;
use crate::protocol::{Header, Tag, HEADER_SIZE, MIN_MSIZE};
use crate::runtime::Handle;
use crate::server::{Export, V9fsState, SOCKET_MAX_MSIZE_DEFAULT};

/// The frame limit before Tversion has negotiated an msize.
pub const PRE_VERSION_MSIZE: u32 = 8192;

/// Replies queued past this many bytes (or 4 msizes, if larger) stop the
/// connection from taking in more requests until the client reads.
const WRITE_BACKLOG: usize = 1 << 20;

/// Bytes read from the socket but not yet submitted, at most.
const READ_AHEAD: usize = 1 << 20;

/// Where to listen (`--listen`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// `tcp:HOST:PORT`.
    Tcp(String),
    /// `unix:PATH`.
    Unix(PathBuf),
    /// `fd:R,W`: one connection on two inherited descriptors (`stdio` is
    /// `fd:0,1`).
    Fd(RawFd, RawFd),
}

impl ListenAddr {
    /// Parses `tcp:HOST:PORT`, `unix:PATH`, `fd:R,W` or `stdio`.
    ///
    /// # Errors
    ///
    /// A sentence saying what is wrong.
    pub fn parse(s: &str) -> Result<ListenAddr, String> {
        if s == "stdio" {
            return Ok(ListenAddr::Fd(0, 1));
        }
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("'{s}' is not tcp:HOST:PORT, unix:PATH, fd:R,W or stdio"))?;
        match kind {
            "tcp" => {
                if rest.rsplit_once(':').is_none() {
                    return Err(format!("'{s}' has no port: use tcp:HOST:PORT"));
                }
                Ok(ListenAddr::Tcp(rest.to_string()))
            }
            "unix" if !rest.is_empty() => Ok(ListenAddr::Unix(PathBuf::from(rest))),
            "fd" => {
                let (r, w) = rest
                    .split_once(',')
                    .ok_or_else(|| format!("'{s}' needs two descriptors: fd:R,W"))?;
                let r = r
                    .parse()
                    .map_err(|_| format!("'{r}' is not a file descriptor"))?;
                let w = w
                    .parse()
                    .map_err(|_| format!("'{w}' is not a file descriptor"))?;
                Ok(ListenAddr::Fd(r, w))
            }
            _ => Err(format!(
                "'{s}' is not tcp:HOST:PORT, unix:PATH, fd:R,W or stdio"
            )),
        }
    }
}

/// A listening socket that starts a session per accepted connection.
pub struct Listener {
    /// Where it listens (the bound port for tcp:HOST:0).
    pub local_addr: String,
    shared: Rc<ListenerShared>,
    /// The listening socket's registration (none for the fd transport).
    accepting: std::cell::Cell<Option<(Token, RawFd)>>,
    exec: Handle,
}

/// Owns the open connections of one listener; a connection removes itself
/// when it closes.
struct ListenerShared {
    conns: RefCell<Vec<Rc<RefCell<Connection>>>>,
    max_conns: std::cell::Cell<usize>,
}

/// Connections a listener serves at once unless told otherwise
/// (`--max-connections`); each may hold 128 requests in flight.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

impl Listener {
    /// Number of connections open now.
    pub fn connections(&self) -> usize {
        self.shared.conns.borrow().len()
    }

    /// Stops taking new connections and new requests; requests already
    /// submitted go on and their replies are still written (for a graceful
    /// stop on SIGTERM).
    pub fn drain(&self) {
        if let Some((token, fd)) = self.accepting.take() {
            // Dropping the callback closes the listening socket.
            let _ = self.exec.deregister(&mut SourceFd(&fd), token);
        }
        for c in self.shared.conns.borrow().iter() {
            c.borrow_mut().draining = true;
        }
    }

    /// Caps the connections served at once; one more is closed at once.
    pub fn set_max_connections(&self, n: usize) {
        self.shared.max_conns.set(n.max(1));
    }

    /// Requests in flight over all connections.
    pub fn active_requests(&self) -> usize {
        self.sessions().iter().map(|s| s.active_requests()).sum()
    }

    /// The sessions of the open connections.
    pub fn sessions(&self) -> Vec<Rc<V9fsState>> {
        self.shared
            .conns
            .borrow()
            .iter()
            .map(|c| c.borrow().session())
            .collect()
    }
}

/// Starts listening on `addr` (tcp or unix) and serving `export` on every
/// connection.
///
/// # Errors
///
/// The address cannot be bound.
pub fn listen(exec: &Handle, export: Rc<Export>, addr: &ListenAddr) -> io::Result<Listener> {
    let shared = Rc::new(ListenerShared {
        conns: RefCell::new(Vec::new()),
        max_conns: std::cell::Cell::new(DEFAULT_MAX_CONNECTIONS),
    });
    let local_addr = match addr {
        ListenAddr::Tcp(hostport) => {
            let std_listener = std::net::TcpListener::bind(hostport)?;
            std_listener.set_nonblocking(true)?;
            let local = std_listener.local_addr()?.to_string();
            let l = TcpListener::from_std(std_listener);
            let fd = l.as_raw_fd();
            let token = on_accept(exec, &export, &shared, fd, move || {
                l.accept().map(|(stream, peer)| {
                    let _ = stream.set_nodelay(true);
                    let fd = OwnedFd::from(std::net::TcpStream::from(stream));
                    (fd, peer.to_string())
                })
            })?;
            (local, token, fd)
        }
        ListenAddr::Unix(path) => {
            remove_stale_socket(path);
            let l = UnixListener::bind(path)?;
            let fd = l.as_raw_fd();
            let token = on_accept(exec, &export, &shared, fd, move || {
                l.accept().map(|(stream, _)| {
                    let fd = OwnedFd::from(std::os::unix::net::UnixStream::from(stream));
                    (fd, "unix client".to_string())
                })
            })?;
            (path.display().to_string(), token, fd)
        }
        ListenAddr::Fd(..) => return Err(io::Error::other("fd:R,W is served with serve_fds")),
    };
    let (local_addr, token, fd) = local_addr;
    Ok(Listener {
        local_addr,
        shared,
        accepting: std::cell::Cell::new(Some((token, fd))),
        exec: exec.clone(),
    })
}

/// Registers a listening socket: on each readable event, `accept` is called
/// until it would block, and every connection gets its session.
fn on_accept(
    exec: &Handle,
    export: &Rc<Export>,
    shared: &Rc<ListenerShared>,
    fd: RawFd,
    mut accept_one: impl FnMut() -> io::Result<(OwnedFd, String)> + 'static,
) -> io::Result<Token> {
    let (h, export, sh) = (exec.clone(), Rc::clone(export), Rc::clone(shared));
    exec.register(&mut SourceFd(&fd), Interest::READABLE, move |_| loop {
        match accept_one() {
            Ok((conn, peer)) => {
                log::info!("connection from {peer}");
                accept(&h, &export, &sh, conn, None, peer);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                log::error!("accept on fd {fd}: {e}");
                break;
            }
        }
    })
}

/// A socket file left by an earlier run would make bind fail; remove it,
/// but nothing else.
fn remove_stale_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.file_type().is_socket() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Serves one session on a pair of descriptors (equal for a socket).
///
/// # Errors
///
/// The descriptors cannot be made non-blocking or registered.
pub fn serve_fds(
    exec: &Handle,
    export: Rc<Export>,
    read: OwnedFd,
    write: Option<OwnedFd>,
) -> io::Result<Listener> {
    let shared = Rc::new(ListenerShared {
        conns: RefCell::new(Vec::new()),
        max_conns: std::cell::Cell::new(DEFAULT_MAX_CONNECTIONS),
    });
    start(exec, &export, &shared, read, write, "fd".into())?;
    Ok(Listener {
        local_addr: "fd".into(),
        shared,
        accepting: std::cell::Cell::new(None),
        exec: exec.clone(),
    })
}

fn accept(
    exec: &Handle,
    export: &Rc<Export>,
    shared: &Rc<ListenerShared>,
    fd: OwnedFd,
    write: Option<OwnedFd>,
    peer: String,
) {
    let max = shared.max_conns.get();
    if shared.conns.borrow().len() >= max {
        log::warn!("{peer}: refused, {max} connections are open (--max-connections)");
        return;
    }
    if let Err(e) = start(exec, export, shared, fd, write, peer) {
        log::error!("cannot serve a new connection: {e}");
    }
}

/// One connection: its descriptors, buffers and session.
pub struct Connection {
    read_fd: OwnedFd,
    /// A separate write descriptor (fd transport), or `None` to write to
    /// `read_fd`.
    write_fd: Option<OwnedFd>,
    tokens: Vec<Token>,
    /// Bytes read, of which `rbuf[rpos..]` are not yet taken as frames; a
    /// cursor so taking a frame never moves the bytes after it.
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
    wpos: usize,
    eof: bool,
    /// The peer hung up (read-closed or error event); unread bytes may
    /// still be in the kernel, so this is not `eof`.
    hung_up: bool,
    closed: bool,
    peer: String,
    session: Option<Rc<V9fsState>>,
    exec: Handle,
    /// A pump is already deferred.
    pump_pending: bool,
    owner: Weak<ListenerShared>,
    /// Stopping: no new requests are taken.
    draining: bool,
    /// The largest frame ever taken in or sent (`max_msize=`).
    max_msize: u32,
}

/// The transport side the session sees.
struct ConnTransport {
    conn: Weak<RefCell<Connection>>,
    exec: Handle,
    max_msize: u32,
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

fn start(
    exec: &Handle,
    export: &Rc<Export>,
    shared: &Rc<ListenerShared>,
    read_fd: OwnedFd,
    write_fd: Option<OwnedFd>,
    peer: String,
) -> io::Result<Rc<RefCell<Connection>>> {
    set_nonblocking(&read_fd)?;
    if let Some(w) = &write_fd {
        set_nonblocking(w)?;
    }
    let max_msize = export.options.max_msize.unwrap_or(SOCKET_MAX_MSIZE_DEFAULT);
    let conn = Rc::new(RefCell::new(Connection {
        read_fd,
        write_fd,
        tokens: Vec::new(),
        rbuf: Vec::new(),
        rpos: 0,
        wbuf: Vec::new(),
        wpos: 0,
        eof: false,
        hung_up: false,
        closed: false,
        peer,
        session: None,
        exec: exec.clone(),
        pump_pending: false,
        owner: Rc::downgrade(shared),
        draining: false,
        max_msize,
    }));
    let transport = Rc::new(ConnTransport {
        conn: Rc::downgrade(&conn),
        exec: exec.clone(),
        max_msize,
    });
    let session = V9fsState::new(exec.clone(), Rc::clone(export), transport);
    conn.borrow_mut().session = Some(session);
    // Edge-triggered: each callback reads or writes until the kernel says
    // it would block.
    let (rfd, wfd) = {
        let c = conn.borrow();
        (
            c.read_fd.as_raw_fd(),
            c.write_fd.as_ref().map(|w| w.as_raw_fd()),
        )
    };
    let weak = Rc::downgrade(&conn);
    let mut tokens = Vec::new();
    match wfd {
        None => {
            let w = weak.clone();
            tokens.push(exec.register(
                &mut SourceFd(&rfd),
                Interest::READABLE | Interest::WRITABLE,
                move |ev| on_event(&w, ev),
            )?);
        }
        Some(wfd) => {
            let w = weak.clone();
            tokens.push(
                exec.register(&mut SourceFd(&rfd), Interest::READABLE, move |ev| {
                    on_event(&w, ev)
                })?,
            );
            let w = weak.clone();
            tokens.push(
                exec.register(&mut SourceFd(&wfd), Interest::WRITABLE, move |ev| {
                    on_event(&w, ev)
                })?,
            );
        }
    }
    conn.borrow_mut().tokens = tokens;
    // The callbacks hold only weak references: the listener owns the
    // connection until it closes.
    shared.conns.borrow_mut().push(Rc::clone(&conn));
    pump(&conn);
    Ok(conn)
}

fn on_event(weak: &Weak<RefCell<Connection>>, ev: &Event) {
    let Some(conn) = weak.upgrade() else {
        return;
    };
    if ev.is_read_closed() || ev.is_error() {
        conn.borrow_mut().hung_up = true;
    }
    if ev.is_writable() {
        flush(&conn);
    }
    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
        pump(&conn);
    }
}

impl Connection {
    fn session(&self) -> Rc<V9fsState> {
        Rc::clone(self.session.as_ref().expect("session set at start"))
    }

    /// The largest frame the client may send or receive now.
    fn frame_limit(&self) -> u32 {
        let s = self.session.as_ref().expect("session set at start");
        let versioned = s.dialect() != crate::protocol::Dialect::Unset && s.msize() >= MIN_MSIZE;
        let negotiated = if versioned {
            s.msize()
        } else {
            PRE_VERSION_MSIZE
        };
        negotiated.min(self.max_msize)
    }

    fn backlog_limit(&self) -> usize {
        WRITE_BACKLOG.max(4 * self.frame_limit() as usize)
    }

    fn write_fd(&self) -> &OwnedFd {
        self.write_fd.as_ref().unwrap_or(&self.read_fd)
    }

    /// Whether the session is still being served.
    pub fn is_closed(&self) -> bool {
        self.closed
    }
}

/// Reads what the kernel has, cuts frames, and submits as many as there are
/// free PDUs; stops reading while replies pile up unread.
fn pump(conn: &Rc<RefCell<Connection>>) {
    loop {
        let next = {
            let mut c = conn.borrow_mut();
            if c.closed || c.draining {
                return;
            }
            if c.wbuf.len() - c.wpos > c.backlog_limit() {
                // Resumed by flush once the client reads.
                return;
            }
            match next_frame(&mut c) {
                Ok(Some(frame)) => Some(frame),
                Ok(None) => None,
                Err(msg) => {
                    drop(c);
                    close(conn, &msg);
                    return;
                }
            }
        };
        let Some(frame) = next else {
            let (eof, idle) = {
                let c = conn.borrow();
                (c.eof, c.rpos == c.rbuf.len())
            };
            if eof {
                close(
                    conn,
                    if idle {
                        "client closed the connection"
                    } else {
                        "client closed the connection inside a frame"
                    },
                );
            }
            return;
        };
        let session = conn.borrow().session();
        match session.pdu_alloc() {
            Some(idx) => session.pdu_submit(idx, frame),
            None => {
                // All PDUs are busy: put the frame back (its bytes are
                // still in rbuf, just before rpos) for when one frees.
                let hung_up = {
                    let mut c = conn.borrow_mut();
                    c.rpos -= frame.len();
                    c.hung_up
                };
                // Reading stops here, so the end of the stream would never
                // be seen, and requests that run until cancelled would hold
                // their PDUs for ever: a hang-up closes now, which cancels.
                if hung_up {
                    close(conn, "client closed the connection with requests waiting");
                }
                return;
            }
        }
    }
}

/// The next complete frame, reading more if needed. `Ok(None)`: nothing
/// complete yet (or reading paused); `Err`: the stream is broken.
fn next_frame(c: &mut Connection) -> Result<Option<Vec<u8>>, String> {
    loop {
        // Read ahead at most READ_AHEAD, but always far enough to complete
        // the frame at the head (one may be larger than READ_AHEAD).
        let mut want = READ_AHEAD;
        let unread = c.rbuf.len() - c.rpos;
        if unread >= HEADER_SIZE {
            let h = Header::decode(&c.rbuf[c.rpos..]).map_err(|e| e.to_string())?;
            let limit = c.frame_limit();
            if (h.size as usize) < HEADER_SIZE {
                return Err(format!("frame size {} is below the 7-byte header", h.size));
            }
            if h.size > limit {
                return Err(format!(
                    "frame size {} (type {}, tag {}) is above the msize {limit}",
                    h.size, h.id, h.tag.0
                ));
            }
            if unread >= h.size as usize {
                let frame = c.rbuf[c.rpos..c.rpos + h.size as usize].to_vec();
                c.rpos += h.size as usize;
                return Ok(Some(frame));
            }
            want = want.max(h.size as usize);
        }
        if c.eof || unread >= want {
            return Ok(None);
        }
        // Only a partial frame is left before rpos moves on: drop what was
        // taken (a copy of less than one frame).
        if c.rpos > 0 {
            c.rbuf.drain(..c.rpos);
            c.rpos = 0;
        }
        let mut buf = [0u8; 64 * 1024];
        match nix::unistd::read(c.read_fd.as_fd(), &mut buf) {
            Ok(0) => c.eof = true,
            Ok(n) => c.rbuf.extend_from_slice(&buf[..n]),
            Err(Errno::EAGAIN) => return Ok(None),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("read: {}", e.desc())),
        }
    }
}

/// Writes queued replies until done or the kernel would block; then takes
/// in more requests if the backlog was what held them.
fn flush(conn: &Rc<RefCell<Connection>>) {
    let result = {
        let mut c = conn.borrow_mut();
        if c.closed {
            return;
        }
        let mut result = Ok(());
        while c.wpos < c.wbuf.len() {
            match nix::unistd::write(c.write_fd(), &c.wbuf[c.wpos..]) {
                Ok(n) => c.wpos += n,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    result = Err(format!("write: {}", e.desc()));
                    break;
                }
            }
        }
        if c.wpos == c.wbuf.len() {
            c.wbuf.clear();
            c.wpos = 0;
        } else if c.wpos > (1 << 16) {
            let pos = c.wpos;
            c.wbuf.drain(..pos);
            c.wpos = 0;
        }
        result
    };
    match result {
        Err(msg) => close(conn, &msg),
        Ok(()) => schedule_pump(conn),
    }
}

/// Pumps on the next turn, outside any task: requests are never submitted
/// from inside another request's coroutine.
fn schedule_pump(conn: &Rc<RefCell<Connection>>) {
    let exec = {
        let mut c = conn.borrow_mut();
        if c.closed || c.pump_pending {
            return;
        }
        c.pump_pending = true;
        c.exec.clone()
    };
    let weak = Rc::downgrade(conn);
    exec.defer(move || {
        if let Some(conn) = weak.upgrade() {
            conn.borrow_mut().pump_pending = false;
            pump(&conn);
        }
    });
}

/// Ends the connection: no more reading or writing; the session cancels
/// what is in flight and frees its fids once that has drained.
fn close(conn: &Rc<RefCell<Connection>>, why: &str) {
    let (session, exec, tokens, fds, owner) = {
        let mut c = conn.borrow_mut();
        if c.closed {
            return;
        }
        c.closed = true;
        log::info!("{}: {why}", c.peer);
        let fds = (
            c.read_fd.as_raw_fd(),
            c.write_fd.as_ref().map(|w| w.as_raw_fd()),
        );
        (
            c.session(),
            c.exec.clone(),
            std::mem::take(&mut c.tokens),
            fds,
            c.owner.clone(),
        )
    };
    let raw = [Some(fds.0), fds.1];
    for (token, fd) in tokens.into_iter().zip(raw.into_iter().flatten()) {
        let _ = exec.deregister(&mut SourceFd(&fd), token);
    }
    session.disconnect();
    {
        let mut c = conn.borrow_mut();
        c.rbuf = Vec::new();
        c.rpos = 0;
    }
    // The descriptors close when the last reference goes: the listener's
    // now, or a request still holding the transport later.
    if let Some(owner) = owner.upgrade() {
        owner.conns.borrow_mut().retain(|c| !Rc::ptr_eq(c, conn));
    }
}

impl Transport for ConnTransport {
    fn push_and_notify(&self, _pdu_idx: usize, reply: Vec<u8>) {
        let Some(conn) = self.conn.upgrade() else {
            return;
        };
        {
            let mut c = conn.borrow_mut();
            if c.closed || reply.is_empty() {
                // A discarded (flushed) request has no reply on a stream.
                return;
            }
            c.wbuf.extend_from_slice(&reply);
        }
        flush(&conn);
    }

    fn msize_limit(&self) -> Option<u32> {
        Some(self.max_msize)
    }

    fn response_buffer_size(&self, _pdu_idx: usize) -> Option<u32> {
        let conn = self.conn.upgrade()?;
        let c = conn.try_borrow().ok()?;
        Some(c.frame_limit())
    }

    fn fatal_error(&self, msg: &str) {
        log::error!("9p: {msg}");
        if let Some(conn) = self.conn.upgrade() {
            let msg = msg.to_string();
            let weak = Rc::downgrade(&conn);
            // Closed from the main loop, not from inside the request.
            self.exec.defer(move || {
                if let Some(conn) = weak.upgrade() {
                    close(&conn, &msg);
                }
            });
        }
    }

    fn pdu_freed(&self) {
        if let Some(conn) = self.conn.upgrade() {
            schedule_pump(&conn);
        }
    }
}

/// The tag of a frame, for logs.
pub fn frame_tag(frame: &[u8]) -> Option<Tag> {
    Header::decode(frame).ok().map(|h| h.tag)
}
