//! How the cases reach a server: virtio's request/used-ring contract,
//! abstracted, and its stream form for coro9p on a Unix socket.
//!
//! QEMU's tests wait for "the next used element" and assert it is the
//! request they expect; a request discarded by Tflush comes back as a used
//! element of length 0. On a stream there is no used ring: a reply is
//! matched to its request by tag, and a request that gets no reply before
//! the Rflush that names it was discarded, which the stream transport
//! reports as a length-0 completion, so the cases read the same on both.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::wire::{id, In};

/// One request in flight, as the transport knows it.
pub type ReqHandle = u64;

/// A 9P device as the test client sees it.
pub trait Transport {
    /// Queues a whole request frame.
    fn send(&mut self, frame: &[u8]) -> Result<ReqHandle, String>;
    /// Waits for the next completion, which must be `req`'s: its reply, or
    /// `None` for a completion of length 0.
    fn wait(&mut self, req: ReqHandle) -> Result<Option<Vec<u8>>, String>;
    /// The reply of a request that has already completed, without waiting
    /// (how qos-test reads Rflush after the flushed request's completion).
    fn read_done(&mut self, req: ReqHandle) -> Result<Vec<u8>, String>;
    /// QEMU's `system_reset` between tests on one instance: in-flight
    /// requests drain, every fid is freed.
    fn reset(&mut self) -> Result<(), String>;
    /// The virtio config space (`tag_len[2]` + tag), if the transport has one.
    fn config(&mut self) -> Option<Vec<u8>>;
}

struct Pending {
    tag: u16,
    /// For a Tflush: the tag it flushes.
    flushes: Option<u16>,
}

/// A 9P session over a Unix stream socket.
pub struct StreamTransport {
    path: PathBuf,
    sock: UnixStream,
    next: ReqHandle,
    pending: HashMap<ReqHandle, Pending>,
    /// Replies that arrived for requests no one waited for yet.
    done: HashMap<ReqHandle, Option<Vec<u8>>>,
    /// Frames read but not yet matched.
    inbox: Vec<Vec<u8>>,
    verbose: bool,
}

const TIMEOUT: Duration = Duration::from_secs(10);

impl StreamTransport {
    /// Connects to a server listening on `path`.
    ///
    /// # Errors
    ///
    /// The socket cannot be reached.
    pub fn connect(path: &Path, verbose: bool) -> Result<StreamTransport, String> {
        let sock = connect_retry(path)?;
        Ok(StreamTransport {
            path: path.to_path_buf(),
            sock,
            next: 1,
            pending: HashMap::new(),
            done: HashMap::new(),
            inbox: Vec::new(),
            verbose,
        })
    }

    fn read_frame(&mut self, timeout: Duration) -> Result<Vec<u8>, String> {
        if !self.inbox.is_empty() {
            return Ok(self.inbox.remove(0));
        }
        self.sock
            .set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        let mut head = [0u8; 7];
        self.sock
            .read_exact(&mut head)
            .map_err(|e| format!("no reply within {timeout:?}: {e}"))?;
        let size = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
        if size < 7 {
            return Err(format!("reply size {size} is below 7"));
        }
        let mut f = head.to_vec();
        f.resize(size, 0);
        self.sock
            .read_exact(&mut f[7..])
            .map_err(|e| format!("reply cut short: {e}"))?;
        if self.verbose {
            eprintln!("  <- {}", hex(&f));
        }
        Ok(f)
    }

    /// The request a reply frame completes, by tag.
    fn owner(&self, frame: &[u8]) -> Option<ReqHandle> {
        let tag = u16::from_le_bytes([frame[5], frame[6]]);
        self.pending
            .iter()
            .find(|(_, p)| p.tag == tag)
            .map(|(h, _)| *h)
    }

    /// Records a completion; an Rflush also completes, with length 0, the
    /// request it flushed if that got no reply.
    fn complete(&mut self, owner: ReqHandle, frame: Vec<u8>) {
        let p = self.pending.remove(&owner).expect("pending");
        if frame[4] == id::TFLUSH + 1 {
            if let Some(old) = p.flushes {
                let flushed = self
                    .pending
                    .iter()
                    .find(|(_, q)| q.tag == old)
                    .map(|(h, _)| *h);
                if let Some(h) = flushed {
                    self.pending.remove(&h);
                    self.done.insert(h, None);
                }
            }
        }
        self.done.insert(owner, Some(frame));
    }
}

