//! A minimal 9P2000.L client: little-endian marshalling of the few messages
//! the workloads send, and a connection that pipelines requests by tag.
//!
//! Written here on purpose: the load generator must not share code with the
//! server it measures.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// The longest a single read or write on the socket may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes of a Tread/Rread/Twrite header (`size type tag fid offset count`).
pub const IOHDRSZ: u32 = 24;

pub const RLERROR: u8 = 7;
pub const TLOPEN: u8 = 12;
pub const TLCREATE: u8 = 14;
pub const TGETATTR: u8 = 24;
pub const TREADDIR: u8 = 40;
pub const TUNLINKAT: u8 = 76;
pub const TVERSION: u8 = 100;
pub const TATTACH: u8 = 104;
pub const TWALK: u8 = 110;
pub const TREAD: u8 = 116;
pub const TWRITE: u8 = 118;
pub const TCLUNK: u8 = 120;
pub const TREMOVE: u8 = 122;

/// Tgetattr's P9_GETATTR_BASIC (what `stat` asks for).
pub const GETATTR_BASIC: u64 = 0x7ff;
/// No fid (Tattach's afid).
pub const NOFID: u32 = !0;

/// What a request goes out as: bytes we own, and optionally, after some of
/// them, a slice of the shared payload (so a 1 MiB Twrite is not copied).
#[derive(Default)]
pub struct Out {
    pub buf: Vec<u8>,
    /// (end of own bytes in `buf` after which the payload goes, payload length)
    splits: Vec<(usize, usize)>,
    start: usize,
}

impl Out {
    fn begin(&mut self, ty: u8, tag: u16) {
        self.start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0, 0, 0, ty]);
        self.buf.extend_from_slice(&tag.to_le_bytes());
    }
    fn end(&mut self, extra: usize) {
        let size = (self.buf.len() - self.start + extra) as u32;
        self.buf[self.start..self.start + 4].copy_from_slice(&size.to_le_bytes());
    }
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u16(s.len() as u16);
        self.buf.extend_from_slice(s.as_bytes());
    }

    pub fn tversion(&mut self, msize: u32) {
        self.begin(TVERSION, 0xffff);
        self.u32(msize);
        self.str("9P2000.L");
        self.end(0);
    }
    pub fn tattach(&mut self, tag: u16, fid: u32, uname: &str, aname: &str, n_uname: u32) {
        self.begin(TATTACH, tag);
        self.u32(fid);
        self.u32(NOFID);
        self.str(uname);
        self.str(aname);
        self.u32(n_uname);
        self.end(0);
    }
    pub fn twalk(&mut self, tag: u16, fid: u32, newfid: u32, names: &[&str]) {
        self.begin(TWALK, tag);
        self.u32(fid);
        self.u32(newfid);
        self.u16(names.len() as u16);
        for n in names {
            self.str(n);
        }
        self.end(0);
    }
    pub fn tgetattr(&mut self, tag: u16, fid: u32, mask: u64) {
        self.begin(TGETATTR, tag);
        self.u32(fid);
        self.u64(mask);
        self.end(0);
    }
    pub fn tclunk(&mut self, tag: u16, fid: u32) {
        self.begin(TCLUNK, tag);
        self.u32(fid);
        self.end(0);
    }
    pub fn tlopen(&mut self, tag: u16, fid: u32, flags: u32) {
        self.begin(TLOPEN, tag);
        self.u32(fid);
        self.u32(flags);
        self.end(0);
    }
    pub fn tlcreate(&mut self, tag: u16, fid: u32, name: &str, flags: u32, mode: u32, gid: u32) {
        self.begin(TLCREATE, tag);
        self.u32(fid);
        self.str(name);
        self.u32(flags);
        self.u32(mode);
        self.u32(gid);
        self.end(0);
    }
    pub fn tread(&mut self, tag: u16, fid: u32, offset: u64, count: u32) {
        self.begin(TREAD, tag);
        self.u32(fid);
        self.u64(offset);
        self.u32(count);
        self.end(0);
    }
    /// A Twrite of `count` bytes taken from the connection's payload.
    pub fn twrite(&mut self, tag: u16, fid: u32, offset: u64, count: u32) {
        self.begin(TWRITE, tag);
        self.u32(fid);
        self.u64(offset);
        self.u32(count);
        self.end(count as usize);
        self.splits.push((self.buf.len(), count as usize));
    }
    pub fn treaddir(&mut self, tag: u16, fid: u32, offset: u64, count: u32) {
        self.begin(TREADDIR, tag);
        self.u32(fid);
        self.u64(offset);
        self.u32(count);
        self.end(0);
    }
    pub fn tremove(&mut self, tag: u16, fid: u32) {
        self.begin(TREMOVE, tag);
        self.u32(fid);
        self.end(0);
    }
    pub fn tunlinkat(&mut self, tag: u16, dirfid: u32, name: &str, flags: u32) {
        self.begin(TUNLINKAT, tag);
        self.u32(dirfid);
        self.str(name);
        self.u32(flags);
        self.end(0);
    }
}

