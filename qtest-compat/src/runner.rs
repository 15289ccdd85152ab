//! The qos-test-like runner: picks cases by path, starts servers the way
//! qos-test starts QEMU (one instance per distinct command line, reused with
//! a reset between cases), runs each case, and reports.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cases::{self, Case, Ctx, Fsdev, PREFIX};
use crate::client::{Client, Fail};
use crate::transport::{Coro9pServer, StreamTransport, Transport};

/// Where the cases run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A coro9p server on a Unix socket.
    Coro9p,
}

/// What to run, and how.
#[derive(Clone, Debug)]
pub struct Options {
    /// The target.
    pub target: Target,
    /// P9_MAX_SIZE: 32768 (master) or 4096 (7.2).
    pub max_size: u32,
    /// `-m slow`.
    pub slow: bool,
    /// `-p PATH` (exact paths or prefixes); empty: every case.
    pub paths: Vec<String>,
    /// `--verbose`: every message in hex.
    pub verbose: bool,
    /// The coro9p binary.
    pub coro9p: PathBuf,
    /// `--compat` for coro9p: "master" or "7.2".
    pub compat: String,
}

/// The closing counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed.
    pub failed: usize,
    /// Cases skipped.
    pub skipped: usize,
}

/// The cases `-p` selects, with their full paths.
pub fn select(paths: &[String]) -> Vec<(String, Case)> {
    cases::all()
        .into_iter()
        .map(|c| (format!("{PREFIX}{}", c.name), c))
        .filter(|(full, _)| paths.is_empty() || paths.iter().any(|p| full.starts_with(p.as_str())))
        .collect()
}

/// A fresh local test directory (`qtest-9p-local-XXXXXX`).
fn local_dir() -> std::io::Result<PathBuf> {
    let template = std::env::temp_dir().join("qtest-9p-local-XXXXXX");
    nix::unistd::mkdtemp(&template).map_err(std::io::Error::from)
}

fn fsdev_string(case: &Case, dir: Option<&Path>) -> String {
    match (case.fsdev, dir) {
        (Fsdev::Synth(""), _) => "synth,id=fsdev0".to_string(),
        (Fsdev::Synth(extra), _) => format!("synth,id=fsdev0,{extra}"),
        (Fsdev::Local(extra), Some(dir)) => {
            let mut s = format!(
                "local,id=fsdev0,path={},security_model=mapped-xattr",
                dir.display()
            );
            if !extra.is_empty() {
                s.push(',');
                s.push_str(extra);
            }
            s
        }
        (Fsdev::Local(_), None) => unreachable!("local cases get a directory"),
    }
}

/// The running instance: its command line, server and connection.
struct Instance {
    cmdline: String,
    _server: Coro9pServer,
    transport: StreamTransport,
}

/// Runs the selected cases, printing one line per case and the closing line.
pub fn run(opts: &Options, out: &mut dyn Write) -> Summary {
    let mut sum = Summary::default();
    let mut inst: Option<Instance> = None;
    for (path, case) in select(&opts.paths) {
        let skip = if case.slow && !opts.slow {
            Some("slow case: run with -m slow".to_string())
        } else if opts.compat == "7.2" && !case.in_7_2 {
            Some("not in QEMU 7.2's suite".to_string())
        } else {
            None
        };
        if let Some(why) = skip {
            let _ = writeln!(out, "{path}: SKIP ({why})");
            sum.skipped += 1;
            continue;
        }
        let result = run_case(opts, &case, &mut inst);
        match result {
            Ok(()) => {
                let _ = writeln!(out, "{path}: OK");
                sum.passed += 1;
            }
            Err(Fail::Skip(why)) => {
                let _ = writeln!(out, "{path}: SKIP ({why})");
                sum.skipped += 1;
            }
            Err(f) => {
                let _ = writeln!(out, "{path}: FAIL");
                let _ = writeln!(out, "  {f}");
                sum.failed += 1;
                // A failed case may leave the instance in any state.
                inst = None;
            }
        }
    }
    let _ = writeln!(
        out,
        "{} passed, {} failed, {} skipped",
        sum.passed, sum.failed, sum.skipped
    );
    sum
}

fn run_case(opts: &Options, case: &Case, inst: &mut Option<Instance>) -> Result<(), Fail> {
    let dir = match case.fsdev {
        Fsdev::Local(_) => Some(local_dir().map_err(|e| Fail::Other(format!("mkdtemp: {e}")))?),
        Fsdev::Synth(_) => None,
    };
    let _cleanup = dir.clone().map(RemoveOnDrop);
    if let (Some(before), Some(d)) = (case.before, &dir) {
        before(d).map_err(|e| Fail::Other(format!("before: {e}")))?;
    }
    let cmdline = fsdev_string(case, dir.as_deref());
    let reuse = inst.as_ref().is_some_and(|i| i.cmdline == cmdline);
    if reuse {
        inst.as_mut().unwrap().transport.reset()?;
    } else {
        *inst = None;
        let server = Coro9pServer::start(&opts.coro9p, &cmdline, &opts.compat)?;
        let transport = StreamTransport::connect(&server.path, opts.verbose)?;
        *inst = Some(Instance {
            cmdline,
            _server: server,
            transport,
        });
    }
    let i = inst.as_mut().unwrap();
    let t: &mut dyn Transport = &mut i.transport;
    let mut ctx = Ctx {
        c: Client::new(t, opts.max_size),
        dir: dir.clone(),
    };
    let r = (case.run)(&mut ctx);
    if dir.is_some() {
        // Each local case had its own directory: its instance is done.
        *inst = None;
    }
    r
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
