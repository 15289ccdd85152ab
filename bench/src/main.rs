//! `coro9p-bench`: a 9P2000.L load generator (N connections, M requests in
//! flight each, pipelined by tag), the direct syscall loop that is the
//! physical limit, memory figures, and the whole suite `make bench` runs.

mod direct;
mod layout;
mod load;
mod mem;
mod p9;
mod report;
mod suite;

use std::path::PathBuf;
use std::process::ExitCode;

use load::{Spec, Workload};

const USAGE: &str = "\
usage:
  coro9p-bench prepare DIR [--big-mib N]
  coro9p-bench run --addr tcp:HOST:PORT|unix:PATH --workload W [--aname PATH]
                   [--conns N] [--inflight M] [--secs S] [--msize BYTES]
                   [--chunk BYTES]
  coro9p-bench direct --export DIR --workload W [--secs S]
                   [--variant minimal|backend]
  coro9p-bench mem --addr ADDR --pid PID [--aname PATH] [--idle N]
  coro9p-bench suite --export DIR --coro9p-bin PATH [--diod-bin diod]
                   [--runs 5] [--secs 2] [--direct-secs 1] [--out docs/perf]
                   [--runtime-bench FILE] [--only W,W] [--idle 1000]
                   [--logs DIR] [--command TEXT]
    (starts and stops the servers itself; `make bench` runs it)

workloads: meta, stat-tree, read4k, seqread, seqwrite, readdir, create
  (prepare the export first; --aname is the export path for diod, ignored
  by coro9p)";

/// `--flag value` / `--flag=value` pairs, and positionals.
struct Opts {
    flags: Vec<(String, String)>,
    positional: Vec<String>,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
        let mut o = Opts {
            flags: vec![],
            positional: vec![],
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if let Some(f) = a.strip_prefix("--") {
                let (k, v) = match f.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (
                        f.to_string(),
                        it.next().ok_or(format!("--{f} needs a value"))?.clone(),
                    ),
                };
                o.flags.push((k, v));
            } else {
                o.positional.push(a.clone());
            }
        }
        Ok(o)
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(f, _)| f == k)
            .map(|(_, v)| v.as_str())
    }
    fn req(&self, k: &str) -> Result<&str, String> {
        self.get(k).ok_or(format!("--{k} is required (see --help)"))
    }
    fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> Result<T, String> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{k}: '{v}' is not a number")),
        }
    }
    fn check(&self, known: &[&str]) -> Result<(), String> {
        for (k, _) in &self.flags {
            if !known.contains(&k.as_str()) {
                return Err(format!("unknown option --{k} (see --help)"));
            }
        }
        Ok(())
    }
}

/// Lets the process open a few thousand sockets.
fn raise_nofile() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// A payload of non-zero bytes for Twrite, shared by every connection.
fn payload() -> &'static [u8] {
    let v: Vec<u8> = (0..1usize << 20).map(|i| (i % 253) as u8 + 1).collect();
    Box::leak(v.into_boxed_slice())
}

fn run_cmd(o: &Opts) -> Result<(), String> {
    o.check(&[
        "addr", "aname", "workload", "conns", "inflight", "secs", "msize", "chunk",
    ])?;
    let w = Workload::parse(o.req("workload")?)?;
    let spec = Spec {
        workload: w,
        addr: o.req("addr")?.to_string(),
        aname: o.get("aname").unwrap_or("").to_string(),
        conns: o.num("conns", 1)?,
        inflight: o.num("inflight", w.default_inflight())?,
        secs: o.num("secs", 2.0)?,
        msize: o.num("msize", w.default_msize())?,
        chunk: o
            .get("chunk")
            .map(str::parse)
            .transpose()
            .map_err(|_| "--chunk takes a number")?,
    };
    let f = load::run(&spec, payload())?;
    println!(
        "{} on {}: {} conn x {} in flight, msize {}: {:.0} ops/s ({}), {:.0} req/s, {:.1} MB/s, p50 {:.1} us, p99 {:.1} us",
        w.name(),
        spec.addr,
        spec.conns,
        spec.inflight,
        f.msize,
        f.ops_per_s(),
        w.unit(),
        f.reqs as f64 / f.secs,
        f.mb_per_s(),
        f.pct_us(0.5),
        f.pct_us(0.99)
    );
    Ok(())
}

fn direct_cmd(o: &Opts) -> Result<(), String> {
    o.check(&["export", "workload", "secs", "variant"])?;
    let w = Workload::parse(o.req("workload")?)?;
    let v = match o.get("variant").unwrap_or("minimal") {
        "minimal" => direct::Variant::Minimal,
        "backend" => direct::Variant::Backend,
        other => return Err(format!("--variant takes minimal or backend, not '{other}'")),
    };
    let f = direct::run(w, v, &PathBuf::from(o.req("export")?), o.num("secs", 1.0)?)?;
    println!(
        "{} direct ({v:?}): {:.0} ops/s ({}), {:.1} MB/s, p50 {:.2} us, p99 {:.2} us",
        w.name(),
        f.ops_per_s(),
        w.unit(),
        f.mb_per_s(),
        f.pct_us(0.5),
        f.pct_us(0.99)
    );
    Ok(())
}

fn mem_cmd(o: &Opts) -> Result<(), String> {
    o.check(&["addr", "pid", "aname", "idle"])?;
    let (addr, aname, pid) = (
        o.req("addr")?,
        o.get("aname").unwrap_or(""),
        o.num("pid", 0)?,
    );
    let mut m = mem::Mem::default();
    // `suite` uses a fresh server for each of the two; here both run on
    // the server given, idle connections first.
    mem::measure_idle(addr, aname, pid, o.num("idle", 1000)?, &mut m)?;
    m.small = mem::measure_inflight(addr, aname, pid, 4096, &m)?;
    m.large = mem::measure_inflight(addr, aname, pid, mem::MSIZE, &m)?;
    println!("{}", m.describe());
    Ok(())
}

fn main() -> ExitCode {
    raise_nofile();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let res = Opts::parse(&args[1..]).and_then(|o| match args[0].as_str() {
        "prepare" => {
            o.check(&["big-mib"])?;
            let dir = o.positional.first().ok_or("prepare needs DIR")?;
            layout::prepare(&PathBuf::from(dir), o.num("big-mib", 256)?)
        }
        "run" => run_cmd(&o),
        "direct" => direct_cmd(&o),
        "mem" => mem_cmd(&o),
        "suite" => suite::main(&o),
        other => Err(format!("unknown command '{other}' (see --help)")),
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coro9p-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