/// One reply frame, borrowed from the receive buffer.
pub struct Reply<'a> {
    pub ty: u8,
    pub tag: u16,
    pub body: &'a [u8],
}

impl<'a> Reply<'a> {
    /// The error number of an Rlerror.
    pub fn errno(&self) -> Option<u32> {
        (self.ty == RLERROR).then(|| Rd(self.body).u32())
    }

    /// `Err(errno)` for Rlerror, else checks the type is `tmsg + 1`.
    pub fn expect(&self, tmsg: u8) -> Result<Rd<'a>, String> {
        if self.ty == RLERROR {
            let e = Rd(self.body).u32();
            return Err(format!(
                "T-message {tmsg} failed: {} (errno {e})",
                io::Error::from_raw_os_error(e as i32)
            ));
        }
        if self.ty != tmsg + 1 {
            return Err(format!(
                "T-message {tmsg} answered by type {} (expected {})",
                self.ty,
                tmsg + 1
            ));
        }
        Ok(Rd(self.body))
    }
}

/// A little-endian reader over a reply body (short bodies read as zeros).
pub struct Rd<'a>(pub &'a [u8]);

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn fixed<const N: usize>(&mut self) -> [u8; N] {
        let mut v = [0u8; N];
        let s = self.take(N);
        v[..s.len()].copy_from_slice(s);
        v
    }
    pub fn u8(&mut self) -> u8 {
        self.fixed::<1>()[0]
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.fixed())
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.fixed())
    }
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.fixed())
    }
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        self.take(n)
    }
    pub fn str(&mut self) -> &'a [u8] {
        let n = self.u16() as usize;
        self.take(n)
    }
    pub fn rest(&self) -> &'a [u8] {
        self.0
    }
}

/// A stream socket to a 9P server.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// `tcp:HOST:PORT` or `unix:PATH`.
    pub fn connect(addr: &str) -> io::Result<Stream> {
        if let Some(a) = addr.strip_prefix("tcp:") {
            let s = TcpStream::connect(a)?;
            s.set_nodelay(true)?;
            Ok(Stream::Tcp(s))
        } else if let Some(p) = addr.strip_prefix("unix:") {
            Ok(Stream::Unix(UnixStream::connect(p)?))
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("'{addr}' is not tcp:HOST:PORT or unix:PATH"),
            ))
        }
    }
    /// Bounds how long one read or write may block, so that a server that
    /// stops answering fails the run instead of hanging it.
    pub fn set_timeouts(&self, d: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(Some(d))?;
                s.set_write_timeout(Some(d))
            }
            Stream::Unix(s) => {
                s.set_read_timeout(Some(d))?;
                s.set_write_timeout(Some(d))
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(b),
            Stream::Unix(s) => s.read(b),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(b),
            Stream::Unix(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Names a socket timeout for what it means here.
fn stalled(e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the server stalled: nothing moved on the socket for {} s",
                IO_TIMEOUT.as_secs()
            ),
        ),
        _ => e,
    }
}

/// Received bytes not yet consumed as frames.
pub struct Inbox {
    buf: Vec<u8>,
    pos: usize,
    len: usize,
}

impl Inbox {
    fn new(cap: usize) -> Inbox {
        Inbox {
            buf: vec![0; cap],
            pos: 0,
            len: 0,
        }
    }

    /// The next complete frame as (start, end) in `self.buf`, consumed.
    pub fn next_frame(&mut self) -> Option<(usize, usize)> {
        let avail = self.len - self.pos;
        if avail < 7 {
            return None;
        }
        let p = self.pos;
        let size = u32::from_le_bytes(self.buf[p..p + 4].try_into().unwrap()) as usize;
        if avail < size.max(7) {
            return None;
        }
        self.pos += size.max(7);
        Some((p, p + size.max(7)))
    }

