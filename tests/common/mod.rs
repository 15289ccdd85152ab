//! Test support: an in-process coro9p server on a Unix socket (its own
//! thread and main loop), and a 9P client that frames bytes with its own
//! few lines, not with the server's codec.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use coro9p::runtime::{Executor, HopKind, RuntimeConfig};
use coro9p::server::{Export, ExportOptions};
use coro9p::transport::socket::{listen, ListenAddr};
use coro9p::{Compat, Hops};

/// Little-endian builder: `b` u8, `w` u16, `d` u32, `q` u64, `s` string,
/// `Q` qid (type, version, path), `x` raw bytes.
#[macro_export]
macro_rules! le {
    (@one $v:ident b $e:expr) => { $v.push($e as u8) };
    (@one $v:ident w $e:expr) => { $v.extend_from_slice(&($e as u16).to_le_bytes()) };
    (@one $v:ident d $e:expr) => { $v.extend_from_slice(&($e as u32).to_le_bytes()) };
    (@one $v:ident q $e:expr) => { $v.extend_from_slice(&($e as u64).to_le_bytes()) };
    (@one $v:ident s $e:expr) => {{
        let s: &[u8] = $e;
        $v.extend_from_slice(&(s.len() as u16).to_le_bytes());
        $v.extend_from_slice(s);
    }};
    (@one $v:ident Q $e:expr) => {{
        let (t, ver, path): (u8, u32, u64) = $e;
        $v.push(t);
        $v.extend_from_slice(&ver.to_le_bytes());
        $v.extend_from_slice(&path.to_le_bytes());
    }};
    (@one $v:ident x $e:expr) => { $v.extend_from_slice($e) };
    ($($kind:ident $e:expr),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut v: Vec<u8> = Vec::new();
        $( $crate::le!(@one v $kind $e); )*
        v
    }};
}

// Message types used by the tests.
pub const RLERROR: u8 = 7;
pub const TSTATFS: u8 = 8;
pub const TLOPEN: u8 = 12;
pub const TLCREATE: u8 = 14;
pub const TSYMLINK: u8 = 16;
pub const TMKNOD: u8 = 18;
pub const TRENAME: u8 = 20;
pub const TREADLINK: u8 = 22;
pub const TGETATTR: u8 = 24;
pub const TSETATTR: u8 = 26;
pub const TXATTRWALK: u8 = 30;
pub const TXATTRCREATE: u8 = 32;
pub const TREADDIR: u8 = 40;
pub const TFSYNC: u8 = 50;
pub const TLOCK: u8 = 52;
pub const TGETLOCK: u8 = 54;
pub const TLINK: u8 = 70;
pub const TMKDIR: u8 = 72;
pub const TRENAMEAT: u8 = 74;
pub const TUNLINKAT: u8 = 76;
pub const TVERSION: u8 = 100;
pub const TAUTH: u8 = 102;
pub const TATTACH: u8 = 104;
pub const RERROR: u8 = 107;
pub const TFLUSH: u8 = 108;
pub const TWALK: u8 = 110;
pub const TOPEN: u8 = 112;
pub const TCREATE: u8 = 114;
pub const TREAD: u8 = 116;
pub const TWRITE: u8 = 118;
pub const TCLUNK: u8 = 120;
pub const TREMOVE: u8 = 122;
pub const TSTAT: u8 = 124;
pub const TWSTAT: u8 = 126;

pub const NOTAG: u16 = 0xffff;
pub const NOFID: u32 = 0xffff_ffff;

/// A whole frame: header and body.
pub fn frame(id: u8, tag: u16, body: &[u8]) -> Vec<u8> {
    let mut v = le![d (7 + body.len()), b id, w tag];
    v.extend_from_slice(body);
    v
}

/// The hops one task made, in task order.
#[derive(Debug, Clone)]
pub struct TaskHops {
    pub label: String,
    pub hops: usize,
    pub events: Vec<HopKind>,
}

/// What the server thread saw when it stopped.
#[derive(Debug)]
pub struct Report {
    pub tasks_left: usize,
    pub open_handles: usize,
    pub connections: usize,
    pub active_requests: usize,
    pub fids: usize,
    pub hops: Vec<TaskHops>,
}

