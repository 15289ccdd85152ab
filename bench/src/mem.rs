//! Memory figures of a running server: its RSS with N idle connections, and
//! the cost of one in-flight request.
//!
//! In flight: 8 connections keep 128 Treads each (QEMU's and coro9p's
//! MAX_REQ per session) going for 2 s. The server's peak RSS during that
//! (VmHWM, reset first), less its RSS before and what 8 idle connections
//! cost, divided by the 1,024 requests, is the cost of one request in
//! flight: its coroutine stack, its buffers, and its share of the worker
//! threads it keeps busy. Measured twice, each on a fresh server: with
//! 4 KiB reads (stack and bookkeeping) and with msize - 24 byte reads (the
//! data buffer too). A request cannot simply be parked on a named pipe:
//! both servers pread, which a pipe refuses.

use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::load::{self, Spec, Workload};
use crate::p9::{self, Conn};

/// msize of the memory runs (what `make run`'s mount command uses).
pub const MSIZE: u32 = 256 * 1024;
const LOAD_CONNS: usize = 8;
const MAX_REQ: usize = 128;
pub const IN_FLIGHT: usize = LOAD_CONNS * MAX_REQ;

/// One in-flight measurement.
#[derive(Clone, Debug, Default)]
pub struct InFlight {
    pub read_bytes: u32,
    pub before_kib: u64,
    pub peak_kib: u64,
    pub threads: u64,
}

impl InFlight {
    pub fn per_request_kib(&self) -> f64 {
        self.peak_kib.saturating_sub(self.before_kib) as f64 / IN_FLIGHT as f64
    }
}

#[derive(Clone, Debug, Default)]
pub struct Mem {
    pub rss_start_kib: u64,
    pub idle: usize,
    pub rss_idle_kib: u64,
    pub threads_idle: u64,
    pub small: InFlight,
    pub large: InFlight,
}

impl Mem {
    pub fn idle_mib(&self) -> f64 {
        self.rss_idle_kib as f64 / 1024.0
    }
    pub fn per_idle_conn_kib(&self) -> f64 {
        self.rss_idle_kib.saturating_sub(self.rss_start_kib) as f64 / self.idle.max(1) as f64
    }
    pub fn describe(&self) -> String {
        let f = |x: &InFlight| {
            format!(
                "{:.1} KiB each with {} B reads (peak {:.1} MiB, {} threads)",
                x.per_request_kib(),
                x.read_bytes,
                x.peak_kib as f64 / 1024.0,
                x.threads
            )
        };
        format!(
            "RSS {:.1} MiB fresh; {:.1} MiB with {} idle connections ({:.1} KiB each, {} threads); \
             {IN_FLIGHT} requests in flight: {}; {}",
            self.rss_start_kib as f64 / 1024.0,
            self.idle_mib(),
            self.idle,
            self.per_idle_conn_kib(),
            self.threads_idle,
            f(&self.small),
            f(&self.large)
        )
    }
}

/// A line of /proc/PID/status, in its unit (kB for sizes).
fn status(pid: u32, field: &str) -> Result<u64, String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status"))
}

/// (VmRSS in KiB, Threads) once the RSS stops moving (or after 3 s).
fn settled_rss(pid: u32) -> Result<(u64, u64), String> {
    let t = Instant::now();
    let mut last = status(pid, "VmRSS:")?;
    loop {
        sleep(Duration::from_millis(300));
        let now = status(pid, "VmRSS:")?;
        if now.abs_diff(last) < 64 || t.elapsed() > Duration::from_secs(3) {
            return Ok((now, status(pid, "Threads:")?));
        }
        last = now;
    }
}

/// RSS of a fresh server, then with `idle` idle connections (Tversion and
/// Tattach each).
pub fn measure_idle(
    addr: &str,
    aname: &str,
    pid: u32,
    idle: usize,
    m: &mut Mem,
) -> Result<(), String> {
    m.idle = idle;
    m.rss_start_kib = settled_rss(pid)?.0;
    let mut conns = Vec::with_capacity(idle);
    for i in 0..idle {
        conns.push(
            Conn::open(addr, MSIZE, aname, &[]).map_err(|e| format!("idle connection {i}: {e}"))?,
        );
    }
    (m.rss_idle_kib, m.threads_idle) = settled_rss(pid)?;
    Ok(())
}

/// On a fresh server: 1,024 Treads of `read_bytes` in flight for 2 s (see
/// the module text). Needs `m`'s idle figures first.
pub fn measure_inflight(
    addr: &str,
    aname: &str,
    pid: u32,
    read_bytes: u32,
    m: &Mem,
) -> Result<InFlight, String> {
    let before = settled_rss(pid)?.0;
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .map_err(|e| format!("cannot reset the peak RSS of {pid}: {e}"))?;
    let spec = Spec {
        workload: Workload::Read4k,
        addr: addr.to_string(),
        aname: aname.to_string(),
        conns: LOAD_CONNS,
        inflight: MAX_REQ,
        secs: 2.0,
        msize: MSIZE,
        chunk: Some(read_bytes.min(MSIZE - p9::IOHDRSZ)),
    };
    load::run(&spec, &[])?;
    Ok(InFlight {
        read_bytes: spec.chunk.unwrap_or(read_bytes),
        before_kib: before + (m.per_idle_conn_kib() * LOAD_CONNS as f64) as u64,
        peak_kib: status(pid, "VmHWM:")?,
        threads: status(pid, "Threads:")?,
    })
}