    /// The frame at `range`, as a reply.
    pub fn reply(&self, (s, e): (usize, usize)) -> Reply<'_> {
        let f = &self.buf[s..e];
        Reply {
            ty: f[4],
            tag: u16::from_le_bytes([f[5], f[6]]),
            body: &f[7..],
        }
    }

    /// Reads at least once (blocking) after moving the unread bytes to the
    /// front.
    fn fill(&mut self, s: &mut Stream, max_frame: usize) -> io::Result<()> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.len, 0);
            self.len -= self.pos;
            self.pos = 0;
        }
        // A partial frame is shorter than max_frame, so this leaves room for
        // the rest of it.
        if self.buf.len() < 2 * max_frame {
            self.buf.resize(2 * max_frame + 64 * 1024, 0);
        }
        let n = s.read(&mut self.buf[self.len..]).map_err(stalled)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        self.len += n;
        Ok(())
    }
}

/// A connection: the socket, the send queue and the receive buffer.
pub struct Conn {
    pub stream: Stream,
    pub msize: u32,
    pub out: Out,
    pub inbox: Inbox,
    payload: &'static [u8],
}

impl Conn {
    /// Connects, negotiates `msize` (Tversion 9P2000.L) and attaches `fid` 0
    /// as uid 0 to `aname`.
    pub fn open(
        addr: &str,
        msize: u32,
        aname: &str,
        payload: &'static [u8],
    ) -> Result<Conn, String> {
        let stream = Stream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        stream
            .set_timeouts(IO_TIMEOUT)
            .map_err(|e| format!("socket options: {e}"))?;
        let mut c = Conn {
            stream,
            msize,
            out: Out::default(),
            inbox: Inbox::new(64 * 1024),
            payload,
        };
        c.out.tversion(msize);
        let (ty, body) = c.call()?;
        if ty != TVERSION + 1 {
            return Err(format!("Tversion answered by type {ty}"));
        }
        let mut r = Rd(&body);
        c.msize = r.u32();
        let v = r.str();
        if v != b"9P2000.L" {
            return Err(format!(
                "the server speaks {}, not 9P2000.L",
                String::from_utf8_lossy(v)
            ));
        }
        c.out.tattach(0, 0, "root", aname, 0);
        let (ty, body) = c.call()?;
        Reply {
            ty,
            tag: 0,
            body: &body,
        }
        .expect(TATTACH)?;
        Ok(c)
    }

    /// Sends what is queued.
    pub fn flush(&mut self) -> io::Result<()> {
        self.send().map_err(stalled)
    }

    fn send(&mut self) -> io::Result<()> {
        let mut from = 0;
        for &(at, len) in &self.out.splits {
            self.stream.write_all(&self.out.buf[from..at])?;
            let mut left = len;
            while left > 0 {
                let n = left.min(self.payload.len());
                self.stream.write_all(&self.payload[..n])?;
                left -= n;
            }
            from = at;
        }
        self.stream.write_all(&self.out.buf[from..])?;
        self.out.buf.clear();
        self.out.splits.clear();
        Ok(())
    }

    /// Blocks until more bytes arrive.
    pub fn fill(&mut self) -> io::Result<()> {
        self.inbox.fill(&mut self.stream, self.msize as usize)
    }

    /// Sends the queued request(s) and waits for one reply: (type, body).
    pub fn call(&mut self) -> Result<(u8, Vec<u8>), String> {
        self.flush().map_err(|e| format!("send: {e}"))?;
        loop {
            if let Some(f) = self.inbox.next_frame() {
                let r = self.inbox.reply(f);
                return Ok((r.ty, r.body.to_vec()));
            }
            self.fill().map_err(|e| format!("receive: {e}"))?;
        }
    }

    /// `call` for one T-message, checked: the reply body.
    pub fn call_ok(&mut self, tmsg: u8) -> Result<Vec<u8>, String> {
        let (ty, body) = self.call()?;
        Reply {
            ty,
            tag: 0,
            body: &body,
        }
        .expect(tmsg)?;
        Ok(body)
    }
}

/// Linux open flags as 9P2000.L sends them (the same values on x86_64).
pub mod oflags {
    pub const RDONLY: u32 = 0;
    pub const RDWR: u32 = 2;
    pub const CREAT: u32 = 0o100;
    pub const EXCL: u32 = 0o200;
    pub const TRUNC: u32 = 0o1000;
    pub const DIRECTORY: u32 = 0o200000;
}
