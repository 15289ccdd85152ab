//! The `coro9p` command: serve one export over one or more transports.

#![deny(clippy::undocumented_unsafe_blocks)]

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use coro9p::runtime::{Executor, RuntimeConfig};
use coro9p::server::{Export, ExportOptions};
use coro9p::transport::socket::{listen, serve_fds, ListenAddr, Listener};
use coro9p::{Compat, Hops};

const USAGE: &str = "\
usage: coro9p --fsdev OPTIONS --listen ADDR [--listen ADDR ...] [options]
       coro9p trace-render TRACE.jsonl -o OUT.svg [--title TEXT] [--only Tread,Twrite]

  --fsdev OPTIONS     the export, as QEMU's -fsdev takes it:
                        local,path=DIR,security_model=passthrough|mapped-xattr|mapped-file|none
                        synth   (QEMU's test file system)
                      plus readonly=on, max_xattr=N, multidevs=remap|forbid|warn, ...
                      and per-session limits (default: QEMU's):
                        max_fids=N        fids held; one more is ENFILE (0: no limit)
                        max_xattr_size=N  largest xattr value, 1..65536; larger is E2BIG (65536)
                        max_pdus=N        requests run at once, 1..128; the rest wait (128)
                        max_msize=N       msize and frame cap, at least 4096 (4186112)
  --listen ADDR       tcp:HOST:PORT, unix:PATH, fd:R,W or stdio (repeatable)
  --compat VERSION    behave like QEMU master (default) or 7.2
  --hops qemu|min     worker hops per request: one per file system call, as
                      QEMU (default), or at most one (beyond QEMU; same replies)
  --workers N         most worker threads (default 64)
  --max-connections N most connections served at once per listener (default 1024)
  --trace-hops FILE   record every thread hop, written as JSON lines at exit
  --sandbox           confine the server's file access to the export (Landlock)
  -v, --verbose       log more (RUST_LOG overrides)
  -h, --help          this text
  -V, --version       the version";

struct Args {
    fsdev: String,
    listen: Vec<ListenAddr>,
    compat: Compat,
    hops: Hops,
    workers: usize,
    max_connections: usize,
    trace_hops: Option<String>,
    sandbox: bool,
    verbose: u8,
}

enum Parsed {
    Run(Args),
    Exit(ExitCode),
}

fn parse_args(args: Vec<String>) -> Result<Parsed, String> {
    let mut fsdev = None;
    let mut listen = Vec::new();
    let mut compat = Compat::Master;
    let mut hops = Hops::Qemu;
    let mut workers = 64;
    let mut max_connections = coro9p::transport::socket::DEFAULT_MAX_CONNECTIONS;
    let mut trace_hops = None;
    let mut sandbox = false;
    let mut verbose = 0;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value."))
        };
        match flag.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(Parsed::Exit(ExitCode::SUCCESS));
            }
            "-V" | "--version" => {
                println!("coro9p {}", env!("CARGO_PKG_VERSION"));
                return Ok(Parsed::Exit(ExitCode::SUCCESS));
            }
            "-v" | "--verbose" => verbose += 1,
            "--sandbox" => sandbox = true,
            "--fsdev" => fsdev = Some(value("--fsdev")?),
            "--listen" => listen.push(ListenAddr::parse(&value("--listen")?)?),
            "--compat" => {
                compat = match value("--compat")?.as_str() {
                    "master" => Compat::Master,
                    "7.2" => Compat::V7_2,
                    other => return Err(format!("--compat takes master or 7.2, not '{other}'.")),
                }
            }
            "--hops" => {
                hops = match value("--hops")?.as_str() {
                    "qemu" => Hops::Qemu,
                    "min" => Hops::Min,
                    other => return Err(format!("--hops takes qemu or min, not '{other}'.")),
                }
            }
            "--workers" => {
                let v = value("--workers")?;
                workers = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("--workers takes a positive number, not '{v}'."))?;
            }
            "--max-connections" => {
                let v = value("--max-connections")?;
                max_connections = v.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                    format!("--max-connections takes a positive number, not '{v}'.")
                })?;
            }
            "--trace-hops" => trace_hops = Some(value("--trace-hops")?),
            other => return Err(format!("unknown argument '{other}' (see coro9p --help).")),
        }
    }
    let fsdev = fsdev.ok_or("--fsdev is required (see coro9p --help).")?;
    if listen.is_empty() {
        return Err("--listen is required (see coro9p --help).".into());
    }
    Ok(Parsed::Run(Args {
        fsdev,
        listen,
        compat,
        hops,
        workers,
        max_connections,
        trace_hops,
        sandbox,
        verbose,
    }))
}