fn connect_retry(path: &Path) -> Result<UnixStream, String> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() > deadline => {
                return Err(format!("cannot connect to {}: {e}", path.display()))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

impl Transport for StreamTransport {
    fn send(&mut self, frame: &[u8]) -> Result<ReqHandle, String> {
        if self.verbose {
            eprintln!("  -> {}", hex(frame));
        }
        self.sock
            .write_all(frame)
            .map_err(|e| format!("send: {e}"))?;
        let h = self.next;
        self.next += 1;
        let tag = u16::from_le_bytes([frame[5], frame[6]]);
        let flushes = (frame[4] == id::TFLUSH && frame.len() >= 9)
            .then(|| u16::from_le_bytes([frame[7], frame[8]]));
        self.pending.insert(h, Pending { tag, flushes });
        Ok(h)
    }

    fn wait(&mut self, req: ReqHandle) -> Result<Option<Vec<u8>>, String> {
        // Anything that completed earlier but was not waited for comes first,
        // as on a used ring.
        if let Some(r) = self.done.remove(&req) {
            return Ok(r);
        }
        if !self.pending.contains_key(&req) {
            return Err(format!("request {req} is not in flight"));
        }
        let f = self.read_frame(TIMEOUT)?;
        let tag = u16::from_le_bytes([f[5], f[6]]);
        let owner = self
            .owner(&f)
            .ok_or_else(|| format!("a reply with no request in flight: {}", hex(&f)))?;
        self.complete(owner, f);
        self.done.remove(&req).ok_or_else(|| {
            format!("the next completion was another request's (tag {tag}), not this one's")
        })
    }

    fn read_done(&mut self, req: ReqHandle) -> Result<Vec<u8>, String> {
        if let Some(r) = self.done.remove(&req) {
            return r.ok_or_else(|| "the request completed with length 0".to_string());
        }
        // On a stream the bytes may still be on their way: a short wait is
        // the nearest thing to "already in memory".
        let f = self.read_frame(Duration::from_secs(1))?;
        match self.owner(&f) {
            Some(owner) if owner == req => {
                self.pending.remove(&req);
                Ok(f)
            }
            _ => Err(format!("expected the reply already, got {}", hex(&f))),
        }
    }

    fn reset(&mut self) -> Result<(), String> {
        // A new connection is a new session: no fids, nothing in flight.
        self.sock = connect_retry(&self.path)?;
        self.pending.clear();
        self.done.clear();
        self.inbox.clear();
        Ok(())
    }

    fn config(&mut self) -> Option<Vec<u8>> {
        None
    }
}

/// Bytes as hex, for --verbose and mismatch reports.
pub fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A coro9p server process serving one fsdev on a Unix socket.
pub struct Coro9pServer {
    child: Child,
    /// The socket path.
    pub path: PathBuf,
}

impl Coro9pServer {
    /// Starts `bin --fsdev FSDEV --listen unix:... --compat COMPAT`.
    ///
    /// # Errors
    ///
    /// The binary cannot be started.
    pub fn start(bin: &Path, fsdev: &str, compat: &str) -> Result<Coro9pServer, String> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("qtest-compat-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        // The server's log goes to a file, read back if it exits early (a
        // pipe nobody drains could stall it).
        let log = path.with_extension("log");
        let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let mut child = Command::new(bin)
            .args(["--fsdev", fsdev, "--compat", compat, "--listen"])
            .arg(format!("unix:{}", path.display()))
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        // Ready once the socket exists; a server that exits says why.
        let deadline = Instant::now() + TIMEOUT;
        while !path.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                let err = std::fs::read_to_string(&log).unwrap_or_default();
                let _ = std::fs::remove_file(&log);
                return Err(format!("coro9p exited ({status}): {}", err.trim()));
            }
            if Instant::now() > deadline {
                return Err("coro9p did not start listening".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Coro9pServer { child, path })
    }
}

impl Drop for Coro9pServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(self.path.with_extension("log"));
    }
}

/// Reads an Rlerror's errno from a reply frame, if it is one.
pub fn rlerror(frame: &[u8]) -> Option<u32> {
    (frame.len() >= 11 && frame[4] == id::RLERROR).then(|| {
        let mut r = In::new(&frame[7..]);
        r.d().unwrap_or(0)
    })
}
