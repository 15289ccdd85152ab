//! `coro9p-bench suite`: what `make bench` runs once the export is
//! prepared. Starts the servers itself (fresh ones for each memory figure),
//! runs every workload on coro9p, diod and the two direct loops in turn,
//! several rounds, and writes the medians.

use std::fmt::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::direct::{self, Variant};
use crate::load::{self, Spec, Workload, ALL};
use crate::mem::{self, Mem};
use crate::report::{self, Row, Sum, MIN};
use crate::Opts;

/// A server process this suite started; killed when dropped.
struct Server {
    name: &'static str,
    child: Child,
    addr: String,
    aname: String,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// CPU time (clock ticks) the servers used, added as each one stops.
static SERVER_TICKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// utime + stime of a process (all its threads), in clock ticks.
fn proc_ticks(pid: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // After the command: state is field 3, utime 14 and stime 15.
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

/// (busy outside softirq, softirq, steal) ticks of the whole machine.
fn machine_ticks() -> (u64, u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let g = |i: usize| f.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    (g(0) + g(1) + g(2) + g(5), g(6), g(7))
}

impl Drop for Server {
    fn drop(&mut self) {
        SERVER_TICKS.fetch_add(
            proc_ticks(&self.child.id().to_string()),
            std::sync::atomic::Ordering::Relaxed,
        );
        // SIGTERM first (coro9p writes its traces on it), then SIGKILL.
        // SAFETY: signals our own child, by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(2) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

struct Cfg {
    export: PathBuf,
    coro9p_bin: String,
    diod_bin: String,
    logs: PathBuf,
}

impl Cfg {
    fn start(&self, name: &'static str) -> Result<Server, String> {
        let port = free_port()?;
        let export = self.export.to_str().ok_or("export path is not UTF-8")?;
        let mut cmd = match name {
            "coro9p" | "coro9p-min" => {
                let mut c = Command::new(&self.coro9p_bin);
                c.arg("--fsdev")
                    .arg(format!("local,path={export},security_model=passthrough"))
                    .arg("--listen")
                    .arg(format!("tcp:127.0.0.1:{port}"));
                if name == "coro9p-min" {
                    c.arg("--hops=min");
                }
                c
            }
            _ => {
                let mut c = Command::new(&self.diod_bin);
                c.args(["-f", "-n", "-L", "stderr", "-l"])
                    .arg(format!("127.0.0.1:{port}"))
                    .arg("-e")
                    .arg(export);
                c
            }
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{name}.log")))
            .map_err(|e| format!("log file: {e}"))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let s = Server {
            name,
            child,
            addr: format!("tcp:127.0.0.1:{port}"),
            aname: export.to_string(),
        };
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if t.elapsed() > Duration::from_secs(10) {
                return Err(format!("{name} does not listen on port {port}"));
            }
            sleep(Duration::from_millis(20));
        }
        // Let it take the probe connection's close before measuring it.
        sleep(Duration::from_millis(200));
        Ok(s)
    }
}

/// CPU model, cores, kernel, memory.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU", str::trim)
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |k| k / 1024.0 / 1024.0);
    let virt = if cpuinfo.contains(" hypervisor") {
        ", virtual machine"
    } else {
        ""
    };
    format!(
        "{model}, {cores} cores{virt}, {mem_gib:.0} GiB RAM, Linux {}",
        kernel.trim()
    )
}

/// /proc/loadavg's three averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Hop figures from the runtime micro-benchmark output:
/// the lone hop and the hop with 32 tasks in flight, in µs.
fn runtime_hops(path: &Path) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let fig = |prefix: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.starts_with(prefix))?;
        let rest = line.get(52..)?;
        let mut it = rest.split_whitespace();
        let v: f64 = it.next()?.parse().ok()?;
        Some(match it.next()? {
            "ns" => v / 1000.0,
            "ms" => v * 1000.0,
            _ => v,
        })
    };
    Some((
        fig("hop main->worker->main")?,
        fig("hop, 32 tasks in flight")?,
    ))
}