/// Takes the descriptors named by `fd:R,W` (inherited from the parent).
fn inherited_fds(r: RawFd, w: RawFd) -> Result<(OwnedFd, Option<OwnedFd>), String> {
    for fd in [r, w] {
        if nix::fcntl::fcntl(
            // SAFETY: only probes that the number names an open descriptor;
            // the borrow ends with the call.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
            nix::fcntl::FcntlArg::F_GETFD,
        )
        .is_err()
        {
            return Err(format!("file descriptor {fd} is not open."));
        }
    }
    // SAFETY: the user handed these open descriptors to this process for the
    // fd transport; nothing else in the process owns or closes them.
    let read = unsafe { OwnedFd::from_raw_fd(r) };
    let write = (w != r).then(|| {
        // SAFETY: as above, for the distinct write descriptor.
        unsafe { OwnedFd::from_raw_fd(w) }
    });
    Ok((read, write))
}

fn run(args: Args) -> Result<(), String> {
    let mut options = ExportOptions::parse(&args.fsdev)?;
    options.hops = args.hops;
    let export = Export::open(options, args.compat)?;
    let exec = Executor::new(RuntimeConfig {
        max_workers: args.workers,
        trace: args.trace_hops.is_some(),
        ..RuntimeConfig::default()
    })
    .map_err(|e| format!("cannot start the main loop: {e}."))?;
    let stop = stop_on_signals(&exec)?;
    // Sockets are bound and files opened before the sandbox closes in; the
    // fd transport starts serving (and so may start workers) only after it.
    let mut listeners: Vec<Listener> = Vec::new();
    for addr in args
        .listen
        .iter()
        .filter(|a| !matches!(a, ListenAddr::Fd(..)))
    {
        let l = listen(&exec, Rc::clone(&export), addr)
            .map_err(|e| format!("cannot listen on {addr:?}: {e}."))?;
        l.set_max_connections(args.max_connections);
        log::info!("listening on {}", l.local_addr);
        if let Some(cmd) = mount_hint(addr, &l.local_addr) {
            println!("coro9p: mount it with:\n  {cmd}");
        }
        listeners.push(l);
    }
    let mut trace_file = match &args.trace_hops {
        Some(path) => Some(
            std::fs::File::create(path)
                .map_err(|e| format!("cannot write the hop trace {path}: {e}."))?,
        ),
        None => None,
    };
    if args.sandbox {
        let root = match &export.options.driver {
            coro9p::server::FsDriver::Local { path, .. } => Some(path.as_path()),
            coro9p::server::FsDriver::Synth => None,
        };
        let abi = coro9p::sandbox::restrict_to(root)
            .map_err(|e| format!("cannot start the sandbox (Landlock): {e}."))?;
        log::info!("sandbox: file access confined to the export (Landlock ABI {abi})");
    }
    for addr in &args.listen {
        if let ListenAddr::Fd(r, w) = addr {
            let (read, write) = inherited_fds(*r, *w)?;
            let l = serve_fds(&exec, Rc::clone(&export), read, write)
                .map_err(|e| format!("cannot serve {addr:?}: {e}."))?;
            listeners.push(l);
        }
    }
    let only_fds = args.listen.iter().all(|a| matches!(a, ListenAddr::Fd(..)));
    exec.run_until(|| stop.get() || (only_fds && listeners.iter().all(|l| l.connections() == 0)))
        .map_err(|e| format!("main loop: {e}."))?;
    // A graceful stop: no new connections or requests; those in flight
    // finish and are answered (for at most 30 s), then every session is
    // reset, which closes its files.
    for l in &listeners {
        l.drain();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while listeners.iter().any(|l| l.active_requests() > 0) && std::time::Instant::now() < deadline
    {
        let _ = exec.turn(Some(Duration::from_millis(50)));
    }
    for l in &listeners {
        for s in l.sessions() {
            s.disconnect();
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while exec.stats().tasks > 0 && std::time::Instant::now() < deadline {
        let _ = exec.turn(Some(Duration::from_millis(50)));
    }
    if let (Some(path), Some(f)) = (&args.trace_hops, trace_file.as_mut()) {
        exec.tracer()
            .write_jsonl(f)
            .map_err(|e| format!("cannot write the hop trace {path}: {e}."))?;
    }
    Ok(())
}

/// The Linux command that mounts what `addr` serves.
fn mount_hint(addr: &ListenAddr, bound: &str) -> Option<String> {
    let opts = "version=9p2000.L,msize=262144";
    match addr {
        ListenAddr::Tcp(_) => {
            let (host, port) = bound.rsplit_once(':')?;
            Some(format!(
                "sudo mount -t 9p -o trans=tcp,port={port},{opts} {host} /mnt"
            ))
        }
        ListenAddr::Unix(path) => Some(format!(
            "sudo mount -t 9p -o trans=unix,{opts} {} /mnt",
            path.display()
        )),
        ListenAddr::Fd(..) => None,
    }
}

/// SIGINT and SIGTERM end the main loop (through a signalfd on it).
fn stop_on_signals(exec: &Executor) -> Result<Rc<std::cell::Cell<bool>>, String> {
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block()
        .map_err(|e| format!("cannot block signals: {e}."))?;
    let sfd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("cannot watch signals: {e}."))?;
    let stop = Rc::new(std::cell::Cell::new(false));
    let flag = Rc::clone(&stop);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sfd);
    exec.register(
        &mut mio::unix::SourceFd(&fd),
        mio::Interest::READABLE,
        move |_| {
            while let Ok(Some(sig)) = sfd.read_signal() {
                log::info!("signal {}: stopping", sig.ssi_signo);
                flag.set(true);
            }
        },
    )
    .map_err(|e| format!("cannot watch signals: {e}."))?;
    Ok(stop)
}

/// `coro9p trace-render`: draws a hop trace as an SVG picture.
fn trace_render(args: &[String]) -> Result<(), String> {
    let mut input = None;
    let mut output = None;
    let mut title = None;
    let mut only = String::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => output = it.next().cloned(),
            "--title" => title = it.next().cloned(),
            "--only" => only = it.next().cloned().unwrap_or_default(),
            f if input.is_none() && !f.starts_with('-') => input = Some(f.to_string()),
            other => return Err(format!("trace-render: unknown argument '{other}'.")),
        }
    }
    let input = input.ok_or("trace-render needs a trace file (see coro9p --help).")?;
    let output = output.ok_or("trace-render needs -o OUT.svg.")?;
    let text = std::fs::read_to_string(&input).map_err(|e| format!("cannot read {input}: {e}."))?;
    let events = coro9p::trace_render::parse_jsonl(&text).map_err(|e| format!("{input}: {e}."))?;
    let title = title.unwrap_or_else(|| input.clone());
    let names: Vec<&str> = only.split(',').filter(|n| !n.is_empty()).collect();
    let events = coro9p::trace_render::select(&events, &names);
    let (svg, _) = coro9p::trace_render::render(&events, &title);
    std::fs::write(&output, svg).map_err(|e| format!("cannot write {output}: {e}."))
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("trace-render") {
        return match trace_render(&argv[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(msg) => {
                eprintln!("coro9p: {msg}");
                ExitCode::from(2)
            }
        };
    }
    let parsed = match parse_args(argv) {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("coro9p: {msg}");
            return ExitCode::from(2);
        }
    };
    let args = match parsed {
        Parsed::Exit(code) => return code,
        Parsed::Run(args) => args,
    };
    let level = match args.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("coro9p: {msg}");
            ExitCode::FAILURE
        }
    }
}
