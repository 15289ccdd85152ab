//! The ffi target: every case through coro9p's C ABI. A C program,
//! `coro9p-ffi-harness` (`tests/ffi/harness.c`, linked with libcoro9p),
//! plays virtio-9p-device: it owns the ring of 128 request slots and their
//! scatter-gather buffers, implements the transport callbacks, and pushes
//! each completion as (descriptor head, length). This module is the guest
//! driver: it picks descriptor heads, hands the harness each request with a
//! P9_MAX_SIZE reply buffer, and reads the used ring, so a request
//! discarded by Tflush comes back as length 0 exactly as on QEMU. It talks
//! to the harness over the harness's stdin/stdout (message format in
//! harness.c).
//!
//! The harness is compiled on first use with the system C compiler (`CC`,
//! else `cc`) against the `libcoro9p.a` next to this program or in its
//! `deps/` (build the workspace first) and kept next to this program as
//! `coro9p-ffi-harness`; it is rebuilt
//! when the library, the header or the source is newer. `QOS_FFI_HARNESS`
//! names a prebuilt one instead; `QOS_FFI_WRAPPER` (say, a valgrind command
//! line) is put in front of it.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use crate::transport::{hex, ReqHandle, Transport};

/// The ring size (QEMU's virtqueue for 9p: MAX_REQ).
const RING: usize = 128;

/// What the harness says.
enum Msg {
    /// A used element: descriptor head and the reply (empty: length 0).
    Used(u16, Vec<u8>),
    /// A device error (virtio_error).
    Error(String),
    /// The answer to a control command.
    Reply(u8, Vec<u8>),
    /// Its output ended.
    Gone,
}

/// The harness's counters (`'t'`, and the tail of `'r'`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HarnessStats {
    /// coro9p_get_stats' return code.
    pub rc: i32,
    /// PDUs in use.
    pub active: u32,
    /// Fids in the table.
    pub fids: u32,
    /// Negotiated msize.
    pub msize: u32,
    /// 0 none, 1 9P2000.u, 2 9P2000.L.
    pub dialect: u32,
    /// Files and directory streams open.
    pub open_handles: u64,
    /// Coroutines alive.
    pub tasks: u64,
    /// Ring slots holding a request.
    pub busy_slots: u32,
}

impl HarnessStats {
    fn parse(b: &[u8]) -> Result<HarnessStats, String> {
        if b.len() < 40 {
            return Err(format!("short stats ({} bytes)", b.len()));
        }
        let d = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let q = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        Ok(HarnessStats {
            rc: d(0) as i32,
            active: d(4),
            fids: d(8),
            msize: d(12),
            dialect: d(16),
            open_handles: q(20),
            tasks: q(28),
            busy_slots: d(36),
        })
    }
}

/// The guest driver of one harness process.
pub struct FfiTransport {
    child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<Msg>,
    log: PathBuf,
    busy: [bool; RING],
    next_head: usize,
    sent: u64,
    slots: HashMap<ReqHandle, u16>,
    /// Used elements not consumed yet, in push order.
    used: VecDeque<(u16, Vec<u8>)>,
    control: VecDeque<(u8, Vec<u8>)>,
    errors: Vec<String>,
    max_size: u32,
    verbose: bool,
    timeout: Duration,
}

/// The harness binary, built once per process if needed.
///
/// # Errors
///
/// libcoro9p.a is missing or the compiler fails.
pub fn harness() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT.get_or_init(build_harness).clone()
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn build_harness() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("QOS_FFI_HARNESS") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("qos-test has no directory")?;
    // `cargo build` leaves the library next to this program, `cargo test`
    // only in deps/: take the newer.
    let lib = [dir.join("libcoro9p.a"), dir.join("deps/libcoro9p.a")]
        .into_iter()
        .filter_map(|p| Some((mtime(&p)?, p)))
        .max()
        .map(|(_, p)| p)
        .ok_or_else(|| {
            format!(
                "no libcoro9p.a in {}: build the workspace first (cargo build --workspace)",
                dir.display()
            )
        })?;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no repository root")?;
    let src = repo.join("tests/ffi/harness.c");
    let include = repo.join("include");
    let bin = dir.join("coro9p-ffi-harness");
    let inputs = [&lib, &src, &include.join("coro9p.h")];
    if let Some(built) = mtime(&bin) {
        if inputs.iter().all(|p| mtime(p).is_some_and(|t| t <= built)) {
            return Ok(bin);
        }
    }
    let tmp = dir.join(format!(".coro9p-ffi-harness.{}", std::process::id()));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1", "-I"])
        .arg(&include)
        .arg(&src)
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&tmp)
        .output()
        .map_err(|e| format!("cannot run {cc}: {e}"))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!(
            "{cc} failed on {}:\n{}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // Atomic, so that concurrent runs never start a half-written binary.
    std::fs::rename(&tmp, &bin).map_err(|e| e.to_string())?;
    Ok(bin)
}