pub struct TestServer {
    pub path: PathBuf,
    stop_tx: UnixStream,
    thread: Option<thread::JoinHandle<Report>>,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl TestServer {
    /// Serves `fsdev` on a fresh Unix socket.
    pub fn start(fsdev: &str, compat: Compat) -> TestServer {
        TestServer::start_with_fd_limit(fsdev, compat, None)
    }

    /// As `start`, with fd-reclaim thresholds for a soft limit of `soft`.
    pub fn start_with_fd_limit(fsdev: &str, compat: Compat, soft: Option<usize>) -> TestServer {
        TestServer::start_full(fsdev, compat, soft, Hops::Qemu)
    }

    /// As `start`, in `--hops` mode `hops`.
    pub fn start_with_hops(fsdev: &str, compat: Compat, hops: Hops) -> TestServer {
        TestServer::start_full(fsdev, compat, None, hops)
    }

    fn start_full(fsdev: &str, compat: Compat, soft: Option<usize>, hops: Hops) -> TestServer {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("coro9p-test-{}-{n}.sock", std::process::id()));
        let (stop_tx, stop_rx) = UnixStream::pair().unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        let fsdev = fsdev.to_string();
        let sock = path.clone();
        let thread =
            thread::spawn(move || serve(&fsdev, compat, soft, hops, &sock, stop_rx, ready_tx));
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server did not start");
        TestServer {
            path,
            stop_tx,
            thread: Some(thread),
        }
    }