pub fn main(o: &Opts) -> Result<(), String> {
    o.check(&[
        "export",
        "coro9p-bin",
        "diod-bin",
        "runs",
        "secs",
        "direct-secs",
        "out",
        "runtime-bench",
        "only",
        "idle",
        "logs",
        "command",
    ])?;
    let cfg = Cfg {
        export: PathBuf::from(o.req("export")?),
        coro9p_bin: o.req("coro9p-bin")?.to_string(),
        diod_bin: o.get("diod-bin").unwrap_or("diod").to_string(),
        logs: PathBuf::from(o.get("logs").unwrap_or("/tmp")),
    };
    let runs: usize = o.num("runs", 5)?;
    let secs: f64 = o.num("secs", 2.0)?;
    let direct_secs: f64 = o.num("direct-secs", 1.0)?;
    let idle: usize = o.num("idle", 1000)?;
    let out = PathBuf::from(o.get("out").unwrap_or("docs/perf"));
    let workloads: Vec<Workload> = match o.get("only") {
        Some(list) => list
            .split(',')
            .map(Workload::parse)
            .collect::<Result<_, _>>()?,
        None => ALL.to_vec(),
    };
    let command = o.get("command").unwrap_or("make bench").to_string();
    let began = Instant::now();
    let (busy0, soft0, steal0) = machine_ticks();
    let self0 = proc_ticks("self");

    let machine = machine();
    let load_before = loadavg();
    println!("coro9p-bench suite");
    println!("machine: {machine}");
    println!("load average before: {load_before}");
    println!(
        "{runs} rounds; each round runs coro9p, coro9p --hops=min, diod and the two direct loops \
         in turn (order alternating); {secs} s per server run, {direct_secs} s per direct run\n"
    );

    // Memory, on fresh servers.
    let mut mems = Vec::new();
    for name in ["coro9p", "diod"] {
        let mut m = Mem::default();
        {
            let s = cfg.start(name)?;
            mem::measure_idle(&s.addr, &s.aname, s.pid(), idle, &mut m)?;
        }
        {
            let s = cfg.start(name)?;
            m.small = mem::measure_inflight(&s.addr, &s.aname, s.pid(), 4096, &m)?;
        }
        {
            let s = cfg.start(name)?;
            m.large = mem::measure_inflight(&s.addr, &s.aname, s.pid(), mem::MSIZE, &m)?;
        }
        println!("memory, {name}: {}", m.describe());
        mems.push((name, m));
    }
    println!();

    // The workloads; `servers[t]` serves target t of report::TARGETS.
    let servers = [cfg.start("coro9p")?, cfg.start("diod")?];
    let min_server = cfg.start("coro9p-min")?;
    let payload: &'static [u8] = crate::payload();
    let mut rows = Vec::new();
    for &w in &workloads {
        let spec_for = |s: &Server, secs: f64| Spec {
            workload: w,
            addr: s.addr.clone(),
            aname: s.aname.clone(),
            conns: 1,
            inflight: w.default_inflight(),
            secs,
            msize: w.default_msize(),
            chunk: None,
        };
        // Warm-up: page cache, stack pools, worker threads.
        for s in servers.iter().chain([&min_server]) {
            load::run(&spec_for(s, 0.3), payload)
                .map_err(|e| format!("{} on {}: {e}", w.name(), s.name))?;
        }
        let mut row = Row {
            w,
            conns: 1,
            inflight: w.default_inflight(),
            runs: Default::default(),
        };
        for r in 0..runs {
            let order: [usize; 5] = if r % 2 == 0 {
                [0, MIN, 1, 2, 3]
            } else {
                [1, MIN, 0, 3, 2]
            };
            for t in order {
                let server = match t {
                    0 | 1 => Some(&servers[t]),
                    MIN => Some(&min_server),
                    _ => None,
                };
                let f = match (t, server) {
                    (_, Some(s)) => load::run(&spec_for(s, secs), payload)
                        .map_err(|e| format!("{} on {}: {e}", w.name(), s.name))?,
                    (2, _) => direct::run(w, Variant::Minimal, &cfg.export, direct_secs)?,
                    _ => direct::run(w, Variant::Backend, &cfg.export, direct_secs)?,
                };
                row.runs[t].push(Sum::from(&f));
            }
        }
        println!(
            "{:<10} coro9p {:>12}  coro9p-min {:>12}  diod {:>12}  direct {:>12}  9pfs-syscalls {:>12}  {}  \
             coro9p/diod {:.2}  min/diod {:.2}  coro9p/direct {:.3}  min/direct {:.3}",
            w.name(),
            report::thousands(row.primary(0)),
            report::thousands(row.primary(MIN)),
            report::thousands(row.primary(1)),
            report::thousands(row.primary(2)),
            report::thousands(row.primary(3)),
            if report::by_bytes(w) { "MB/s" } else { "op/s" },
            row.ratio(0, 1),
            row.ratio(MIN, 1),
            row.ratio(0, 2),
            row.ratio(MIN, 2)
        );
        rows.push(row);
    }
    drop(servers);
    drop(min_server);

    // Goals.
    let mut goals = String::new();
    let find = |w: Workload| rows.iter().find(|r| r.w == w);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    if let Some(r) = find(Workload::Meta) {
        let x = r.ratio(0, 1);
        let _ = writeln!(
            goals,
            "- `meta`, {} in flight: coro9p/diod = {x:.2} (goal ≥ 2): **{}**",
            r.inflight,
            verdict(x >= 2.0)
        );
    }
    if let Some(r) = find(Workload::SeqRead) {
        let x = r.ratio(0, 2);
        let _ = writeln!(
            goals,
            "- `seqread`: coro9p/direct pread loop = {x:.2} (goal ≥ 0.9): **{}**",
            verdict(x >= 0.9)
        );
    }
    match o
        .get("runtime-bench")
        .and_then(|p| runtime_hops(Path::new(p)))
    {
        Some((one, many)) => {
            let _ = writeln!(
                goals,
                "- main→worker→main hop, median: {one:.1} µs alone, {many:.1} µs per hop with 32 in flight \
                 (goal ≤ 5 µs; `cargo bench --bench runtime`): **{}**",
                verdict(one <= 5.0)
            );
        }
        None => {
            let _ = writeln!(
                goals,
                "- main→worker→main hop: not measured here (`cargo bench --bench runtime`)"
            );
        }
    }
    if let Some((_, m)) = mems.iter().find(|(n, _)| *n == "coro9p") {
        let _ = writeln!(
            goals,
            "- {} idle connections: {:.1} MiB RSS (goal ≤ 100 MiB): **{}**",
            m.idle,
            m.idle_mib(),
            verdict(m.idle_mib() <= 100.0)
        );
    }

    let table = report::table(&rows);
    let memt = report::mem_table(&mems);
    println!("\n{table}\n{memt}\ngoals:\n{goals}");
    let elapsed = began.elapsed().as_secs_f64();
    let load_after = loadavg();
    // SAFETY: sysconf has no inputs besides the constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let (busy1, soft1, steal1) = machine_ticks();
    let ours = proc_ticks("self") - self0 + SERVER_TICKS.load(std::sync::atomic::Ordering::Relaxed);
    let others = (busy1 - busy0).saturating_sub(ours) as f64 / hz;
    let steal = (steal1 - steal0) as f64 / hz;
    let soft = (soft1 - soft0) as f64 / hz;
    let noise = format!(
        "CPU used by other processes while the suite ran: {others:.0} core-seconds \
         ({:.0}% of the machine); softirq (loopback TCP, mostly ours): {soft:.0} s; \
         stolen by the hypervisor: {steal:.0} s",
        100.0 * others
            / (elapsed * std::thread::available_parallelism().map_or(1, |n| n.get()) as f64)
    );
    println!("{noise}");
    println!("suite took {elapsed:.0} s; load average after: {load_after}");

    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut md = String::new();
    let _ = writeln!(md, "# coro9p benchmark results\n");
    let _ = writeln!(
        md,
        "Written by `{command}`; see docs/perf.md for what they mean.\n"
    );
    let _ = writeln!(md, "- machine: {machine}");
    let _ = writeln!(
        md,
        "- load average (1, 5, 15 min) before: {load_before}; after: {load_after} \
         (the suite itself keeps about 1.5 busy)"
    );
    let _ = writeln!(md, "- {noise}");
    let _ = writeln!(
        md,
        "- {runs} rounds, medians; {secs} s per server run, {direct_secs} s per direct run; \
         1 connection; export on tmpfs; both servers over TCP on loopback; suite time {elapsed:.0} s"
    );
    let _ = writeln!(
        md,
        "- msize asked: 256 KiB, and 1 MiB + 4 KiB for seqread/seqwrite; diod grants {} \
         at most, so its sequential requests carry that less 24 bytes",
        rows.iter()
            .find(|r| report::by_bytes(r.w))
            .and_then(|r| r.runs[1].first())
            .map_or("?".to_string(), |s| format!("msize {}", s.msize))
    );
    let _ = writeln!(md, "\n## Throughput and latency\n\n{table}");
    let _ = writeln!(md, "## Memory\n\n{memt}");
    let _ = writeln!(md, "## Goals\n\n{goals}");
    write(&out.join("results.md"), &md)?;
    write(&out.join("runs.csv"), &report::csv(&rows))?;
    write(
        &out.join("chart.svg"),
        &report::svg(
            &rows,
            &format!("coro9p vs diod vs the direct loop — {machine}"),
        ),
    )?;
    println!(
        "wrote {0}/results.md, {0}/runs.csv, {0}/chart.svg",
        out.display()
    );
    Ok(())
}

fn write(p: &Path, s: &str) -> Result<(), String> {
    std::fs::write(p, s).map_err(|e| format!("{}: {e}", p.display()))
}