fn read_msg(r: &mut impl Read) -> Option<Msg> {
    let mut head = [0u8; 5];
    r.read_exact(&mut head).ok()?;
    let len = u32::from_le_bytes(head[1..].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some(match head[0] {
        b'U' if len >= 6 => {
            let h = u16::from_le_bytes([body[0], body[1]]);
            Msg::Used(h, body.split_off(6))
        }
        b'E' => Msg::Error(String::from_utf8_lossy(&body).into_owned()),
        k => Msg::Reply(k, body),
    })
}

impl FfiTransport {
    /// Starts a harness serving `fsdev` with `compat` ("master" or "7.2").
    ///
    /// # Errors
    ///
    /// The harness cannot be built or started.
    pub fn start(
        fsdev: &str,
        compat: &str,
        max_size: u32,
        verbose: bool,
    ) -> Result<FfiTransport, String> {
        let bin = harness()?;
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log =
            std::env::temp_dir().join(format!("qtest-compat-ffi-{}-{n}.log", std::process::id()));
        let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let wrapper = std::env::var("QOS_FFI_WRAPPER").unwrap_or_default();
        let mut argv: Vec<String> = wrapper.split_whitespace().map(String::from).collect();
        let wrapped = !argv.is_empty();
        argv.push(bin.display().to_string());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .args(["--fsdev", fsdev, "--compat", compat])
            .env("RUST_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", argv[0]))?;
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().ok_or("no harness stdout")?;
        let (tx, rx) = channel();
        std::thread::spawn(move || loop {
            match read_msg(&mut stdout) {
                Some(m) => {
                    if tx.send(m).is_err() {
                        return;
                    }
                }
                None => {
                    let _ = tx.send(Msg::Gone);
                    return;
                }
            }
        });
        Ok(FfiTransport {
            child,
            stdin,
            rx,
            log,
            busy: [false; RING],
            next_head: 0,
            sent: 0,
            slots: HashMap::new(),
            used: VecDeque::new(),
            control: VecDeque::new(),
            errors: Vec::new(),
            max_size,
            verbose,
            // Under valgrind the harness runs some 30 times slower.
            timeout: Duration::from_secs(if wrapped { 120 } else { 10 }),
        })
    }

    fn write(&mut self, kind: u8, payload: &[u8]) -> Result<(), String> {
        let mut m = Vec::with_capacity(5 + payload.len());
        m.push(kind);
        m.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        m.extend_from_slice(payload);
        let w = self.stdin.as_mut().ok_or("the harness is closed")?;
        w.write_all(&m)
            .and_then(|()| w.flush())
            .map_err(|e| format!("harness: {e}{}", self.log_tail()))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(8).collect();
        if tail.is_empty() {
            String::new()
        } else {
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("\n  harness log: {}", tail.join("\n  "))
        }
    }

    /// Takes in the next message, waiting until `deadline`.
    fn pump(&mut self, deadline: Instant) -> Result<(), String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(Msg::Used(h, data)) => {
                if self.verbose {
                    eprintln!("  <- [head {h}, len {}] {}", data.len(), hex(&data));
                }
                self.used.push_back((h, data));
                Ok(())
            }
            Ok(Msg::Error(e)) => {
                if self.verbose {
                    eprintln!("  !! device error: {e}");
                }
                self.errors.push(e);
                Ok(())
            }
            Ok(Msg::Reply(k, b)) => {
                self.control.push_back((k, b));
                Ok(())
            }
            Ok(Msg::Gone) | Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.try_wait().ok().flatten();
                Err(format!(
                    "the harness exited ({status:?}){}{}",
                    self.device_errors(),
                    self.log_tail()
                ))
            }
            Err(RecvTimeoutError::Timeout) => Err(format!(
                "no used element within {:?}{}",
                self.timeout,
                self.device_errors()
            )),
        }
    }

    fn device_errors(&self) -> String {
        if self.errors.is_empty() {
            String::new()
        } else {
            format!("; device errors: {}", self.errors.join("; "))
        }
    }

    /// Sends a control command and waits for its answer.
    ///
    /// # Errors
    ///
    /// The harness does not answer.
    pub fn control(&mut self, kind: u8, payload: &[u8], answer: u8) -> Result<Vec<u8>, String> {
        self.write(kind, payload)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(i) = self.control.iter().position(|(k, _)| *k == answer) {
                return Ok(self.control.remove(i).unwrap().1);
            }
            self.pump(deadline)?;
        }
    }

    /// The descriptor head of a request in flight.
    fn head_of(&self, req: ReqHandle) -> Result<u16, String> {
        self.slots
            .get(&req)
            .copied()
            .ok_or_else(|| format!("request {req} is not in flight"))
    }

    fn free_head(&mut self, req: ReqHandle) -> Option<u16> {
        let h = self.slots.remove(&req)?;
        self.busy[h as usize] = false;
        Some(h)
    }
}