    pub fn connect(&self) -> Client {
        let s = UnixStream::connect(&self.path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Client { s }
    }

    /// Stops the server once its tasks have ended, and reports.
    pub fn stop(mut self) -> Report {
        self.stop_tx.write_all(b"x").unwrap();
        self.thread.take().unwrap().join().unwrap()
    }
}

fn serve(
    fsdev: &str,
    compat: Compat,
    soft: Option<usize>,
    hops: Hops,
    path: &std::path::Path,
    stop_rx: UnixStream,
    ready: mpsc::Sender<()>,
) -> Report {
    let exec = Executor::new(RuntimeConfig {
        trace: true,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let mut options = ExportOptions::parse(fsdev).unwrap();
    options.hops = hops;
    let export = Export::open_with_fd_limit(options, compat, soft).unwrap();
    let listener = listen(
        &exec,
        Rc::clone(&export),
        &ListenAddr::Unix(path.to_path_buf()),
    )
    .unwrap();
    let stop = Rc::new(std::cell::Cell::new(false));
    let flag = Rc::clone(&stop);
    stop_rx.set_nonblocking(true).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stop_rx);
    exec.register(
        &mut mio::unix::SourceFd(&fd),
        mio::Interest::READABLE,
        move |_| flag.set(true),
    )
    .unwrap();
    ready.send(()).unwrap();
    exec.run_until(|| stop.get()).unwrap();
    // Let what is in flight end (closed connections reset their sessions).
    for _ in 0..200 {
        if exec.stats().tasks == 0 {
            break;
        }
        exec.turn(Some(Duration::from_millis(10))).unwrap();
    }
    let sessions = listener.sessions();
    let mut by_task: BTreeMap<u64, TaskHops> = BTreeMap::new();
    for e in exec.tracer().take_events() {
        let t = by_task.entry(e.task.0).or_insert_with(|| TaskHops {
            label: exec.tracer().label(e.task).unwrap_or_default(),
            hops: 0,
            events: Vec::new(),
        });
        if e.kind == HopKind::ToWorker {
            t.hops += 1;
        }
        t.events.push(e.kind);
    }
    let _ = std::fs::remove_file(path);
    Report {
        tasks_left: exec.stats().tasks,
        open_handles: export.open_handles(),
        connections: listener.connections(),
        active_requests: sessions.iter().map(|s| s.active_requests()).sum(),
        fids: sessions.iter().map(|s| s.fid_count()).sum(),
        hops: by_task
            .into_values()
            .filter(|t| !t.label.is_empty())
            .collect(),
    }
}

pub struct Client {
    pub s: UnixStream,
}

impl Client {
    pub fn send(&mut self, id: u8, tag: u16, body: &[u8]) {
        self.s.write_all(&frame(id, tag, body)).unwrap();
    }

    /// The next reply frame, whole.
    pub fn recv_frame(&mut self) -> Vec<u8> {
        let mut head = [0u8; 7];
        self.s.read_exact(&mut head).unwrap();
        let size = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
        assert!(size >= 7, "reply size {size}");
        let mut out = head.to_vec();
        out.resize(size, 0);
        self.s.read_exact(&mut out[7..]).unwrap();
        out
    }

    /// The next reply as (type, tag, body).
    pub fn recv(&mut self) -> (u8, u16, Vec<u8>) {
        let f = self.recv_frame();
        (f[4], u16::from_le_bytes([f[5], f[6]]), f[7..].to_vec())
    }

    /// Sends and checks the whole reply frame, byte for byte.
    pub fn expect(&mut self, id: u8, tag: u16, body: &[u8], reply_id: u8, reply: &[u8]) {
        self.send(id, tag, body);
        let got = self.recv_frame();
        assert_eq!(
            got,
            frame(reply_id, tag, reply),
            "reply to type {id} tag {tag}"
        );
    }

    /// Sends; expects Rlerror with `errno`.
    pub fn expect_err(&mut self, id: u8, body: &[u8], errno: u32) {
        self.expect(id, 0, body, RLERROR, &le![d errno]);
    }

    /// Sends; expects a reply of type `id + 1` and returns its body.
    pub fn ok(&mut self, id: u8, body: &[u8]) -> Vec<u8> {
        self.send(id, 0, body);
        let (rid, tag, rbody) = self.recv();
        assert_eq!(tag, 0);
        if rid == RLERROR {
            panic!(
                "type {id}: Rlerror {}",
                u32::from_le_bytes(rbody[..4].try_into().unwrap())
            );
        }
        assert_eq!(rid, id + 1, "reply type to {id}");
        rbody
    }

    pub fn version(&mut self, msize: u32, version: &str) {
        let body = le![d msize, s version.as_bytes()];
        self.expect(TVERSION, NOTAG, &body, TVERSION + 1, &body);
    }

    /// Tversion 9P2000.L (msize 32768) and Tattach fid 0.
    pub fn attach(&mut self) -> Vec<u8> {
        self.version(32768, "9P2000.L");
        self.ok(TATTACH, &le![d 0, d NOFID, s b"", s b"", d 0])
    }

    pub fn walk(&mut self, fid: u32, newfid: u32, names: &[&str]) -> Vec<u8> {
        let mut body = le![d fid, d newfid, w names.len()];
        for n in names {
            body.extend(le![s n.as_bytes()]);
        }
        self.ok(TWALK, &body)
    }

    /// Whether a reply is waiting within `ms` milliseconds.
    pub fn reply_within(&mut self, ms: u64) -> bool {
        use nix::sys::socket::{recv, MsgFlags};
        use std::os::fd::AsRawFd;
        self.s
            .set_read_timeout(Some(Duration::from_millis(ms)))
            .unwrap();
        let mut b = [0u8; 1];
        let r = recv(self.s.as_raw_fd(), &mut b, MsgFlags::MSG_PEEK);
        self.s
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        matches!(r, Ok(1))
    }
}

/// A sequence of requests, each sent alone, with the hops QEMU's table says
/// it takes; `check` compares with what the tracer saw.
pub struct HopScript {
    expected: Vec<(&'static str, usize)>,
    /// Require every reply to be a success.
    pub all_ok: bool,
}

impl HopScript {
    pub fn new(all_ok: bool) -> HopScript {
        HopScript {
            expected: Vec::new(),
            all_ok,
        }
    }

    /// Sends one request (tag 0), waits for its reply, and expects `hops`.
    pub fn run(&mut self, c: &mut Client, id: u8, body: Vec<u8>, name: &'static str, hops: usize) {
        c.send(id, 0, &body);
        let (rid, _, rbody) = c.recv();
        if self.all_ok {
            assert_ne!(rid, RLERROR, "{name}: {rbody:?}");
        }
        self.expected.push((name, hops));
    }

    /// The hops per request, in order, against the expectations.
    pub fn check(&self, report: &Report) {
        let got: Vec<(String, usize)> = report
            .hops
            .iter()
            .map(|t| (t.label.rsplit(' ').next().unwrap().to_string(), t.hops))
            .collect();
        let want: Vec<(String, usize)> = self
            .expected
            .iter()
            .map(|(n, h)| (n.to_string(), *h))
            .collect();
        assert_eq!(got, want);
    }
}

/// A Twalk body of one name.
pub fn walk_body(fid: u32, newfid: u32, name: &[u8]) -> Vec<u8> {
    le![d fid, d newfid, w 1, s name]
}

/// A fresh directory under the temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl std::ops::Deref for TempDir {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

static DIRS: AtomicU64 = AtomicU64::new(0);

/// A fresh, empty directory named after `tag`, this process and a counter.
pub fn temp_dir(tag: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!(
        "coro9p-{tag}-{}-{}",
        std::process::id(),
        DIRS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// Connects to a server's socket, waiting up to 2 s for it to listen: the
/// socket file exists from bind(2), before listen(2), and a connect in
/// between is refused.
pub fn connect_when_ready(sock: &std::path::Path) -> Client {
    let mut tries = 0;
    let s = loop {
        match UnixStream::connect(sock) {
            Ok(s) => break s,
            Err(e) if tries < 200 => {
                assert!(
                    matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ),
                    "connect {}: {e}",
                    sock.display()
                );
                tries += 1;
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("connect {}: {e}", sock.display()),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    Client { s }
}

/// SIGTERM to a coro9p process; it must exit with success.
pub fn stop_process(mut child: std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "coro9p exited with {status}");
}

/// The value of xattr `name` of `p` itself (not a symlink's target), or
/// None when it is unset or unreadable.
pub fn lgetxattr(p: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(p.as_os_str().as_bytes()).unwrap();
    let name = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: both strings are NUL-terminated and live across the call; the
    // buffer is valid for its length.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}