impl Transport for FfiTransport {
    fn send(&mut self, frame: &[u8]) -> Result<ReqHandle, String> {
        if self.verbose {
            eprintln!("  -> {}", hex(frame));
        }
        let head = (0..RING)
            .map(|i| (self.next_head + i) % RING)
            .find(|&h| !self.busy[h])
            .ok_or("all 128 descriptor heads are in use")?;
        self.next_head = (head + 1) % RING;
        let mut m = Vec::with_capacity(6 + frame.len());
        m.extend_from_slice(&(head as u16).to_le_bytes());
        m.extend_from_slice(&self.max_size.to_le_bytes());
        m.extend_from_slice(frame);
        self.write(b'S', &m)?;
        self.busy[head] = true;
        let n = self.sent;
        self.sent += 1;
        self.slots.insert(n, head as u16);
        Ok(n)
    }

    fn wait(&mut self, req: ReqHandle) -> Result<Option<Vec<u8>>, String> {
        let head = self.head_of(req)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some((h, data)) = self.used.pop_front() {
                if h != head {
                    return Err(format!(
                        "the next used element was descriptor {h}, not this request's {head}"
                    ));
                }
                self.free_head(req);
                return Ok((!data.is_empty()).then_some(data));
            }
            self.pump(deadline)?;
        }
    }

    fn read_done(&mut self, req: ReqHandle) -> Result<Vec<u8>, String> {
        let head = self.head_of(req)?;
        // As qos-test reads the reply buffer at once: the used element was
        // pushed with the completion before it, so it is here or on its way.
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(i) = self.used.iter().position(|(h, _)| *h == head) {
                let (_, data) = self.used.remove(i).unwrap();
                self.free_head(req);
                if data.is_empty() {
                    return Err("the request completed with length 0".into());
                }
                return Ok(data);
            }
            self.pump(deadline)?;
        }
    }

    fn reset(&mut self) -> Result<(), String> {
        let r = self.control(b'R', &[], b'r')?;
        if r.len() < 56 {
            return Err(format!("short reset answer ({} bytes)", r.len()));
        }
        let rc = i32::from_le_bytes(r[..4].try_into().unwrap());
        let after = HarnessStats::parse(&r[16..])?;
        self.used.clear();
        self.slots.clear();
        self.busy = [false; RING];
        self.errors.clear();
        if rc != 0 || after.fids != 0 || after.active != 0 || after.busy_slots != 0 {
            return Err(format!("reset: rc {rc}, then {after:?}"));
        }
        Ok(())
    }

    fn config(&mut self) -> Option<Vec<u8>> {
        self.control(b'C', &[], b'c').ok()
    }
}

impl Drop for FfiTransport {
    fn drop(&mut self) {
        let quit = self.control(b'Q', &[], b'q');
        self.stdin = None;
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    let _ = self.child.kill();
                    break self.child.wait().ok();
                }
            }
        };
        let rc = quit
            .ok()
            .filter(|b| b.len() >= 4)
            .map(|b| i32::from_le_bytes(b[..4].try_into().unwrap()));
        if rc != Some(0) || !status.is_some_and(|s| s.success()) {
            eprintln!(
                "qos-test: the ffi harness ended badly (coro9p_destroy: {rc:?}, exit: {status:?}){}",
                self.log_tail()
            );
        }
        let _ = std::fs::remove_file(&self.log);
    }
}
